//! The host side of world `reposafe:provider/provider-plugin@0.1.0` (`wit/v0.1/`,
//! the first release): its bindings, and their adaptation to the host's
//! version-independent [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.1.0 has no `principal` export: [`ProviderCalls::principal`] answers
//! `Ok(None)`, "not provided", as a 0.2.0 provider that cannot tell does; nor
//! 0.3.0's metadata exports (git only, as for 0.2.0).

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
    path: "wit/v0.1",
    world: "provider-plugin",
});

use self::reposafe::provider::{http as wit_http, log as wit_log, types as wit};

/// The package version of this world.
const VERSION: &str = "0.1.0";

shared_glue!(imports: "http.send and log.log");

impl ProviderCalls for Calls {
    common_calls!();
    no_restore_calls!();
    no_webhook_calls!();
    no_metadata_calls!();

    /// World 0.1.0 has no `principal`: "not provided", so the host derives the
    /// principal from the credential, as for a 0.2.0 provider answering `none`.
    fn principal(
        &self,
        _store: &mut Store<PluginState>,
        _conn: &ConnectionParams,
    ) -> wasmtime::Result<Result<Option<String>, ProviderError>> {
        Ok(Ok(None))
    }
}
