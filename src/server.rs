//! The HTTP server (hyper 1): TLS and basic auth from the web config, routing, scrape
//! deadlines, graceful shutdown.
//!
//! GET and HEAD only. `/` is a landing page, the telemetry path serves metrics (every tenant of
//! this process), `/probe?target=<tenant>` one tenant's, `/sd` the tenants as Prometheus HTTP
//! service discovery, `/-/healthy` answers without touching Graph, `/-/ready` once every tenant
//! has loaded its reports, POST `/-/reload` when the lifecycle API is enabled.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, VARY,
    WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::exporter::Exporter;
use crate::exposition::{accepts_gzip, Payload, Snapshot};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, VERSION};
use crate::web_config::WebConfig;

/// Re-reads the configuration and applies it; `Ok` says what changed.
pub type Reloader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How the server answers.
#[derive(Clone)]
pub struct ServerOptions {
    /// Where metrics are served (`/metrics`).
    pub telemetry_path: String,
    /// The scrape deadline when the scraper sends no X-Prometheus-Scrape-Timeout-Seconds.
    pub default_scrape_timeout: Duration,
    /// Serves POST /-/reload when set (`--web.enable-lifecycle`).
    pub reloader: Option<Reloader>,
    /// TLS, basic auth and extra headers (`--web.config.file`).
    pub web: Arc<WebConfig>,
    /// `/-/healthy` answers without basic auth, for probes (`--web.health-without-auth`).
    pub health_without_auth: bool,
    /// The host:port `/sd` advertises (`--web.sd-address`).
    pub sd_address: String,
    /// This process's shard, for `/sd` and the landing page.
    pub shard: crate::shard::Shard,
}

/// A TLS handshake must complete within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections get this long to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes, then lets open connections finish (up to
/// [`SHUTDOWN_GRACE`]).
pub async fn run(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    // One Arc per request to clone, not two: at tens of thousands of scrapes a second, each
    // shared counter touched costs.
    let context = Arc::new((exporter, options));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "Cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let context = Arc::clone(&context);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match context.1.web.tls.clone() {
                        None => serve_connection(stream, context, watcher).await,
                        Some(tls) => {
                            let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(stream)) => serve_connection(stream, context, watcher).await,
                                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("Shutting down: waiting for open connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Connections still open after the grace period; closing them");
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS.
async fn serve_connection<I>(io: I, context: Arc<(Arc<Exporter>, ServerOptions)>, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        // Most requests are scrapes that the cache answers as it is: answer those right here,
        // without the state machine of the general path (a measurable share of a scrape's cost
        // at tens of thousands of scrapes a second).
        if let Some(answer) = cached_scrape(&context.0, &context.1, &request) {
            return Either::Left(std::future::ready(Ok::<_, Infallible>(answer)));
        }
        let context = Arc::clone(&context);
        Either::Right(Box::pin(async move {
            let (exporter, options) = &*context;
            let answer = guarded(exporter, options, request).await;
            Ok::<_, Infallible>(with_extra_headers(answer, options))
        }))
    });
    // No header read timeout: hyper's also closes idle keep-alive connections, which Prometheus
    // reuses across scrape intervals longer than that timeout.
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "Connection ended with an error");
    }
}

/// The answer to a scrape the cache serves without waiting, if `request` is one: GET of the
/// telemetry path (no tenant due for a refresh) or of `/probe` (its tenant not due), no basic
/// auth configured.
fn cached_scrape(
    exporter: &Exporter,
    options: &ServerOptions,
    request: &Request<Incoming>,
) -> Option<Response<Payload>> {
    if options.web.auth.is_some() || request.method() != Method::GET {
        return None;
    }
    let path = request.uri().path();
    let answer = if path == options.telemetry_path {
        metrics_response(&*exporter.cached()?, request)
    } else if path == "/probe" {
        let body = exporter.cached_probe(&probe_target(request.uri().query())?)?;
        response(StatusCode::OK, METRICS_CONTENT_TYPE, body)
    } else {
        return None;
    };
    Some(with_extra_headers(answer, options))
}

