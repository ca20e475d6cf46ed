//! What the CLI prints of each report. Every command prints through here, whether
//! its report came from the engine in this process or from a daemon.

use crate::engine::credentials::CredentialView;
use crate::engine::service::{
    AddedCredential, CheckReport, ConnectionView, CredentialAdded, ExportReport, ProvidersReport,
    Restored, ShowReport, TlsSummary,
};
use crate::engine::show::{document_title, KindItems};
use crate::engine::types::{Connection, Job, JobRecordResult, Plan};
use crate::engine::types::{RepoIdentity, Snapshot};
use crate::engine::{BackupReport, RepoOutcome};
use crate::fmt::{fmt_time, human_bytes};
use anyhow::Result;

pub fn warnings(list: &[String]) {
    for w in list {
        eprintln!("warning: {w}");
    }
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn providers(r: &ProvidersReport) {
    for p in &r.providers {
        println!("{}  {} {} ({})", p.id, p.display_name, p.version, p.origin);
        let kinds: Vec<&str> = p.credential_kinds.iter().map(|c| c.kind.as_str()).collect();
        println!("    credentials: {}", kinds.join(", "));
        for s in &p.settings {
            let def = s
                .default_value
                .as_deref()
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            let req = if s.required { " (required)" } else { "" };
            println!("    --set {}=...{req}{def}  {}", s.name, s.description);
        }
    }
    for e in &r.not_loaded {
        println!("not loaded: {e}");
    }
}

/// `kind credential[ for identity]`.
fn credential_words(conn: &Connection) -> String {
    format!(
        "{} credential{}",
        conn.credential_kind,
        conn.credential_identity
            .as_ref()
            .map(|i| format!(" for {i}"))
            .unwrap_or_default()
    )
}

pub fn connection_added(conn: &Connection) {
    println!(
        "added connection {} ({}, {})",
        conn.name,
        conn.provider,
        credential_words(conn)
    );
    println!("{}", origins_line(conn));
}

/// After `connection rotate`.
pub fn credential_rotated(conn: &Connection) {
    println!(
        "connection {} now uses its new {}",
        conn.name,
        credential_words(conn)
    );
    println!("{}", origins_line(conn));
}

/// After `connection edit`.
pub fn connection_edited(c: &Connection) {
    let settings: Vec<String> = c.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "connection {}: read-only={} allow-restore={} rate-limit={} {}",
        c.name,
        c.read_only,
        c.allow_restore,
        c.rate_limit.as_deref().unwrap_or("none"),
        settings.join(" ")
    );
}

/// Where a connection's credential may go (fixed when it was added).
fn origins_line(conn: &Connection) -> String {
    let to = if conn.allowed_origins.is_empty() {
        "nowhere (no URL setting)".to_string()
    } else {
        conn.allowed_origins.join(", ")
    };
    format!("  credential is sent only to: {to}")
}

fn tls_words(tls: &TlsSummary) -> Option<String> {
    if tls.insecure {
        Some("tls=INSECURE(no certificate verification)".to_string())
    } else {
        tls.ca_bundle.as_ref().map(|f| format!("ca-bundle={f}"))
    }
}

pub fn connections(list: &[ConnectionView]) {
    for v in list {
        let c = &v.connection;
        let mut settings: Vec<String> =
            c.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        settings.extend(tls_words(&v.tls));
        if v.project_credentials > 0 {
            settings.push(format!("project-credentials={}", v.project_credentials));
        }
        if c.read_only {
            settings.push("read-only".into());
        }
        if c.allow_restore {
            settings.push("allow-restore (restores may write through it)".into());
        }
        println!(
            "{}  {}  {} {} ********  {}",
            c.name,
            c.provider,
            c.credential_kind,
            c.credential_identity.as_deref().unwrap_or(""),
            settings.join(" ")
        );
        println!("{}", origins_line(c));
    }
}

/// What a connection trusts, after `connection tls`.
pub fn tls_changed(connection: &str, tls: &TlsSummary) {
    let what = match (&tls.ca_bundle, tls.insecure) {
        (Some(f), _) => format!("the system roots and the CA bundle {f}"),
        (None, true) => "nothing: certificates are not verified".to_string(),
        (None, false) => "the system roots".to_string(),
    };
    println!("connection {connection} now trusts {what}");
}

