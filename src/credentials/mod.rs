//! Access tokens for Microsoft Graph: where they come from, and how long they are kept.
//!
//! A [`Credential`] asks Entra ID (or a managed identity endpoint) for a token; there is one
//! implementation per authentication method:
//!
//! | method | type | what it sends |
//! |---|---|---|
//! | `client_secret` | [`client_secret::ClientSecret`] | `client_secret` |
//! | `client_certificate` | [`certificate::ClientCertificate`] | a JWT signed with the certificate's key |
//! | `workload_identity` | [`workload_identity::WorkloadIdentity`] | the projected Kubernetes token as assertion |
//! | `managed_identity` | [`managed_identity::ManagedIdentity`] | nothing: IMDS or App Service vouches |
//!
//! [`CredentialConfig`] is the validated choice (see `Config::resolve` in config/mod.rs for the order in which a method is
//! picked when `--auth.method` does not force one) and [`build`] turns it into a credential. A
//! [`TokenCache`] wraps one and reuses its token until shortly before it expires, so a tenant costs
//! one token request per token lifetime, not one per refresh; after a refusal with a Retry-After
//! it asks for no token, for any report of the tenant, until that has passed. Token values live
//! in [`Secret`], whose `Debug` never prints them.
//!
//! # Why not Microsoft's `azure_identity` crate
//!
//! It is the well-kept implementation of these flows, and was checked (azure_identity 1.0.0 and
//! 1.1.0-beta.1, on azure_core 1.x / typespec_client_core 1.x) against what this exporter needs:
//!
//! - Transport: it brings its own reqwest 0.13 through typespec_client_core, whose `rustls`
//!   feature uses aws-lc-rs; the project's TLS is rustls with ring on reqwest 0.12. Plugging our
//!   client in means implementing azure_core's `HttpClient` over it, by hand.
//! - Authority: it refuses any authority host that is not https (`get_authority_host`), and its
//!   IMDS address is a constant (`http://169.254.169.254`), so neither the fake's loopback
//!   endpoints nor a test IMDS can be used; the tests would not cover the code that runs.
//! - Certificates: its `ClientCertificateCredential` needs the `openssl` feature (OpenSSL), which
//!   the project excludes.
//! - Errors: it returns the AADSTS codes joined in one string and the description, with the
//!   correlation id only inside the raw response; its own retry policy and its wall-clock token
//!   expiry (`OffsetDateTime`) sit between Entra ID and the refresh's backoff and paused-time tests.
//!
//! So the flows are implemented here on the shared reqwest client ([`crate::http_client`]), which
//! gives the extra CA, the proxy, and [`crate::error::TokenRejection`] with the AADSTS code,
//! correlation id and an operator hint. The wire formats follow Microsoft's documentation and
//! azure_identity's source.

pub mod certificate;
pub mod client_secret;
pub mod entra;
pub mod managed_identity;
pub mod workload_identity;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use tokio::time::Instant;

use certificate::{CertificateSource, ClientCertificate};
use client_secret::{ClientSecret, SecretSource};
use managed_identity::{ManagedIdentity, ManagedIdentityConfig};
use workload_identity::WorkloadIdentity;

use crate::error::{Error, TokenRejection};
use crate::http_client::HttpClient;

/// A boxed future, so that [`Credential`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A string that must never reach a log line, an error message or /metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A bearer token and when it stops being valid.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token itself.
    pub value: Secret,
    /// When Entra ID says it expires (now + `expires_in` at the time of the answer).
    pub expires_at: Instant,
}

/// One way of obtaining a token from Entra ID.
pub trait Credential: Send + Sync + 'static {
    /// Asks Entra ID for a new token. Called only when the cache has none that is still good.
    fn request_token<'a>(
        &'a self,
        http: &'a HttpClient,
    ) -> BoxFuture<'a, Result<AccessToken, Error>>;

    /// The method's name, for logs (`client_secret`, ...).
    fn method(&self) -> &'static str;
}

