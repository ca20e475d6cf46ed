//! Provider sessions for tests that drive a provider through the library (no
//! binary): a gate built the way the engine builds one, without retries.

use reposafe::providers::http::{self as gate_http, HttpGate, RetryPolicy};
use reposafe::providers::{Authenticator, LoadedProvider, ProviderSession};
use reposafe::vault::{Credential, CredentialKind};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A session of `provider` with the URL settings etc. the user `given`, using a
/// credential of `kind` (`identity`, `secret`); its credential may go to the
/// origins `connection add` would fix.
pub fn session<'a>(
    provider: &'a LoadedProvider,
    given: &BTreeMap<String, String>,
    kind: CredentialKind,
    identity: Option<&str>,
    secret: &str,
) -> ProviderSession<'a> {
    let info = provider.info();
    let settings = info.resolve_settings(given).expect("valid settings");
    let origins = info.credential_origins(given, &settings);
    let gate = gate(provider, &origins, kind, identity, secret);
    provider.session(&settings, kind, Arc::new(gate))
}

/// The gate of a session of `provider` whose credential (of `kind`: `identity`,
/// `secret`) may go to `origins`; it grants reading only.
pub fn gate(
    provider: &LoadedProvider,
    origins: &[String],
    kind: CredentialKind,
    identity: Option<&str>,
    secret: &str,
) -> HttpGate {
    let support = provider
        .info()
        .support_for(kind)
        .expect("the credential kind is supported");
    let policy = RetryPolicy {
        max_retries: 0,
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = gate_http::client(&policy);
    let auth = Authenticator::new(
        Credential {
            kind,
            identity: identity.map(String::from),
            secret: SecretString::from(secret.to_string()),
        },
        support.api.clone(),
        support.git.clone(),
        None,
        client.clone(),
    );
    HttpGate::new(
        client,
        reposafe::providers::parse_origins(origins),
        Arc::new(auth),
        policy,
    )
}
