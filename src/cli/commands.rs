//! Every command but `serve`, written once over a [`Service`]: the engine in this
//! process, or a running daemon's API. Arguments become a typed request, the report
//! is printed by `output`; which service answered never changes what is printed.

use super::args::{
    parse_time, AddArgs, BackupArgs, Command, ConnectionCmd, CredentialCmd, ExportArgs, ForgetArgs,
    JobsCmd, KeepArgs, PlanAddArgs, PlanCmd, PruneArgs, RestoreArgs, RunArgs, ShowArgs,
    SnapshotArgs, TlsArgs,
};
use super::output;
use super::progress::CliObserver;
use crate::engine::service::{
    AddConnection, AddCredential, AuditQuery, BackupRequest, CheckRequest, CredentialInput,
    EditConnection, ExportRequest, ForgetRequest, PruneRequest, RegisterWebhook, RestoreRequest,
    RestoreTarget, RotateCredential, RunRequest, SetTls, ShowRequest, SnapshotsRequest,
    WebhookInfo,
};
use crate::engine::types::{ConnectionTls, Job, JobState, PlanSpec};
use crate::engine::{retention, Quiet, Service};
use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;

/// Runs one command; returns the exit code.
pub fn execute(service: &dyn Service, cmd: Command) -> Result<i32> {
    match cmd {
        Command::Serve(_) => bail!("internal: `serve` is not a service command"),
        Command::Providers => output::providers(&service.providers()?),
        Command::Connection(c) => return connection(service, *c),
        Command::Plan(p) => plan(service, *p)?,
        Command::Run(args) => return run(service, args),
        Command::Jobs(j) => return jobs(service, j),
        Command::Backup(args) => return backup(service, args),
        Command::Repositories(args) => {
            for r in service.repositories(args.connection.as_deref())? {
                println!(
                    "{}  {}  last snapshot: {}",
                    r.connection,
                    r.full_name,
                    r.last_snapshot.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Snapshots(args) => {
            let list = service.snapshots(SnapshotsRequest {
                repository: args.repository,
                connection: args.connection,
                at: None,
            })?;
            if args.json {
                output::json(&list.snapshots)?;
            } else {
                output::snapshots(&list.repository, &list.snapshots);
            }
        }
        Command::Restore(args) => return restore(service, args),
        Command::Show(args) => show(service, args)?,
        Command::Export(args) => export(service, args)?,
        Command::Forget(args) => forget(service, args)?,
        Command::Prune(args) => return prune(service, args),
        Command::Check(args) => {
            let report = service.check(CheckRequest {
                read_data: args.read_data,
                subset_percent: args.subset,
            })?;
            output::check(&report);
            let whole = report.damaged.is_empty() && report.incomplete.is_empty();
            return Ok(if whole { 0 } else { 1 });
        }
        Command::Notifications(args) => return super::notifications::execute(service, args),
        Command::Archive(cmd) => return super::archive::execute(service, cmd),
        Command::Audit(args) => {
            let entries = service.audit(AuditQuery {
                limit: args.limit,
                before: args.before,
            })?;
            if args.json {
                output::json(&entries)?;
            } else {
                output::audit(&entries);
            }
        }
    }
    Ok(0)
}

fn export(service: &dyn Service, args: ExportArgs) -> Result<()> {
    let (repository, connection, snapshot, at) = snapshot_choice(args.snapshot)?;
    // Resolved here: a daemon may run in another working directory.
    let to =
        std::path::absolute(&args.to).with_context(|| format!("--to {}", args.to.display()))?;
    let report = service.export(ExportRequest {
        repository,
        connection,
        snapshot,
        at,
        to: to.display().to_string(),
    })?;
    if args.json {
        output::json(&report)?;
    } else {
        output::exported(&report);
    }
    Ok(())
}

fn forget(service: &dyn Service, args: ForgetArgs) -> Result<()> {
    let json = args.json;
    let observer = CliObserver::default();
    let report = service.forget(forget_request(args)?, &observer);
    observer.finish();
    let report = report?;
    if json {
        output::json(&report)?;
    } else {
        output::forgotten(&report);
    }
    Ok(())
}

/// Exit code 1 when a history could not be consolidated.
fn prune(service: &dyn Service, args: PruneArgs) -> Result<i32> {
    let observer = CliObserver::default();
    let report = service.prune(
        PruneRequest {
            dry_run: args.dry_run,
        },
        &observer,
    );
    observer.finish();
    let report = report?;
    if args.json {
        output::json(&report)?;
    } else {
        output::pruned(&report);
    }
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

fn connection(service: &dyn Service, cmd: ConnectionCmd) -> Result<i32> {
    match cmd {
        ConnectionCmd::Add(a) => {
            let added = service.add_connection(add_connection_request(&a)?)?;
            output::warnings(&added.warnings);
            output::connection_added(&added.connection);
        }
        ConnectionCmd::List => output::connections(&service.connections()?),
        ConnectionCmd::Test { name } => {
            let tested = service.test_connection(&name)?;
            let keys: Vec<&str> = tested.scopes.iter().map(|s| s.key.as_str()).collect();
            println!("connection {name} works; it sees: {}", keys.join(", "));
            output::kind_access(&tested.kinds);
        }
        ConnectionCmd::Remove { name } => {
            service.remove_connection(&name)?;
            println!("removed connection {name} (its snapshots stay in the archive)");
        }
        ConnectionCmd::Credential(c) => credential(service, *c)?,
        ConnectionCmd::Tls(a) => tls(service, a)?,
        ConnectionCmd::Webhook {
            name,
            rotate,
            register,
            url,
        } => {
            let info = if rotate {
                service.rotate_webhook_secret(&name)?
            } else {
                service.webhook(&name)?
            };
            if register {
                register_webhook(service, &name, url, &info)?;
            } else {
                output::webhook(&info);
            }
        }
        ConnectionCmd::Rotate(a) => {
            let req = RotateCredential {
                credential: CredentialInput::from_credential(a.cred.credential()?),
                verify: !a.no_verify,
            };
            let rotated = service.rotate_credential(&a.name, req)?;
            output::warnings(&rotated.warnings);
            output::credential_rotated(&rotated.connection);
        }
        ConnectionCmd::Edit(a) => {
            let mut settings = std::collections::BTreeMap::new();
            for kv in &a.set {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set {kv:?} must look like name=value"))?;
                settings.insert(k.trim().to_string(), v.trim().to_string());
            }
            let req = EditConnection {
                read_only: a.read_only,
                allow_restore: a.allow_restore,
                rate_limit: a.rate_limit,
                settings,
            };
            output::connection_edited(&service.edit_connection(&a.name, req)?);
        }
    }
    Ok(0)
}

fn add_connection_request(a: &AddArgs) -> Result<AddConnection> {
    Ok(AddConnection {
        name: a.connection_name()?,
        provider: a.provider.clone(),
        settings: a.settings()?,
        credential: CredentialInput::from_credential(a.credential()?),
        verify: !a.no_verify,
        read_only: a.read_only,
        allow_restore: a.allow_restore,
        rate_limit: a.rate_limit.clone(),
        tls: tls_from(a.ca_bundle.as_ref(), a.insecure_skip_tls_verify)?,
    })
}

/// The certificate trust flags describe: a CA bundle's contents are read and sent as
/// they are (the engine checks every certificate in it before storing it).
fn tls_from(ca_bundle: Option<&PathBuf>, insecure: bool) -> Result<ConnectionTls> {
    let Some(path) = ca_bundle else {
        return Ok(ConnectionTls {
            insecure,
            ..ConnectionTls::default()
        });
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
    Ok(ConnectionTls {
        ca_bundle_pem: Some(pem),
        ca_bundle_file: Some(path.display().to_string()),
        insecure: false,
    })
}

fn tls(service: &dyn Service, a: TlsArgs) -> Result<()> {
    let tls = tls_from(a.ca_bundle.as_ref(), a.insecure_skip_tls_verify)?;
    let changed = service.set_connection_tls(
        &a.name,
        SetTls {
            tls,
            verify: !a.no_verify,
        },
    )?;
    output::warnings(&changed.warnings);
    output::tls_changed(&a.name, &changed.tls);
    Ok(())
}

fn credential(service: &dyn Service, cmd: CredentialCmd) -> Result<()> {
    match cmd {
        CredentialCmd::Add(a) => {
            let cred = a.cred.credential()?;
            let added = service.add_credential(
                &a.name,
                AddCredential {
                    kind: cred.kind.as_str().to_string(),
                    identity: cred.identity,
                    secret: cred.secret,
                    project: if a.additional {
                        None
                    } else {
                        a.project.clone()
                    },
                    label: a.label.clone(),
                    verify: !a.no_verify,
                },
            )?;
            output::warnings(&added.warnings);
            output::credential_added(&a.name, &added);
        }
        CredentialCmd::List { name } => output::credentials(&service.credentials(&name)?),
        CredentialCmd::Remove { name, project, id } => {
            let id = match (project, id) {
                (Some(p), _) => crate::engine::credentials::project_credential_id(&p),
                (None, Some(id)) => id,
                (None, None) => bail!("give --project KEY or --id ID"),
            };
            service.remove_credential(&name, &id)?;
            output::credential_removed(&name, &id);
        }
        CredentialCmd::Enable { name, id } => {
            service.set_credential_enabled(&name, &id, true)?;
            println!("additional credential {id} of connection {name} enabled");
        }
        CredentialCmd::Disable { name, id } => {
            service.set_credential_enabled(&name, &id, false)?;
            println!("additional credential {id} of connection {name} disabled");
        }
        CredentialCmd::Test { name, id } => {
            let tested = service.test_credential(&name, &id)?;
            println!(
                "credential {id} of connection {name} works; it sees {} scopes",
                tested.scopes
            );
        }
    }
    Ok(())
}

fn spec_of(a: PlanAddArgs) -> Result<PlanSpec> {
    Ok(PlanSpec {
        name: a.name,
        connections: a.connections,
        include: if a.include.is_empty() {
            vec!["*".into()]
        } else {
            a.include
        },
        exclude: a.exclude,
        auto_add: !a.no_auto_add,
        schedule: a.schedule,
        timezone: a.timezone,
        window: a.window,
        concurrency: a.concurrency,
        read_only: a.read_only,
        enabled: !a.disabled,
        run_missed: !a.no_run_missed,
        additional_credentials: match a.additional_credentials.as_deref() {
            None => Vec::new(),
            Some("all") | Some("*") => vec!["*".into()],
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        },
        metadata_every: a.metadata_every,
        retention: policy_of(&a.keep)?,
        keep_deleted_for: a.keep.keep_deleted_for,
        check_every: a.check_every,
        check_subset: a.check_subset,
        copy_to: a.copy_to,
    })
}

fn plan(service: &dyn Service, cmd: PlanCmd) -> Result<()> {
    match cmd {
        PlanCmd::Add(a) => {
            let p = service.add_plan(spec_of(*a)?)?;
            println!("added plan {}", p.spec.name);
            output::plan(&p);
        }
        PlanCmd::List => service.plans()?.iter().for_each(output::plan),
        PlanCmd::Show { name } => output::json(&service.plan(&name)?)?,
        PlanCmd::Remove { name } => {
            service.remove_plan(&name)?;
            println!("removed plan {name}");
        }
    }
    Ok(())
}

fn exit_code(j: &Job) -> i32 {
    match j.state {
        JobState::Succeeded => 0,
        _ => 1,
    }
}

/// Shows a followed job's end.
fn finished(job: &Job, json: bool) -> Result<i32> {
    if json {
        output::json(job)?;
    } else {
        output::job(job, &[]);
    }
    Ok(exit_code(job))
}

fn run(service: &dyn Service, args: RunArgs) -> Result<i32> {
    let req = match (&args.plan, &args.connection, &args.repository) {
        (Some(_), None, None) | (None, Some(_), None) | (None, _, Some(_)) => RunRequest {
            plan: args.plan.clone(),
            connection: args.connection.clone(),
            repository: args.repository.clone(),
        },
        _ => bail!("run what? give a repository (scope/slug), --plan NAME or --connection NAME"),
    };
    if args.detach {
        let job = service.submit(req)?;
        println!("queued job {}", job.id);
        return Ok(0);
    }
    let observer = CliObserver::default();
    let job = service.run(req, &observer);
    observer.finish();
    finished(&job?, args.json)
}

fn jobs(service: &dyn Service, cmd: JobsCmd) -> Result<i32> {
    match cmd {
        JobsCmd::List { limit, json } => {
            let list = service.jobs(limit)?;
            if json {
                output::json(&list)?;
            } else {
                output::jobs(&list);
            }
        }
        JobsCmd::Show { id, json } => {
            let job = service.job(id)?;
            let results = service.job_results(id)?;
            if json {
                output::json(&serde_json::json!({ "job": job, "results": results }))?;
            } else {
                output::job(&job, &results);
            }
        }
        JobsCmd::Watch { id } => {
            let observer = CliObserver::default();
            let job = service.watch(id, &observer);
            observer.finish();
            return finished(&job?, false);
        }
        JobsCmd::Cancel { id } => {
            let job = service.cancel(id)?;
            println!("job {id}: {}", job.state);
        }
    }
    Ok(0)
}

fn backup(service: &dyn Service, args: BackupArgs) -> Result<i32> {
    let req = BackupRequest {
        connections: args.connections,
        all: args.all,
        repositories: args.repo,
        parallel: Some(args.parallel),
        taken_at: args
            .time
            .as_deref()
            .map(|t| parse_time(t).context("--time"))
            .transpose()?,
    };
    let observer = CliObserver::default();
    let reports = service.backup(req, &observer);
    observer.finish();
    let reports = reports?;
    let mut failed = 0;
    for report in &reports {
        if args.json {
            output::json(report)?;
        } else {
            output::backup(report);
        }
        failed += report.failed();
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn restore(service: &dyn Service, args: RestoreArgs) -> Result<i32> {
    if args.at.is_some() && args.snapshot.is_some() {
        bail!("give either --at or --snapshot, not both");
    }
    let at = args
        .at
        .as_deref()
        .map(|t| parse_time(t).context("--at"))
        .transpose()?;
    if let Some(connection) = args.to_connection {
        let req = RestoreRequest {
            repository: args.repository.unwrap_or_default(),
            connection: args.connection,
            snapshot: args.snapshot,
            at,
            to: String::new(),
            force: false,
            target: Some(RestoreTarget {
                connection,
                as_name: args.as_name,
                project: args.project,
                into_existing: args.into_existing,
                prefix: args.prefix,
            }),
        };
        // The job's progress (repositories, the step each is at) as it goes.
        let observer = CliObserver::default();
        let report = service.restore_into(req, &observer);
        observer.finish();
        let report = report?;
        output::restored_into(&report);
        let failed = report
            .repositories
            .iter()
            .any(|r| r.status == crate::engine::restore_into::PartStatus::Failed);
        return Ok(if failed { 1 } else { 0 });
    }
    let (Some(repository), Some(to)) = (args.repository, args.to) else {
        bail!("name the repository and the target directory (--to), or --to-connection");
    };
    // The target is resolved here: a daemon may run in another working directory.
    let to = std::path::absolute(&to).with_context(|| format!("--to {}", to.display()))?;
    let req = RestoreRequest {
        repository,
        connection: args.connection,
        snapshot: args.snapshot,
        at,
        to: to.display().to_string(),
        force: args.force,
        target: None,
    };
    // A restore reports once, at its end (in process it has no progress to show).
    output::restored(&service.restore(req, &Quiet)?);
    Ok(0)
}

type Choice = (
    String,
    Option<String>,
    Option<String>,
    Option<time::OffsetDateTime>,
);

/// Repository, connection, snapshot id and time of `show`/`export`.
fn snapshot_choice(args: SnapshotArgs) -> Result<Choice> {
    let at = args
        .at
        .as_deref()
        .map(|t| parse_time(t).context("--at"))
        .transpose()?;
    Ok((args.repository, args.connection, args.snapshot, at))
}

fn show(service: &dyn Service, args: ShowArgs) -> Result<()> {
    let (repository, connection, snapshot, at) = snapshot_choice(args.snapshot)?;
    let report = service.show(ShowRequest {
        repository,
        connection,
        snapshot,
        at,
        kind: args.kind,
    })?;
    match (&report.kind, args.json) {
        (Some(kind), true) => output::json(&kind.items)?,
        (Some(kind), false) => output::shown_items(kind),
        (None, true) => output::json(&report)?,
        (None, false) => output::shown(&report),
    }
    Ok(())
}

/// `connection webhook NAME --register`: the webhook added in Bitbucket, at `url`
/// or else the address the daemon serves at.
fn register_webhook(
    service: &dyn Service,
    name: &str,
    url: Option<String>,
    info: &WebhookInfo,
) -> Result<()> {
    let daemon_base = info
        .url
        .as_deref()
        .and_then(|u| u.strip_suffix(info.path.as_str()))
        .map(str::to_string);
    let Some(base) = url.or(daemon_base) else {
        bail!(
            "--url is needed: no daemon serves this data dir, so give the address Bitbucket \
             reaches `reposafe serve` at (e.g. --url https://backup.example.com)"
        );
    };
    let done = service.register_webhook(name, RegisterWebhook { url: base })?;
    output::webhook_registered(&done);
    Ok(())
}

/// The retention rules given (`--gfs` expanded; other flags override its numbers),
/// `None` when there are none.
fn policy_of(k: &KeepArgs) -> Result<Option<retention::Policy>> {
    let base = if k.gfs {
        retention::Policy::gfs()
    } else {
        retention::Policy::default()
    };
    let policy = retention::Policy {
        keep_last: k.keep_last.or(base.keep_last),
        keep_hourly: k.keep_hourly.or(base.keep_hourly),
        keep_daily: k.keep_daily.or(base.keep_daily),
        keep_weekly: k.keep_weekly.or(base.keep_weekly),
        keep_monthly: k.keep_monthly.or(base.keep_monthly),
        keep_yearly: k.keep_yearly.or(base.keep_yearly),
        keep_within_secs: duration_flag("keep-within", k.keep_within.as_deref())?,
    };
    Ok((!policy.is_empty()).then_some(policy))
}

fn duration_flag(flag: &str, value: Option<&str>) -> Result<Option<u64>> {
    value
        .map(|s| retention::parse_duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

/// `forget`'s flags as the engine's request.
fn forget_request(args: ForgetArgs) -> Result<ForgetRequest> {
    Ok(ForgetRequest {
        repository: args.repository,
        connection: args.connection,
        all: args.all,
        policy: policy_of(&args.keep)?.unwrap_or_default(),
        keep_deleted_for_secs: duration_flag(
            "keep-deleted-for",
            args.keep.keep_deleted_for.as_deref(),
        )?,
        zone: args.zone,
        dry_run: args.dry_run,
        prune: args.prune,
    })
}
