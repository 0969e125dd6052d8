//! The Microsoft Graph client: the report request, the manual 302, the capped download.
//!
//! Graph answers the report request with `302 Found` and a pre-authenticated, short-lived URL on
//! another host. The client follows it itself (automatic redirects are off in
//! [`crate::http_client`]): the bearer token goes only to the Graph endpoint's origin, never to
//! the download host; a redirect from https to http is refused; hops are capped; the query string
//! of the download URL is kept byte for byte and never logged.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tokio::time::Instant;

use crate::credentials::Secret;
use crate::error::{parse_retry_after, Error, HttpFailure, RequestIds, Stage};
use crate::http_client::{read_capped, snippet, HttpClient, ERROR_BODY_LIMIT};
use crate::reports::Parser;

/// At most this many redirects are followed after the report request (Graph's 302 and whatever
/// the download host adds).
pub const MAX_REDIRECTS: usize = 3;

/// At most this many JSON pages are read in one refresh: far more than any report within Graph's
/// JSON throttling budget has, and a bound on a server whose nextLinks never end.
pub const MAX_PAGES: usize = 2_000;

/// How the report is asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// CSV, through Graph's 302 to a pre-authenticated download (v1.0 and beta).
    #[default]
    Csv,
    /// JSON in Graph's own answer, no redirect (`$format=application/json`, beta only).
    Json,
}

/// What a fetch did, besides feeding the parser.
#[derive(Debug, Default)]
pub struct Fetched {
    /// From sending the request for the pre-authenticated URL to having its whole body; `None`
    /// when Graph answered with the body directly (JSON).
    pub redirect_latency: Option<Duration>,
    /// Report body bytes read (all pages).
    pub bytes: u64,
}

/// Fetches one report for one tenant (the token decides which tenant).
#[derive(Clone, Debug)]
pub struct GraphClient {
    /// The shared outbound client.
    http: HttpClient,
    /// `{endpoint}/{api_version}/reports/{function}`.
    report_url: Url,
    /// The largest report body accepted, in bytes (all pages together).
    max_body: u64,
    /// The flag that sets `max_body`, for the error that names it.
    cap_setting: &'static str,
    /// CSV or JSON.
    format: ReportFormat,
}

