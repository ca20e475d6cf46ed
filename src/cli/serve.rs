//! `reposafe serve`: the long-running process. Today it owns the data dir and
//! serves `/healthz` and a read-only status page on localhost; schedules, the JSON
//! API and run-now arrive with the appliance work (see the README's roadmap).

use super::args::ServeArgs;
use crate::engine::Context;
use anyhow::{bail, Context as _, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_page(ctx: &Context) -> Result<String> {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>reposafe</title>\
         <style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}\
         td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}</style>\
         <h1>reposafe</h1>",
    );
    html.push_str(&format!(
        "<p>Data dir: <code>{}</code> &middot; archive size {}</p>",
        esc(&ctx.data_dir.display().to_string()),
        super::human_bytes(ctx.archive.disk_usage()?)
    ));
    html.push_str(
        "<h2>Connections</h2><table><tr><th>Name</th><th>Provider</th><th>Credential</th></tr>",
    );
    for c in ctx.state.connections()? {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} {} ********</td></tr>",
            esc(&c.name),
            esc(&c.provider),
            c.credential_kind,
            esc(c.credential_identity.as_deref().unwrap_or(""))
        ));
    }
    html.push_str("</table><h2>Repositories</h2><table><tr><th>Connection</th><th>Repository</th><th>Last seen</th><th>Last snapshot</th></tr>");
    for r in ctx.state.repositories(None)? {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.connection),
            esc(&r.full_name),
            super::fmt_time(r.last_seen),
            esc(r.last_snapshot.as_deref().unwrap_or("-"))
        ));
    }
    html.push_str("</table>");
    Ok(html)
}

async fn handle(
    ctx: Arc<Context>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert("content-type", v);
        }
        r
    };
    if req.method() != hyper::Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}\n".into(),
        ),
        "/" => {
            let page = tokio::task::spawn_blocking(move || status_page(&ctx)).await;
            match page {
                Ok(Ok(html)) => reply(StatusCode::OK, "text/html; charset=utf-8", html),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}\n"),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

pub fn run(data_dir: &Path, args: ServeArgs) -> Result<i32> {
    let addr: SocketAddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {:?} is not an address like 127.0.0.1:8720",
            args.listen
        )
    })?;
    if !addr.ip().is_loopback() {
        bail!("--listen {addr}: this version serves only on a loopback address (the dashboard has no authentication yet)");
    }
    let ctx = Arc::new(super::open(data_dir)?);
    let cleaned = ctx.archive.clean_tmp()?;
    if cleaned > 0 {
        tracing::info!("removed {cleaned} temporary files left by an interrupted run");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "reposafe {} serving data dir {} on http://{addr}/ (Ctrl-C to stop)",
            env!("CARGO_PKG_VERSION"),
            ctx.data_dir.display()
        );
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let svc = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                    });
                }
            }
        }
        eprintln!("reposafe: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
