//! TLS trust of one connection: the extra root certificates of its CA bundle (PEM)
//! and its explicit, loudly warned `insecure` switch. The same [`TlsTrust`] is
//! applied to every HTTP client of the connection (the providers' API client and
//! git's transport), and certificate failures are recognised in error chains so
//! they are reported as certificate problems naming the connection and its bundle.
//!
//! There is no global switch: trust is per connection. The bundle's certificates are
//! added to the system's roots (a server with a public certificate keeps working).
//!
//! The system's roots are read once per [`TlsTrust`] (and its clones), not once per HTTP
//! client, and only when a TLS handshake needs them: the verifier is shared by every
//! client made from the trust (a job makes one per fetch; reading the roots costs
//! milliseconds each time) and loads the roots on the first certificate it verifies.

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{pem::PemObject as _, CertificateDer};

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
    /// The bundle's certificates (DER), trusted besides the system's roots.
    roots: Vec<CertificateDer<'static>>,
    insecure: bool,
    /// The TLS configuration trusting the system's roots and `roots` (read on the first
    /// handshake), built on first use and shared by clones; `None` if it could not be
    /// built (reqwest then builds its own).
    shared_config: Arc<OnceLock<Option<rustls::ClientConfig>>>,
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

/// The platform's certificate verifier (system roots plus extra ones), built on the first
/// certificate it has to verify. Reading the system's roots takes milliseconds (hundreds of
/// files under `/etc/ssl/certs`), which a connection over plain http never needs.
#[derive(Debug)]
struct LazyVerifier {
    connection: String,
    extra_roots: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: OnceLock<Result<rustls_platform_verifier::Verifier, String>>,
}

impl LazyVerifier {
    fn inner(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.inner
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra_roots.iter().cloned(),
                    self.provider.clone(),
                )
                .map_err(|err| {
                    format!(
                        "connection {}: could not load the trusted root certificates: {err}",
                        self.connection
                    )
                })
            })
            .as_ref()
            .map_err(|message| rustls::Error::General(message.clone()))
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
            insecure: false,
            shared_config: Arc::default(),
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
        let (roots, bundle_name) = match bundle {
            Some((pem, name)) => {
                // Checked (every certificate usable) before its DER is kept.
                parse_bundle(pem, name)?;
                let der = CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .collect();
                (der, Some(name.to_string()))
            }
            None => (Vec::new(), None),
        };
        Ok(TlsTrust {
            connection: connection.to_string(),
            bundle_name,
            roots,
            insecure,
            shared_config: Arc::default(),
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
        if let Some(config) = self.shared_config.get_or_init(|| self.build_config()) {
            return builder.tls_backend_preconfigured(config.clone());
        }
        // Only when the shared configuration cannot be built (not with aws-lc-rs):
        // reqwest builds its own from the same roots.
        let certs = self
            .roots
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        builder.tls_certs_merge(certs)
    }

    /// What reqwest would build for these roots (the platform verifier with the system's
    /// roots plus the bundle's, HTTP/1.1), except that the roots are read on the first TLS
    /// handshake, not before: a plain-http connection never reads them.
    fn build_config(&self) -> Option<rustls::ClientConfig> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = LazyVerifier {
            connection: self.connection.clone(),
            extra_roots: self.roots.clone(),
            provider: provider.clone(),
            inner: OnceLock::new(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(config)
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

    #[test]
    fn clients_of_one_trust_share_one_tls_configuration() {
        let trust = TlsTrust::system("acme");
        let copy = trust.clone();
        assert!(copy.shared_config.get().is_none());
        for _ in 0..2 {
            trust
                .apply(reqwest::blocking::Client::builder())
                .build()
                .expect("client");
        }
        assert!(
            copy.shared_config.get().is_some_and(|c| c.is_some()),
            "built by the first client, shared with the clones"
        );
        let insecure = TlsTrust::new("dc", None, true).expect("insecure");
        insecure
            .apply(reqwest::blocking::Client::builder())
            .build()
            .expect("client");
        assert!(
            insecure.shared_config.get().is_none(),
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
