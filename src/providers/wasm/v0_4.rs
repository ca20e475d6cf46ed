//! The host side of world `reposafe:provider/provider-plugin@0.4.0` (`wit/v0.4/`,
//! the current version): its bindings, and their adaptation to the host's
//! version-independent [`ProviderPre`]/[`ProviderCalls`].
//!
//! 0.4.0 added to 0.3.0 restoring into the provider: `find-repository`,
//! `create-repository`, `restorable-kinds`, `restore-documents`, the `files`
//! import (granted by the session inside `restore-documents` only, for the
//! blobs its documents name: [`PluginState::read_file`]) and the
//! `provider-error.conflict` case.

use super::{
    ConnectionParams, DocumentQuery, LogLevel, PluginState, ProviderCalls, ProviderPre,
    RepositoryPage, RestoreQuery, ScopeDocumentQuery, WitVersion,
};
use crate::providers::http::GateError;
use crate::providers::{
    AuthScheme, CredentialSupport, Document, DocumentPage, FileRef, GitPartSource, MetadataKind,
    NewRepository, ProviderError, ProviderInfo, Repository, RepositoryParts, RestoreKind,
    RestoreOutcome, RestoredDocument, Scope, Setting,
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

impl wit_files::Host for PluginState {
    fn read(&mut self, blob: String, offset: u64, length: u32) -> Result<Vec<u8>, String> {
        self.read_file(&blob, offset, length)
    }
}

fn new_repository_to_wit(n: &NewRepository) -> wit::NewRepository {
    wit::NewRepository {
        scope: n.scope.clone(),
        slug: n.slug.clone(),
        project: n.project.clone(),
        source_provider: n.source_provider.clone(),
        source: repository_to_wit(&n.source),
        original: n.original.clone(),
    }
}

fn outcome_from_wit(o: wit::RestoreOutcome) -> RestoreOutcome {
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
fn restore_args(q: &RestoreQuery<'_>) -> (wit::RestoreContext, Vec<wit::RestoreDocument>) {
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

impl ProviderCalls for Calls {
    common_calls!();
    principal_call!();
    metadata_calls!();

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
        new: &NewRepository,
    ) -> wasmtime::Result<Result<Repository, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let r =
            g.call_create_repository(store, &connection_to_wit(conn), &new_repository_to_wit(new))?;
        Ok(r.map(repository_from_wit).map_err(error_from_wit))
    }

    fn restorable_kinds(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        source_provider: &str,
    ) -> wasmtime::Result<Result<Vec<RestoreKind>, ProviderError>> {
        let g = self.0.reposafe_provider_provider();
        let kinds = g.call_restorable_kinds(store, &connection_to_wit(conn), source_provider)?;
        Ok(Ok(kinds
            .into_iter()
            .map(|k| RestoreKind {
                name: k.name,
                whole: k.whole,
            })
            .collect()))
    }

    fn restore_documents(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        q: &RestoreQuery<'_>,
    ) -> wasmtime::Result<Result<Vec<RestoredDocument>, ProviderError>> {
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
                .map(|d| RestoredDocument {
                    id: d.id,
                    outcome: outcome_from_wit(d.outcome),
                })
                .collect()
        })
        .map_err(error_from_wit))
    }
}