pub fn credential_added(connection: &str, added: &CredentialAdded) {
    match &added.credential {
        AddedCredential::Project(id) => println!(
            "connection {connection} uses a {} credential for project {}",
            added.kind,
            id.strip_prefix("project:").unwrap_or(id)
        ),
        AddedCredential::Additional(view) => println!(
            "added additional credential {} ({} {}) of connection {connection}; principal {}",
            view.id,
            added.kind,
            view.identity.as_deref().unwrap_or(""),
            view.principal.as_deref().unwrap_or("?")
        ),
    }
}

pub fn credential_removed(connection: &str, id: &str) {
    match id.strip_prefix("project:") {
        Some(key) => {
            println!("connection {connection} uses its default credential for project {key} again")
        }
        None => println!("removed additional credential {id} of connection {connection}"),
    }
}

/// Credentials, never a secret.
pub fn credentials(list: &[CredentialView]) {
    println!(
        "{:<14} {:<12} {:<18} {:<22} {:<9} {:<32} SECRET",
        "ID", "ROLE", "KIND", "IDENTITY", "STATE", "PRINCIPAL"
    );
    for c in list {
        println!(
            "{:<14} {:<12} {:<18} {:<22} {:<9} {:<32} ********",
            c.id,
            c.role,
            c.kind.as_str(),
            c.identity.as_deref().unwrap_or("-"),
            if c.enabled { "enabled" } else { "disabled" },
            c.principal.as_deref().unwrap_or("-")
        );
    }
}

pub fn plan(p: &Plan) {
    let s = &p.spec;
    println!(
        "{}  connections: {}  include: {}  exclude: {}  schedule: {}{}{}  auto-add: {}{}{}  last success: {}",
        s.name,
        s.connections.join(","),
        s.include.join(","),
        if s.exclude.is_empty() { "-".into() } else { s.exclude.join(",") },
        s.schedule.as_deref().unwrap_or("on demand"),
        s.timezone.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
        s.window.as_deref().map(|w| format!("  window: {w}")).unwrap_or_default(),
        if s.auto_add { "on" } else { "off" },
        if s.read_only { "  read-only" } else { "" },
        if s.enabled { "" } else { "  DISABLED" },
        p.status.last_success.map(fmt_time).unwrap_or_else(|| "-".into())
    );
    if let Some(target) = &s.copy_to {
        println!("  copies the archive to {target} after each successful run");
    }
}

pub fn jobs(jobs: &[Job]) {
    println!(
        "{:>6} {:<11} {:<9} {:<20} {:>9} {:>7} {:>10}  WHAT",
        "JOB", "STATE", "TRIGGER", "STARTED (UTC)", "DONE", "FAILED", "STORED"
    );
    for j in jobs {
        println!(
            "{:>6} {:<11} {:<9} {:<20} {:>9} {:>7} {:>10}  {}",
            j.id,
            j.state,
            format!("{:?}", j.trigger).to_lowercase(),
            j.started_at.map(fmt_time).unwrap_or_else(|| "-".into()),
            format!("{}/{}", j.progress.repos_done, j.progress.repos_total),
            j.progress.failed,
            human_bytes(j.progress.bytes_stored),
            j.kind.describe()
        );
    }
}

pub fn job(j: &Job, results: &[JobRecordResult]) {
    let p = &j.progress;
    println!(
        "job {} ({}): {}; {} repositories: {} new snapshots, {} unchanged, {} failed, {} skipped, {} deferred; {} fetched, {} stored",
        j.id,
        j.kind.describe(),
        j.state,
        p.repos_total,
        p.snapshots,
        p.unchanged,
        p.failed,
        p.skipped,
        p.deferred,
        human_bytes(p.bytes_fetched),
        human_bytes(p.bytes_stored)
    );
    if let Some(e) = &j.error {
        println!("error: {e}");
    }
    if let Some(n) = &p.notice {
        println!("{n}");
    }
    for c in &p.credentials {
        println!(
            "  credential {}/{} ({}): {} requests, {} rate limited, {} cool-downs{}",
            c.connection,
            c.credential,
            c.principal,
            c.requests,
            c.rate_limited,
            c.cooldowns,
            c.failed
                .as_deref()
                .map(|f| format!(", failed: {f}"))
                .unwrap_or_default()
        );
    }
    for r in results {
        println!(
            "  {:<10} {}/{}{}{}",
            r.status,
            r.connection,
            r.repository,
            r.snapshot
                .as_deref()
                .map(|s| format!("  {s}"))
                .unwrap_or_default(),
            r.reason
                .as_deref()
                .map(|s| format!("  {s}"))
                .unwrap_or_default()
        );
    }
}