/// A token is renewed this long before it expires, so it never expires in flight; Azure's SDKs
/// use the same margin.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// Caches the token of one credential.
pub struct TokenCache {
    /// Where new tokens come from.
    credential: Box<dyn Credential>,
    /// The current token, if any. The lock is never held across an `.await`.
    cached: Mutex<Option<AccessToken>>,
    /// The latest refusal that came with a Retry-After, and when that passes: until then no
    /// token is requested, whichever report of the tenant needs one, and each gets the refusal.
    held_off: Mutex<Option<(Instant, TokenRejection)>>,
}

impl TokenCache {
    /// A cache that starts empty: nothing is requested before the first refresh.
    pub fn new(credential: Box<dyn Credential>) -> Self {
        TokenCache {
            credential,
            cached: Mutex::new(None),
            held_off: Mutex::new(None),
        }
    }

    /// The authentication method's name, for logs.
    pub fn method(&self) -> &'static str {
        self.credential.method()
    }

    /// A token valid for at least [`EXPIRY_MARGIN`] more, from the cache or freshly requested.
    pub async fn token(&self, http: &HttpClient) -> Result<Secret, Error> {
        if let Some(token) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if token.expires_at > Instant::now() + EXPIRY_MARGIN {
                return Ok(token.value.clone());
            }
        }
        if let Some((until, rejection)) = self
            .held_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let now = Instant::now();
            if now < *until {
                tracing::debug!(
                    wait_seconds = (*until - now).as_secs_f64(),
                    "The token endpoint's Retry-After has not passed; not requesting a token"
                );
                let mut rejection = rejection.clone();
                rejection.retry_after = Some(*until - now);
                return Err(Error::TokenRejected(Box::new(rejection)));
            }
        }
        tracing::debug!(
            method = self.credential.method(),
            "Requesting an access token"
        );
        let fresh = match self.credential.request_token(http).await {
            Ok(fresh) => fresh,
            Err(Error::TokenRejected(rejection)) => {
                if let Some(wait) = rejection.retry_after.filter(|wait| !wait.is_zero()) {
                    *self.held_off.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now() + wait, (*rejection).clone()));
                }
                return Err(Error::TokenRejected(rejection));
            }
            Err(error) => return Err(error),
        };
        tracing::debug!(
            expires_in_seconds = fresh
                .expires_at
                .saturating_duration_since(Instant::now())
                .as_secs(),
            "Got an access token"
        );
        let value = fresh.value.clone();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        Ok(value)
    }

    /// Takes over `old`'s token and its held-off refusal, when a reload rebuilds the tenant
    /// with the same credential (another TTL or report list): no new token is asked for, and
    /// the token endpoint's Retry-After still holds.
    pub fn take_over(&self, old: &TokenCache) {
        let cached = old.cached.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = cached;
        let held_off = old
            .held_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *self.held_off.lock().unwrap_or_else(|e| e.into_inner()) = held_off;
    }

    /// Forgets the cached token, after Graph refused it.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Told the notAfter of the certificate a credential uses, at start and after each reload (feeds
/// `office365_activations_credential_expiry_timestamp_seconds`).
pub type ExpiryObserver = Arc<dyn Fn(SystemTime) + Send + Sync>;

/// How one tenant authenticates, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialConfig {
    /// Client id and secret.
    ClientSecret(SecretSource),
    /// Client id and certificate.
    ClientCertificate(CertificateSource),
    /// Client id and a federated token file (Kubernetes workload identity).
    WorkloadIdentity {
        /// `AZURE_FEDERATED_TOKEN_FILE`, read at every token request.
        token_file: PathBuf,
    },
    /// The host's managed identity.
    ManagedIdentity(ManagedIdentityConfig),
}

impl CredentialConfig {
    /// The method's name, as `--auth.method` and the logs spell it.
    pub fn method(&self) -> &'static str {
        match self {
            CredentialConfig::ClientSecret(_) => "client_secret",
            CredentialConfig::ClientCertificate(_) => "client_certificate",
            CredentialConfig::WorkloadIdentity { .. } => "workload_identity",
            CredentialConfig::ManagedIdentity(_) => "managed_identity",
        }
    }

    /// Where the credential comes from, for the log line at start (never a secret).
    pub fn describe(&self) -> String {
        match self {
            CredentialConfig::ClientSecret(SecretSource::Value(_)) => {
                "client secret from AZURE_CLIENT_SECRET".into()
            }
            CredentialConfig::ClientSecret(SecretSource::File(path)) => {
                format!("client secret file {}", path.display())
            }
            CredentialConfig::ClientCertificate(source) => format!(
                "certificate file {} ({}{})",
                source.path.display(),
                source.algorithm.as_str(),
                if source.send_chain { ", x5c" } else { "" }
            ),
            CredentialConfig::WorkloadIdentity { token_file } => {
                format!("federated token file {}", token_file.display())
            }
            CredentialConfig::ManagedIdentity(mi) => mi.describe(),
        }
    }
}

