//! Scripted answers ([`Canned`]), the shared mutable state of a running fake, the sliding-window
//! throttle, and the body builders for the error shapes of Entra ID, Graph and Azure blob storage.
//!
//! Everything here is synchronous: the state lives behind a `std::sync::Mutex` that the servers
//! lock only between `.await` points.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::identity::{FakeCloud, FakeFederatedCredential, RegisteredCertificate};
use super::reports::{DataSnapshot, FakePlatformCounts, FakeReport, FakeReportStats, FakeUser};
use super::util::{base64, random_bytes, random_id, xml_escape};
use super::{FakeStats, FakeTenant, ReportData};

/// One scripted answer that overrides the fake's normal behaviour for the next request to an
/// endpoint of one tenant.
///
/// Queued with [`FakeGraph::push_token_response`], [`FakeGraph::push_report_response_for`] or
/// [`FakeGraph::push_download_response_for`] (one queue per endpoint and report); answers are
/// served first in, first out, take priority over the normal behaviour (authentication,
/// throttling, link checks) and still count in [`FakeStats`]. A canned answer to a request for a
/// page of the user detail JSON replaces that page, so tests can script pages, `@odata.nextLink`
/// loops, HTML pages or truncated JSON. They let a test reproduce any answer Microsoft was seen to give, including ones
/// the fake never produces on its own (500, 503 with `Retry-After`, HTML error pages, redirects to
/// a look-alike host, ...).
///
/// [`FakeGraph::push_token_response`]: super::FakeGraph::push_token_response
/// [`FakeGraph::push_report_response_for`]: super::FakeGraph::push_report_response_for
/// [`FakeGraph::push_download_response_for`]: super::FakeGraph::push_download_response_for
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    /// HTTP status code to answer with (an invalid code is answered as 500).
    pub status: u16,
    /// Response headers, sent verbatim in order; a header that is not valid HTTP is dropped with
    /// a warning. On the Graph host, `request-id` and the echo of `client-request-id` are added
    /// when missing, as every Graph answer carries them.
    pub headers: Vec<(String, String)>,
    /// Response body, sent verbatim.
    pub body: Bytes,
    /// How long to wait (tokio time) before answering at all, to simulate a slow or hung service.
    pub delay: Duration,
}