/// A URL's origin (scheme, host, port): the unit that decides whether the token may be sent.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl GraphClient {
    /// A client for the report function `api` (e.g. `getOffice365ActivationsUserCounts`) under
    /// `endpoint` (e.g. `https://graph.microsoft.com`) and `api_version` (`v1.0` or `beta`).
    pub fn new(
        http: HttpClient,
        endpoint: &Url,
        api_version: &str,
        api: &str,
        max_body: u64,
    ) -> Self {
        let mut report_url = endpoint.clone();
        report_url
            .path_segments_mut()
            .expect("the endpoint was validated as an http(s) URL")
            .pop_if_empty()
            .extend([api_version, "reports", api]);
        GraphClient {
            http,
            report_url,
            max_body,
            cap_setting: "--graph.max-report-size",
            format: ReportFormat::Csv,
        }
    }

    /// Names the flag that sets the size cap in its error (default `--graph.max-report-size`).
    pub fn with_cap_setting(mut self, setting: &'static str) -> Self {
        self.cap_setting = setting;
        self
    }

    /// Asks for the report in `format`: JSON adds `$format=application/json` (beta only).
    pub fn with_format(mut self, format: ReportFormat) -> Self {
        self.format = format;
        if format == ReportFormat::Json {
            // Written as Graph's documentation shows it, not percent-encoded.
            self.report_url.set_query(Some("$format=application/json"));
        }
        self
    }

    /// Whether `other` asks for the same report in the same way.
    pub fn same_target(&self, other: &GraphClient) -> bool {
        self.report_url == other.report_url && self.format == other.format
    }

    /// The format asked for.
    pub fn format(&self) -> ReportFormat {
        self.format
    }

    /// The URL of the report request.
    pub fn report_url(&self) -> &Url {
        &self.report_url
    }

    /// Requests the report with `token` and streams it into `parser`: the CSV download chunk by
    /// chunk, or the JSON pages one by one (following `@odata.nextLink` on Graph's own origin
    /// only). `on_request` is called before each request to Graph (the report, each page), to
    /// count it against the budget; its error ends the fetch.
    pub async fn fetch(
        &self,
        token: &Secret,
        parser: &mut dyn Parser,
        on_request: &mut (dyn FnMut() -> Result<(), Error> + Send),
    ) -> Result<Fetched, Error> {
        let mut url = self.report_url.clone();
        let mut fetched = Fetched::default();
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            on_request()?;
            let response = self.request(&url, token).await?;
            if response.status().is_redirection() {
                let location = redirect_target(&url, &response, Stage::Report)?;
                return self.download(location, token, parser, fetched).await;
            }
            let remaining = self.max_body - fetched.bytes.min(self.max_body);
            let body = self
                .http
                .read_capped(response, Stage::Report, remaining)
                .await
                .map_err(|e| self.whole_cap(e))?;
            fetched.bytes += body.len() as u64;
            if self.format == ReportFormat::Csv {
                // Graph answered with the body itself.
                parser.csv(&body)?;
                return Ok(fetched);
            }
            let Some(next) = parser.json_page(&body)? else {
                return Ok(fetched);
            };
            url = self.next_page(&url, &next, &mut seen)?;
            tracing::debug!("Following @odata.nextLink to the next page");
        }
        Err(Error::InvalidResponse {
            stage: Stage::Report,
            detail: format!("more than {MAX_PAGES} pages (@odata.nextLink)"),
        })
    }

    /// Sends one authenticated request to Graph; an error status becomes [`Error::Http`].
    async fn request(&self, url: &Url, token: &Secret) -> Result<reqwest::Response, Error> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        tracing::debug!(url = %url.path(), %client_request_id, "Requesting the report");
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(token.expose())
            .header("client-request-id", &client_request_id)
            .send()
            .await
            .map_err(|e| self.http.transport_error(Stage::Report, e))?;
        let status = response.status();
        if status.is_redirection() || status == StatusCode::OK {
            return Ok(response);
        }
        Err(http_error(Stage::Report, response, Some(client_request_id)).await)
    }

    /// The next page's URL, if the client may follow it: Graph's own origin (the token goes
    /// with it), and not a page already read (a loop).
    fn next_page(&self, from: &Url, next: &str, seen: &mut HashSet<String>) -> Result<Url, Error> {
        let invalid = |detail: String| Error::InvalidResponse {
            stage: Stage::Report,
            detail,
        };
        let url = from
            .join(next)
            .map_err(|e| invalid(format!("@odata.nextLink is not a URL: {e}")))?;
        if !same_origin(&url, &self.report_url) {
            return Err(invalid(format!(
                "@odata.nextLink points to another origin ({}://{}); the token is only sent to Graph",
                url.scheme(),
                url.host_str().unwrap_or("-")
            )));
        }
        if !seen.insert(url.as_str().to_owned()) || url == self.report_url {
            return Err(invalid(
                "@odata.nextLink loops back to a page already read".into(),
            ));
        }
        Ok(url)
    }

    /// A cap hit on one page is the whole report's cap, named by its flag.
    fn whole_cap(&self, error: Error) -> Error {
        match error {
            Error::TooLarge { stage, .. } => Error::TooLarge {
                stage,
                limit: self.max_body,
                setting: Some(self.cap_setting),
            },
            other => other,
        }
    }

    /// Follows the redirect chain from the pre-authenticated URL and streams the body into
    /// `parser`.
    ///
    /// Every tenant's downloads share one HTTP/2 connection to the download host, so one
    /// tenant's broken answers can close it under another's download (h2 closes a connection
    /// after 1,024 streams reset for protocol errors over its life: see
    /// [`Error::is_connection_lost`]). A download cut off that way is fetched once more, from
    /// the start, on a new connection, from the same link (valid for minutes): no report
    /// request, so no budget spent.
    async fn download(
        &self,
        url: Url,
        token: &Secret,
        parser: &mut dyn Parser,
        mut fetched: Fetched,
    ) -> Result<Fetched, Error> {
        let started = Instant::now();
        let mut result = self.download_once(url.clone(), token, parser).await;
        if let Err(error) = &result {
            if error.is_connection_lost() {
                tracing::info!(
                    host = url.host_str().unwrap_or("-"),
                    error = %error,
                    "The connection to the download host closed under the download; fetching it again from the same link"
                );
                parser.restart();
                result = self.download_once(url, token, parser).await;
            }
        }
        fetched.bytes += result?;
        fetched.redirect_latency = Some(started.elapsed());
        Ok(fetched)
    }

    /// One download: the redirect chain from `url`, the body streamed into `parser`; returns
    /// the body's size.
    async fn download_once(
        &self,
        mut url: Url,
        token: &Secret,
        parser: &mut dyn Parser,
    ) -> Result<u64, Error> {
        for _ in 0..MAX_REDIRECTS {
            let mut request = self.http.get(url.clone());
            // Only the Graph endpoint's origin ever sees the token.
            if same_origin(&url, &self.report_url) {
                request = request.bearer_auth(token.expose());
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.http.transport_error(Stage::Download, e))?;
            let status = response.status();
            if status.is_redirection() {
                url = redirect_target(&url, &response, Stage::Download)?;
                tracing::debug!(
                    host = url.host_str().unwrap_or("-"),
                    "Following a further redirect"
                );
                continue;
            }
            if status != StatusCode::OK {
                return Err(http_error(Stage::Download, response, None).await);
            }
            return self
                .http
                .stream_capped(response, Stage::Download, self.max_body, |chunk| {
                    parser.csv(chunk).map_err(Error::Parse)
                })
                .await
                .map_err(|e| self.whole_cap(e));
        }
        Err(Error::InvalidResponse {
            stage: Stage::Download,
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// The absolute URL a redirect points to, if it is one the client may follow.
fn redirect_target(from: &Url, response: &reqwest::Response, stage: Stage) -> Result<Url, Error> {
    let invalid = |detail: String| Error::InvalidResponse { stage, detail };
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| {
            invalid(format!(
                "HTTP {} without a Location header",
                response.status()
            ))
        })?
        .to_str()
        .map_err(|_| invalid("Location header is not text".into()))?;
    let target = from
        .join(location)
        .map_err(|e| invalid(format!("Location is not a URL: {e}")))?;
    match (from.scheme(), target.scheme()) {
        ("https", "https") | ("http", "http" | "https") => Ok(target),
        ("https", "http") => Err(invalid(format!(
            "refused a redirect from https to plain http (host {})",
            target.host_str().unwrap_or("-")
        ))),
        (_, scheme) => Err(invalid(format!("refused a redirect to a {scheme}: URL"))),
    }
}

#[derive(Deserialize, Default)]
struct GraphErrorBody {
    #[serde(default)]
    error: GraphError,
}

#[derive(Deserialize, Default)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(rename = "innerError", alias = "innererror", default)]
    inner_error: Option<InnerError>,
}

#[derive(Deserialize, Default)]
struct InnerError {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
    #[serde(rename = "client-request-id")]
    client_request_id: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Turns an error answer into [`Error::Http`], with Graph's code, message and request ids.
async fn http_error(
    stage: Stage,
    response: reqwest::Response,
    sent_client_request_id: Option<String>,
) -> Error {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_capped(response, stage, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let parsed: GraphErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let GraphError {
        mut code,
        mut message,
        inner_error,
    } = parsed.error;
    // Some Graph errors nest a whole JSON error in `message`.
    if let Ok(nested) = serde_json::from_str::<GraphErrorBody>(&message) {
        if !nested.error.message.is_empty() {
            message = nested.error.message;
            if code.is_empty() {
                code = nested.error.code;
            }
        }
    }
    if message.is_empty() {
        message = xml_tag(&body, "Message").unwrap_or_else(|| snippet(&body));
    }
    if code.is_empty() {
        code = xml_tag(&body, "Code").unwrap_or_else(|| "-".into());
    }
    let inner = inner_error.unwrap_or_default();
    let ids = RequestIds {
        request_id: header(&headers, "request-id").or(inner.request_id),
        client_request_id: header(&headers, "client-request-id")
            .or(inner.client_request_id)
            .or(sent_client_request_id),
    };
    let retry_after = header(&headers, RETRY_AFTER.as_str())
        .as_deref()
        .and_then(parse_retry_after);
    Error::Http(Box::new(HttpFailure {
        stage,
        status,
        hint: graph_hint(stage, status, &code),
        code,
        message: message.lines().next().unwrap_or("").trim().to_owned(),
        ids,
        retry_after,
    }))
}

/// The text of the first `<tag>` in an XML error body (the download host's errors are XML).
fn xml_tag(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].trim().to_owned()).filter(|s| !s.is_empty())
}

/// What an operator should do about a Graph error.
fn graph_hint(stage: Stage, status: u16, code: &str) -> &'static str {
    match (stage, status, code) {
        (_, 429, _) => "throttled: Graph allows 14 report downloads per 10 minutes per app and tenant, shared with other apps and replicas; the exporter waits for Retry-After",
        (Stage::Report, 401, "InvalidAuthenticationToken") => "Graph refused the access token",
        (Stage::Report, 401 | 403, _) => "the app lacks the Reports.Read.All application permission or its admin consent: grant it under App registrations > API permissions",
        (Stage::Report, 404, "UnknownTenantId") => "no report data for this tenant yet: new tenants get data within 48 hours",
        (Stage::Report, 400, _) => "check --graph.endpoint and --graph.api-version (national clouds only have beta)",
        (Stage::Download, 403 | 404 | 410, _) => "the download link expired or was refused; the next refresh asks Graph for a new one",
        (_, 500.., _) => "the service is failing; the exporter retries with backoff",
        _ => "unexpected answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_url_is_built_from_endpoint_and_version() {
        let client = |endpoint: &str, version| {
            GraphClient::new(
                reqwest::Client::new().into(),
                &Url::parse(endpoint).unwrap(),
                version,
                "getOffice365ActivationsUserCounts",
                1,
            )
        };
        assert_eq!(
            client("https://graph.microsoft.com", "v1.0")
                .report_url()
                .as_str(),
            "https://graph.microsoft.com/v1.0/reports/getOffice365ActivationsUserCounts"
        );
        assert_eq!(
            client("https://127.0.0.1:8443/", "beta")
                .report_url()
                .as_str(),
            "https://127.0.0.1:8443/beta/reports/getOffice365ActivationsUserCounts"
        );
        assert_eq!(
            client("https://graph.microsoft.us", "beta")
                .with_format(ReportFormat::Json)
                .report_url()
                .as_str(),
            "https://graph.microsoft.us/beta/reports/getOffice365ActivationsUserCounts?$format=application/json"
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("https://graph.microsoft.com/a"),
            &u("https://graph.microsoft.com:443/b?x")
        ));
        assert!(!same_origin(
            &u("https://graph.microsoft.com"),
            &u("https://reports.office.com")
        ));
        assert!(!same_origin(
            &u("https://127.0.0.1:1"),
            &u("https://127.0.0.1:2")
        ));
        assert!(!same_origin(
            &u("https://graph.microsoft.com"),
            &u("http://graph.microsoft.com")
        ));
        assert!(!same_origin(
            &u("https://graph.microsoft.com"),
            &u("https://graph.microsoft.com.evil.example")
        ));
    }

    #[test]
    fn xml_error_fields_are_extracted() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Signature expired</Message></Error>";
        assert_eq!(
            xml_tag(body, "Code").as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(
            xml_tag(body, "Message").as_deref(),
            Some("Signature expired")
        );
        assert_eq!(xml_tag(b"plain", "Code"), None);
    }
}
