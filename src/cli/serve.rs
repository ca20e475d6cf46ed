//! `reposafe serve`: the daemon. Owns the data dir (a second one is refused),
//! runs the job workers and the plan scheduler, serves the API and dashboard
//! (TLS when configured), and on SIGTERM/SIGINT stops taking jobs, lets running
//! repository backups finish within the grace period, and exits 0.

use super::config::FileConfig;
use crate::api::{self, Api};
use crate::engine::{daemon, Context, Jobs, LocalService, RunnerConfig};
use anyhow::{bail, Context as _, Result};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The file telling CLI commands where the daemon of a data dir listens.
pub const DAEMON_FILE: &str = "daemon.json";

/// Resolved daemon settings.
pub struct ServeSettings {
    pub listen: String,
    pub insecure_listen: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub grace: Duration,
    pub run_missed: bool,
    pub parallel: Option<usize>,
    pub hook_delay: Duration,
}

impl ServeSettings {
    pub fn resolve(args: &super::args::ServeArgs, file: &FileConfig) -> Result<ServeSettings> {
        let tls_cert = args.tls_cert.clone().or(file.tls_cert.clone());
        let tls_key = args.tls_key.clone().or(file.tls_key.clone());
        let tls = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!(
                "TLS needs both tls_cert and tls_key (--tls-cert/--tls-key or the config file)"
            ),
        };
        Ok(ServeSettings {
            listen: args
                .listen
                .clone()
                .or(file.listen.clone())
                .unwrap_or_else(|| "127.0.0.1:8720".into()),
            insecure_listen: args.insecure_listen || file.insecure_listen.unwrap_or(false),
            tls,
            grace: Duration::from_secs(
                args.grace_period_secs
                    .or(file.grace_period_secs)
                    .unwrap_or(30),
            ),
            run_missed: args
                .run_missed_on_start
                .or(file.run_missed_on_start)
                .unwrap_or(true),
            parallel: args.parallel.or(file.parallel),
            hook_delay: Duration::from_secs(
                args.hook_delay_secs
                    .or(file.hook_delay_secs)
                    .unwrap_or(crate::engine::hooks::DEFAULT_DELAY.as_secs()),
            ),
        })
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls_cert {}: cannot read PEM certificates", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls_cert {}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("tls_cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls_key {}: not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls_cert and tls_key do not form a usable certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    hex::encode(bytes)
}

/// Writes a file only its owner may read (the daemon's instance key is in it),
/// replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Says where the admin token is and how to sign in. The token itself is shown
/// only on a terminal, once, when it was just created: a daemon's stderr usually
/// goes to a journal or log file, which must not hold it.
fn announce_token(token: &SecretString, created: bool, path: &Path, url: &str) {
    use std::io::IsTerminal;
    let path = path.display();
    if created && std::io::stderr().is_terminal() {
        eprintln!(
            "Admin API token (shown once; kept in {path}, mode 0600):\n{}",
            token.expose_secret()
        );
    } else if created {
        eprintln!("Created the admin API token in {path} (mode 0600; not printed, so that it stays out of logs).");
    }
    eprintln!(
        "Sign in: open {url}/ and paste the token from {path}; \
         API clients send `Authorization: Bearer $(cat {path})`."
    );
}

/// Writes `daemon.json` (where the daemon listens, its pid and instance key) and
/// says where it serves; returns its URL.
fn publish(
    data_dir: &Path,
    local: SocketAddr,
    tls: bool,
    tls_cert: Option<&Path>,
    instance: &str,
) -> Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let host = if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    let url = format!("{scheme}://{host}");
    let info = serde_json::json!({
        "url": url,
        "pid": std::process::id(),
        "instance": instance,
        "tls_cert": tls_cert.map(|c| c.display().to_string()),
    });
    let daemon_file = data_dir.join(DAEMON_FILE);
    write_private(&daemon_file, info.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", daemon_file.display()))?;
    eprintln!(
        "reposafe {} serving data dir {} on {scheme}://{local}/",
        env!("CARGO_PKG_VERSION"),
        data_dir.display(),
    );
    Ok(url)
}

