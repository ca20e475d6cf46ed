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

/// This version, for the host's table of versions.
pub(super) const WIT: WitVersion = WitVersion {
    version: VERSION,
    link: |engine, component| {
        let pre = pre_instantiate(engine, component)?;
        Ok(Box::new(Pre(pre)))
    },
};

shared_glue!();

/// A component of this version, linked.
struct Pre(ProviderPluginPre<PluginState>);

impl ProviderPre for Pre {
    fn wit_version(&self) -> &'static str {
        VERSION
    }

    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Box<dyn ProviderCalls>> {
        Ok(Box::new(Calls(self.0.instantiate(store)?)))
    }
}

/// One instance of a component of this version.
struct Calls(ProviderPlugin);

impl ProviderCalls for Calls {
    common_calls!();
    no_metadata_calls!();

    fn principal(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Result<Option<String>, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let r = g.call_principal(store, &connection_to_wit(conn))?;
        Ok(r.map_err(error_from_wit))
    }
}
