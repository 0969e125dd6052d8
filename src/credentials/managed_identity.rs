//! Azure managed identity: tokens from the platform's local endpoint, no secret at all.
//!
//! - Azure VMs, scale sets, AKS nodes: IMDS, `GET {imds}/metadata/identity/oauth2/token
//!   ?api-version=2018-02-01&resource=...` with `Metadata: true`; a user-assigned identity is
//!   named by `client_id`, `object_id` or `msi_res_id` (its Azure resource id). IMDS answers
//!   404 and 410 while it starts (up to 70 s), and 429 and 5xx under load: those are retried
//!   here with exponential backoff on tokio's clock (so tests can run it on paused time).
//! - App Service and Functions: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...`
//!   with `X-IDENTITY-HEADER: $IDENTITY_HEADER`; a user-assigned identity is named by
//!   `client_id`, `principal_id` (object id) or `mi_res_id`.
//!
//! Both send their numbers as JSON strings (`"expires_in":"86399"`, `"expires_on":"1700000000"`).
//! The resource is the scope without `/.default`. These endpoints are local to the host, so they
//! are called without any proxy, on a client of their own.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use super::{entra, AccessToken, BoxFuture, Credential, Secret};
use crate::error::{parse_retry_after, Error, Stage};
use crate::http_client::{read_capped, transport_error, HttpClient, ERROR_BODY_LIMIT, USER_AGENT};

/// IMDS's address on every Azure VM.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The IMDS API version (the one Azure's SDKs use for tokens).
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The App Service identity API version.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// Retries of a retryable answer before giving up (the refresh's own backoff takes over).
pub const MAX_RETRIES: u32 = 7;
/// The first retry waits this long; each further one doubles it, up to [`MAX_RETRY_DELAY`]:
/// 1+2+4+8+16+30+30 s covers the 70 s Microsoft documents for IMDS to come up.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Which identity: the system-assigned one when `None`, else a user-assigned one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagedIdentityId {
    /// The identity's client (application) id.
    ClientId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
    /// The identity's Azure resource id
    /// (`/subscriptions/.../resourceGroups/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/...`).
    ResourceId(String),
}

/// Where tokens come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagedIdentityEndpoint {
    /// IMDS at this base URL (`http://169.254.169.254`; a loopback fake in tests).
    Imds(Url),
    /// App Service / Functions: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    AppService {
        /// The full token URL the platform gives.
        endpoint: Url,
        /// The per-process secret the platform gives.
        header: Secret,
    },
}

/// A managed identity, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedIdentityConfig {
    /// `None` for the system-assigned identity.
    pub id: Option<ManagedIdentityId>,
    /// IMDS or App Service.
    pub endpoint: ManagedIdentityEndpoint,
}

impl ManagedIdentityConfig {
    /// For logs: which endpoint and which identity, without the header secret.
    pub fn describe(&self) -> String {
        let endpoint = match &self.endpoint {
            ManagedIdentityEndpoint::Imds(url) => format!("IMDS at {url}"),
            ManagedIdentityEndpoint::AppService { endpoint, .. } => {
                format!("App Service endpoint {endpoint}")
            }
        };
        let id = match &self.id {
            None => "system-assigned identity".to_owned(),
            Some(ManagedIdentityId::ClientId(id)) => {
                format!("user-assigned identity client_id {id}")
            }
            Some(ManagedIdentityId::ObjectId(id)) => {
                format!("user-assigned identity object_id {id}")
            }
            Some(ManagedIdentityId::ResourceId(id)) => {
                format!("user-assigned identity resource id {id}")
            }
        };
        format!("{id}, {endpoint}")
    }
}

/// A managed identity credential.
pub struct ManagedIdentity {
    /// What to ask for.
    config: ManagedIdentityConfig,
    /// The token URL with every query parameter.
    url: Url,
    /// A client without proxies: the endpoint is on this host (or link-local).
    http: reqwest::Client,
}

impl ManagedIdentity {
    /// A credential for `scope` (the resource is the scope without `/.default`).
    pub fn new(config: ManagedIdentityConfig, scope: &str) -> Result<Self, String> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let url = match &config.endpoint {
            ManagedIdentityEndpoint::Imds(base) => {
                let mut url = base.clone();
                url.path_segments_mut()
                    .map_err(|_| format!("{base} cannot be an IMDS endpoint"))?
                    .pop_if_empty()
                    .extend(["metadata", "identity", "oauth2", "token"]);
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("api-version", IMDS_API_VERSION)
                    .append_pair("resource", resource);
                match &config.id {
                    Some(ManagedIdentityId::ClientId(id)) => query.append_pair("client_id", id),
                    Some(ManagedIdentityId::ObjectId(id)) => query.append_pair("object_id", id),
                    Some(ManagedIdentityId::ResourceId(id)) => query.append_pair("msi_res_id", id),
                    None => &mut query,
                };
                drop(query);
                url
            }
            ManagedIdentityEndpoint::AppService { endpoint, .. } => {
                let mut url = endpoint.clone();
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("api-version", APP_SERVICE_API_VERSION)
                    .append_pair("resource", resource);
                match &config.id {
                    Some(ManagedIdentityId::ClientId(id)) => query.append_pair("client_id", id),
                    Some(ManagedIdentityId::ObjectId(id)) => query.append_pair("principal_id", id),
                    Some(ManagedIdentityId::ResourceId(id)) => query.append_pair("mi_res_id", id),
                    None => &mut query,
                };
                drop(query);
                url
            }
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("cannot build the managed identity client: {e}"))?;
        Ok(ManagedIdentity { config, url, http })
    }

    /// The token URL, query included (no secret in it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn retryable(&self, status: StatusCode) -> bool {
        let imds = matches!(self.config.endpoint, ManagedIdentityEndpoint::Imds(_));
        status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            || (imds && matches!(status.as_u16(), 404 | 410))
    }
}

