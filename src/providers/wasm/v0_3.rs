//! The host side of world `reposafe:provider/provider-plugin@0.3.0` (`wit/v0.3/`):
//! its bindings, and their adaptation to the host's
//! version-independent [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.3.0 added to 0.2.0 what a repository holds besides git: `describe-repository`
//! (extra git parts such as the wiki, the LFS server, the metadata kinds),
//! `list-documents`, and per scope `describe-scope` and `list-scope-documents`.

use super::{
    ConnectionParams, DocumentQuery, LogLevel, PluginState, ProviderCalls, ProviderPre,
    RepositoryPage, ScopeDocumentQuery, WitVersion,
};
use crate::providers::http::GateError;
use crate::providers::{
    AuthScheme, CredentialSupport, Document, DocumentPage, FileRef, GitPartSource, MetadataKind,
    ProviderError, ProviderInfo, Repository, RepositoryParts, Scope, Setting,
};
use crate::vault::CredentialKind;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

wasmtime::component::bindgen!({
    path: "wit/v0.3",
    world: "provider-plugin",
});

use self::reposafe::provider::{http as wit_http, log as wit_log, types as wit};

/// The package version of this world.
const VERSION: &str = "0.3.0";

shared_glue!(imports: "http.send and log.log");

metadata_glue!();

impl ProviderCalls for Calls {
    common_calls!();
    no_restore_calls!();
    no_webhook_calls!();
    principal_call!();
    metadata_calls!();
}
