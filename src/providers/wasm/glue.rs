//! The glue every WIT version's bindings share: the `http` and `log` imports
//! implemented on [`PluginState`](super::PluginState), and conversions between
//! the generated `types` and the host's own types ([`crate::providers`]).
//!
//! Every released world version has the same `http` and `log` interfaces and
//! the same `types` but for additions (a new version adds exports, records and
//! error cases), but `bindgen!` generates distinct Rust types for each version,
//! so the glue is a macro expanded once in each version module (`v0_1`, ...),
//! given the match arms of the `provider-error` cases its version added (0.4.0:
//! `conflict`) and the imports it offers (for load errors).
//!
//! The exports every version has (`info`, `list-scopes`, `list-repositories`,
//! `oauth-token-url`) are adapted by [`common_calls!`], expanded inside each
//! version's `impl ProviderCalls`, `principal` (0.2.0 on) by [`principal_call!`];
//! [`no_metadata_calls!`] gives the versions before 0.3.0 and [`no_restore_calls!`]
//! those before 0.4.0 their typed "this world has no such export" answers.

/// Expands, inside a version module that has run `bindgen!` and has the
/// aliases `wit` (the `types` interface), `wit_http` and `wit_log` and its
/// `VERSION` in scope, into the version's entry `WIT` of the host's table, its
/// linked component `Pre` and instance `Calls` (whose `impl ProviderCalls` the
/// module writes), the import implementations for `PluginState` and the
/// conversion functions `connection_to_wit`, `info_from_wit`, `scope_from_wit`,
/// `repository_from_wit`, `page_from_wit` and `error_from_wit`. `imports` names the imports the world
/// offers (for the load error of a component wanting others); the optional
/// arms map the `provider-error` cases the version added.
macro_rules! shared_glue {
    (imports: $imports:literal $(, $($error_arm:tt)*)?) => {
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
                // Presented as its consumer's tokens are (`CredentialKind::provider_kind`).
                CredentialKind::OauthConsumer | CredentialKind::OauthAuthorization => {
                    wit::CredentialKind::OauthConsumer
                }
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
                $($($error_arm)*)?
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

        fn repository_from_wit(r: wit::Repository) -> Repository {
            Repository {
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
            }
        }

        fn page_from_wit(page: wit::RepositoryPage) -> RepositoryPage {
            RepositoryPage {
                repositories: page
                    .repositories
                    .into_iter()
                    .map(repository_from_wit)
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
                     hosts (only {} are available to plugins): {e:#}",
                    $imports
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
                added: "0.3.0".to_string(),
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
                added: "0.3.0".to_string(),
            }))
        }
    };
}

/// Expands, inside the `impl ProviderCalls` of a world version before 0.4.0
/// (which has a `VERSION` constant), into the restore calls that world lacks:
/// each fails with [`ProviderError::Unsupported`](crate::providers::ProviderError::Unsupported)
/// without calling the component (the session finds a repository by listing
/// its scope instead).
macro_rules! no_restore_calls {
    () => {
        fn find_repository(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _scope: &str,
            _slug: &str,
        ) -> wasmtime::Result<Result<Option<$crate::providers::Repository>, ProviderError>> {
            Ok(Err(super::unsupported(
                store,
                VERSION,
                "find-repository",
                "0.4.0",
            )))
        }

        fn create_repository(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _new: &$crate::providers::NewRepository,
        ) -> wasmtime::Result<Result<$crate::providers::Repository, ProviderError>> {
            Ok(Err(super::unsupported(
                store,
                VERSION,
                "create-repository",
                "0.4.0",
            )))
        }

        fn restorable_kinds(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _source_provider: &str,
        ) -> wasmtime::Result<Result<Vec<$crate::providers::RestoreKind>, ProviderError>> {
            Ok(Err(super::unsupported(
                store,
                VERSION,
                "restorable-kinds",
                "0.4.0",
            )))
        }

        fn restore_documents(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _query: &super::RestoreQuery<'_>,
        ) -> wasmtime::Result<Result<Vec<$crate::providers::RestoredDocument>, ProviderError>> {
            Ok(Err(super::unsupported(
                store,
                VERSION,
                "restore-documents",
                "0.4.0",
            )))
        }
    };
}

