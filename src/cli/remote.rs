//! The CLI as an API client: when a daemon serves the data dir (its
//! `daemon.json` names the address and the daemon answers), commands go
//! through `/api/v1` with the admin token from the data dir instead of opening
//! the database the daemon holds.

use super::serve::DAEMON_FILE;
use crate::api::TOKEN_FILE;
use crate::state::Job;
use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::blocking::{Client, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// A daemon reachable over its API.
pub struct Remote {
    base: String,
    token: SecretString,
    http: Client,
}

#[derive(serde::Deserialize)]
struct DaemonInfo {
    url: String,
    pid: u32,
    #[serde(default)]
    tls_cert: Option<String>,
}

impl Remote {
    /// The daemon of a data dir, if one runs.
    pub fn discover(data_dir: &Path) -> Result<Option<Remote>> {
        let path = data_dir.join(DAEMON_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let Ok(info) = serde_json::from_str::<DaemonInfo>(&text) else {
            return Ok(None);
        };
        if cfg!(target_os = "linux") && !Path::new(&format!("/proc/{}", info.pid)).exists() {
            return Ok(None); // left by a daemon that was killed
        }
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).with_context(|| {
            format!(
                "a daemon serves {} but its admin token {} cannot be read (run as the daemon's user?)",
                data_dir.display(),
                data_dir.join(TOKEN_FILE).display()
            )
        })?;
        let mut b = Client::builder()
            .timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(cert) = &info.tls_cert {
            let pem = std::fs::read(cert)
                .with_context(|| format!("cannot read the daemon's TLS certificate {cert}"))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("the daemon's TLS certificate {cert} is not PEM"))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let remote = Remote {
            base: info.url.trim_end_matches('/').to_string(),
            token: SecretString::from(token.trim().to_string()),
            http: b.build().context("cannot build the HTTP client")?,
        };
        match remote.http.get(format!("{}/healthz", remote.base)).send() {
            Ok(r) if r.status().is_success() => Ok(Some(remote)),
            _ => Ok(None),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
    }

    fn send<T: DeserializeOwned>(&self, rb: RequestBuilder, what: &str) -> Result<T> {
        let resp = rb
            .send()
            .with_context(|| format!("{what}: the daemon at {} did not answer", self.base))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(text);
            bail!("{what}: {msg} (HTTP {})", status.as_u16());
        }
        serde_json::from_str(&text).map_err(|e| anyhow!("{what}: unexpected answer: {e}"))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.req(reqwest::Method::GET, path), &format!("GET {path}"))
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T> {
        self.send(
            self.req(reqwest::Method::POST, path).json(body),
            &format!("POST {path}"),
        )
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(
            self.req(reqwest::Method::DELETE, path),
            &format!("DELETE {path}"),
        )
    }

    /// Polls a job until it ends, calling `on_change` on every change.
    pub fn watch(&self, id: u64, on_change: &dyn Fn(&Job)) -> Result<Job> {
        let mut last = String::new();
        loop {
            let job: Job = self.get(&format!("/api/v1/jobs/{id}"))?;
            let json = serde_json::to_string(&job).unwrap_or_default();
            if json != last {
                on_change(&job);
                last = json;
            }
            if job.state.is_finished() {
                return Ok(job);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