impl Canned {
    /// A Graph error exactly as Graph shapes it (graph-behaviour.md §4):
    /// `{"error":{"code":..,"message":..,"innerError":{"date":..,"request-id":..,"client-request-id":..}}}`
    /// with `Content-Type: application/json` and a `request-id` header matching the body.
    pub fn graph_error(status: u16, code: &str, message: &str) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        let body = graph_error_body(code, message, &request_id, &request_id);
        Canned {
            status,
            headers: vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("request-id".to_string(), request_id),
            ],
            body,
            delay: Duration::ZERO,
        }
    }

    /// An Entra ID token error exactly as graph-behaviour.md §1 shows it: `error`,
    /// `error_description` (`"AADSTS<code>: <description>\r\nTrace ID: ..\r\nCorrelation ID:
    /// ..\r\nTimestamp: .."`), `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
    /// `description` may or may not already start with `AADSTS<code>: `.
    pub fn aadsts_error(status: u16, error: &str, aadsts: u32, description: &str) -> Self {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let body = aadsts_body(
            error,
            aadsts,
            description,
            &trace_id,
            &correlation_id,
            Utc::now(),
        );
        Canned {
            status,
            headers: vec![
                (
                    "Content-Type".to_string(),
                    "application/json; charset=utf-8".to_string(),
                ),
                (
                    "Cache-Control".to_string(),
                    "no-store, no-cache".to_string(),
                ),
                ("x-ms-request-id".to_string(), trace_id),
            ],
            body,
            delay: Duration::ZERO,
        }
    }

    /// A `302 Found` to `location` with `Content-Type: text/plain` and an empty body, like the
    /// report endpoint's normal answer (use it to redirect to a look-alike host, or to a link
    /// that is already expired).
    pub fn redirect(location: &str) -> Self {
        Canned {
            status: 302,
            headers: vec![
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("Location".to_string(), location.to_string()),
            ],
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// A `200 OK` JSON answer with Graph's JSON content type: a scripted page of a JSON report,
    /// say `{"value":[...],"@odata.nextLink":"..."}`.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Canned::body(
            200,
            "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8",
            body,
        )
    }

    /// Any status with any body and content type (HTML error pages, truncated JSON, ...).
    pub fn body(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Canned {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a `Retry-After` header with `value` verbatim (Graph sends whole seconds, but
    /// fractional values such as `"1.5"` and HTTP dates are seen too).
    pub fn retry_after(mut self, value: &str) -> Self {
        self.headers
            .push(("Retry-After".to_string(), value.to_string()));
        self
    }

    /// Waits `d` (tokio time) before answering.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// Serialisable shape of a Graph error body.
#[derive(Serialize)]
struct GraphErrorBody<'a> {
    /// The `error` object.
    error: GraphError<'a>,
}

/// The `error` object of a Graph error body.
#[derive(Serialize)]
struct GraphError<'a> {
    /// Machine-readable code, e.g. `InvalidAuthenticationToken`.
    code: &'a str,
    /// Human-readable message.
    message: &'a str,
    /// Diagnostics that support asks for.
    #[serde(rename = "innerError")]
    inner_error: InnerError<'a>,
}

/// The `innerError` object of a Graph error body.
#[derive(Serialize)]
struct InnerError<'a> {
    /// UTC time of the answer, `YYYY-MM-DDTHH:MM:SS` without zone, as Graph writes it.
    date: String,
    /// Graph's id for the request (also in the `request-id` header).
    #[serde(rename = "request-id")]
    request_id: &'a str,
    /// The client's `client-request-id`, or the request id when the client sent none.
    #[serde(rename = "client-request-id")]
    client_request_id: &'a str,
}

/// A Graph error body with an `innerError`, dated now.
pub(crate) fn graph_error_body(
    code: &str,
    message: &str,
    request_id: &str,
    client_request_id: &str,
) -> Bytes {
    let body = GraphErrorBody {
        error: GraphError {
            code,
            message,
            inner_error: InnerError {
                date: Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                request_id,
                client_request_id,
            },
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Serialisable shape of an Entra ID token error.
#[derive(Serialize)]
struct AadstsBody<'a> {
    /// OAuth 2 error code, e.g. `invalid_client`.
    error: &'a str,
    /// `AADSTS<code>: text` followed by trace id, correlation id and timestamp lines.
    error_description: String,
    /// The numeric AADSTS codes.
    error_codes: [u32; 1],
    /// `YYYY-MM-DD HH:MM:SSZ`.
    timestamp: String,
    /// Entra ID's id for the request.
    trace_id: &'a str,
    /// The client's `client-request-id` when it sent one, else a fresh id.
    correlation_id: &'a str,
}

/// An Entra ID token error body (see [`Canned::aadsts_error`]).
pub(crate) fn aadsts_body(
    error: &str,
    aadsts: u32,
    description: &str,
    trace_id: &str,
    correlation_id: &str,
    now: DateTime<Utc>,
) -> Bytes {
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let prefix = format!("AADSTS{aadsts}: ");
    let text = if description.starts_with("AADSTS") {
        description.to_string()
    } else {
        format!("{prefix}{description}")
    };
    let body = AadstsBody {
        error,
        error_description: format!(
            "{text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        error_codes: [aadsts],
        timestamp,
        trace_id,
        correlation_id,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// An Azure blob storage style XML error, as the download host answers.
pub(crate) fn blob_error_body(code: &str, message: &str, detail: Option<&str>) -> Bytes {
    let request_id = uuid::Uuid::new_v4();
    let now = Utc::now();
    // Azure writes seven fractional digits (100 ns ticks), which chrono has no specifier for.
    let time = format!(
        "{}.{:07}Z",
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.timestamp_subsec_nanos() / 100
    );
    let detail = detail
        .map(|d| {
            format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                xml_escape(d)
            )
        })
        .unwrap_or_default();
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{request_id}\nTime:{time}</Message>{detail}</Error>",
        xml_escape(code),
        xml_escape(message),
    ))
}

/// Which endpoint (and, for the report and download endpoints, which report) a queue of canned
/// answers belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    /// The login host's token endpoint.
    Token,
    /// The Graph host's endpoint of one report.
    Report(FakeReport),
    /// The download host, for links to one report.
    Download(FakeReport),
}

/// Which throttle budget a report request draws from: Graph counts the CSV report and its JSON
/// (beta) form separately, with different limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// The CSV (redirect) form: `throttle_limit` per window.
    Csv,
    /// The beta `$format=application/json` form: 100/14 of `throttle_limit` per window.
    Json,
}

