//! The commands that work both through a running daemon's API and directly on
//! the data dir: plans, run now, jobs, and (through the API) connections,
//! snapshots and restore. Output is the same either way.

use super::args::{Command, ConnectionCmd, JobsCmd, PlanAddArgs, PlanCmd, RunArgs};
use super::connection_extras::CredentialCmd;
use super::progress::JobBar;
use super::remote::{q, Remote};
use super::{fmt_time, human_bytes};
use crate::archive::{RepoIdentity, Snapshot};
use crate::engine::plans::{self, RunTarget};
use crate::engine::{Context, Jobs, RunnerConfig};
use crate::state::{
    Connection, Job, JobKind, JobRecordResult, JobState, Plan, PlanSpec, RepoRecord, Trigger,
};
use anyhow::{bail, Context as _, Result};
use secrecy::ExposeSecret;
use serde_json::json;
use std::sync::Arc;

fn spec_of(a: PlanAddArgs) -> PlanSpec {
    PlanSpec {
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
    }
}

fn print_plan(p: &Plan) {
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
}

fn state_name(s: JobState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn describe(j: &Job) -> String {
    match &j.kind {
        JobKind::Backup { plan: Some(p), .. } => format!("plan {p}"),
        JobKind::Backup { targets, .. } => targets
            .iter()
            .map(|t| {
                if t.only.is_empty() {
                    format!("connection {}", t.connection)
                } else {
                    t.only.join(",")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        JobKind::Restore { repository, to, .. } => format!("restore {repository} to {to}"),
    }
}

fn print_jobs(jobs: &[Job]) {
    println!(
        "{:>6} {:<11} {:<9} {:<20} {:>9} {:>7} {:>10}  WHAT",
        "JOB", "STATE", "TRIGGER", "STARTED (UTC)", "DONE", "FAILED", "STORED"
    );
    for j in jobs {
        println!(
            "{:>6} {:<11} {:<9} {:<20} {:>9} {:>7} {:>10}  {}",
            j.id,
            state_name(j.state),
            format!("{:?}", j.trigger).to_lowercase(),
            j.started_at.map(fmt_time).unwrap_or_else(|| "-".into()),
            format!("{}/{}", j.progress.repos_done, j.progress.repos_total),
            j.progress.failed,
            human_bytes(j.progress.bytes_stored),
            describe(j)
        );
    }
}

fn print_job(j: &Job, results: &[JobRecordResult]) {
    let p = &j.progress;
    println!(
        "job {} ({}): {}; {} repositories: {} new snapshots, {} unchanged, {} failed, {} skipped, {} deferred; {} fetched, {} stored",
        j.id,
        describe(j),
        state_name(j.state),
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

fn exit_code(j: &Job) -> i32 {
    match j.state {
        JobState::Succeeded => 0,
        _ => 1,
    }
}

fn run_target(args: &RunArgs) -> Result<RunTarget> {
    Ok(match (&args.plan, &args.connection, &args.repository) {
        (Some(p), None, None) => RunTarget::Plan(p.clone()),
        (None, Some(c), None) => RunTarget::Connection(c.clone()),
        (None, c, Some(repo)) => RunTarget::Repository {
            repository: repo.clone(),
            connection: c.clone(),
        },
        _ => bail!("run what? give a repository (scope/slug), --plan NAME or --connection NAME"),
    })
}

/// `reposafe plan ...` on the data dir.
pub fn plan_local(ctx: &Context, cmd: PlanCmd) -> Result<i32> {
    match cmd {
        PlanCmd::Add(a) => {
            let p = plans::create_plan(ctx, spec_of(a))?;
            println!("added plan {}", p.spec.name);
            print_plan(&p);
        }
        PlanCmd::List => ctx.state.plans()?.iter().for_each(print_plan),
        PlanCmd::Show { name } => {
            let p = ctx.state.plan(&name)?;
            println!("{}", serde_json::to_string_pretty(&p)?);
        }
        PlanCmd::Remove { name } => {
            ctx.state.remove_plan(&name)?;
            println!("removed plan {name}");
        }
    }
    Ok(0)
}

/// `reposafe run ...` in this process (no daemon on the data dir).
pub fn run_local(ctx: Context, args: RunArgs) -> Result<i32> {
    if args.detach {
        bail!("--detach needs a running daemon (`reposafe serve`) on this data dir");
    }
    let kind = plans::job_for(&ctx, &run_target(&args)?)?;
    let label = describe_kind(&kind);
    let jobs = Jobs::new(Arc::new(ctx), RunnerConfig::default())?;
    finish_run(
        args.json,
        |bar| Ok(jobs.run_now(kind, Trigger::Manual, &|j| bar.update(j))?),
        &label,
    )
}

fn describe_kind(kind: &JobKind) -> String {
    describe(&Job {
        id: 0,
        kind: kind.clone(),
        trigger: Trigger::Manual,
        state: JobState::Queued,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        not_before: None,
        started_at: None,
        finished_at: None,
        progress: Default::default(),
        error: None,
        deferred: vec![],
    })
}

fn finish_run(json: bool, f: impl FnOnce(&JobBar) -> Result<Job>, label: &str) -> Result<i32> {
    let bar = JobBar::new(label);
    let job = f(&bar);
    bar.finish();
    let job = job?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        print_job(&job, &[]);
    }
    Ok(exit_code(&job))
}

/// `reposafe jobs ...` on the data dir.
pub fn jobs_local(ctx: &Context, cmd: JobsCmd) -> Result<i32> {
    match cmd {
        JobsCmd::List { limit, json } => {
            let jobs = ctx.state.jobs(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                print_jobs(&jobs);
            }
        }
        JobsCmd::Show { id, json } => {
            let j = ctx.state.job(id)?;
            let r = ctx.state.job_results(id)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"job": j, "results": r}))?
                );
            } else {
                print_job(&j, &r);
            }
        }
        JobsCmd::Watch { .. } | JobsCmd::Cancel { .. } => {
            bail!("no daemon runs on this data dir, so no job is running (start `reposafe serve`)")
        }
    }
    Ok(0)
}

