//! The one error type of a refresh, and the bounded label values it maps to.
//!
//! Every way a refresh can fail is a variant here. `stage()` and `reason()` turn a variant into the
//! `stage` and `reason` labels of `office365_activations_fetch_errors_total`, so the metric and the
//! log line always agree, and no label value can come from outside this file.

use std::fmt;
use std::time::Duration;

use crate::reports::ParseError;

/// Where in the refresh flow an error happened: the `stage` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Getting an access token from Entra ID.
    Token,
    /// Asking Graph for the report (the request that answers 302).
    Report,
    /// Fetching the pre-authenticated download URL.
    Download,
    /// Turning the downloaded body into a report.
    Parse,
}

impl Stage {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Token => "token",
            Stage::Report => "report",
            Stage::Download => "download",
            Stage::Parse => "parse",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifiers that Microsoft support asks for, carried by every error that came from a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// Graph's `request-id` response header (or Entra ID's `trace_id`).
    pub request_id: Option<String>,
    /// The `client-request-id` we sent (Graph echoes it), or Entra ID's `correlation_id`.
    pub client_request_id: Option<String>,
}

impl fmt::Display for RequestIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request-id={} client-request-id={}",
            self.request_id.as_deref().unwrap_or("-"),
            self.client_request_id.as_deref().unwrap_or("-")
        )
    }
}

/// Entra ID's refusal of a token request, with what an operator needs to act on it.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "Entra ID refused the token request (HTTP {status}, {error}{}): {hint}. correlation_id={} trace_id={}: {description}",
    aadsts.as_deref().map(|c| format!(", {c}")).unwrap_or_default(),
    ids.client_request_id.as_deref().unwrap_or("-"),
    ids.request_id.as_deref().unwrap_or("-")
)]
pub struct TokenRejection {
    /// HTTP status of the token endpoint's answer.
    pub status: u16,
    /// The OAuth `error` field, e.g. `invalid_client`.
    pub error: String,
    /// The AADSTS code, e.g. `AADSTS7000215`, the key to Microsoft's documentation.
    pub aadsts: Option<String>,
    /// The first line of `error_description`.
    pub description: String,
    /// What the operator should do about it.
    pub hint: &'static str,
    /// `correlation_id` and `trace_id` of the answer.
    pub ids: RequestIds,
    /// Retry-After sent with a throttled (429) or unavailable (503) answer.
    pub retry_after: Option<Duration>,
}

/// An error status from Graph or the download host, with Graph's code and request ids.
#[derive(Debug, thiserror::Error)]
#[error("{stage} request answered HTTP {status} {code}: {message} ({hint}) {ids}")]
pub struct HttpFailure {
    /// Which request was answered.
    pub stage: Stage,
    /// The HTTP status.
    pub status: u16,
    /// Graph's `error.code` (e.g. `S2SUnauthorized`), or `-` when the body had none.
    pub code: String,
    /// Graph's `error.message`, or the start of a non-JSON body.
    pub message: String,
    /// What the operator should do about it.
    pub hint: &'static str,
    /// Graph's request ids, for a support case.
    pub ids: RequestIds,
    /// The Retry-After header, when Graph sent one.
    pub retry_after: Option<Duration>,
}

/// Everything that can make a refresh fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP exchange did not complete: DNS, connect, TLS, reset, or a timeout.
    #[error(
        "{stage} request to {origin}{} failed: {message}",
        proxy.as_deref().map(|p| format!(" via proxy {p}")).unwrap_or_default()
    )]
    Transport {
        /// Which request failed.
        stage: Stage,
        /// A timeout is reported apart from other network failures: it suggests a slow proxy.
        timeout: bool,
        /// The HTTP/2 connection the request shared with others failed as a whole (a GOAWAY,
        /// sent or received, or its I/O), not the request's own stream: every request on it
        /// failed alike, and the same request on a new connection may well succeed.
        connection_lost: bool,
        /// Where the request went, as `scheme://host:port` (e.g.
        /// `https://login.microsoftonline.com:443`): the first thing an operator needs to fix
        /// DNS, a firewall or a proxy rule. Never a path or query: a download URL's query is a
        /// credential.
        origin: String,
        /// The proxy the request went through, as `scheme://host:port` without its credentials;
        /// `None` when it went directly.
        proxy: Option<String>,
        /// The client's description of the failure, with its causes.
        message: String,
    },

    /// Entra ID refused to issue a token (bad secret, unknown app or tenant, bad scope...).
    #[error(transparent)]
    TokenRejected(Box<TokenRejection>),

    /// Graph or the download host answered with an error status.
    #[error(transparent)]
    Http(Box<HttpFailure>),

    /// The answer arrived but is not what the protocol promises (no Location on a 302, a redirect
    /// to plain http or a loop, an unexpected status, an unreadable token response).
    #[error("{stage} response invalid: {detail}")]
    InvalidResponse {
        /// Which request was answered.
        stage: Stage,
        /// What was wrong with it.
        detail: String,
    },

    /// The body exceeded its cap; the rest was not read.
    #[error("{stage} response larger than the {limit} byte limit{}", setting.map(|s| format!(" (raise {s} if the report is really that large)")).unwrap_or_default())]
    TooLarge {
        /// Which request was answered.
        stage: Stage,
        /// The cap that was hit.
        limit: u64,
        /// The flag that sets the cap, when there is one.
        setting: Option<&'static str>,
    },

    /// A paged (JSON) report needs more requests than the 10-minute budget has left: it is too
    /// large for Graph's JSON throttling limit.
    #[error("report request budget of {budget} per 10 minutes used up before the last page: the report is too large for the JSON format; use graph_format csv")]
    OverBudget {
        /// The budget that was hit.
        budget: usize,
    },

    /// The downloaded report could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

