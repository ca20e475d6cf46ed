//! The host side of world `reposafe:provider/provider-plugin@0.1.0` (`wit/v0.1/`,
//! the first release): its bindings, and their adaptation to the host's
//! version-independent [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.1.0 has no `principal` export: [`ProviderCalls::principal`] answers
//! `Ok(None)`, "not provided", as a 0.2.0 provider that cannot tell does.

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
    fn info(&self, store: &mut Store<PluginState>) -> wasmtime::Result<ProviderInfo> {
        let g = self.0.reposafe_provider_provider();
        g.call_info(store).map(info_from_wit)
    }

    fn list_scopes(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Result<Vec<Scope>, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let r = g.call_list_scopes(store, &connection_to_wit(conn))?;
        Ok(r.map(|v| v.into_iter().map(scope_from_wit).collect())
            .map_err(error_from_wit))
    }

    fn list_repositories(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
        cursor: Option<&str>,
    ) -> wasmtime::Result<Result<RepositoryPage, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let r = g.call_list_repositories(store, &connection_to_wit(conn), scope, cursor)?;
        Ok(r.map(page_from_wit).map_err(error_from_wit))
    }

    fn oauth_token_url(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Option<String>> {
        let g = self.0.reposafe_provider_provider();
        g.call_oauth_token_url(store, &connection_to_wit(conn))
    }

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