/// Everything the fake knows about one tenant while running.
#[derive(Debug)]
pub(crate) struct TenantState {
    /// The one application registered in this tenant.
    pub(crate) client_id: String,
    /// Its current secret.
    pub(crate) client_secret: String,
    /// Whether that secret has expired (token requests then get AADSTS7000222).
    pub(crate) secret_expired: bool,
    /// Certificates registered on the app (client assertions are verified against them).
    pub(crate) certificates: Vec<RegisteredCertificate>,
    /// Federated credentials of the app (workload identity).
    pub(crate) federated: Vec<FakeFederatedCredential>,
    /// Whether Reports.Read.All is granted (else the report answers 401 S2SUnauthorized).
    pub(crate) reports_permission: bool,
    /// Where the report numbers come from.
    pub(crate) data: ReportData,
    /// Activation counts set by a test (else derived from `data`).
    pub(crate) activation_counts: Option<Arc<Vec<FakePlatformCounts>>>,
    /// User detail users set by a test (else derived from `data`).
    pub(crate) users: Option<Arc<Vec<FakeUser>>>,
    /// Bytes the download of a report serves instead of the generated CSV, per report.
    pub(crate) body_override: HashMap<FakeReport, Bytes>,
    /// How long every download answer waits before sending its body.
    pub(crate) download_delay: Duration,
    /// Scripted answers, per endpoint (and report), first in first out.
    pub(crate) canned: HashMap<Endpoint, VecDeque<Canned>>,
    /// Accepted report requests per (client id, report, budget) within the sliding window:
    /// Graph counts each report API separately.
    pub(crate) throttle: HashMap<(String, FakeReport, Budget), VecDeque<Instant>>,
    /// What happened so far, for [`FakeGraph::stats`](super::FakeGraph::stats).
    pub(crate) stats: FakeStats,
}

impl TenantState {
    /// The running state of a configured tenant.
    pub(crate) fn new(t: FakeTenant) -> Result<Self, String> {
        let certificates = t
            .certificates
            .iter()
            .map(|c| RegisteredCertificate::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TenantState {
            client_id: t.client_id,
            client_secret: t.client_secret,
            secret_expired: false,
            certificates,
            federated: t.federated_credentials,
            reports_permission: t.reports_permission,
            data: t.data,
            activation_counts: None,
            users: None,
            body_override: HashMap::new(),
            download_delay: Duration::ZERO,
            canned: HashMap::new(),
            throttle: HashMap::new(),
            stats: FakeStats {
                reports: FakeReport::ALL
                    .into_iter()
                    .map(|r| (r, FakeReportStats::default()))
                    .collect(),
                ..FakeStats::default()
            },
        })
    }

    /// The tenant's data for every report as of wall-clock time `at` (only a demo tenant
    /// depends on it): cheap to take under the lock, rendered after.
    pub(crate) fn snapshot(&self, at: std::time::SystemTime) -> DataSnapshot {
        DataSnapshot::take(
            &self.data,
            self.activation_counts.as_ref(),
            self.users.as_ref(),
            at,
        )
    }

