//! Access tokens for Microsoft Graph: where they come from, and how long they are kept.
//!
//! A [`Credential`] asks Entra ID for a token (one implementation per authentication method; the
//! client secret is [`client_secret::ClientSecret`]). A [`TokenCache`] wraps one and reuses its
//! token until shortly before it expires, so a tenant costs one token request per token lifetime,
//! not one per refresh. Token values live in [`Secret`], whose `Debug` never prints them.

pub mod client_secret;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

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
        http: &'a reqwest::Client,
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
    /// The current token, if any. Only the tenant's single refresh task uses it, so the lock is
    /// never contended and never held across an `.await`.
    cached: Mutex<Option<AccessToken>>,
}

impl TokenCache {
    /// A cache that starts empty: nothing is requested before the first refresh.
    pub fn new(credential: Box<dyn Credential>) -> Self {
        TokenCache {
            credential,
            cached: Mutex::new(None),
        }
    }

    /// The authentication method's name, for logs.
    pub fn method(&self) -> &'static str {
        self.credential.method()
    }

    /// A token valid for at least [`EXPIRY_MARGIN`] more, from the cache or freshly requested.
    pub async fn token(&self, http: &reqwest::Client) -> Result<Secret, Error> {
        if let Some(token) = self.cached.lock().unwrap().as_ref() {
            if token.expires_at > Instant::now() + EXPIRY_MARGIN {
                return Ok(token.value.clone());
            }
        }
        let fresh = self.credential.request_token(http).await?;
        let value = fresh.value.clone();
        *self.cached.lock().unwrap() = Some(fresh);
        Ok(value)
    }

    /// Forgets the cached token, after Graph refused it.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }
}