pub(super) fn print_snapshots(id: &RepoIdentity, snaps: &[Snapshot], json_out: bool) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(snaps)?);
    } else if snaps.is_empty() {
        println!("{} has no snapshots", id.full_name);
    } else {
        println!(
            "{:<26} {:<22} {:>6} {:>10}",
            "SNAPSHOT", "TAKEN (UTC)", "REFS", "NEW"
        );
        for s in snaps {
            println!(
                "{:<26} {:<22} {:>6} {:>10}",
                s.id.as_str(),
                fmt_time(s.taken_at),
                s.ref_count,
                human_bytes(s.stats.new_bytes)
            );
        }
    }
    Ok(())
}

fn follow(r: &Remote, job: Job, json_out: bool) -> Result<i32> {
    let label = describe(&job);
    finish_run(json_out, |bar| r.watch(job.id, &|j| bar.update(j)), &label)
}

/// Every API-capable command, through a running daemon.
pub fn remote(r: &Remote, cmd: Command) -> Result<i32> {
    match cmd {
        Command::Connection(c) => match *c {
            ConnectionCmd::Add(a) => {
                let cred = a.credential()?;
                let settings = a.settings()?;
                let name = a.connection_name()?;
                let out: serde_json::Value = r.post(
                    "/api/v1/connections",
                    &json!({
                        "name": name,
                        "provider": a.provider,
                        "settings": settings,
                        "credential": {
                            "kind": cred.kind.as_str(),
                            "identity": cred.identity,
                            "secret": cred.secret.expose_secret(),
                        },
                        "verify": !a.no_verify,
                        "read_only": a.read_only,
                        "rate_limit": a.rate_limit,
                        "tls": super::connection_extras::connection_tls(&a)?,
                    }),
                )?;
                if let Some(ws) = out.get("warnings").and_then(|w| w.as_array()) {
                    for w in ws.iter().filter_map(|w| w.as_str()) {
                        eprintln!("warning: {w}");
                    }
                }
                let conn: Connection = serde_json::from_value(out["connection"].clone())?;
                println!(
                    "added connection {} ({}, {} credential{})",
                    conn.name,
                    conn.provider,
                    conn.credential_kind,
                    conn.credential_identity
                        .map(|i| format!(" for {i}"))
                        .unwrap_or_default()
                );
            }
            ConnectionCmd::List => {
                let conns: Vec<Connection> = r.get("/api/v1/connections")?;
                for c in conns {
                    let settings: Vec<String> =
                        c.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{}  {}  {} {} ********  {}",
                        c.name,
                        c.provider,
                        c.credential_kind,
                        c.credential_identity.as_deref().unwrap_or(""),
                        settings.join(" ")
                    );
                }
            }
            ConnectionCmd::Test { name } => {
                let out: serde_json::Value = r.post(
                    &format!("/api/v1/connections/{}/test", q(&name)),
                    &json!({}),
                )?;
                let scopes: Vec<&str> = out["scopes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s["key"].as_str()).collect())
                    .unwrap_or_default();
                println!("connection {name} works; it sees: {}", scopes.join(", "));
            }
            ConnectionCmd::Credential(c) => return remote_credential(r, *c),
            ConnectionCmd::Tls(_) => bail!(
                "TLS trust is changed on the data dir directly: \
                 stop the daemon first (e.g. `systemctl stop reposafe`)"
            ),
            ConnectionCmd::Remove { name } => {
                let _: serde_json::Value =
                    r.delete(&format!("/api/v1/connections/{}", q(&name)))?;
                println!("removed connection {name} (its snapshots stay in the archive)");
            }
        },
        Command::Plan(p) => match *p {
            PlanCmd::Add(a) => {
                let p: Plan = r.post("/api/v1/plans", &serde_json::to_value(spec_of(a))?)?;
                println!("added plan {}", p.spec.name);
                print_plan(&p);
            }
            PlanCmd::List => {
                let plans: Vec<Plan> = r.get("/api/v1/plans")?;
                plans.iter().for_each(print_plan);
            }
            PlanCmd::Show { name } => {
                let p: Plan = r.get(&format!("/api/v1/plans/{}", q(&name)))?;
                println!("{}", serde_json::to_string_pretty(&p)?);
            }
            PlanCmd::Remove { name } => {
                let _: serde_json::Value = r.delete(&format!("/api/v1/plans/{}", q(&name)))?;
                println!("removed plan {name}");
            }
        },
        Command::Run(args) => {
            let body = match (&args.plan, &args.connection, &args.repository) {
                (Some(p), None, None) => json!({ "plan": p }),
                (None, Some(c), None) => json!({ "connection": c }),
                (None, c, Some(repo)) => json!({ "repository": repo, "connection": c }),
                _ => bail!(
                    "run what? give a repository (scope/slug), --plan NAME or --connection NAME"
                ),
            };
            let job: Job = r.post("/api/v1/run", &body)?;
            if args.detach {
                println!("queued job {}", job.id);
                return Ok(0);
            }
            return follow(r, job, args.json);
        }
        Command::Backup(args) => {
            if !args.repo.is_empty() && args.connections.len() != 1 {
                bail!("--repo with a running daemon needs exactly one connection");
            }
            let names: Vec<String> = if args.all {
                let conns: Vec<Connection> = r.get("/api/v1/connections")?;
                conns.into_iter().map(|c| c.name).collect()
            } else {
                args.connections.clone()
            };
            if names.is_empty() {
                bail!(
                    "name a connection to back up (see `reposafe connection list`) or pass --all"
                );
            }
            let mut code = 0;
            for name in names {
                let bodies: Vec<serde_json::Value> = if args.repo.is_empty() {
                    vec![json!({ "connection": name })]
                } else {
                    args.repo
                        .iter()
                        .map(|repo| json!({ "connection": name, "repository": repo }))
                        .collect()
                };
                for body in bodies {
                    let job: Job = r.post("/api/v1/run", &body)?;
                    code = code.max(follow(r, job, args.json)?);
                }
            }
            return Ok(code);
        }
        Command::Jobs(j) => match j {
            JobsCmd::List { limit, json: js } => {
                let jobs: Vec<Job> = r.get(&format!("/api/v1/jobs?limit={limit}"))?;
                if js {
                    println!("{}", serde_json::to_string_pretty(&jobs)?);
                } else {
                    print_jobs(&jobs);
                }
            }
            JobsCmd::Show { id, json: js } => {
                let job: Job = r.get(&format!("/api/v1/jobs/{id}"))?;
                let results: Vec<JobRecordResult> = r.get(&format!("/api/v1/jobs/{id}/results"))?;
                if js {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({"job": job, "results": results}))?
                    );
                } else {
                    print_job(&job, &results);
                }
            }
            JobsCmd::Watch { id } => {
                let job: Job = r.get(&format!("/api/v1/jobs/{id}"))?;
                return follow(r, job, false);
            }
            JobsCmd::Cancel { id } => {
                let job: Job = r.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))?;
                println!("job {id}: {}", state_name(job.state));
            }
        },
        Command::Repositories(args) => {
            let path = match &args.connection {
                Some(c) => format!("/api/v1/repositories?connection={}", q(c)),
                None => "/api/v1/repositories".into(),
            };
            let repos: Vec<RepoRecord> = r.get(&path)?;
            for rec in repos {
                println!(
                    "{}  {}  last snapshot: {}",
                    rec.connection,
                    rec.full_name,
                    rec.last_snapshot.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Snapshots(args) => {
            let mut path = format!("/api/v1/snapshots?repository={}", q(&args.repository));
            if let Some(c) = &args.connection {
                path.push_str(&format!("&connection={}", q(c)));
            }
            let out: serde_json::Value = r.get(&path)?;
            let id: RepoIdentity = serde_json::from_value(out["repository"].clone())?;
            let snaps: Vec<Snapshot> = serde_json::from_value(out["snapshots"].clone())?;
            print_snapshots(&id, &snaps, args.json)?;
        }
        Command::Restore(args) => {
            let to = std::path::absolute(&args.to)
                .with_context(|| format!("--to {}", args.to.display()))?;
            let at = args
                .at
                .as_deref()
                .map(super::args::parse_time)
                .transpose()?
                .map(|t| t.format(&time::format_description::well_known::Rfc3339))
                .transpose()?;
            let job: Job = r.post(
                "/api/v1/restore",
                &json!({
                    "repository": args.repository,
                    "connection": args.connection,
                    "snapshot": args.snapshot,
                    "at": at,
                    "to": to.display().to_string(),
                    "force": args.force,
                }),
            )?;
            let job = r.watch(job.id, &|_| {})?;
            if job.state != JobState::Succeeded {
                bail!(
                    "restore of {} failed: {}",
                    args.repository,
                    job.error.as_deref().unwrap_or("unknown error")
                );
            }
            println!(
                "restored {}: {}",
                args.repository,
                job.progress.notice.as_deref().unwrap_or("done")
            );
        }
        _ => bail!("internal: this command does not go through the API"),
    }
    Ok(0)
}

fn remote_credential(r: &Remote, cmd: CredentialCmd) -> Result<i32> {
    let base = |name: &str| format!("/api/v1/connections/{}/credentials", q(name));
    match cmd {
        CredentialCmd::Add(a) => {
            let cred = a.cred.credential()?;
            let out: serde_json::Value = r.post(
                &base(&a.name),
                &json!({
                    "kind": cred.kind.as_str(),
                    "identity": cred.identity,
                    "secret": cred.secret.expose_secret(),
                    "project": a.project,
                    "label": a.label,
                    "verify": !a.no_verify,
                }),
            )?;
            if let Some(ws) = out["warnings"].as_array() {
                for w in ws.iter().filter_map(|w| w.as_str()) {
                    eprintln!("warning: {w}");
                }
            }
            match out["credential"].as_str() {
                Some(project) => println!(
                    "connection {} uses a {} credential for {project}",
                    a.name, cred.kind
                ),
                None => println!(
                    "added additional credential {} ({} {}) of connection {}; principal {}",
                    out["credential"]["id"].as_str().unwrap_or("?"),
                    cred.kind,
                    cred.identity.as_deref().unwrap_or(""),
                    a.name,
                    out["credential"]["principal"].as_str().unwrap_or("?")
                ),
            }
        }
        CredentialCmd::List { name } => {
            let list: Vec<crate::engine::credentials::CredentialView> = r.get(&base(&name))?;
            super::connection_extras::print_credentials(&list);
        }
        CredentialCmd::Remove { name, project, id } => {
            let id = match (project, id) {
                (Some(p), _) => format!("project:{}", p.trim().to_ascii_uppercase()),
                (None, Some(id)) => id,
                (None, None) => bail!("give --project KEY or --id ID"),
            };
            let _: serde_json::Value = r.delete(&format!("{}/{}", base(&name), q(&id)))?;
            println!("removed credential {id} of connection {name}");
        }
        CredentialCmd::Enable { name, id } => {
            let _: serde_json::Value =
                r.post(&format!("{}/{}/enable", base(&name), q(&id)), &json!({}))?;
            println!("additional credential {id} of connection {name} enabled");
        }
        CredentialCmd::Disable { name, id } => {
            let _: serde_json::Value =
                r.post(&format!("{}/{}/disable", base(&name), q(&id)), &json!({}))?;
            println!("additional credential {id} of connection {name} disabled");
        }
        CredentialCmd::Test { name, id } => {
            let out: serde_json::Value =
                r.post(&format!("{}/{}/test", base(&name), q(&id)), &json!({}))?;
            println!(
                "credential {id} of connection {name} works; it sees {} scopes",
                out["scopes"]
            );
        }
    }
    Ok(0)
}