/// The summary of one connection's backup.
pub fn backup(report: &BackupReport) {
    let (mut snaps, mut same, mut partial) = (0, 0, 0);
    for r in &report.repositories {
        match &r.outcome {
            RepoOutcome::Snapshot { .. } => snaps += 1,
            RepoOutcome::Partial {
                new_bytes, missing, ..
            } => {
                partial += 1;
                if *new_bytes > 0 {
                    snaps += 1;
                } else {
                    same += 1;
                }
                for m in missing {
                    eprintln!("partial: {}: {m}", r.full_name);
                }
            }
            RepoOutcome::Unchanged { .. } => same += 1,
            RepoOutcome::Failed { reason } => eprintln!("failed: {}: {reason}", r.full_name),
            RepoOutcome::Skipped { reason } | RepoOutcome::Deferred { reason } => {
                eprintln!("not backed up: {}: {reason}", r.full_name)
            }
        }
    }
    println!(
        "{}: {} repositories, {snaps} new snapshots, {same} unchanged, {}{} failed; {} stored in {:.1} s",
        report.connection,
        report.repositories.len(),
        if partial > 0 {
            format!("{partial} partial, ")
        } else {
            String::new()
        },
        report.failed(),
        human_bytes(report.new_bytes()),
        report.seconds
    );
}

pub fn snapshots(id: &RepoIdentity, snaps: &[Snapshot]) {
    if snaps.is_empty() {
        println!("{} has no snapshots", id.full_name);
        return;
    }
    // Histories of connections removed and added again under the same name get a column.
    let several = snaps
        .iter()
        .any(|s| s.repository.history_key() != id.history_key());
    let history = |s: &Snapshot| {
        let key = s.repository.history_key();
        if !several {
            String::new()
        } else if key == id.history_key() {
            format!(" {key} (restored by default)")
        } else {
            format!(" {key}")
        }
    };
    println!(
        "{:<26} {:<22} {:>6} {:>10}{}",
        "SNAPSHOT",
        "TAKEN (UTC)",
        "REFS",
        "NEW",
        if several { " CONNECTION ID" } else { "" }
    );
    for s in snaps {
        println!(
            "{:<26} {:<22} {:>6} {:>10}{}",
            s.id.as_str(),
            fmt_time(s.taken_at),
            s.git.ref_count,
            human_bytes(s.stats.new_bytes),
            history(s)
        );
    }
    if several {
        println!(
            "connections named {} were removed and added again: {} has one history per \
             connection (CONNECTION ID); `restore` uses {} unless given --snapshot ID",
            id.connection,
            id.full_name,
            id.history_key()
        );
    }
}

pub fn restored(r: &Restored) {
    let report = &r.report;
    println!(
        "restored {} snapshot {} (taken {}) to {}: {} refs from {} packs",
        r.repository,
        report.snapshot,
        fmt_time(report.taken_at),
        report.target,
        report.refs,
        report.packs
    );
    moved_aside(&report.target, report.replaced.as_deref());
    if report.lfs_objects > 0 {
        println!(
            "LFS: {} objects ({}) in {}/lfs/objects",
            report.lfs_objects,
            human_bytes(report.lfs_bytes),
            report.target
        );
    }
    if let Some(wiki) = &report.wiki {
        println!("wiki: {} refs to {}", wiki.refs, wiki.target);
        moved_aside(&wiki.target, wiki.replaced.as_deref());
    }
    if report.metadata_documents > 0 {
        println!(
            "metadata: {} in the snapshot are not part of a restore; \
             `reposafe export` writes them out",
            plural(report.metadata_documents, "document")
        );
    }
    missing(&report.missing);
}

/// Where the repository that was at `target` went, when a restore replaced it.
fn moved_aside(target: &str, replaced: Option<&str>) {
    if let Some(replaced) = replaced {
        println!(
            "the repository that was at {target} was moved aside to {replaced} (nothing was deleted)"
        );
    }
}

/// What a snapshot lacks, one line each.
fn missing(list: &[String]) {
    if !list.is_empty() {
        println!("missing from the snapshot:");
        for m in list {
            println!("  {m}");
        }
    }
}

