//! The client-credentials exchange with Entra ID's token endpoint, shared by every method that
//! talks to it (client secret, client certificate, workload identity), and the parsing of token
//! answers shared with managed identity.
//!
//! A refusal becomes [`Error::TokenRejected`] with the AADSTS code, the correlation and trace ids,
//! and a hint saying what to do: an operator needs exactly these in the log line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::{AccessToken, Secret};
use crate::error::{parse_retry_after, Error, RequestIds, Stage, TokenRejection};
use crate::http_client::{read_capped, snippet, HttpClient, ERROR_BODY_LIMIT};

/// The `client_assertion_type` of certificate and federated (workload identity) assertions.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `{authority}/{tenant}/oauth2/v2.0/token`, with the tenant id as one path segment.
pub fn token_url(authority_host: &Url, tenant_id: &str) -> Result<Url, String> {
    let mut url = authority_host.clone();
    url.path_segments_mut()
        .map_err(|_| format!("{authority_host} cannot be an authority host"))?
        .pop_if_empty()
        .extend([tenant_id, "oauth2", "v2.0", "token"]);
    Ok(url)
}

/// A token answer: Entra ID's, IMDS's or App Service's.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    /// Seconds from now: a number from Entra ID, a string from IMDS; App Service omits it.
    #[serde(default)]
    pub(crate) expires_in: Option<NumberOrString>,
    /// Unix time: a string from IMDS and App Service.
    #[serde(default)]
    pub(crate) expires_on: Option<NumberOrString>,
}

/// Managed identity endpoints send their numbers as JSON strings (`"expires_in":"3599"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrString {
    Number(u64),
    String(String),
}

impl NumberOrString {
    fn value(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::String(s) => s.trim().parse().ok(),
        }
    }
}

/// The longest lifetime a token answer is believed: Entra ID's tokens live about an hour and
/// managed identity's a day. A larger `expires_in` (or an `expires_on` centuries away) only
/// makes the token be fetched again sooner; unbounded, it overflowed the clock arithmetic.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 86_400);

/// Parses a 200 token answer; `sent` is when the request went out (the lifetime counts from it).
/// Public for the fuzz target `token_response`.
#[doc(hidden)]
pub fn parse_token_response(body: &[u8], sent: Instant) -> Result<AccessToken, Error> {
    let invalid = |detail: String| Error::InvalidResponse {
        stage: Stage::Token,
        detail,
    };
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("token response is not the expected JSON: {e}")))?;
    if parsed.access_token.is_empty() {
        return Err(invalid("token response has an empty access_token".into()));
    }
    let lifetime = match (&parsed.expires_in, &parsed.expires_on) {
        (Some(seconds), _) => seconds.value().map(Duration::from_secs),
        (None, Some(unix)) => {
            unix.value().map(
                |unix| match UNIX_EPOCH.checked_add(Duration::from_secs(unix)) {
                    Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
                    None => MAX_TOKEN_LIFETIME,
                },
            )
        }
        (None, None) => None,
    }
    .ok_or_else(|| invalid("token response has no numeric expires_in or expires_on".into()))?
    .min(MAX_TOKEN_LIFETIME);
    Ok(AccessToken {
        value: Secret::new(parsed.access_token),
        expires_at: sent + lifetime,
    })
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

/// What an operator should do about an AADSTS code. The codes and their meanings are Entra ID's
/// (its error reference at `https://login.microsoftonline.com/error?code=N`).
pub(crate) fn hint(aadsts: Option<u64>, status: u16) -> &'static str {
    match aadsts {
        // Invalid client secret provided.
        Some(7000215) => "the client secret is wrong: use the secret's Value (not its Secret ID) from Entra ID > App registrations > Certificates & secrets",
        // The provided client secret keys are expired.
        Some(7000222) => "the client secret has expired: create a new one in the app registration and update AZURE_CLIENT_SECRET or the secret file",
        // Application with identifier ... was not found in the directory.
        Some(700016) => "no app with this client id in this tenant: check the client id, and that the app was consented in this tenant",
        // Tenant not found / invalid tenant name.
        Some(90002) | Some(90023) => "tenant not found: check the tenant id and the authority host (cloud)",
        // The provided value for the input parameter 'scope' is not valid.
        Some(70011) => "invalid scope: the token scope must be the Graph endpoint of the same cloud followed by /.default",
        // The resource principal named ... was not found in the tenant: a scope of another cloud.
        Some(500011) => "the scope names a resource this cloud does not have: check --cloud, --graph.endpoint and --auth.scope (tokens do not cross clouds)",
        // Client assertion failed signature validation (unknown key, bad signature, expired key).
        Some(700027) => "the certificate's assertion was refused: upload this certificate (its thumbprint is in the log at start) to the app registration, and check that the private key belongs to it and has not expired",
        // Client assertion is not within its valid time range.
        Some(700024) => "the assertion is outside its validity window: check this host's clock (NTP), or for workload identity that the projected token file is being refreshed",
        // Client assertion application identifier doesn't match 'client_id' parameter.
        Some(700021) => "the assertion's iss/sub are not the client id: check --auth.client-id (AZURE_CLIENT_ID)",
        // Assertion audience claim does not match the required value.
        Some(50013) => "the assertion's audience is not this token endpoint: check --auth.authority-host and the tenant id",
        // JWT token is invalid or malformed.
        Some(50027) => "the assertion is not a well-formed JWT: for workload identity, check AZURE_FEDERATED_TOKEN_FILE",
        // No matching federated identity record found for presented assertion (issuer, audience,
        // subject: 700211, 700212, 700213).
        Some(70021) | Some(700211) | Some(700212) | Some(700213) => "no federated credential of the app matches the token's issuer, subject and audience: check the federated credential (issuer URL, system:serviceaccount:<namespace>:<name>, api://AzureADTokenExchange)",
        // Application is disabled.
        Some(7000112) => "the application is disabled in this tenant",
        _ if status == 429 => "Entra ID is throttling token requests: the exporter waits and retries",
        _ if status >= 500 => "Entra ID is failing: the exporter retries with backoff",
        _ => "look the AADSTS code up in Microsoft's Entra ID error reference",
    }
}

