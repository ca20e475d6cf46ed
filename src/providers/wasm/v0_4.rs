//! The host side of world `reposafe:provider/provider-plugin@0.4.0` (`wit/v0.4/`):
//! its bindings, and their adaptation to the host's version-independent
//! [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.4.0 added to 0.3.0 restoring into the provider: `find-repository`,
//! `create-repository`, `restorable-kinds`, `restore-documents`, the `files`
//! import (granted by the session inside `restore-documents` only, for the
//! blobs its documents name: [`PluginState::read_file`]) and the
//! `provider-error.conflict` case.

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
    path: "wit/v0.4",
    world: "provider-plugin",
});

use self::reposafe::provider::{
    files as wit_files, http as wit_http, log as wit_log, types as wit,
};

/// The package version of this world.
const VERSION: &str = "0.4.0";

shared_glue!(
    imports: "http.send, log.log and files.read",
    wit::ProviderError::Conflict(m) => ProviderError::Conflict(m),
);

metadata_glue!();

restore_glue!();

impl ProviderCalls for Calls {
    common_calls!();
    principal_call!();
    metadata_calls!();
    restore_calls!();
    no_webhook_calls!();
}
