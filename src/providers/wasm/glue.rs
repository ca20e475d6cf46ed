//! The glue every WIT version's bindings share: the `http` and `log` imports
//! implemented on [`PluginState`](super::PluginState), and conversions between
//! the generated `types` and the host's own types ([`crate::providers`]).
//!
//! Every released world version has the same `types`, `http` and `log`
//! interfaces (a new version only adds exports), but `bindgen!` generates
//! distinct Rust types for each version, so the glue is a macro expanded once in
//! each version module (`v0_1`, `v0_2`). A future version whose `types` differ
//! writes its own conversions instead of expanding this macro.
//!
//! The exports every version has (`info`, `list-scopes`, `list-repositories`,
//! `oauth-token-url`) are adapted by [`common_calls!`], expanded inside each
//! version's `impl ProviderCalls`, `principal` (0.2.0 on) by [`principal_call!`];
//! [`no_metadata_calls!`] gives the versions before 0.3.0 their typed "this
//! world has no such export" answers.

/// Expands, inside a version module that has run `bindgen!` and has the
/// aliases `wit` (the `types` interface), `wit_http` and `wit_log` and its
/// `VERSION` in scope, into the version's entry `WIT` of the host's table, its
/// linked component `Pre` and instance `Calls` (whose `impl ProviderCalls` the
/// module writes), the import implementations for `PluginState` and the
/// conversion functions `connection_to_wit`, `info_from_wit`, `scope_from_wit`,
/// `page_from_wit` and `error_from_wit`.
macro_rules! shared_glue {
    () => {
        /// This version, for the host's table of versions.
        pub(super) const WIT: WitVersion = WitVersion {
            version: VERSION,
            link: |engine, component| {
                let pre = pre_instantiate(engine, component)?;
                Ok(Box::new(Pre(pre)))
            },
        };

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

        impl wit::Host for PluginState {}

        impl wit_http::Host for PluginState {
            fn send(
                &mut self,
                req: wit_http::Request,
            ) -> Result<wit_http::Response, wit_http::HttpError> {
                let r = $crate::providers::http::Request {
                    method: req.method,
                    url: req.url,
                    headers: req.headers,
                    body: req.body,
                };
                match self.gate_send(&r) {
                    Ok(resp) => Ok(wit_http::Response {
                        status: resp.status,
                        headers: resp.headers,
                        body: resp.body,
                    }),
                    Err(GateError::Denied(m) | GateError::Forbidden(m)) => {
                        Err(wit_http::HttpError::Denied(m))
                    }
                    Err(GateError::Timeout(m)) => Err(wit_http::HttpError::Timeout(m)),
                    Err(GateError::Transport(m)) => Err(wit_http::HttpError::Transport(m)),
                    Err(GateError::TooLarge(m)) => Err(wit_http::HttpError::TooLarge(m)),
                }
            }
        }

        impl wit_log::Host for PluginState {
            fn log(&mut self, level: wit_log::Level, message: String) {
                let level = match level {
                    wit_log::Level::Trace => LogLevel::Trace,
                    wit_log::Level::Debug => LogLevel::Debug,
                    wit_log::Level::Info => LogLevel::Info,
                    wit_log::Level::Warn => LogLevel::Warn,
                    wit_log::Level::Error => LogLevel::Error,
                };
                self.write_log(level, &message);
            }
        }

        fn kind_to_wit(k: CredentialKind) -> wit::CredentialKind {
            match k {
                CredentialKind::ApiToken => wit::CredentialKind::ApiToken,
                CredentialKind::AccessToken => wit::CredentialKind::AccessToken,
                CredentialKind::OauthConsumer => wit::CredentialKind::OauthConsumer,
                CredentialKind::AppPassword => wit::CredentialKind::AppPassword,
                CredentialKind::HttpAccessToken => wit::CredentialKind::HttpAccessToken,
                CredentialKind::Basic => wit::CredentialKind::Basic,
            }
        }

        fn kind_from_wit(k: wit::CredentialKind) -> CredentialKind {
            match k {
                wit::CredentialKind::ApiToken => CredentialKind::ApiToken,
                wit::CredentialKind::AccessToken => CredentialKind::AccessToken,
                wit::CredentialKind::OauthConsumer => CredentialKind::OauthConsumer,
                wit::CredentialKind::AppPassword => CredentialKind::AppPassword,
                wit::CredentialKind::HttpAccessToken => CredentialKind::HttpAccessToken,
                wit::CredentialKind::Basic => CredentialKind::Basic,
            }
        }

        fn scheme_from_wit(s: wit::AuthScheme) -> AuthScheme {
            match s {
                wit::AuthScheme::BasicIdentity => AuthScheme::BasicIdentity,
                wit::AuthScheme::BasicFixedUser(u) => AuthScheme::BasicFixedUser(u),
                wit::AuthScheme::Bearer => AuthScheme::Bearer,
            }
        }

        fn error_from_wit(e: wit::ProviderError) -> ProviderError {
            match e {
                wit::ProviderError::Unauthorized(m) => ProviderError::Unauthorized(m),
                wit::ProviderError::Forbidden(m) => ProviderError::Forbidden(m),
                wit::ProviderError::NotFound(m) => ProviderError::NotFound(m),
                wit::ProviderError::RateLimited(m) => ProviderError::RateLimited(m),
                wit::ProviderError::Gone(m) => ProviderError::Gone(m),
                wit::ProviderError::Http(m) => ProviderError::Http(m),
                wit::ProviderError::InvalidResponse(m) => ProviderError::InvalidResponse(m),
                wit::ProviderError::InvalidSettings(m) => ProviderError::InvalidSettings(m),
            }
        }

        fn connection_to_wit(conn: &ConnectionParams) -> wit::Connection {
            wit::Connection {
                settings: conn.settings.clone(),
                credential_kind: kind_to_wit(conn.kind),
            }
        }

        /// The provider's description; `origin` is left empty for the loader to fill in.
        fn info_from_wit(info: wit::ProviderInfo) -> ProviderInfo {
            ProviderInfo {
                id: info.id,
                display_name: info.display_name,
                version: info.version,
                credential_kinds: info
                    .credential_kinds
                    .into_iter()
                    .map(|c| CredentialSupport {
                        kind: kind_from_wit(c.kind),
                        api: scheme_from_wit(c.api),
                        git: scheme_from_wit(c.git),
                        deprecated: c.deprecated,
                    })
                    .collect(),
                settings: info
                    .settings
                    .into_iter()
                    .map(|s| Setting {
                        name: s.name,
                        description: s.description,
                        required: s.required,
                        default_value: s.default_value,
                        is_url: s.is_url,
                    })
                    .collect(),
                origin: String::new(),
            }
        }

        fn scope_from_wit(s: wit::Scope) -> Scope {
            Scope {
                key: s.key,
                name: s.name,
                kind: s.kind,
            }
        }

        fn page_from_wit(page: wit::RepositoryPage) -> RepositoryPage {
            RepositoryPage {
                repositories: page
                    .repositories
                    .into_iter()
                    .map(|r| Repository {
                        id: r.id,
                        full_name: r.full_name,
                        slug: r.slug,
                        scope: r.scope,
                        clone_url: r.clone_url,
                        is_private: r.is_private,
                        main_branch: r.main_branch,
                        size: r.size,
                        updated: r.updated,
                        has_wiki: r.has_wiki,
                        has_lfs: r.has_lfs,
                        fork_parent: r.fork_parent,
                    })
                    .collect(),
                next: page.next,
            }
        }

        /// Links the world's imports for `PluginState` and pre-instantiates `component`.
        /// Errors name what the component lacks (the message is for the loader).
        fn pre_instantiate(
            engine: &Engine,
            component: &Component,
        ) -> Result<ProviderPluginPre<PluginState>, String> {
            let mut linker: Linker<PluginState> = Linker::new(engine);
            ProviderPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let instance_pre = linker.instantiate_pre(component).map_err(|e| {
                format!(
                    "it does not implement the reposafe:provider@{VERSION} world this reposafe \
                     hosts (only http.send and log.log are available to plugins): {e:#}"
                )
            })?;
            ProviderPluginPre::new(instance_pre).map_err(|e| {
                format!("it does not export reposafe:provider/provider@{VERSION}: {e:#}")
            })
        }
    };
}