impl Error {
    /// The `stage` label value.
    pub fn stage(&self) -> Stage {
        match self {
            Error::Http(failure) => failure.stage,
            Error::Transport { stage, .. }
            | Error::InvalidResponse { stage, .. }
            | Error::TooLarge { stage, .. } => *stage,
            Error::TokenRejected { .. } => Stage::Token,
            Error::OverBudget { .. } => Stage::Report,
            Error::Parse(_) => Stage::Parse,
        }
    }

    /// The `reason` label value: one of a small fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Transport { timeout: true, .. } => "timeout",
            Error::Transport { timeout: false, .. } => "network",
            Error::TokenRejected(rejection) => match rejection.status {
                429 => "throttled",
                // Entra ID answers 400 or 401 to every configuration mistake (secret, app, tenant).
                400 | 401 | 403 => "unauthorized",
                500.. => "http_5xx",
                _ => "http_4xx",
            },
            Error::Http(failure) => match failure.status {
                // A success or redirect status where none belongs (e.g. 204 to the report).
                ..=399 => "invalid_response",
                429 => "throttled",
                401 | 403 => "unauthorized",
                500.. => "http_5xx",
                _ => "http_4xx",
            },
            Error::InvalidResponse { .. } => "invalid_response",
            Error::TooLarge { .. } | Error::OverBudget { .. } => "too_large",
            Error::Parse(e) => e.reason(),
        }
    }

    /// How long the server asked us to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::TokenRejected(rejection) => rejection.retry_after,
            Error::Http(failure) => failure.retry_after,
            _ => None,
        }
    }

    /// The request failed because the HTTP/2 connection it shared with others failed as a
    /// whole, not because of anything in its own answer.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                connection_lost: true,
                ..
            }
        )
    }

    /// Graph refused the access token (401): drop it; a new one may carry newly granted roles.
    pub fn is_unauthorized_token(&self) -> bool {
        matches!(self, Error::Http(failure) if failure.stage == Stage::Report && failure.status == 401)
    }
}

/// Every `reason` label value the exporter can emit, for documentation and tests.
pub const REASONS: &[&str] = &[
    "throttled",
    "timeout",
    "network",
    "unauthorized",
    "http_4xx",
    "http_5xx",
    "invalid_response",
    "too_large",
    "not_csv",
    "missing_column",
    "invalid_value",
];

/// Parses a Retry-After header: delta-seconds, fractional seconds too (Graph sends them).
/// HTTP dates are accepted as well and turned into a delay from now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delay = when.signed_duration_since(chrono::Utc::now());
    Some(
        delay
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_fractional_seconds() {
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("-3"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn transport_errors_name_the_origin_and_the_proxy() {
        let transport = |proxy: Option<&str>| Error::Transport {
            stage: Stage::Token,
            timeout: false,
            connection_lost: false,
            origin: "https://login.microsoftonline.com:443".into(),
            proxy: proxy.map(str::to_owned),
            message: "error sending request".into(),
        };
        assert_eq!(
            transport(None).to_string(),
            "token request to https://login.microsoftonline.com:443 failed: error sending request"
        );
        assert_eq!(
            transport(Some("http://proxy.example:3128")).to_string(),
            "token request to https://login.microsoftonline.com:443 via proxy http://proxy.example:3128 failed: error sending request"
        );
        assert_eq!(transport(None).reason(), "network");
    }

    #[test]
    fn reasons_are_bounded() {
        let http = |status| {
            Error::Http(Box::new(HttpFailure {
                stage: Stage::Report,
                status,
                code: "-".into(),
                message: String::new(),
                hint: "",
                ids: RequestIds::default(),
                retry_after: None,
            }))
        };
        for status in [400, 401, 403, 404, 409, 429, 500, 502, 503, 504] {
            assert!(REASONS.contains(&http(status).reason()), "{status}");
        }
        assert_eq!(http(429).reason(), "throttled");
        assert_eq!(http(401).reason(), "unauthorized");
        assert_eq!(http(404).reason(), "http_4xx");
        assert_eq!(http(503).reason(), "http_5xx");
        let parse = Error::from(ParseError::NotCsv("x".into()));
        assert_eq!((parse.stage(), parse.reason()), (Stage::Parse, "not_csv"));
    }
}
