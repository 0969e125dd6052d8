//! Every way a refresh can fail keeps the last good report, sets `up` to 0, and is counted under
//! its bounded stage and reason; throttling and backoff hold the next request back.

mod common;

use std::time::Duration;

use common::*;
use office365_activations_exporter::config::ReportConfig;
use office365_activations_exporter::fake_graph::Canned;
use office365_activations_exporter::reports::{activation_counts, user_counts};
use tokio::time::advance;

const TTL_1M: Duration = Duration::from_secs(60);
const ENTERPRISE: &str = "MICROSOFT 365 APPS FOR ENTERPRISE";

/// A fault to inject after a good first load.
enum Fault {
    Token(Canned),
    Report(Canned),
    Download(Canned),
    /// Graph redirects back to itself, again and again.
    RedirectLoop,
    Body(&'static [u8]),
    ExpireSecret,
    DownloadDelay(Duration),
}

async fn assert_stale_kept(name: &str, fault: Fault, stage: &str, reason: &str) {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        max_report_size: 64 * 1024,
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0), "{name}: first load");
    let before = m
        .samples
        .iter()
        .filter(|(k, _)| {
            k.starts_with("office365_activations_a")
                || k.starts_with("office365_activations_s")
                || k.starts_with("office365_activations_report")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect::<Vec<_>>();
    assert_eq!(before.len(), 7, "{name}: 2 products x 3 gauges + the date");
    match fault {
        // The cached token is still good: make Graph refuse it so a new one is requested.
        Fault::Token(c) => {
            h.fake.push_token_response(&t, c);
            h.fake.revoke_tokens(&t);
        }
        Fault::Report(c) => h.fake.push_report_response(&t, c),
        Fault::Download(c) => h.fake.push_download_response(&t, c),
        Fault::RedirectLoop => {
            let again = format!(
                "{}/v1.0/reports/getOffice365ActivationsUserCounts",
                h.fake.graph_endpoint()
            );
            for _ in 0..4 {
                h.fake.push_report_response(&t, Canned::redirect(&again));
            }
        }
        Fault::Body(body) => h.fake.set_report_body(&t, Some(body.to_vec().into())),
        Fault::ExpireSecret => {
            h.fake.expire_client_secret(&t);
            h.fake.revoke_tokens(&t);
        }
        Fault::DownloadDelay(d) => h.fake.set_download_delay(&t, d),
    }
    advance(TTL_1M).await;
    if name == "timeout" {
        // The scrape gives up after its 2 s; the refresh hits the 60 s request timeout later.
        let scrape = h.spawn_scrape(Some("2"));
        until("the download started", || h.stats(0).download_requests == 2).await;
        advance(Duration::from_secs(61)).await;
        scrape.await.unwrap();
        until("the refresh failed", || {
            h.exporter.tenants()[0].status()[0].last_error.is_some()
        })
        .await;
    }
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0), "{name}: up is 0");
    assert_eq!(
        m.errors("contoso", stage, reason),
        1.0,
        "{name}: counted as {stage}/{reason}\n{}",
        m.text
    );
    let errors: f64 = m
        .series("office365_activations_fetch_errors_total")
        .iter()
        .map(|(_, v)| **v)
        .sum();
    assert_eq!(errors, 1.0, "{name}: exactly one error counted\n{}", m.text);
    for (key, value) in &before {
        assert_eq!(m.samples.get(key), Some(value), "{name}: {key} kept");
    }
    assert_eq!(
        m.get(
            "office365_activations_refreshes_total",
            &[("tenant", "contoso"), ("report", "user_counts")]
        ),
        Some(2.0),
        "{name}"
    );
    let status = &h.exporter.tenants()[0].status()[0];
    assert!(
        status.last_error.is_some(),
        "{name}: the landing page shows the error"
    );
    h.stop().await;
}

fn xml_403() -> Canned {
    Canned::body(
        403,
        "application/xml",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Signed expiry time has to be after signed start time</Message></Error>",
    )
}