pub fn shown(r: &ShowReport) {
    println!(
        "{} snapshot {} (taken {}, connection {})",
        r.repository,
        r.snapshot,
        fmt_time(r.taken_at),
        r.connection
    );
    println!("parts: {}", r.parts.join(", "));
    println!("git: {} refs, {} packs", r.git.refs, r.git.packs);
    if let Some(w) = &r.wiki {
        println!("wiki: {} refs, {} packs", w.refs, w.packs);
    }
    if let Some(l) = &r.lfs {
        let missing = if l.missing > 0 {
            format!(", {} missing", l.missing)
        } else {
            String::new()
        };
        println!(
            "lfs: {} objects, {}{missing}",
            l.objects,
            human_bytes(l.bytes)
        );
    }
    if !r.metadata.is_empty() {
        println!("metadata:");
        let width = r.metadata.keys().map(String::len).max().unwrap_or(0);
        for (kind, count) in &r.metadata {
            println!("  {kind:<width$}  {count}");
        }
    }
    missing(&r.missing);
}

/// One line per document: id, update time, title.
pub fn shown_items(k: &KindItems) {
    let width = k.items.iter().map(|i| i.id.len()).max().unwrap_or(2).max(2);
    println!("{:<width$}  {:<25}  TITLE", "ID", "UPDATED");
    for item in &k.items {
        let files = match item.files.len() {
            0 => String::new(),
            n => format!(" ({})", plural(n as u64, "file")),
        };
        println!(
            "{:<width$}  {:<25}  {}{files}",
            item.id,
            item.updated_on.as_deref().unwrap_or("-"),
            document_title(&item.document)
        );
    }
    println!("{} {}", k.items.len(), k.kind);
}

/// `1 document`, `2 documents`.
fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

pub fn exported(r: &ExportReport) {
    println!(
        "exported {} snapshot {} (taken {}) to {}",
        r.repository,
        r.snapshot,
        fmt_time(r.taken_at),
        r.target
    );
    println!("  repository.git: {} refs", r.refs);
    if r.lfs_objects > 0 {
        println!(
            "  repository.git/lfs/objects: {} LFS objects ({})",
            r.lfs_objects,
            human_bytes(r.lfs_bytes)
        );
    }
    if let Some(refs) = r.wiki_refs {
        println!("  wiki.git: {refs} refs");
    }
    for (kind, count) in &r.metadata {
        println!("  metadata/{kind}: {}", plural(*count, "document"));
    }
    if r.files > 0 {
        println!("  {} of documents", plural(r.files, "file"));
    }
    missing(&r.missing);
}

pub fn check(r: &CheckReport) {
    for d in &r.damaged {
        eprintln!("damaged blob {}: {}", d.blob, d.error);
        for u in &d.used_by {
            eprintln!(
                "  used by snapshot {} of {} ({})",
                u.snapshot, u.repository, u.part
            );
        }
    }
    for a in &r.affected {
        let intact = if a.intact_parts.is_empty() {
            "nothing".to_string()
        } else {
            a.intact_parts.join(", ")
        };
        let verdict = if a.restores {
            "the repository still restores"
        } else {
            "the repository does not restore from it"
        };
        eprintln!(
            "snapshot {} of {}: {verdict}; damaged: {}; intact: {intact}",
            a.snapshot,
            a.repository,
            a.damaged_parts.join(", ")
        );
    }
    for w in &r.index_warnings {
        eprintln!("warning: {w}");
    }
    let read = match (r.read_data, r.subset_percent) {
        (false, _) => "present (contents not read; --read-data reads them)".to_string(),
        (true, Some(p)) => format!(
            "present, {} of them read back ({p}% subset, {})",
            r.blobs_read,
            crate::fmt::human_bytes(r.bytes_read)
        ),
        (true, None) => format!(
            "present and read back ({})",
            crate::fmt::human_bytes(r.bytes_read)
        ),
    };
    for i in &r.incomplete {
        eprintln!(
            "snapshot {} of {} ({}): its packs lack what its refs reach, it does not restore: {}",
            i.snapshot, i.repository, i.part, i.error
        );
    }
    if r.snapshots_walked > 0 {
        println!(
            "walked the refs of {} snapshot parts through their packs: {}",
            r.snapshots_walked,
            if r.incomplete.is_empty() {
                "every object they reach is there".to_string()
            } else {
                format!("{} incomplete", r.incomplete.len())
            }
        );
    }
    println!(
        "checked {} snapshots, {} blobs {read}: {}",
        r.snapshots,
        r.blobs,
        if r.damaged.is_empty() && r.incomplete.is_empty() {
            "all intact".to_string()
        } else if r.damaged.is_empty() {
            format!("{} snapshot parts incomplete", r.incomplete.len())
        } else {
            format!(
                "{} damaged, affecting {} snapshots",
                r.damaged.len(),
                r.affected.len()
            )
        }
    );
}