/// The `target` of a `/probe` query, URL-decoded; `None` when missing or empty.
fn probe_target(query: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == "target")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Adds the web config's `http_server_config.headers`.
fn with_extra_headers(mut answer: Response<Payload>, options: &ServerOptions) -> Response<Payload> {
    for (name, value) in &options.web.headers {
        answer.headers_mut().insert(name.clone(), value.clone());
    }
    answer
}

/// /metrics from `snapshot`, gzipped when the scraper accepts it.
fn metrics_response(snapshot: &Snapshot, request: &Request<Incoming>) -> Response<Payload> {
    let gzip = request
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let mut answer = if gzip {
        let mut answer = parts_response(snapshot.gzip_parts());
        answer
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        answer
    } else {
        parts_response(snapshot.plain_parts())
    };
    answer
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    answer
}

/// Basic auth in front of [`handle`].
async fn guarded(
    exporter: &Exporter,
    options: &ServerOptions,
    request: Request<Incoming>,
) -> Response<Payload> {
    if let Some(auth) = &options.web.auth {
        let exempt = options.health_without_auth && request.uri().path() == "/-/healthy";
        if !exempt
            && !auth
                .check_blocking(request.headers().get(AUTHORIZATION).cloned())
                .await
        {
            let mut answer = response(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                "Unauthorized\n",
            );
            answer.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"office365-activations-exporter\""),
            );
            return answer;
        }
    }
    handle(exporter, options, request).await
}

/// A 200 of the metrics content type with `body`.
fn parts_response(body: Payload) -> Response<Payload> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    response
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Payload> {
    let mut response = Response::new(Payload::one(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The wait budget of a scrape: its timeout less a margin to render and send the answer.
pub fn scrape_budget(header: Option<&HeaderValue>, default: Duration) -> Duration {
    let timeout = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(3600.0)))
        .unwrap_or(default);
    timeout.saturating_sub((timeout / 10).min(Duration::from_secs(1)))
}

async fn handle(
    exporter: &Exporter,
    options: &ServerOptions,
    request: Request<Incoming>,
) -> Response<Payload> {
    if request.uri().path() == "/-/reload" {
        return reload(options, request.method());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut answer = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method not allowed: use GET or HEAD\n",
        );
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    let path = request.uri().path();
    if path == options.telemetry_path {
        let budget = scrape_budget(
            request.headers().get("x-prometheus-scrape-timeout-seconds"),
            options.default_scrape_timeout,
        );
        let snapshot = exporter.scrape(budget).await;
        return metrics_response(&snapshot, &request);
    }
    match path {
        "/probe" => probe(exporter, options, &request).await,
        "/sd" => response(
            StatusCode::OK,
            "application/json",
            crate::sd::render(&exporter.tenants(), &options.sd_address, options.shard),
        ),
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", landing_page(exporter, options)),
        "/-/healthy" => response(StatusCode::OK, "text/plain; charset=utf-8", "Healthy\n"),
        "/-/ready" if exporter.ready() => response(StatusCode::OK, "text/plain; charset=utf-8", "Ready\n"),
        "/-/ready" => response(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "Not ready: not every tenant has loaded each of its reports yet (reports load at the first scrape)\n"),
        _ => response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not found\n"),
    }
}

/// `GET /probe?target=<tenant name>`: that tenant's series, refreshed like a scrape of /metrics.
async fn probe(
    exporter: &Exporter,
    options: &ServerOptions,
    request: &Request<Incoming>,
) -> Response<Payload> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(target) = probe_target(request.uri().query()) else {
        return response(
            StatusCode::BAD_REQUEST,
            TEXT,
            "Missing target: use /probe?target=<tenant name> (the names are listed on / and /sd)\n",
        );
    };
    let budget = scrape_budget(
        request.headers().get("x-prometheus-scrape-timeout-seconds"),
        options.default_scrape_timeout,
    );
    match exporter.probe(&target, budget).await {
        Some(body) => response(StatusCode::OK, METRICS_CONTENT_TYPE, body),
        None => {
            let shard = options.shard;
            let detail = if shard.count > 1 {
                format!(" (this is shard {} of {})", shard.index, shard.count)
            } else {
                String::new()
            };
            response(
                StatusCode::BAD_REQUEST,
                TEXT,
                format!(
                    "Unknown target {:?}: no such tenant in this exporter{detail}\n",
                    target.chars().take(200).collect::<String>()
                ),
            )
        }
    }
}