/// The wait before retry number `attempt` (1-based), without jitter so tests are exact.
pub fn retry_delay(attempt: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY)
}

impl Credential for ManagedIdentity {
    fn method(&self) -> &'static str {
        "managed_identity"
    }

    fn request_token<'a>(
        &'a self,
        _shared: &'a HttpClient,
    ) -> BoxFuture<'a, Result<AccessToken, Error>> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                let mut request = self.http.get(self.url.clone());
                request = match &self.config.endpoint {
                    ManagedIdentityEndpoint::Imds(_) => request.header("Metadata", "true"),
                    ManagedIdentityEndpoint::AppService { header, .. } => {
                        request.header("X-IDENTITY-HEADER", header.expose())
                    }
                };
                let sent = Instant::now();
                let response = request
                    .send()
                    .await
                    .map_err(|e| transport_error(Stage::Token, e))?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = read_capped(response, Stage::Token, ERROR_BODY_LIMIT).await?;
                if status == StatusCode::OK {
                    return entra::parse_token_response(&body, sent);
                }
                // A Retry-After beyond the longest in-refresh wait ends the refresh instead: the
                // tenant then waits for it (its not-before) without holding a refresh slot.
                let wait_fits = retry_after.is_none_or(|wait| wait <= MAX_RETRY_DELAY);
                if self.retryable(status) && attempt < MAX_RETRIES && wait_fits {
                    attempt += 1;
                    let wait = retry_delay(attempt).max(retry_after.unwrap_or_default());
                    tracing::debug!(
                        status = status.as_u16(),
                        attempt,
                        wait_seconds = wait.as_secs_f64(),
                        "Managed identity endpoint not ready; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let mut error = entra::rejection(status.as_u16(), &body, retry_after);
                if let Error::TokenRejected(rejection) = &mut error {
                    if rejection.aadsts.is_none() {
                        rejection.hint = match status.as_u16() {
                            400 | 404 => "the managed identity was not found: check that it is assigned to this VM or app, and the client_id / object_id / resource id",
                            401 | 403 => "the managed identity endpoint refused the request: on App Service check IDENTITY_HEADER",
                            _ => "the managed identity endpoint keeps failing: the exporter retries at the next refresh",
                        };
                    }
                }
                return Err(error);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_url_names_resource_and_identity() {
        let imds = |id| {
            ManagedIdentity::new(
                ManagedIdentityConfig {
                    id,
                    endpoint: ManagedIdentityEndpoint::Imds(
                        Url::parse(DEFAULT_IMDS_ENDPOINT).unwrap(),
                    ),
                },
                "https://graph.microsoft.us/.default",
            )
            .unwrap()
            .url()
            .to_string()
        };
        assert_eq!(
            imds(None),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.us"
        );
        assert!(imds(Some(ManagedIdentityId::ClientId("c".into()))).ends_with("&client_id=c"));
        assert!(imds(Some(ManagedIdentityId::ObjectId("o".into()))).ends_with("&object_id=o"));
        assert!(imds(Some(ManagedIdentityId::ResourceId(
            "/subscriptions/s".into()
        )))
        .ends_with("&msi_res_id=%2Fsubscriptions%2Fs"));
    }

    #[test]
    fn app_service_url_keeps_the_platform_path() {
        let credential = ManagedIdentity::new(
            ManagedIdentityConfig {
                id: Some(ManagedIdentityId::ObjectId("o".into())),
                endpoint: ManagedIdentityEndpoint::AppService {
                    endpoint: Url::parse("http://127.0.0.1:41741/MSI/token/").unwrap(),
                    header: Secret::new("h"),
                },
            },
            "https://graph.microsoft.com/.default",
        )
        .unwrap();
        assert_eq!(
            credential.url().as_str(),
            "http://127.0.0.1:41741/MSI/token/?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com&principal_id=o"
        );
        assert!(!format!("{:?}", credential.config).contains("\"h\""));
    }

    #[test]
    fn retry_delays_double_and_are_capped() {
        let delays: Vec<u64> = (1..=MAX_RETRIES)
            .map(|a| retry_delay(a).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert!(delays.iter().sum::<u64>() >= 70);
    }
}
