//! The host side of world `reposafe:provider/provider-plugin@0.5.0` (`wit/v0.5/`,
//! the current version): its bindings, and their adaptation to the host's
//! version-independent [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.5.0 added to 0.4.0 `register-webhook`: the provider registers a push
//! webhook on a scope. It never sees the webhook's secret: it writes the
//! request's `secret-placeholder` where the secret goes, and the session's
//! [`SecretFill`](super::SecretFill) puts the secret in its place on the way out.

use super::{
    ConnectionParams, DocumentQuery, LogLevel, PluginState, ProviderCalls, ProviderPre,
    RepositoryPage, ScopeDocumentQuery, WitVersion,
};
use crate::providers::http::GateError;
use crate::providers::{
    AuthScheme, CredentialSupport, Document, DocumentPage, FileRef, GitPartSource, MetadataKind,
    ProviderError, ProviderInfo, Repository, RepositoryParts, Scope, Setting, WebhookRegistered,
    WebhookRequest,
};
use crate::vault::CredentialKind;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

wasmtime::component::bindgen!({
    path: "wit/v0.5",
    world: "provider-plugin",
});

use self::reposafe::provider::{
    files as wit_files, http as wit_http, log as wit_log, types as wit,
};

/// The package version of this world.
const VERSION: &str = "0.5.0";

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

    fn register_webhook(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
        hook: &WebhookRequest,
    ) -> wasmtime::Result<Result<WebhookRegistered, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let request = wit::WebhookRequest {
            url: hook.url.clone(),
            secret_placeholder: hook.secret_placeholder.clone(),
            description: hook.description.clone(),
        };
        let r = g.call_register_webhook(store, &connection_to_wit(conn), scope, &request)?;
        Ok(r.map(|w| WebhookRegistered {
            target: w.target,
            id: w.id,
            updated: w.updated,
        })
        .map_err(error_from_wit))
    }
}