/// Expands, inside a version module of world 0.3.0 or later (after
/// [`shared_glue!`]), into the conversions of the metadata records:
/// `repository_to_wit`, `kind_of_wit`, `parts_from_wit`, `documents_from_wit`.
macro_rules! metadata_glue {
    () => {
        /// A host repository as the world's record (what `list-repositories` returned).
        fn repository_to_wit(r: &Repository) -> wit::Repository {
            wit::Repository {
                id: r.id.clone(),
                full_name: r.full_name.clone(),
                slug: r.slug.clone(),
                scope: r.scope.clone(),
                clone_url: r.clone_url.clone(),
                is_private: r.is_private,
                main_branch: r.main_branch.clone(),
                size: r.size,
                updated: r.updated.clone(),
                has_wiki: r.has_wiki,
                has_lfs: r.has_lfs,
                fork_parent: r.fork_parent.clone(),
            }
        }

        fn kind_of_wit(k: wit::MetadataKind) -> MetadataKind {
            MetadataKind {
                name: k.name,
                incremental: k.incremental,
            }
        }

        fn parts_from_wit(p: wit::RepositoryParts) -> RepositoryParts {
            RepositoryParts {
                git: p
                    .git
                    .into_iter()
                    .map(|g| GitPartSource {
                        name: g.name,
                        url: g.url,
                    })
                    .collect(),
                lfs_url: p.lfs_url,
                metadata: p.metadata.into_iter().map(kind_of_wit).collect(),
            }
        }

        fn documents_from_wit(p: wit::DocumentPage) -> DocumentPage {
            DocumentPage {
                documents: p
                    .documents
                    .into_iter()
                    .map(|d| Document {
                        kind: d.kind,
                        id: d.id,
                        updated_on: d.updated_on,
                        json: d.json,
                        files: d
                            .files
                            .into_iter()
                            .map(|f| FileRef {
                                name: f.name,
                                url: f.url,
                                size: f.size,
                            })
                            .collect(),
                    })
                    .collect(),
                next: p.next,
            }
        }
    };
}

/// Expands, inside the `impl ProviderCalls` of a world version with the
/// metadata exports (0.3.0 on, after [`metadata_glue!`]), into their calls.
macro_rules! metadata_calls {
    () => {
        fn describe_repository(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            repo: &Repository,
        ) -> wasmtime::Result<Result<Option<RepositoryParts>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_describe_repository(
                store,
                &connection_to_wit(conn),
                &repository_to_wit(repo),
            )?;
            Ok(r.map(|p| Some(parts_from_wit(p))).map_err(error_from_wit))
        }

        fn list_documents(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            q: &DocumentQuery<'_>,
        ) -> wasmtime::Result<Result<DocumentPage, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_list_documents(
                store,
                &connection_to_wit(conn),
                &repository_to_wit(q.repo),
                q.kind,
                q.since,
                q.cursor,
            )?;
            Ok(r.map(documents_from_wit).map_err(error_from_wit))
        }

        fn describe_scope(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            scope: &str,
        ) -> wasmtime::Result<Result<Vec<MetadataKind>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_describe_scope(store, &connection_to_wit(conn), scope)?;
            Ok(r.map(|v| v.into_iter().map(kind_of_wit).collect())
                .map_err(error_from_wit))
        }

        fn list_scope_documents(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            q: &ScopeDocumentQuery<'_>,
        ) -> wasmtime::Result<Result<DocumentPage, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_list_scope_documents(
                store,
                &connection_to_wit(conn),
                q.scope,
                q.kind,
                q.cursor,
            )?;
            Ok(r.map(documents_from_wit).map_err(error_from_wit))
        }
    };
}