/// The address to listen on; one beyond loopback needs TLS or the explicit
/// acknowledgement that the admin token travels in clear.
fn listen_address(settings: &ServeSettings) -> Result<SocketAddr> {
    let addr: SocketAddr = settings.listen.parse().with_context(|| {
        format!(
            "listen address {:?} is not an address like 127.0.0.1:8720",
            settings.listen
        )
    })?;
    if !addr.ip().is_loopback() && settings.tls.is_none() && !settings.insecure_listen {
        bail!(
            "listening on {addr} (not loopback) needs TLS (--tls-cert and --tls-key, or tls_cert/tls_key in the config) \
             or the explicit --insecure-listen acknowledgement that the admin token travels in clear"
        );
    }
    Ok(addr)
}

/// Starts the thread that queues plans' jobs when they are due, until `stop`.
fn start_scheduler(jobs: &Arc<Jobs>, stop: &Arc<AtomicBool>) -> Result<()> {
    let (jobs, stop) = (jobs.clone(), stop.clone());
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = daemon::tick(&jobs, time::OffsetDateTime::now_utc()) {
                    tracing::warn!("scheduler: {e}");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .context("cannot start the scheduler thread")?;
    Ok(())
}

pub fn run(data_dir: &Path, args: super::args::ServeArgs, file: &FileConfig) -> Result<i32> {
    let settings = ServeSettings::resolve(&args, file)?;
    let addr = listen_address(&settings)?;
    let acceptor = match &settings.tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    let ctx = Arc::new(
        Context::open(data_dir)
            .with_context(|| format!("cannot open data dir {}", data_dir.display()))?,
    );
    let cleaned = ctx.clean_archive_tmp()?;
    if cleaned > 0 {
        tracing::info!("removed {cleaned} temporary files left by an interrupted run");
    }
    let (token, created) = api::load_or_create_token(data_dir)
        .with_context(|| format!("cannot create the admin token in {}", data_dir.display()))?;
    let token_path = data_dir.join(api::TOKEN_FILE);
    let mut config = RunnerConfig::default();
    if let Some(p) = settings.parallel {
        config.parallel = p.clamp(1, 64);
    }
    let jobs = Jobs::new(ctx.clone(), config)?;
    jobs.notifications()
        .set_defaults(file.notifications.clone());
    jobs.start();
    daemon::catch_up(&jobs, time::OffsetDateTime::now_utc(), settings.run_missed)?;

    let stop = Arc::new(AtomicBool::new(false));
    start_scheduler(&jobs, &stop)?;

    let instance = random_hex();
    let mut api = Api::new(
        LocalService::over(jobs.clone(), true).with_hook_delay(settings.hook_delay),
        token.clone(),
        SecretString::from(instance.clone()),
    );
    let limits = api::Limits::from_env();
    api.tls = acceptor.is_some();
    api.token_file = token_path.display().to_string();
    api.body_timeout = limits.timeout;
    let api = Arc::new(api);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let daemon_file = data_dir.join(DAEMON_FILE);
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().unwrap_or(addr);
        let tls_cert = settings.tls.as_ref().map(|(c, _)| c.as_path());
        let url = publish(data_dir, local, acceptor.is_some(), tls_cert, &instance)?;
        jobs.notifications().set_base_url(url.clone());
        announce_token(&token, created, &token_path, &url);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        api::serve(listener, acceptor, api, limits, shutdown).await;
        Ok::<_, anyhow::Error>(())
    });
    // Stop: no new jobs; running repositories finish within the grace period.
    stop.store(true, Ordering::SeqCst);
    eprintln!(
        "reposafe: stopping; waiting up to {} s for running backups",
        settings.grace.as_secs()
    );
    jobs.shutdown(settings.grace);
    // The messages of jobs that just ended (each channel times out within 15 s).
    jobs.notifications().flush();
    let _ = std::fs::remove_file(&daemon_file);
    result?;
    eprintln!("reposafe: stopped");
    Ok(0)
}