/// POST /-/reload, when `--web.enable-lifecycle` allows it.
fn reload(options: &ServerOptions, method: &Method) -> Response<Payload> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(reloader) = &options.reloader else {
        return response(
            StatusCode::FORBIDDEN,
            TEXT,
            "Lifecycle API is not enabled: start with --web.enable-lifecycle\n",
        );
    };
    if method != Method::POST && method != Method::PUT {
        let mut answer = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "Use POST\n");
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return answer;
    }
    match reloader() {
        Ok(summary) => response(StatusCode::OK, TEXT, format!("Reloaded: {summary}\n")),
        Err(error) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("Reload failed, configuration unchanged: {error}\n"),
        ),
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn landing_page(exporter: &Exporter, options: &ServerOptions) -> String {
    let telemetry_path = &options.telemetry_path;
    let shard = match options.shard {
        s if s.count > 1 => format!(
            "<p>Shard {} of {}: these are the tenants this process owns.</p>\n",
            s.index, s.count
        ),
        _ => String::new(),
    };
    let mut rows = String::new();
    for tenant in exporter.tenants().iter() {
        for status in tenant.status() {
            let (count, date, fetched) = match &status.report {
                Some(cached) => (
                    format!("{} {}", cached.encoded.rows, status.kind.rows),
                    cached
                        .encoded
                        .refresh_date
                        .map_or_else(|| "-".into(), |d| d.to_string()),
                    chrono::DateTime::<chrono::Utc>::from(cached.fetched)
                        .format("%Y-%m-%d %H:%M:%S UTC")
                        .to_string(),
                ),
                None => (
                    "-".into(),
                    "-".into(),
                    "not yet (loads at the first scrape)".into(),
                ),
            };
            let state = match (&status.report, status.up) {
                (_, true) => "up".to_owned(),
                (None, false) if status.last_error.is_none() => {
                    "waiting for the first scrape".to_owned()
                }
                _ => format!("down: {}", status.last_error.as_deref().unwrap_or("-")),
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape_html(tenant.name()),
                status.kind.name,
                escape_html(&state),
                count,
                date,
                fetched
            ));
        }
    }
    let path = escape_html(telemetry_path);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Office 365 Activations Exporter</title>\n\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>\n\
<body>\n<h1>Office 365 Activations Exporter</h1>\n<p>Version {VERSION}. Microsoft 365 Apps activations from Microsoft Graph, cached and refreshed at scrape time.</p>\n\
<ul><li><a href=\"{path}\">Metrics</a> (every tenant)</li><li><a href=\"/sd\">Service discovery</a> (one <code>/probe</code> target per tenant)</li><li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\n{shard}\
<h2>Tenants</h2>\n<table>\n<tr><th>Tenant</th><th>Report</th><th>State</th><th>Rows</th><th>Report date</th><th>Fetched</th></tr>\n{rows}</table>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_budget_leaves_a_margin() {
        let default = Duration::from_secs(10);
        assert_eq!(scrape_budget(None, default), Duration::from_secs(9));
        let header = HeaderValue::from_static("2.5");
        assert_eq!(
            scrape_budget(Some(&header), default),
            Duration::from_millis(2250)
        );
        let header = HeaderValue::from_static("30");
        assert_eq!(
            scrape_budget(Some(&header), default),
            Duration::from_secs(29)
        );
        let junk = HeaderValue::from_static("soon");
        assert_eq!(scrape_budget(Some(&junk), default), Duration::from_secs(9));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