/// Expands, inside a version module of world 0.4.0 or later (after
/// [`metadata_glue!`]), into the conversions of the restore records:
/// `new_repository_to_wit`, `outcome_from_wit`, `restore_args`.
macro_rules! restore_glue {
    () => {
        fn new_repository_to_wit(n: &$crate::providers::NewRepository) -> wit::NewRepository {
            wit::NewRepository {
                scope: n.scope.clone(),
                slug: n.slug.clone(),
                project: n.project.clone(),
                source_provider: n.source_provider.clone(),
                source: repository_to_wit(&n.source),
                original: n.original.clone(),
            }
        }

        fn outcome_from_wit(o: wit::RestoreOutcome) -> $crate::providers::RestoreOutcome {
            use $crate::providers::RestoreOutcome;
            match o {
                wit::RestoreOutcome::Restored(id) => RestoreOutcome::Restored(id),
                wit::RestoreOutcome::NeedsUser(n) => RestoreOutcome::NeedsUser {
                    id: n.id,
                    what: n.what,
                },
                wit::RestoreOutcome::Skipped(why) => RestoreOutcome::Skipped(why),
                wit::RestoreOutcome::Failed(why) => RestoreOutcome::Failed(why),
            }
        }

        /// The documents and context of one `restore-documents` call as the world's records.
        fn restore_args(
            q: &super::RestoreQuery<'_>,
        ) -> (wit::RestoreContext, Vec<wit::RestoreDocument>) {
            let ctx = wit::RestoreContext {
                source_provider: q.ctx.source_provider.clone(),
                source_full_name: q.ctx.source_full_name.clone(),
                snapshot_taken_at: q.ctx.snapshot_taken_at.clone(),
                renamed_refs: q.ctx.renamed_refs.clone(),
            };
            let docs = q
                .docs
                .iter()
                .map(|d| wit::RestoreDocument {
                    id: d.id.clone(),
                    updated_on: d.updated_on.clone(),
                    json: d.json.clone(),
                    files: d
                        .files
                        .iter()
                        .map(|f| wit::RestoreFile {
                            name: f.name.clone(),
                            blob: f.blob.clone(),
                            size: f.size,
                        })
                        .collect(),
                })
                .collect();
            (ctx, docs)
        }

        impl wit_files::Host for PluginState {
            fn read(&mut self, blob: String, offset: u64, length: u32) -> Result<Vec<u8>, String> {
                self.read_file(&blob, offset, length)
            }
        }
    };
}

/// Expands, inside the `impl ProviderCalls` of world 0.4.0 or later (after
/// [`restore_glue!`]), into the restore calls.
macro_rules! restore_calls {
    () => {
        fn find_repository(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            scope: &str,
            slug: &str,
        ) -> wasmtime::Result<Result<Option<Repository>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_find_repository(store, &connection_to_wit(conn), scope, slug)?;
            Ok(r.map(|o| o.map(repository_from_wit))
                .map_err(error_from_wit))
        }

        fn create_repository(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            new: &$crate::providers::NewRepository,
        ) -> wasmtime::Result<Result<Repository, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let r = g.call_create_repository(
                store,
                &connection_to_wit(conn),
                &new_repository_to_wit(new),
            )?;
            Ok(r.map(repository_from_wit).map_err(error_from_wit))
        }

        fn restorable_kinds(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            source_provider: &str,
        ) -> wasmtime::Result<Result<Vec<$crate::providers::RestoreKind>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let kinds =
                g.call_restorable_kinds(store, &connection_to_wit(conn), source_provider)?;
            Ok(Ok(kinds
                .into_iter()
                .map(|k| $crate::providers::RestoreKind {
                    name: k.name,
                    whole: k.whole,
                })
                .collect()))
        }

        fn restore_documents(
            &self,
            store: &mut Store<PluginState>,
            conn: &ConnectionParams,
            q: &super::RestoreQuery<'_>,
        ) -> wasmtime::Result<Result<Vec<$crate::providers::RestoredDocument>, ProviderError>> {
            let g = self.0.reposafe_provider_provider();
            let (ctx, docs) = restore_args(q);
            let r = g.call_restore_documents(
                store,
                &connection_to_wit(conn),
                &repository_to_wit(q.repo),
                q.kind,
                &ctx,
                &docs,
            )?;
            Ok(r.map(|v| {
                v.into_iter()
                    .map(|d| $crate::providers::RestoredDocument {
                        id: d.id,
                        outcome: outcome_from_wit(d.outcome),
                    })
                    .collect()
            })
            .map_err(error_from_wit))
        }
    };
}

/// Expands, inside the `impl ProviderCalls` of a world version before 0.5.0,
/// into `register_webhook` failing with
/// [`ProviderError::Unsupported`](crate::providers::ProviderError::Unsupported)
/// without calling the component.
macro_rules! no_webhook_calls {
    () => {
        fn register_webhook(
            &self,
            store: &mut Store<PluginState>,
            _conn: &ConnectionParams,
            _scope: &str,
            _hook: &$crate::providers::WebhookRequest,
        ) -> wasmtime::Result<Result<$crate::providers::WebhookRegistered, ProviderError>> {
            Ok(Err(super::unsupported(
                store,
                VERSION,
                "register-webhook",
                "0.5.0",
            )))
        }
    };
}