/// The client-credentials grant with a signed `assertion` (a certificate's JWT, or a federated
/// token): the form the certificate and workload identity credentials share.
pub async fn request_token_with_assertion(
    http: &HttpClient,
    token_url: &Url,
    client_id: &str,
    scope: &str,
    assertion: &str,
) -> Result<AccessToken, Error> {
    let form = [
        ("client_id", client_id),
        ("scope", scope),
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    request_token(http, token_url, &form).await
}

/// Posts a client-credentials `form` to `token_url` and returns the token, or Entra ID's refusal
/// with its AADSTS code and ids.
pub async fn request_token(
    http: &HttpClient,
    token_url: &Url,
    form: &[(&str, &str)],
) -> Result<AccessToken, Error> {
    let sent = Instant::now();
    let response = http
        .post(token_url.clone())
        .header("client-request-id", uuid::Uuid::new_v4().to_string())
        .form(form)
        .send()
        .await
        .map_err(|e| http.transport_error(Stage::Token, e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    if status == 200 {
        let body = http
            .read_capped(response, Stage::Token, ERROR_BODY_LIMIT)
            .await?;
        return parse_token_response(&body, sent);
    }
    let body = read_capped(response, Stage::Token, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    Err(rejection(status, &body, retry_after))
}

/// Turns an error answer of a token endpoint into [`Error::TokenRejected`]. Also used for managed
/// identity endpoints, whose bodies have `error` and `error_description` but no AADSTS fields.
/// Public for the fuzz target `token_response`.
#[doc(hidden)]
pub fn rejection(status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
    let parsed: TokenErrorBody = serde_json::from_slice(body).unwrap_or_default();
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
        _ => snippet(body),
    };
    Error::TokenRejected(Box::new(TokenRejection {
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
    }))
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
    fn token_answers_with_numbers_or_strings() {
        let now = Instant::now();
        let entra = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"x"}"#;
        assert_eq!(
            parse_token_response(entra, now).unwrap().expires_at,
            now + Duration::from_secs(3599)
        );
        let imds = br#"{"access_token":"x","refresh_token":"","expires_in":"86399","expires_on":"1506484173","not_before":"1506397473","resource":"https://graph.microsoft.com","token_type":"Bearer"}"#;
        assert_eq!(
            parse_token_response(imds, now).unwrap().expires_at,
            now + Duration::from_secs(86399)
        );
        let in_an_hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let app_service = format!(
            r#"{{"access_token":"x","expires_on":"{in_an_hour}","resource":"https://graph.microsoft.com","token_type":"Bearer","client_id":"c"}}"#
        );
        let at = parse_token_response(app_service.as_bytes(), now)
            .unwrap()
            .expires_at;
        assert!(at > now + Duration::from_secs(3500) && at <= now + Duration::from_secs(3600));
        for bad in [
            &br#"{"access_token":"x"}"#[..],
            br#"{"access_token":"x","expires_in":"soon"}"#,
            br#"{"access_token":"","expires_in":1}"#,
            b"<html>",
        ] {
            assert!(parse_token_response(bad, now).is_err());
        }
    }

    #[test]
    fn huge_lifetimes_are_capped_instead_of_overflowing_the_clock() {
        // Found by fuzzing review: `sent + expires_in` and `UNIX_EPOCH + expires_on` panicked.
        let now = Instant::now();
        for body in [
            r#"{"access_token":"x","expires_in":18446744073709551615}"#.to_owned(),
            r#"{"access_token":"x","expires_in":"18446744073709551615"}"#.to_owned(),
            r#"{"access_token":"x","expires_on":"18446744073709551615"}"#.to_owned(),
            r#"{"access_token":"x","expires_in":99999999999}"#.to_owned(),
        ] {
            let token = parse_token_response(body.as_bytes(), now).unwrap();
            assert_eq!(token.expires_at, now + MAX_TOKEN_LIFETIME, "{body}");
        }
    }

    #[test]
    fn refusals_carry_the_aadsts_code_and_ids() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700027: Client assertion failed signature validation.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: x","error_codes":[700027],"trace_id":"t","correlation_id":"c"}"#;
        let error = rejection(401, body, None).to_string();
        assert!(error.contains("AADSTS700027"), "{error}");
        assert!(error.contains("correlation_id=c"), "{error}");
        assert!(error.contains("upload this certificate"), "{error}");
        let imds = rejection(
            400,
            br#"{"error":"invalid_request","error_description":"Identity not found"}"#,
            None,
        )
        .to_string();
        assert!(imds.contains("Identity not found"), "{imds}");
    }
}
