//! TLS trust of one connection: the extra root certificates of its CA bundle (PEM)
//! and its explicit, loudly warned `insecure` switch. The same [`TlsTrust`] is
//! applied to every HTTP client of the connection (the providers' API client and
//! git's transport), and certificate failures are recognised in error chains so
//! they are reported as certificate problems naming the connection and its bundle.
//!
//! There is no global switch: trust is per connection. The bundle's certificates are
//! added to the system's roots (a server with a public certificate keeps working).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA bundle {source_name}: {reason}")]
    Bundle { source_name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// How one connection verifies server certificates.
#[derive(Clone)]
pub struct TlsTrust {
    connection: String,
    /// Where the bundle came from (the file given when it was added), for messages.
    bundle_name: Option<String>,
    roots: Vec<reqwest::Certificate>,
    /// The same certificates in DER, for the verifier built by [`Self::client_config`].
    roots_der: Vec<CertificateDer<'static>>,
    insecure: bool,
    /// The rustls configuration every client of this trust uses, built on first use and
    /// shared by the clones (see [`Self::apply`]).
    config: Arc<OnceLock<Option<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTrust")
            .field("connection", &self.connection)
            .field("bundle", &self.bundle_name)
            .field("roots", &self.roots.len())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Parses a PEM bundle into certificates; fails when it holds none.
pub fn parse_bundle(pem: &[u8], source_name: &str) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let err = |reason: String| TlsError::Bundle {
        source_name: source_name.to_string(),
        reason,
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| err(format!("it is not a PEM certificate bundle: {}", chain(&e))))?;
    if certs.is_empty() {
        return Err(err(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    // Building a client checks every certificate's DER encoding.
    reqwest::blocking::Client::builder()
        .tls_certs_merge(certs.clone())
        .build()
        .map_err(|e| err(format!("a certificate in it is unusable: {}", chain(&e))))?;
    Ok(certs)
}

impl TlsTrust {
    /// The system's roots only.
    pub fn system(connection: &str) -> TlsTrust {
        TlsTrust {
            connection: connection.to_string(),
            bundle_name: None,
            roots: Vec::new(),
            roots_der: Vec::new(),
            insecure: false,
            config: Arc::default(),
        }
    }

    /// The system's roots plus the certificates of `pem`, or no verification at
    /// all with `insecure` (refused together with a bundle).
    pub fn new(
        connection: &str,
        bundle: Option<(&[u8], &str)>,
        insecure: bool,
    ) -> Result<TlsTrust, TlsError> {
        if insecure && bundle.is_some() {
            return Err(TlsError::Invalid(format!(
                "connection {connection}: give either a CA bundle or insecure, not both"
            )));
        }
        let (roots, roots_der, bundle_name) = match bundle {
            Some((pem, name)) => {
                let roots = parse_bundle(pem, name)?;
                // `parse_bundle` accepted every certificate of it.
                let der = CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .collect();
                (roots, der, Some(name.to_string()))
            }
            None => (Vec::new(), Vec::new(), None),
        };
        Ok(TlsTrust {
            connection: connection.to_string(),
            bundle_name,
            roots,
            roots_der,
            insecure,
            config: Arc::default(),
        })
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The warning shown on every use of an insecure connection.
    pub fn insecure_warning(&self) -> String {
        format!(
            "WARNING: connection {} does not verify TLS certificates (insecure): anyone on the \
             network path can impersonate the server and capture its credentials; give it a CA \
             bundle instead",
            self.connection
        )
    }

    /// Applies the trust to a client builder (API or git). Warns on every use when insecure.
    pub fn apply(
        &self,
        builder: reqwest::blocking::ClientBuilder,
    ) -> reqwest::blocking::ClientBuilder {
        if self.insecure {
            tracing::warn!("{}", self.insecure_warning());
            return builder.tls_danger_accept_invalid_certs(true);
        }
        match self.client_config() {
            Some(config) => builder.tls_backend_preconfigured(config),
            // Let reqwest build it (and report what is wrong, when building fails).
            None if self.roots.is_empty() => builder,
            None => builder.tls_certs_merge(self.roots.clone()),
        }
    }

    /// The rustls configuration of this trust: what reqwest builds from the same settings
    /// (the platform's verifier over the system's roots plus the bundle's, TLS 1.2 and 1.3,
    /// ALPN `h2` and `http/1.1`), built once and shared by every client of the trust.
    /// Building it reads and parses every system root certificate; done per client, that
    /// cost more CPU than an unchanged repository's whole backup. `None` when it cannot be
    /// built (no system roots, say).
    fn client_config(&self) -> Option<rustls::ClientConfig> {
        let build = || {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.roots_der.iter().cloned(),
                provider.clone(),
            )
            .map_err(|e| tracing::debug!("TLS verifier of connection {}: {e}", self.connection))
            .ok()?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(config)
        };
        self.config.get_or_init(build).clone()
    }

    /// The message for a certificate failure (`detail` from [`certificate_problem`]).
    pub fn describe_failure(&self, detail: &str) -> String {
        match &self.bundle_name {
            Some(b) => format!(
                "TLS certificate problem: the server's certificate is not trusted ({detail}); it \
                 is not signed by the CA bundle of connection {} ({b}) nor by a system root: \
                 check that the bundle holds the CA that issued the server's certificate",
                self.connection
            ),
            None => format!(
                "TLS certificate problem: the server's certificate is not trusted ({detail}); \
                 connection {} has no CA bundle: if the server uses an internal certificate \
                 authority, add the connection with --ca-bundle FILE (PEM)",
                self.connection
            ),
        }
    }
}

/// Renders an error with its causes on one line.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// If the error chain of `err` is a TLS certificate verification failure, the
/// innermost description of it (e.g. `invalid peer certificate: UnknownIssuer`).
pub fn certificate_problem(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut found = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = cur {
        if depth > 32 {
            break;
        }
        let text = e.to_string();
        if is_certificate_text(&text) {
            found = Some(text);
        }
        cur = e.source();
        depth += 1;
    }
    found
}

/// Whether a message describes a certificate verification failure.
pub fn is_certificate_text(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("invalid peer certificate")
        || t.contains("unknownissuer")
        || t.contains("certificate verify failed")
        || (t.contains("certificate") && (t.contains("expired") || t.contains("not valid")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_must_hold_certificates() {
        let e = parse_bundle(b"not a pem", "bad.pem").unwrap_err();
        assert!(e.to_string().contains("bad.pem"), "{e}");
        let e = TlsTrust::new("dc", Some((b"", "empty.pem")), false).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = TlsTrust::new("dc", Some((b"x", "x.pem")), true).unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
    }

    /// The rustls configuration (the system's roots read and parsed) is built once per
    /// trust and shared by its clones, not once per client.
    #[test]
    fn clients_of_one_trust_share_one_tls_configuration() {
        let trust = TlsTrust::system("acme");
        let copy = trust.clone();
        assert!(copy.config.get().is_none());
        for _ in 0..2 {
            trust
                .apply(reqwest::blocking::Client::builder())
                .build()
                .expect("client");
        }
        assert!(copy.config.get().is_some(), "built by the first client");
        let insecure = TlsTrust::new("dc", None, true).expect("insecure");
        insecure
            .apply(reqwest::blocking::Client::builder())
            .build()
            .expect("client");
        assert!(
            insecure.config.get().is_none(),
            "insecure keeps reqwest's own"
        );
    }

    #[test]
    fn certificate_errors_are_recognised() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl StdError for E {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "error sending request",
            Some(Box::new(E("invalid peer certificate: UnknownIssuer", None))),
        );
        assert_eq!(
            certificate_problem(&e).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        assert_eq!(certificate_problem(&E("connection refused", None)), None);
        let t = TlsTrust::system("dc");
        let m = t.describe_failure("invalid peer certificate: UnknownIssuer");
        assert!(m.contains("certificate problem") && m.contains("dc") && m.contains("--ca-bundle"));
    }
}