/// `forget`: per repository, each snapshot kept (with the rules keeping it) or removed.
pub fn forgotten(r: &crate::engine::service::ForgetReport) {
    let (gone, went) = if r.dry_run {
        ("would remove", "would be removed")
    } else {
        ("remove", "removed")
    };
    for repo in &r.repositories {
        println!("{} (connection {}):", repo.repository, repo.connection);
        if let Some(why) = &repo.protected {
            println!("  {why}");
        }
        for s in &repo.snapshots {
            let when = crate::fmt::fmt_time(s.taken_at);
            if s.keep {
                println!("  keep   {}  {when}  ({})", s.id, s.reasons.join(", "));
            } else {
                println!("  {gone} {}  {when}", s.id);
            }
        }
    }
    println!(
        "{} snapshots {went}, {} kept, in {} repositories{}",
        r.removed,
        r.kept,
        r.repositories.len(),
        if r.removed > 0 && r.prune.is_none() {
            " (their data stays in the archive until `reposafe prune`)"
        } else {
            ""
        }
    );
    if let Some(p) = &r.prune {
        pruned(p);
    }
}

/// `prune`: each consolidated history, then what the sweep freed.
pub fn pruned(r: &crate::engine::service::PruneReport) {
    use crate::fmt::human_bytes;
    for h in &r.histories {
        if r.dry_run {
            println!(
                "would consolidate {} ({}, {}): {} packs, {}, named by {} snapshots",
                h.repository,
                h.connection,
                h.part,
                h.packs_before,
                human_bytes(h.bytes_before),
                h.snapshots
            );
        } else {
            println!(
                "{} ({}, {}): {} packs ({}, {} objects) → 1 pack ({}, {} objects); mirror dropped {} packs",
                h.repository,
                h.connection,
                h.part,
                h.packs_before,
                human_bytes(h.bytes_before),
                h.objects_before,
                human_bytes(h.bytes_after),
                h.objects_after,
                h.mirror_packs_removed
            );
        }
    }
    for f in &r.failed {
        eprintln!("{f}");
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "{} histories consolidated; {verb} {} in {} blobs; archive {} → {} ({:.1} s)",
        r.histories.len(),
        human_bytes(r.bytes_freed),
        r.blobs_removed,
        human_bytes(r.archive_bytes_before),
        human_bytes(r.archive_bytes_after),
        r.seconds
    );
}

/// Which metadata kinds a connection's credential can read (`connection test`).
pub fn kind_access(kinds: &[crate::engine::KindAccess]) {
    if kinds.is_empty() {
        return;
    }
    let readable: Vec<&str> = kinds
        .iter()
        .filter(|k| k.readable)
        .map(|k| k.kind.as_str())
        .collect();
    println!("it can read: {}", readable.join(", "));
    for k in kinds.iter().filter(|k| !k.readable) {
        println!(
            "it cannot read {}: {}",
            k.kind,
            k.reason.as_deref().unwrap_or("refused")
        );
    }
}

/// What a restore into a provider did, per repository and part.
pub fn restored_into(r: &crate::engine::restore_into::RestoredInto) {
    use crate::engine::restore_into::PartStatus;
    for repo in &r.repositories {
        if repo.status == PartStatus::Failed {
            println!(
                "FAILED {} → {} {}: {}",
                repo.source,
                repo.connection,
                repo.target,
                repo.error.as_deref().unwrap_or("see the parts below")
            );
        } else {
            println!(
                "{} {} snapshot {} (taken {}) into {} {}{}",
                repo.status.as_str(),
                repo.source,
                repo.snapshot,
                fmt_time(repo.taken_at),
                repo.connection,
                repo.target,
                if repo.created { " (created)" } else { "" }
            );
        }
        if let Some(g) = &repo.git {
            println!(
                "  git: {} refs pushed ({} sent), {} already there",
                g.pushed.len(),
                human_bytes(g.pack_bytes),
                g.unchanged
            );
            for (from, to) in &g.renamed {
                println!("    {from} differs there: pushed as {to}");
            }
            for (name, why) in &g.skipped {
                println!("    skipped {name}: {why}");
            }
            for (name, why) in &g.refused {
                println!("    REFUSED {name}: {why}");
            }
        }
        for p in &repo.parts {
            println!("  {}: {} — {}", p.part, p.status.as_str(), p.detail);
            for n in &p.needs_user {
                println!("    for you to do: {n}");
            }
            for n in &p.problems {
                println!("    not restored: {n}");
            }
        }
    }
}