    /// The statistics of one report, created if missing.
    pub(crate) fn report_stats(&mut self, report: FakeReport) -> &mut FakeReportStats {
        self.stats.reports.entry(report).or_default()
    }

    /// Takes the next scripted answer for `endpoint`, if any.
    pub(crate) fn pop_canned(&mut self, endpoint: Endpoint) -> Option<Canned> {
        self.canned.get_mut(&endpoint).and_then(VecDeque::pop_front)
    }
}

/// An access token the login host issued.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    /// Tenant it was issued for (also identifies the tenant of a request that presents it).
    pub(crate) tenant_id: String,
    /// Application it was issued to (the throttle counts per tenant and application).
    pub(crate) client_id: String,
    /// When it stops being accepted.
    pub(crate) expires_at: Instant,
    /// Set by [`FakeGraph::revoke_tokens`](super::FakeGraph::revoke_tokens).
    pub(crate) revoked: bool,
    /// The cloud it was issued for: Graph hosts of other clouds refuse it.
    pub(crate) cloud: FakeCloud,
}

/// A pre-authenticated download link the Graph host handed out.
#[derive(Debug)]
pub(crate) struct DownloadLink {
    /// Tenant whose report it serves.
    pub(crate) tenant_id: String,
    /// Which report it serves.
    pub(crate) report: FakeReport,
    /// The signature that must come back in the `sig` query parameter.
    pub(crate) sig: String,
    /// When it was issued (it is valid for `link_ttl` from then).
    pub(crate) created: Instant,
    /// Its wall-clock expiry, for the `se` parameter and the 403 message.
    pub(crate) expires_wall: DateTime<Utc>,
}

/// The mutable state of a running fake.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Tenants by tenant id.
    pub(crate) tenants: HashMap<String, TenantState>,
    /// Issued access tokens by token string (expired and revoked ones are kept so that the
    /// tenant of a request presenting them is still known).
    pub(crate) tokens: HashMap<String, IssuedToken>,
    /// Issued download links by their opaque path segment.
    pub(crate) links: HashMap<String, DownloadLink>,
    /// The tenant (and report) the latest attributed download request belonged to: the last
    /// resort for attributing a request to a path that is no link of any tenant.
    pub(crate) last_download: Option<(String, FakeReport)>,
    /// How far ahead of the real wall clock the login host's clock is (client assertions'
    /// `nbf` and `exp` are checked against it).
    pub(crate) clock_offset: Duration,
    /// The managed identity endpoints' identities, scripts and stats.
    pub(crate) msi: super::msi::MsiState,
}

impl State {
    /// The tenant id as configured, found case-insensitively (tenant ids are GUIDs, and Entra ID
    /// does not care about their case).
    pub(crate) fn find_tenant(&self, tenant_id: &str) -> Option<String> {
        if self.tenants.contains_key(tenant_id) {
            return Some(tenant_id.to_string());
        }
        self.tenants
            .keys()
            .find(|k| k.eq_ignore_ascii_case(tenant_id))
            .cloned()
    }

    /// Issues a new opaque access token.
    pub(crate) fn issue_token(
        &mut self,
        tenant_id: &str,
        client_id: &str,
        now: Instant,
        lifetime: Duration,
    ) -> String {
        let token = format!("{}.{}.{}", random_id(27), random_id(120), random_id(64));
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                tenant_id: tenant_id.to_string(),
                client_id: client_id.to_string(),
                expires_at: now + lifetime,
                revoked: false,
                cloud: FakeCloud::Global,
            },
        );
        token
    }

    /// Issues a new download link to `report` of `tenant_id` and returns `(opaque id,
    /// signature)`. Links long past their validity are forgotten here so a long-running demo does
    /// not grow.
    pub(crate) fn issue_link(
        &mut self,
        tenant_id: &str,
        report: FakeReport,
        now: Instant,
        ttl: Duration,
    ) -> (String, String) {
        let forget_after = ttl.saturating_add(Duration::from_secs(3600));
        self.links
            .retain(|_, l| now.saturating_duration_since(l.created) < forget_after);
        let opaque = random_id(30);
        let sig = base64(&random_bytes(32), false, true);
        let now_wall = Utc::now();
        let expires_wall = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| now_wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.links.insert(
            opaque.clone(),
            DownloadLink {
                tenant_id: tenant_id.to_string(),
                report,
                sig: sig.clone(),
                created: now,
                expires_wall,
            },
        );
        (opaque, sig)
    }
}

