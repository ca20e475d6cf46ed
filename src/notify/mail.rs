//! E-mail over SMTP with lettre's blocking transport and rustls: STARTTLS (required:
//! a server that does not offer it is refused, never a silent fall-back to clear
//! text), implicit TLS, or plain for a local relay. The server's certificate is
//! checked against the system's roots plus the settings' CA bundle. Errors name the
//! server as `host:port`, never the password.

use super::{field, Message, NotifyError, SmtpSecurity, SmtpSettings};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// How long one SMTP conversation may take at each step.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Checks the SMTP settings, naming the first wrong field.
pub fn validate(smtp: &SmtpSettings) -> Result<(), NotifyError> {
    if smtp.host.trim().is_empty() || smtp.host.contains(['/', ' ', ':']) {
        return Err(field(
            "smtp.host",
            "give the server's host name, e.g. smtp.example.com",
        ));
    }
    if smtp.port == Some(0) {
        return Err(field("smtp.port", "is 0"));
    }
    smtp.from.parse::<Mailbox>().map_err(|e| {
        field(
            "smtp.from",
            format!("{:?} is not an e-mail address: {e}", smtp.from),
        )
    })?;
    if smtp.to.is_empty() {
        return Err(field("smtp.to", "name at least one recipient"));
    }
    for to in &smtp.to {
        to.parse::<Mailbox>()
            .map_err(|e| field("smtp.to", format!("{to:?} is not an e-mail address: {e}")))?;
    }
    if let Some(pem) = &smtp.ca_bundle_pem {
        Certificate::from_pem(pem.as_bytes())
            .map_err(|e| field("smtp.ca_bundle_pem", format!("not PEM certificates: {e}")))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(field("smtp.ca_bundle_pem", "holds no PEM certificate"));
        }
    }
    if smtp.password_file.is_some() && smtp.username.is_none() {
        return Err(field("smtp.username", "a password needs the user name too"));
    }
    Ok(())
}

/// Sends `msg` to every recipient. `password` is the sealed one; without it, the
/// settings' `password_file` is read (the config file's way).
pub fn send(
    smtp: &SmtpSettings,
    password: Option<&SecretString>,
    msg: &Message,
) -> Result<(), NotifyError> {
    let endpoint = smtp.endpoint();
    let fail = |reason: String| NotifyError::Smtp {
        endpoint: endpoint.clone(),
        reason,
    };
    validate(smtp)?;
    let email = build(smtp, msg).map_err(fail)?;
    let mut b = SmtpTransport::builder_dangerous(smtp.host.as_str())
        .port(smtp.port())
        .timeout(Some(TIMEOUT));
    b = match smtp.security {
        SmtpSecurity::Starttls => b.tls(Tls::Required(tls_parameters(smtp).map_err(fail)?)),
        SmtpSecurity::Tls => b.tls(Tls::Wrapper(tls_parameters(smtp).map_err(fail)?)),
        SmtpSecurity::None => b.tls(Tls::None),
    };
    if let Some(user) = &smtp.username {
        let password = match password {
            Some(p) => p.expose_secret().to_string(),
            None => read_password_file(smtp).map_err(fail)?,
        };
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    b.build()
        .send(&email)
        .map(|_| ())
        .map_err(|e| fail(chain(&e)))
}

fn build(smtp: &SmtpSettings, msg: &Message) -> Result<lettre::Message, String> {
    let mailbox = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| format!("address {s:?}: {e}"))
    };
    let mut b = lettre::Message::builder()
        .from(mailbox(&smtp.from)?)
        .subject(msg.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in &smtp.to {
        b = b.to(mailbox(to)?);
    }
    b.body(msg.text.clone())
        .map_err(|e| format!("cannot build the message: {e}"))
}

fn tls_parameters(smtp: &SmtpSettings) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(smtp.host.clone());
    if let Some(pem) = &smtp.ca_bundle_pem {
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("the CA bundle is not PEM certificates: {e}"))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls()
        .map_err(|e| format!("TLS setup: {}", chain(&e)))
}

fn read_password_file(smtp: &SmtpSettings) -> Result<String, String> {
    let Some(path) = &smtp.password_file else {
        return Err(format!(
            "user {:?} is set but no password is stored (set one in the dashboard, the API or \
             `reposafe notifications set --smtp-password-file`)",
            smtp.username.as_deref().unwrap_or("")
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {path}: {e}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// An error with its causes, each once (lettre's own text often repeats its source).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}