#[tokio::test(start_paused = true)]
async fn token_failures_keep_the_last_report() {
    assert_stale_kept(
        "expired secret",
        Fault::ExpireSecret,
        "token",
        "unauthorized",
    )
    .await;
    assert_stale_kept(
        "token 500",
        Fault::Token(Canned::aadsts_error(
            500,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred.",
        )),
        "token",
        "http_5xx",
    )
    .await;
    assert_stale_kept(
        "token 429",
        Fault::Token(
            Canned::aadsts_error(
                429,
                "temporarily_unavailable",
                50196,
                "The server terminated an operation because it encountered a client request loop.",
            )
            .retry_after("5"),
        ),
        "token",
        "throttled",
    )
    .await;
    assert_stale_kept(
        "token not json",
        Fault::Token(Canned::body(200, "text/html", "<html>proxy login</html>")),
        "token",
        "invalid_response",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn report_request_failures_keep_the_last_report() {
    assert_stale_kept(
        "403",
        Fault::Report(Canned::graph_error(
            403,
            "MissingCredentials",
            "Missing credentials.",
        )),
        "report",
        "unauthorized",
    )
    .await;
    assert_stale_kept(
        "404",
        Fault::Report(Canned::graph_error(
            404,
            "UnknownTenantId",
            "Unknown tenant.",
        )),
        "report",
        "http_4xx",
    )
    .await;
    assert_stale_kept(
        "400",
        Fault::Report(Canned::graph_error(
            400,
            "BadRequest",
            "Resource not found for the segment 'getOffice365ActivationsUserCounts'.",
        )),
        "report",
        "http_4xx",
    )
    .await;
    assert_stale_kept(
        "500",
        Fault::Report(Canned::graph_error(500, "UnknownError", "")),
        "report",
        "http_5xx",
    )
    .await;
    assert_stale_kept(
        "503",
        Fault::Report(Canned::body(
            503,
            "text/html",
            "<html>Service Unavailable</html>",
        )),
        "report",
        "http_5xx",
    )
    .await;
    assert_stale_kept(
        "429",
        Fault::Report(
            Canned::graph_error(429, "TooManyRequests", "Please retry again later.")
                .retry_after("30"),
        ),
        "report",
        "throttled",
    )
    .await;
    assert_stale_kept(
        "302 without Location",
        Fault::Report(Canned::body(302, "text/plain", "")),
        "report",
        "invalid_response",
    )
    .await;
    assert_stale_kept(
        "https to http",
        Fault::Report(Canned::redirect("http://localhost:1/data/download/x")),
        "report",
        "invalid_response",
    )
    .await;
    assert_stale_kept(
        "unexpected status",
        Fault::Report(Canned::body(204, "text/plain", "")),
        "report",
        "invalid_response",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn download_failures_keep_the_last_report() {
    assert_stale_kept(
        "https to http at a later hop",
        Fault::Download(Canned::redirect("http://localhost:1/data/download/x")),
        "download",
        "invalid_response",
    )
    .await;
    assert_stale_kept(
        "expired link",
        Fault::Download(xml_403()),
        "download",
        "unauthorized",
    )
    .await;
    assert_stale_kept(
        "download 500",
        Fault::Download(Canned::body(500, "text/plain", "oops")),
        "download",
        "http_5xx",
    )
    .await;
    assert_stale_kept(
        "refused connection",
        Fault::Report(Canned::redirect(
            "https://localhost:1/data/download/x?sig=1",
        )),
        "download",
        "network",
    )
    .await;
    assert_stale_kept(
        "redirect loop",
        Fault::RedirectLoop,
        "download",
        "invalid_response",
    )
    .await;
    assert_stale_kept(
        "oversized",
        Fault::Body(&[b'x'; 65 * 1024]),
        "download",
        "too_large",
    )
    .await;
    assert_stale_kept(
        "timeout",
        Fault::DownloadDelay(Duration::from_secs(120)),
        "download",
        "timeout",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn malformed_reports_keep_the_last_report() {
    assert_stale_kept(
        "html",
        Fault::Body(b"<!DOCTYPE html><html><body>Sign in to your account</body></html>"),
        "parse",
        "not_csv",
    )
    .await;
    assert_stale_kept("json", Fault::Body(b"{\"value\":[]}"), "parse", "not_csv").await;
    assert_stale_kept(
        "missing column",
        Fault::Body(b"Report Refresh Date,Product Type,Assigned\r\n2026-11-26,X,1\r\n"),
        "parse",
        "missing_column",
    )
    .await;
    assert_stale_kept(
        "negative",
        Fault::Body(
            b"Report Refresh Date,Product Type,Assigned,Activated\r\n2026-11-26,X,1,-1\r\n",
        ),
        "parse",
        "invalid_value",
    )
    .await;
    assert_stale_kept(
        "not a number",
        Fault::Body(
            b"Report Refresh Date,Product Type,Assigned,Activated\r\n2026-11-26,X,many,1\r\n",
        ),
        "parse",
        "invalid_value",
    )
    .await;
    assert_stale_kept(
        "bad date",
        Fault::Body(b"Report Refresh Date,Product Type,Assigned,Activated\r\n26/11/2026,X,1,1\r\n"),
        "parse",
        "invalid_value",
    )
    .await;
}

/// Office365ExporterThrottled takes increase() of the throttled series: a series born at 1 with
/// the first 429 would hide that 429, so they are exported at 0 from the start.
#[tokio::test(start_paused = true)]
async fn throttled_errors_are_exported_at_zero_before_the_first_429() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let throttled = |m: &Metrics, stage: &str| m.error_series("contoso", stage, "throttled");
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0));
    for stage in ["token", "report", "download"] {
        assert_eq!(throttled(&m, stage), Some(0.0), "{stage}\n{}", m.text);
    }
    assert_eq!(
        m.series("office365_activations_fetch_errors_total").len(),
        3,
        "only the throttled series are there before any error\n{}",
        m.text
    );
    h.fake.push_report_response(
        &tenant_id(0),
        Canned::graph_error(429, "TooManyRequests", "Please retry again later."),
    );
    advance(TTL_1M).await;
    let m = h.scrape().await;
    assert_eq!(throttled(&m, "report"), Some(1.0), "{}", m.text);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_even_when_scrapes_keep_coming() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    h.fake.push_report_response(
        &t,
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.")
            .retry_after("120.5"),
    );
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "report", "throttled"), 1.0);
    // Scrapes every 15 s for two minutes: none reaches Graph before Retry-After has passed,
    // although backoff alone (about 30 s) would have allowed it.
    for _ in 0..8 {
        advance(Duration::from_secs(15)).await;
        h.scrape().await;
        assert_eq!(
            h.stats(0).report_requests,
            1,
            "nothing sent before Retry-After passed"
        );
    }
    advance(Duration::from_millis(500)).await;
    let m = h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        2,
        "sent once Retry-After passed"
    );
    assert_eq!(m.up("contoso"), Some(1.0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn fractional_retry_after_on_503_is_honoured() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    h.fake.push_report_response(
        &t,
        Canned::graph_error(503, "ServiceUnavailable", "Retry later.").retry_after("200.5"),
    );
    h.scrape().await;
    advance(Duration::from_secs(200)).await;
    h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        1,
        "held back for 200.5 s, not 200"
    );
    advance(Duration::from_millis(500)).await;
    assert_eq!(h.scrape().await.up("contoso"), Some(1.0));
    assert_eq!(h.stats(0).report_requests, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(3600),
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    for _ in 0..3 {
        h.fake
            .push_report_response(&t, Canned::graph_error(500, "UnknownError", ""));
    }
    h.scrape().await; // failure 1: backoff 24-36 s
    advance(Duration::from_secs(23)).await;
    h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        1,
        "held back after the first failure"
    );
    advance(Duration::from_secs(14)).await; // 37 s
    h.scrape().await; // failure 2: backoff 48-72 s
    assert_eq!(h.stats(0).report_requests, 2);
    advance(Duration::from_secs(47)).await;
    h.scrape().await;
    assert_eq!(h.stats(0).report_requests, 2, "the second wait is longer");
    advance(Duration::from_secs(26)).await; // 73 s
    h.scrape().await; // failure 3: backoff 96-144 s
    assert_eq!(h.stats(0).report_requests, 3);
    advance(Duration::from_secs(95)).await;
    h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        3,
        "the third wait is longer still"
    );
    advance(Duration::from_secs(50)).await;
    let m = h.scrape().await;
    assert_eq!(h.stats(0).report_requests, 4);
    assert_eq!(m.up("contoso"), Some(1.0), "recovered");
    assert_eq!(m.errors("contoso", "report", "http_5xx"), 3.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_graph_401_drops_the_token_and_retries_once() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    h.scrape().await;
    h.fake.revoke_tokens(&t);
    advance(TTL_1M).await;
    let m = h.scrape().await;
    assert_eq!(
        m.up("contoso"),
        Some(1.0),
        "recovered with a new token in the same refresh"
    );
    let stats = h.stats(0);
    assert_eq!((stats.token_requests, stats.report_requests), (2, 3));
    assert_eq!(m.errors("contoso", "report", "unauthorized"), 0.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_401_is_not_retried_again() {
    let h = Harness::start().await;
    let t = tenant_id(0);
    for _ in 0..2 {
        h.fake.push_report_response(
            &t,
            Canned::graph_error(401, "S2SUnauthorized", "Invalid scope claims/roles."),
        );
    }
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "report", "unauthorized"), 1.0);
    let stats = h.stats(0);
    assert_eq!(
        (stats.token_requests, stats.report_requests),
        (2, 2),
        "one retry, with a new token"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_tenants_failure_never_touches_another() {
    let h = Harness::with(Options {
        tenants: 2,
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    h.fake.push_report_response(
        &tenant_id(0),
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.").retry_after("600"),
    );
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.up("fabrikam"), Some(1.0));
    assert_eq!(m.activated("fabrikam", ENTERPRISE), Some(1710.0));
    advance(TTL_1M).await;
    h.scrape().await;
    assert_eq!(
        h.stats(1).report_requests,
        2,
        "contoso's Retry-After does not delay fabrikam"
    );
    assert_eq!(h.stats(0).report_requests, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gzip_bomb_is_capped_while_streaming() {
    let h = Harness::with(Options {
        max_report_size: 64 * 1024,
        ..Options::default()
    })
    .await;
    let mut csv = b"Report Refresh Date,Product Type,Assigned,Activated\r\n".to_vec();
    csv.extend(std::iter::repeat_n(b'x', 1 << 20));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &csv).unwrap();
    let gz = encoder.finish().unwrap();
    assert!(
        gz.len() < 64 * 1024,
        "compressed {} bytes: under the cap, so only the decoded size can trip it",
        gz.len()
    );
    let mut canned = Canned::body(200, "application/octet-stream", gz);
    canned
        .headers
        .push(("Content-Encoding".into(), "gzip".into()));
    h.fake.push_download_response(&tenant_id(0), canned);
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(
        m.errors("contoso", "download", "too_large"),
        1.0,
        "{}",
        m.text
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn token_endpoint_retry_after_is_honoured() {
    let h = Harness::start().await;
    let t = tenant_id(0);
    h.fake.push_token_response(
        &t,
        Canned::aadsts_error(429, "temporarily_unavailable", 50196, "Too many requests.")
            .retry_after("300"),
    );
    let m = h.scrape().await;
    assert_eq!(m.errors("contoso", "token", "throttled"), 1.0);
    for _ in 0..4 {
        advance(Duration::from_secs(60)).await; // past any backoff (at most 36 s)
        h.scrape().await;
        assert_eq!(
            h.stats(0).token_requests,
            1,
            "no token request before Retry-After"
        );
    }
    advance(Duration::from_secs(61)).await;
    let m = h.scrape().await;
    assert_eq!(h.stats(0).token_requests, 2);
    assert_eq!(m.up("contoso"), Some(1.0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn report_requests_stay_within_the_budget_of_graphs_window() {
    // Every refresh needs two report requests here (Graph refuses the cached token once), and
    // scrapes come every second at the shortest TTL: left alone, about 20 report requests in 10
    // minutes, over Graph's 14.
    let h = Harness::with(Options {
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    let mut sent_at = Vec::new();
    let mut seen = 0;
    for second in 0..1200u64 {
        let m = h.scrape().await;
        assert_eq!(m.up("contoso"), Some(1.0), "second {second}");
        let requests = h.stats(0).report_requests;
        if requests != seen {
            sent_at.extend((seen..requests).map(|_| second));
            seen = requests;
            // The next refresh meets a refused token first.
            h.fake.revoke_tokens(&t);
        }
        advance(Duration::from_secs(1)).await;
    }
    let most_in_a_window = sent_at
        .iter()
        .map(|start| {
            sent_at
                .iter()
                .filter(|s| (*start..start + 600).contains(s))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_in_a_window <= 12,
        "{most_in_a_window} report requests in 10 minutes: {sent_at:?}"
    );
    assert!(
        sent_at.len() >= 20,
        "refreshes go on at the budget's pace over 20 minutes: {sent_at:?}"
    );
    h.stop().await;
}

/// A download body that ends before its Content-Length: on HTTP/2 the client resets the stream
/// for a protocol error.
fn cut_short() -> Canned {
    let mut c = Canned::body(
        200,
        "application/octet-stream",
        "\u{feff}Report Refresh Date,Product Type,Assig",
    );
    c.headers.push(("Content-Length".into(), "100000".into()));
    c
}

/// Spawns `future` and yields until it ends, so the paused clock cannot move under it.
async fn drive<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let handle = tokio::spawn(future);
    until("the task ends", || handle.is_finished()).await;
    handle.await.unwrap()
}

/// Every tenant's downloads share one HTTP/2 connection to the download host, and h2 closes a
/// connection once it has reset 1,024 of its streams for protocol errors (over the connection's
/// whole life: the count never decays), failing every request on it. One tenant's broken
/// downloads must not fail another tenant's download in flight then: a download cut off by its
/// connection closing is fetched again, from the same link (no report request, no budget).
#[tokio::test(start_paused = true)]
async fn a_download_cut_off_by_its_shared_connection_closing_is_fetched_again() {
    let h = Harness::with(Options {
        tenants: 2,
        ttl: TTL_1M,
        ..Options::default()
    })
    .await;
    let tenants = h.exporter.tenants();
    let contoso = tenants
        .iter()
        .find(|t| t.name() == "contoso")
        .unwrap()
        .clone();
    let fabrikam = tenants
        .iter()
        .find(|t| t.name() == "fabrikam")
        .unwrap()
        .clone();
    for i in 0..1024 {
        h.fake.push_download_response(&tenant_id(0), cut_short());
        let tenant = contoso.clone();
        let outcome = drive(async move { tenant.refresh().await }).await;
        assert!(
            outcome[0].1.is_err(),
            "refresh {i} of contoso: a body cut short"
        );
        // Within the budget: 10 report requests per 10 minutes.
        advance(Duration::from_secs(60)).await;
    }
    assert_eq!(
        h.fake.connections().download,
        1,
        "one shared connection so far"
    );
    // fabrikam's download is under way: headers in, body held back.
    let delay = Duration::from_secs(30);
    h.fake.set_download_delay(&tenant_id(1), delay);
    let victim = tokio::spawn(async move { fabrikam.refresh().await });
    until("fabrikam's download is sent", || {
        h.stats(1).download_requests == 1
    })
    .await;
    settle().await;
    // contoso's 1,025th body cut short: h2 closes the connection.
    h.fake.push_download_response(&tenant_id(0), cut_short());
    drive(async move { contoso.refresh().await }).await;
    until(
        "fabrikam's download is sent again, or its refresh ends",
        || h.stats(1).download_requests == 2 || victim.is_finished(),
    )
    .await;
    if !victim.is_finished() {
        advance(delay).await;
        until("fabrikam's refresh ends", || victim.is_finished()).await;
    }
    let outcome = victim.await.unwrap();
    assert!(
        outcome[0].1.is_ok(),
        "fabrikam's refresh: {:?}",
        outcome[0].1
    );
    assert_eq!(
        h.stats(1).report_requests,
        1,
        "the same link, no further report request"
    );
    // contoso's last download was cut off with the same connection error, and fetched again too.
    assert!(h.fake.connections().download > 1, "on a new connection");
    h.stop().await;
}

/// The reports of a tenant share its token: a Retry-After of the token endpoint holds every one
/// of them, not only the one whose refresh was refused.
#[tokio::test(start_paused = true)]
async fn token_endpoint_retry_after_holds_every_report_of_the_tenant() {
    let h = Harness::with(Options {
        reports: vec![&user_counts::KIND, &activation_counts::KIND],
        ..Options::default()
    })
    .await;
    h.fake.push_token_response(
        &tenant_id(0),
        Canned::aadsts_error(429, "temporarily_unavailable", 50196, "Too many requests.")
            .retry_after("300"),
    );
    let m = h.scrape().await;
    assert_eq!(h.stats(0).token_requests, 1, "one refusal for both reports");
    for report in ["user_counts", "activation_counts"] {
        assert_eq!(m.report_up("contoso", report), Some(0.0), "{report}");
    }
    for _ in 0..4 {
        advance(Duration::from_secs(60)).await; // past any backoff (at most 36 s)
        h.scrape().await;
        assert_eq!(
            h.stats(0).token_requests,
            1,
            "no token request before Retry-After"
        );
    }
    advance(Duration::from_secs(61)).await;
    let m = h.scrape().await;
    assert_eq!(h.stats(0).token_requests, 2, "one token for both reports");
    for report in ["user_counts", "activation_counts"] {
        assert_eq!(m.report_up("contoso", report), Some(1.0), "{report}");
    }
    h.stop().await;
}

/// A reload that changes a tenant's reports (or TTL) rebuilds it, taking over its reports' state
/// and its token: the token endpoint's Retry-After still holds, for the new report too.
#[tokio::test(start_paused = true)]
async fn token_endpoint_retry_after_holds_across_a_reload_that_changes_the_reports() {
    let h = Harness::start().await;
    h.fake.push_token_response(
        &tenant_id(0),
        Canned::aadsts_error(429, "temporarily_unavailable", 50196, "Too many requests.")
            .retry_after("300"),
    );
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_counts"), Some(0.0));
    let mut config = h.exporter.tenants()[0].config().clone();
    config.reports.push(ReportConfig {
        kind: &activation_counts::KIND,
        cache_ttl: config.cache_ttl,
        max_size: config.reports[0].max_size,
    });
    let summary = h.exporter.reload(&[config]).unwrap();
    assert_eq!(summary.changed, ["contoso"]);
    for _ in 0..4 {
        advance(Duration::from_secs(60)).await;
        let m = h.scrape().await;
        assert_eq!(
            h.stats(0).token_requests,
            1,
            "no token request before Retry-After"
        );
        assert_eq!(m.report_up("contoso", "activation_counts"), Some(0.0));
    }
    advance(Duration::from_secs(61)).await;
    let m = h.scrape().await;
    assert_eq!(h.stats(0).token_requests, 2);
    for report in ["user_counts", "activation_counts"] {
        assert_eq!(m.report_up("contoso", report), Some(1.0), "{report}");
    }
    h.stop().await;
}