/// `connection webhook`: what to paste into Bitbucket's webhook form.
pub fn webhook(info: &crate::engine::service::WebhookInfo) {
    use secrecy::ExposeSecret;
    match &info.url {
        Some(url) => println!("url: {url}"),
        None => println!(
            "url: <daemon url>{} (no daemon serves this data dir: use the address `reposafe serve` is reached at)",
            info.path
        ),
    }
    println!("secret: {}", info.secret.expose_secret());
    println!(
        "In Bitbucket: repository or workspace settings → Webhooks → add, with this URL and secret, \
         trigger \"Repository push\" (Data Center: \"Push\"). A burst of pushes to one repository \
         is backed up once, {} s after the last push.",
        info.delay_secs
    );
}

/// `connection webhook --register`: where the webhook now is.
pub fn webhook_registered(done: &crate::engine::service::WebhookRegistration) {
    println!("url: {}", done.url);
    for r in &done.registered {
        let how = if r.updated { "updated" } else { "added" };
        println!("{how}: webhook {} on {}", r.id, r.target);
    }
    for f in &done.failed {
        println!("failed on {}: {}", f.scope, f.error);
    }
    if let Ok(parsed) = url::Url::parse(&done.url) {
        let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if local {
            println!(
                "note: {} is this machine's loopback address; Bitbucket Cloud cannot reach it \
                 (use --url with the address it can reach)",
                done.url
            );
        }
    }
}

/// `audit`: one line an entry, newest first.
pub fn audit(entries: &[crate::engine::service::AuditEntry]) {
    if entries.is_empty() {
        println!("the audit log is empty");
    }
    for e in entries {
        let detail = e
            .detail
            .as_deref()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default();
        println!(
            "{:>6}  {}  {:<18}  {:<24}  {}{detail}",
            e.seq,
            crate::fmt::fmt_time(e.time),
            e.actor.to_string(),
            e.action,
            e.object
        );
    }
}

pub fn archive(info: &crate::engine::service::ArchiveInfo) {
    match &info.endpoint {
        Some(endpoint) => println!("archive: {} (endpoint {endpoint})", info.location),
        None => println!("archive: {}", info.location),
    }
    if let Some(keys) = &info.s3_keys {
        println!("S3 keys: {keys}");
    }
    if let Some(trust) = &info.s3_tls_trust {
        println!("TLS: the endpoint's certificate is checked against {trust}");
    }
    if let Some(reason) = &info.unavailable {
        println!("unavailable: {reason}");
    }
    match (info.encrypted, &info.recipient) {
        (Some(true), Some(recipient)) => {
            println!("encrypted: yes (age, to {recipient})");
            for k in &info.keys {
                println!("  key {}: opened by {}", k.name, k.opens_with);
            }
        }
        (Some(true), None) => println!("encrypted: yes"),
        (Some(false), _) => println!("encrypted: no"),
        (None, _) => println!("encrypted: not known while the archive is unavailable"),
    }
    if let (Some(snapshots), Some(bytes)) = (info.snapshots, info.stored_bytes) {
        println!(
            "{snapshots} snapshot(s), {} stored",
            crate::fmt::human_bytes(bytes)
        );
    }
    if let (Some(free), Some(size)) = (info.disk_free_bytes, info.disk_bytes) {
        let percent = (u128::from(free) * 100)
            .checked_div(u128::from(size))
            .unwrap_or(0);
        println!(
            "its disk: {} free of {} ({percent}%)",
            crate::fmt::human_bytes(free),
            crate::fmt::human_bytes(size)
        );
    }
    for t in &info.copy_targets {
        println!("copy target {}: {}", t.name, t.location);
    }
}

pub fn archive_copy(report: &crate::engine::archive_copy::ArchiveCopyReport) {
    let t = &report.tally;
    println!("copied {} to {}", report.from, report.to);
    println!(
        "blobs: {} copied, {} damaged there and written again ({} in all); {} there already \
         and read back, {} verified by an earlier copy",
        t.blobs_copied,
        t.blobs_repaired,
        crate::fmt::human_bytes(t.bytes_copied),
        t.blobs_checked,
        t.blobs_verified_before
    );
    println!(
        "snapshots: {} copied, {} there already; {} index entries copied; {:.1} s",
        t.snapshots_copied, t.snapshots_present, t.index_entries_copied, report.seconds
    );
    for failure in &t.failed {
        println!("not copied: {failure}");
    }
}