/// What a credential needs besides its [`CredentialConfig`].
pub struct CredentialParams<'a> {
    /// The tenant's name, for log lines.
    pub tenant_name: &'a str,
    /// Directory (tenant) id (unused by managed identity).
    pub tenant_id: &'a str,
    /// Application (client) id (for managed identity, see [`ManagedIdentityConfig`]).
    pub client_id: &'a str,
    /// Entra ID host.
    pub authority_host: &'a Url,
    /// `{graph endpoint}/.default`, or `--auth.scope`.
    pub scope: &'a str,
    /// Told the certificate's notAfter.
    pub expiry: Option<ExpiryObserver>,
}

/// Builds the credential a tenant's configuration describes; a certificate is loaded (and
/// checked) here.
pub fn build(
    config: &CredentialConfig,
    params: CredentialParams<'_>,
) -> Result<Box<dyn Credential>, String> {
    let token_url = || entra::token_url(params.authority_host, params.tenant_id);
    Ok(match config {
        CredentialConfig::ClientSecret(secret) => Box::new(ClientSecret::new(
            params.authority_host,
            params.tenant_id,
            params.client_id,
            params.scope,
            secret.clone(),
        )?),
        CredentialConfig::ClientCertificate(source) => Box::new(ClientCertificate::new(
            params.tenant_name,
            token_url()?,
            params.client_id,
            params.scope,
            source.clone(),
            params.expiry,
        )?),
        CredentialConfig::WorkloadIdentity { token_file } => Box::new(WorkloadIdentity::new(
            token_url()?,
            params.client_id,
            params.scope,
            token_file.clone(),
        )),
        CredentialConfig::ManagedIdentity(mi) => {
            Box::new(ManagedIdentity::new(mi.clone(), params.scope)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Refuses the first request with 429 and a Retry-After of 120 s, then issues tokens;
    /// counts the requests.
    struct ThrottledOnce(Arc<AtomicU32>);

    impl Credential for ThrottledOnce {
        fn request_token<'a>(
            &'a self,
            _http: &'a HttpClient,
        ) -> BoxFuture<'a, Result<AccessToken, Error>> {
            Box::pin(async move {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(entra::rejection(
                        429,
                        br#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: Too many requests."}"#,
                        Some(Duration::from_secs(120)),
                    ));
                }
                Ok(AccessToken {
                    value: Secret::new("token"),
                    expires_at: Instant::now() + Duration::from_secs(3599),
                })
            })
        }

        fn method(&self) -> &'static str {
            "client_secret"
        }
    }

    /// The reports of a tenant share its token cache: after a refusal with a Retry-After, none
    /// of them may ask the token endpoint again before it has passed.
    #[tokio::test(start_paused = true)]
    async fn no_token_is_requested_before_a_retry_after_has_passed() {
        let requests = Arc::new(AtomicU32::new(0));
        let cache = TokenCache::new(Box::new(ThrottledOnce(Arc::clone(&requests))));
        let http: HttpClient = reqwest::Client::new().into();
        let first = cache.token(&http).await.unwrap_err();
        assert_eq!(first.retry_after(), Some(Duration::from_secs(120)));
        tokio::time::advance(Duration::from_secs(30)).await;
        // Another report needs the token: refused at once, with the wait that is left.
        let second = cache.token(&http).await.unwrap_err();
        assert_eq!(second.retry_after(), Some(Duration::from_secs(90)));
        assert_eq!(second.reason(), "throttled");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "no request");
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(cache.token(&http).await.unwrap().expose(), "token");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }
}