/// Sliding-window throttle: admits a request if fewer than `limit` were admitted within
/// `window` before `now`, recording it; otherwise returns how long until a slot frees.
pub(crate) fn throttle_admit(
    accepted: &mut VecDeque<Instant>,
    limit: u32,
    window: Duration,
    now: Instant,
) -> Result<(), Duration> {
    while let Some(&oldest) = accepted.front() {
        if now.saturating_duration_since(oldest) >= window {
            accepted.pop_front();
        } else {
            break;
        }
    }
    if accepted.len() < limit as usize {
        accepted.push_back(now);
        return Ok(());
    }
    let wait = match accepted.front() {
        Some(&oldest) => (oldest + window).saturating_duration_since(now),
        None => window,
    };
    Err(wait)
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_window_slides() {
        let start = Instant::now();
        let window = Duration::from_secs(600);
        let mut q = VecDeque::new();
        for i in 0..3 {
            assert!(throttle_admit(&mut q, 3, window, start + Duration::from_secs(i * 10)).is_ok());
        }
        let at = start + Duration::from_secs(100);
        let wait = throttle_admit(&mut q, 3, window, at).unwrap_err();
        assert_eq!(wait, Duration::from_secs(500));
        assert_eq!(retry_after_secs(wait), 500);
        assert!(throttle_admit(&mut q, 3, window, start + window).is_ok());
        assert!(throttle_admit(&mut q, 3, window, start + window).is_err());
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        let mut never = VecDeque::new();
        assert_eq!(throttle_admit(&mut never, 0, window, start), Err(window));
    }

    #[test]
    fn canned_builders_shape_bodies() {
        let c = Canned::graph_error(503, "ServiceUnavailable", "busy")
            .retry_after("1.5")
            .delayed(Duration::from_secs(2));
        assert_eq!(c.status, 503);
        assert_eq!(c.delay, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(v["error"]["code"], "ServiceUnavailable");
        assert_eq!(v["error"]["message"], "busy");
        let rid = v["error"]["innerError"]["request-id"].as_str().unwrap();
        assert!(c
            .headers
            .contains(&("request-id".to_string(), rid.to_string())));
        assert!(c
            .headers
            .contains(&("Retry-After".to_string(), "1.5".to_string())));

        let c = Canned::aadsts_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        );
        let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        let desc = v["error_description"].as_str().unwrap();
        assert!(desc.starts_with("AADSTS7000215: Invalid client secret provided.\r\nTrace ID: "));
        assert!(desc.contains("\r\nCorrelation ID: "));
        assert!(desc.contains("\r\nTimestamp: "));
        assert_eq!(v["error_codes"], serde_json::json!([7000215]));
        for k in ["timestamp", "trace_id", "correlation_id"] {
            assert!(v[k].is_string(), "{k}");
        }
        let c = Canned::aadsts_error(400, "invalid_scope", 70011, "AADSTS70011: already prefixed");
        let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert!(v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70011: already prefixed\r\n"));

        let c = Canned::redirect("https://example.invalid/x?y=1");
        assert_eq!(c.status, 302);
        assert!(c.body.is_empty());
        assert!(c.headers.contains(&(
            "Location".to_string(),
            "https://example.invalid/x?y=1".to_string()
        )));
    }
}
