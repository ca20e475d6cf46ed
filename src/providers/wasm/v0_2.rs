//! The host side of world `reposafe:provider/provider-plugin@0.2.0` (`wit/v0.2/`):
//! its bindings, and their adaptation to the host's version-independent
//! [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.2.0 added the `principal` export to 0.1.0. It has none of 0.3.0's metadata
//! exports: a 0.2.0 provider backs up git only (`describe_repository` answers
//! `Ok(None)`, `describe_scope` no kinds, listing documents `Unsupported`).

use super::{
    ConnectionParams, LogLevel, PluginState, ProviderCalls, ProviderPre, RepositoryPage, WitVersion,
};
use crate::providers::http::GateError;
use crate::providers::{
    AuthScheme, CredentialSupport, ProviderError, ProviderInfo, Repository, Scope, Setting,
};
use crate::vault::CredentialKind;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

wasmtime::component::bindgen!({
    path: "wit/v0.2",
    world: "provider-plugin",
});

use self::reposafe::provider::{http as wit_http, log as wit_log, types as wit};

/// The package version of this world.
const VERSION: &str = "0.2.0";

shared_glue!(imports: "http.send and log.log");

impl ProviderCalls for Calls {
    common_calls!();
    no_restore_calls!();
    no_webhook_calls!();
    no_metadata_calls!();

    principal_call!();
}
