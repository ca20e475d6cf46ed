//! The host side of world `reposafe:provider/provider-plugin@0.3.0` (`wit/v0.3/`,
//! the current version): its bindings, and their adaptation to the host's
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

shared_glue!();

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

impl ProviderCalls for Calls {
    common_calls!();

    principal_call!();

    fn describe_repository(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        repo: &Repository,
    ) -> wasmtime::Result<Result<Option<RepositoryParts>, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let r =
            g.call_describe_repository(store, &connection_to_wit(conn), &repository_to_wit(repo))?;
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
}
