//! The client-credentials grant with a client secret.
//!
//! Written on reqwest rather than `azure_identity` because the exporter needs what that crate does
//! not hand back: the AADSTS code and correlation id of a refusal as fields (for the log line and
//! the operator's hint), the shared connection pool and extra CA of [`crate::http_client`], and no
//! retry loop of its own hiding Entra ID's answers from the refresh's backoff.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::{AccessToken, BoxFuture, Credential, Secret};
use crate::error::{parse_retry_after, Error, RequestIds, Stage, TokenRejection};
use crate::http_client::{read_capped, snippet, transport_error, ERROR_BODY_LIMIT};

/// Where the secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Given at start (env `AZURE_CLIENT_SECRET`).
    Value(Secret),
    /// A file, read again at every token request so that a rotated secret is picked up.
    File(PathBuf),
}

impl SecretSource {
    /// The current secret; file contents are trimmed of surrounding white space (editors add a
    /// final newline).
    pub fn read(&self) -> std::io::Result<Secret> {
        match self {
            SecretSource::Value(secret) => Ok(secret.clone()),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path)?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is empty",
                    ));
                }
                Ok(Secret::new(value))
            }
        }
    }
}

/// An app registration's client id and secret, for one tenant.
pub struct ClientSecret {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    token_url: Url,
    /// The application (client) id.
    client_id: String,
    /// `{graph endpoint}/.default`: tokens do not cross clouds.
    scope: String,
    /// Where the secret comes from.
    secret: SecretSource,
}

impl ClientSecret {
    /// A credential for `tenant_id` at `authority_host`, asking for tokens for `scope`.
    pub fn new(
        authority_host: &Url,
        tenant_id: &str,
        client_id: &str,
        scope: &str,
        secret: SecretSource,
    ) -> Result<Self, String> {
        let token_url = token_url(authority_host, tenant_id)?;
        Ok(ClientSecret {
            token_url,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            secret,
        })
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, with the tenant id as one path segment.
pub fn token_url(authority_host: &Url, tenant_id: &str) -> Result<Url, String> {
    let mut url = authority_host.clone();
    url.path_segments_mut()
        .map_err(|_| format!("{authority_host} cannot be an authority host"))?
        .pop_if_empty()
        .extend([tenant_id, "oauth2", "v2.0", "token"]);
    Ok(url)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// A number from Entra ID, a string from managed identity endpoints.
    expires_in: NumberOrString,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

/// What an operator should do about an AADSTS code.
fn hint(aadsts: Option<u64>, status: u16) -> &'static str {
    match aadsts {
        Some(7000215) => "the client secret is wrong: use the secret's Value (not its Secret ID) from Entra ID > App registrations > Certificates & secrets",
        Some(7000222) => "the client secret has expired: create a new one in the app registration and update AZURE_CLIENT_SECRET or the secret file",
        Some(700016) => "no app with this client id in this tenant: check the client id, and that the app was consented in this tenant",
        Some(90002) | Some(90023) => "tenant not found: check the tenant id and the authority host (cloud)",
        Some(70011) => "invalid scope: the token scope must be the Graph endpoint followed by /.default",
        Some(700027) | Some(700024) => "the client assertion was refused: check the certificate uploaded to the app registration",
        Some(7000112) => "the application is disabled in this tenant",
        _ if status == 429 => "Entra ID is throttling token requests: the exporter waits and retries",
        _ if status >= 500 => "Entra ID is failing: the exporter retries with backoff",
        _ => "look the AADSTS code up in Microsoft's Entra ID error reference",
    }
}

impl Credential for ClientSecret {
    fn method(&self) -> &'static str {
        "client_secret"
    }

    fn request_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<AccessToken, Error>> {
        Box::pin(async move {
            let secret = self.secret.read().map_err(|e| Error::InvalidResponse {
                stage: Stage::Token,
                detail: format!("cannot read the client secret file: {e}"),
            })?;
            let form = [
                ("client_id", self.client_id.as_str()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
                ("client_secret", secret.expose()),
            ];
            let sent = Instant::now();
            let response = http
                .post(self.token_url.clone())
                .header("client-request-id", uuid::Uuid::new_v4().to_string())
                .form(&form)
                .send()
                .await
                .map_err(|e| transport_error(Stage::Token, e))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            if status == 200 {
                let body = read_capped(response, Stage::Token, ERROR_BODY_LIMIT).await?;
                let parsed: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                        stage: Stage::Token,
                        detail: format!("token response is not the expected JSON: {e}"),
                    })?;
                let expires_in = match parsed.expires_in {
                    NumberOrString::Number(n) => Some(n),
                    NumberOrString::String(s) => s.parse().ok(),
                }
                .ok_or_else(|| Error::InvalidResponse {
                    stage: Stage::Token,
                    detail: "token response has a non-numeric expires_in".into(),
                })?;
                return Ok(AccessToken {
                    value: Secret::new(parsed.access_token),
                    expires_at: sent + Duration::from_secs(expires_in),
                });
            }
            let body = read_capped(response, Stage::Token, ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            let parsed: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let code = parsed.error_codes.first().copied().or_else(|| {
                // "AADSTS7000215: Invalid client secret provided..."
                let rest = parsed.error_description.strip_prefix("AADSTS")?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
            let description = match parsed.error_description.lines().next() {
                Some(line) if !line.trim().is_empty() => line.trim().to_owned(),
                _ => snippet(&body),
            };
            Err(Error::TokenRejected(Box::new(TokenRejection {
                status,
                error: if parsed.error.is_empty() {
                    "-".into()
                } else {
                    parsed.error
                },
                aadsts: code.map(|c| format!("AADSTS{c}")),
                description,
                hint: hint(code, status),
                ids: RequestIds {
                    request_id: parsed.trace_id,
                    client_request_id: parsed.correlation_id,
                },
                retry_after,
            })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_url_keeps_the_tenant_as_one_segment() {
        let authority = Url::parse("https://login.microsoftonline.com").unwrap();
        assert_eq!(
            token_url(&authority, "contoso.onmicrosoft.com")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let with_slash = Url::parse("https://127.0.0.1:8443/").unwrap();
        assert_eq!(
            token_url(&with_slash, "t").unwrap().as_str(),
            "https://127.0.0.1:8443/t/oauth2/v2.0/token"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let source = SecretSource::Value(Secret::new("hunter2"));
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn secret_file_is_trimmed_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").unwrap();
        let source = SecretSource::File(path.clone());
        assert_eq!(source.read().unwrap().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(source.read().unwrap().expose(), "second");
        std::fs::write(&path, "\n").unwrap();
        assert!(source.read().is_err());
    }
}