/// Expands, inside a version module's `impl ProviderCalls for Calls` (where
/// `Calls` wraps the generated `ProviderPlugin`), into the methods of the
/// exports every world version has.
macro_rules! common_calls {
    () => {
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
    };
}

/// Expands, inside the `impl ProviderCalls` of a world version with the
/// `principal` export (0.2.0 on), into its call.
macro_rules! principal_call {
    () => {
        fn principal(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
        ) -> wasmtime::Result<Result<Option<String>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_principal(store, &connection_to_wit(conn))?;
            Ok(r.map_err(error_from_wit))
        }
    };
}

/// Expands, inside the `impl ProviderCalls` of a world version before 0.3.0
/// (which has a `VERSION` constant), into the metadata calls that world lacks:
/// no parts besides git (`Ok(None)`), no scope kinds (empty), and listing
/// documents fails with [`ProviderError::Unsupported`](crate::providers::ProviderError::Unsupported).
macro_rules! no_metadata_calls {
    () => {
        fn describe_repository(
            &self,
            _store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _repo: &$crate::providers::Repository,
        ) -> wasmtime::Result<Result<Option<$crate::providers::RepositoryParts>, ProviderError>> {
            Ok(Ok(None))
        }

        fn list_documents(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _query: &super::DocumentQuery<'_>,
        ) -> wasmtime::Result<Result<$crate::providers::DocumentPage, ProviderError>> {
            Ok(Err(ProviderError::Unsupported {
                provider: store.data().provider.clone(),
                version: VERSION.to_string(),
                what: "list-documents".to_string(),
            }))
        }

        fn describe_scope(
            &self,
            _store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _scope: &str,
        ) -> wasmtime::Result<Result<Vec<$crate::providers::MetadataKind>, ProviderError>> {
            Ok(Ok(Vec::new()))
        }

        fn list_scope_documents(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _query: &super::ScopeDocumentQuery<'_>,
        ) -> wasmtime::Result<Result<$crate::providers::DocumentPage, ProviderError>> {
            Ok(Err(ProviderError::Unsupported {
                provider: store.data().provider.clone(),
                version: VERSION.to_string(),
                what: "list-scope-documents".to_string(),
            }))
        }
    };
}
