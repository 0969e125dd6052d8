//! The three HTTPS servers: accept loops over tokio-rustls, hyper 1 (HTTP/1.1 and, via ALPN,
//! HTTP/2), and the request handlers of the login, Graph and download hosts.
//!
//! Handlers never panic on what a client sends: anything malformed gets the status the real
//! service would give (mostly 400), and the shared state is locked only between `.await`s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use super::identity::{
    parse_jwt, request_authority, request_host, verify_certificate_assertion,
    verify_federated_token, AssertionSeen, FakeCloud, Issuer,
};
use super::reports::{
    decode_skiptoken, render_csv, render_json, snapshot_time, DataSnapshot, FakeReport, PageRequest,
};
use super::scenario::{
    aadsts_body, blob_error_body, graph_error_body, retry_after_secs, throttle_admit, Budget,
    Canned, Endpoint, State,
};
use super::util::{form_get, parse_form, percent_encode};

/// The largest token request body the login host reads (real ones are well under 4 KiB; a
/// client assertion is a few KiB).
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// The scope Graph tokens are asked for in the global cloud.
const GLOBAL_GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Settings fixed at start, read by every handler.
#[derive(Debug)]
pub(crate) struct Config {
    /// `https://127.0.0.1:<port>` of the login host.
    pub(crate) authority_host: String,
    /// `https://127.0.0.1:<port>` of the Graph host.
    pub(crate) graph_endpoint: String,
    /// `https://localhost:<port>` of the download host.
    pub(crate) download_origin: String,
    /// Accepted CSV report requests per window per (tenant, client id, report).
    pub(crate) throttle_limit: u32,
    /// Accepted JSON (beta) report requests per window per (tenant, client id, report).
    pub(crate) json_throttle_limit: u32,
    /// The throttle's sliding window.
    pub(crate) throttle_window: Duration,
    /// Users per page of the user detail JSON (at least 1).
    pub(crate) json_page_size: usize,
    /// Validity of a download link.
    pub(crate) link_ttl: Duration,
    /// Lifetime of an access token.
    pub(crate) token_lifetime: Duration,
    /// Added before every answer.
    pub(crate) latency: Duration,
    /// The `X-IDENTITY-HEADER` value the App Service endpoint expects.
    pub(crate) app_service_secret: String,
    /// `http://127.0.0.1:<port>` of the fake IMDS.
    pub(crate) imds_endpoint: String,
    /// `http://127.0.0.1:<port>/MSI/token/` of the fake App Service identity endpoint.
    pub(crate) app_service_endpoint: String,
}

/// What the server tasks and the `FakeGraph` handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Settings fixed at start.
    pub(crate) config: Config,
    /// Everything that changes; never locked across an `.await`.
    pub(crate) state: Mutex<State>,
    /// TLS connections accepted, indexed by [`Host::index`].
    pub(crate) connections: [std::sync::atomic::AtomicU64; 3],
    /// The OIDC issuer of federated (service account) tokens.
    pub(crate) issuer: Issuer,
}

impl Shared {
    /// Locks the state; a poisoned lock (a panicking test knob) is recovered, since every update
    /// leaves the state consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which of the three servers a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Entra ID's token endpoint.
    Login,
    /// Graph's report endpoint.
    Graph,
    /// The report download host.
    Download,
}

impl Host {
    /// Position in [`Shared::connections`].
    pub(crate) fn index(self) -> usize {
        match self {
            Host::Login => 0,
            Host::Graph => 1,
            Host::Download => 2,
        }
    }

    /// Name for log lines.
    fn name(self) -> &'static str {
        match self {
            Host::Login => "login",
            Host::Graph => "graph",
            Host::Download => "download",
        }
    }
}

/// A response body that is either ready at once or released after a delay, so the headers can
/// go out before a slow body (see `FakeGraph::set_download_delay`). Its exact length is always
/// known, so hyper sends a `Content-Length`.
pub(crate) struct FakeBody {
    /// The bytes still to send (`None` once sent or when empty).
    data: Option<Bytes>,
    /// Timer to wait for before sending `data`.
    delay: Option<Pin<Box<Sleep>>>,
    /// Length announced in the size hint.
    len: u64,
}

impl FakeBody {
    /// A body sent as soon as the headers are.
    fn full(data: Bytes) -> Self {
        FakeBody::delayed(data, Duration::ZERO)
    }

    /// A body sent `delay` (tokio time) after the response is created.
    fn delayed(data: Bytes, delay: Duration) -> Self {
        let len = data.len() as u64;
        FakeBody {
            data: if data.is_empty() { None } else { Some(data) },
            delay: if delay.is_zero() {
                None
            } else {
                Some(Box::pin(tokio::time::sleep(delay)))
            },
            len,
        }
    }
}

impl hyper::body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(delay) = this.delay.as_mut() {
            if delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.delay = None;
        }
        Poll::Ready(this.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.delay.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// Accepts connections on `listener` forever, serving each over TLS on its own task. The
/// connection tasks live in a `JoinSet` owned by this future, so aborting the accept task ends
/// every connection too.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    host: Host,
) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(host = host.name(), error = %e, "fake graph: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(host = host.name(), %peer, error = %e, "fake graph: TLS handshake failed");
                    return;
                }
            };
            shared.connections[host.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let connection = Arc::new(ConnectionContext::default());
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let connection = connection.clone();
                CatchPanic(Box::pin(async move {
                    handle(&shared, &connection, host, req).await
                }))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(host = host.name(), %peer, error = %e, "fake graph: connection ended with an error");
            }
        });
    }
}

/// What the fake remembers about one client connection.
#[derive(Debug, Default)]
pub(crate) struct ConnectionContext {
    /// On the download host: the tenant (and report) the previous request on this connection
    /// was attributed to, so that a request for a path that is no link at all (a relative
    /// redirect followed by the client, say) still counts for, and gets the canned answers of,
    /// the right tenant and report.
    download_tenant: Mutex<Option<(String, FakeReport)>>,
}

/// Runs a handler, turning a panic (a bug in the fake; the panic hook still prints it) into a
/// plain 500 answer instead of a silently reset connection.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future<Output = Response<FakeBody>>> Future for CatchPanic<F> {
    type Output = Result<Response<FakeBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(_) => {
                tracing::error!("fake graph: a request handler panicked; answering 500");
                let body = FakeBody::full(Bytes::from_static(b"fake graph: internal error"));
                Poll::Ready(Ok(build(
                    500,
                    &hdrs([("Content-Type", "text/plain")]),
                    body,
                )))
            }
        }
    }
}

/// Routes a request to its host's handler and logs the outcome.
async fn handle(
    shared: &Shared,
    connection: &ConnectionContext,
    host: Host,
    req: Request<Incoming>,
) -> Response<FakeBody> {
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let method = req.method().clone();
    let target = path_and_query(&req);
    let response = match host {
        Host::Login => login(shared, req).await,
        Host::Graph => graph(shared, req).await,
        Host::Download => download(shared, connection, req).await,
    };
    tracing::debug!(host = host.name(), %method, %target, status = response.status().as_u16(), "fake graph request");
    response
}

/// The request's path and query as sent.
fn path_and_query<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

/// A header's value as text, if present and valid.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds a response from parts that may be invalid (canned headers come from tests): an invalid
/// status becomes 500, an invalid header is dropped with a warning.
fn build(status: u16, headers: &[(String, String)], body: FakeBody) -> Response<FakeBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or_else(|_| {
        tracing::warn!(status, "fake graph: invalid status code, answering 500");
        StatusCode::INTERNAL_SERVER_ERROR
    });
    for (name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                response.headers_mut().append(n, v);
            }
            _ => tracing::warn!(%name, %value, "fake graph: dropping invalid header"),
        }
    }
    response
}

/// A response with a body sent at once (for the managed identity endpoints).
pub(crate) fn build_response(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
) -> Response<FakeBody> {
    build(status, headers, FakeBody::full(body))
}

/// Shorthand for a header list.
fn hdrs<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
        .collect()
}

/// Whether a canned header list already sets `name`.
fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Serves a canned answer: waits its delay, then answers with its parts plus `extra` headers
/// the canned list does not set itself; the body additionally waits `body_delay`.
async fn serve_canned(
    c: Canned,
    extra: Vec<(String, String)>,
    body_delay: Duration,
) -> Response<FakeBody> {
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let mut headers = c.headers;
    for (n, v) in extra {
        if !has_header(&headers, &n) {
            headers.push((n, v));
        }
    }
    build(c.status, &headers, FakeBody::delayed(c.body, body_delay))
}

// ---------------------------------------------------------------------------------------------
// Login host
// ---------------------------------------------------------------------------------------------

/// Success body of the token endpoint.
#[derive(Serialize)]
struct TokenBody<'a> {
    /// Always `Bearer`.
    token_type: &'static str,
    /// Lifetime in seconds.
    expires_in: u64,
    /// Extended lifetime in seconds (the same here).
    ext_expires_in: u64,
    /// The opaque token.
    access_token: &'a str,
}

/// What the login host decided under the lock.
enum LoginOutcome {
    /// A scripted answer.
    Canned(Canned),
    /// An Entra ID error: status, OAuth error, AADSTS code, description.
    Error(u16, &'static str, u32, String),
    /// A token was issued.
    Token(String),
}

/// `POST /{tenant}/oauth2/v2.0/token`: Entra ID's client-credentials token endpoint.
async fn login(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header_str(req.headers(), "client-request-id").map(str::to_string);
    let correlation_id = client_request_id
        .clone()
        .filter(|c| uuid::Uuid::parse_str(c).is_ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut headers = hdrs([
        ("Cache-Control", "no-store, no-cache"),
        ("Pragma", "no-cache"),
        ("x-ms-request-id", &trace_id),
    ]);
    if let Some(c) = &client_request_id {
        headers.push(("client-request-id".to_string(), c.clone()));
    }
    let error = |status: u16,
                 error: &str,
                 code: u32,
                 description: &str,
                 mut headers: Vec<(String, String)>| {
        headers.push((
            "Content-Type".to_string(),
            "application/json; charset=utf-8".to_string(),
        ));
        let body = aadsts_body(
            error,
            code,
            description,
            &trace_id,
            &correlation_id,
            chrono::Utc::now(),
        );
        build(status, &headers, FakeBody::full(body))
    };

    let path = req.uri().path().to_string();
    let login_host = request_host(&req);
    let audience = format!("https://{}{path}", request_authority(&req));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let tenant_in_path = match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if !tenant.is_empty() => (*tenant).to_string(),
        _ => {
            let html = "<!DOCTYPE html><html><head><title>404 - Not Found</title></head><body><h1>404 - Not Found</h1></body></html>";
            headers.push((
                "Content-Type".to_string(),
                "text/html; charset=utf-8".to_string(),
            ));
            return build(
                404,
                &headers,
                FakeBody::full(Bytes::from_static(html.as_bytes())),
            );
        }
    };
    if req.method() != Method::POST {
        let description = format!(
            "The endpoint only accepts POST, OPTIONS requests. Received a {} request.",
            req.method()
        );
        return error(400, "invalid_request", 900561, &description, headers);
    }
    let body = match Limited::new(req.into_body(), MAX_TOKEN_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "fake graph: unreadable token request body");
            return error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
                headers,
            );
        }
    };
    let form = parse_form(&String::from_utf8_lossy(&body));

    let now = Instant::now();
    let outcome = {
        let mut state = shared.lock();
        let request = LoginRequest {
            tenant_in_path: &tenant_in_path,
            form: &form,
            login_host: &login_host,
            audience: &audience,
        };
        login_outcome(&mut state, &shared.config, &shared.issuer, request, now)
    };
    match outcome {
        LoginOutcome::Canned(c) => serve_canned(c, headers, Duration::ZERO).await,
        LoginOutcome::Error(status, err, code, description) => {
            error(status, err, code, &description, headers)
        }
        LoginOutcome::Token(token) => {
            let secs = shared.config.token_lifetime.as_secs();
            let body = TokenBody {
                token_type: "Bearer",
                expires_in: secs,
                ext_expires_in: secs,
                access_token: &token,
            };
            headers.push((
                "Content-Type".to_string(),
                "application/json; charset=utf-8".to_string(),
            ));
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            build(200, &headers, FakeBody::full(body))
        }
    }
}

/// The parts of a token request the login host decides on.
struct LoginRequest<'a> {
    /// The tenant segment of the path.
    tenant_in_path: &'a str,
    /// The decoded form.
    form: &'a [(String, String)],
    /// The host name the request was sent to (which cloud's Entra ID it is).
    login_host: &'a str,
    /// `https://{authority}{path}`: what a client assertion's `aud` must be.
    audience: &'a str,
}

/// Validates a token request the way Entra ID does, in the order it does, and issues a token.
fn login_outcome(
    state: &mut State,
    config: &Config,
    issuer: &Issuer,
    req: LoginRequest<'_>,
    now: Instant,
) -> LoginOutcome {
    let LoginRequest {
        tenant_in_path,
        form,
        login_host,
        audience,
    } = req;
    let wall_now = SystemTime::now() + state.clock_offset;
    let Some(tenant_id) = state.find_tenant(tenant_in_path) else {
        return LoginOutcome::Error(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    };
    let Some(tenant) = state.tenants.get_mut(&tenant_id) else {
        return LoginOutcome::Error(
            500,
            "server_error",
            90033,
            "A transient error has occurred. Please try again.".to_string(),
        );
    };
    tenant.stats.token_requests += 1;
    tenant.stats.token_request_times.push(now);
    if let Some(c) = tenant.pop_canned(Endpoint::Token) {
        return LoginOutcome::Canned(c);
    }
    let missing = |param: &str| {
        LoginOutcome::Error(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    };

    let Some(grant_type) = form_get(form, "grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return LoginOutcome::Error(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = form_get(form, "client_id").filter(|c| !c.is_empty()) else {
        return missing("client_id");
    };
    if !client_id.eq_ignore_ascii_case(&tenant.client_id) {
        return LoginOutcome::Error(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let scope = form_get(form, "scope").map(str::trim).unwrap_or_default();
    if scope.is_empty() {
        return LoginOutcome::Error(
            400,
            "invalid_scope",
            70011,
            "The provided request must include a 'scope' input parameter.".to_string(),
        );
    }
    let own_scope = format!("{}/.default", config.graph_endpoint);
    let scope_cloud = if scope == own_scope || scope == GLOBAL_GRAPH_SCOPE {
        Some(FakeCloud::Global)
    } else {
        FakeCloud::ALL
            .into_iter()
            .find(|c| scope == format!("https://{}/.default", c.graph_host()))
    };
    let Some(scope_cloud) = scope_cloud.filter(|_| scope.ends_with("/.default")) else {
        return LoginOutcome::Error(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        );
    };
    // Tokens do not cross clouds: each cloud's Entra ID knows only its own Graph.
    if !FakeCloud::of_login_host(login_host).contains(&scope_cloud) {
        let resource = scope.trim_end_matches("/.default");
        return LoginOutcome::Error(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let mut method = "client_secret";
    match (
        form_get(form, "client_secret"),
        form_get(form, "client_assertion"),
    ) {
        (Some(secret), _) if !secret.is_empty() => {
            if secret != tenant.client_secret {
                return LoginOutcome::Error(
                    401,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        tenant.client_id
                    ),
                );
            }
            if tenant.secret_expired {
                return LoginOutcome::Error(
                    401,
                    "invalid_client",
                    7000222,
                    format!(
                        "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                        tenant.client_id
                    ),
                );
            }
        }
        (_, Some(assertion)) if !assertion.is_empty() => {
            match form_get(form, "client_assertion_type") {
                Some(crate::credentials::entra::JWT_BEARER) => {}
                None => return missing("client_assertion_type"),
                Some(other) => {
                    return LoginOutcome::Error(
                        400,
                        "invalid_request",
                        50027,
                        format!("JWT token is invalid or malformed. The client_assertion_type '{other}' is not supported."),
                    )
                }
            }
            let jwt = match parse_jwt(assertion) {
                Ok(jwt) => jwt,
                Err((status, error, code, description)) => {
                    return LoginOutcome::Error(status, error, code, description)
                }
            };
            tenant.stats.client_assertions.push(AssertionSeen::of(&jwt));
            // An assertion the app signed itself names its certificate (or the app as issuer);
            // anything else is a federated token from an external issuer.
            let self_signed = ["x5t", "x5t#S256", "x5c"]
                .iter()
                .any(|h| jwt.header.get(h).is_some())
                || jwt.claims["iss"]
                    .as_str()
                    .is_some_and(|iss| iss.eq_ignore_ascii_case(client_id));
            let verified = if self_signed {
                method = "client_certificate";
                verify_certificate_assertion(
                    &jwt,
                    &tenant.client_id,
                    audience,
                    &tenant.certificates,
                    wall_now,
                )
            } else {
                method = "workload_identity";
                verify_federated_token(&jwt, &tenant.federated, issuer, wall_now)
            };
            if let Err((status, error, code, description)) = verified {
                return LoginOutcome::Error(status, error, code, description);
            }
        }
        _ => {
            return LoginOutcome::Error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_string(),
            );
        }
    }
    tenant.stats.token_methods.push(method.to_string());
    let client_id = tenant.client_id.clone();
    let token = state.issue_token(&tenant_id, &client_id, now, config.token_lifetime);
    if let Some(issued) = state.tokens.get_mut(&token) {
        issued.cloud = scope_cloud;
    }
    LoginOutcome::Token(token)
}

// ---------------------------------------------------------------------------------------------
// Graph host
// ---------------------------------------------------------------------------------------------

/// Which Graph API version a request addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiVersion {
    /// `/v1.0/`.
    V1,
    /// `/beta/`.
    Beta,
}

/// Recognises a report path (case-insensitively, with or without `()` or `%28%29`, under
/// `/v1.0/` or `/beta/`) and which report it is. `Err` carries the segment Graph would name as
/// not found.
fn match_report_path(path: &str) -> Result<(ApiVersion, FakeReport), String> {
    let lower = path.to_ascii_lowercase();
    let (version, rest) = if let Some(rest) = lower.strip_prefix("/v1.0/") {
        (ApiVersion::V1, rest)
    } else if let Some(rest) = lower.strip_prefix("/beta/") {
        (ApiVersion::Beta, rest)
    } else {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        return Err(first.to_string());
    };
    let function = rest.strip_prefix("reports/").map(|f| {
        f.strip_suffix("()")
            .or_else(|| f.strip_suffix("%28%29"))
            .unwrap_or(f)
    });
    match function.and_then(FakeReport::from_api_name) {
        Some(report) => Ok((version, report)),
        None => {
            let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            Err(last.to_string())
        }
    }
}

/// What the Graph host decided under the lock.
enum GraphOutcome {
    /// A scripted answer.
    Canned(Canned),
    /// A Graph error: status, code, message, and a `Retry-After` in seconds if throttled.
    Error(u16, &'static str, String, Option<u64>),
    /// The JSON (beta) report, or one page of it, to render once the lock is released.
    Json(FakeReport, Box<DataSnapshot>, PageRequest),
    /// A redirect to a fresh download link.
    Redirect(String),
}

/// `GET /{v1.0|beta}/reports/<report function>[()]`, for each of [`FakeReport::ALL`].
async fn graph(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header_str(req.headers(), "client-request-id").map(str::to_string);
    let mut headers = hdrs([
        ("request-id", &request_id),
        ("Cache-Control", "no-cache"),
        ("Strict-Transport-Security", "max-age=31536000"),
        (
            "x-ms-ags-diagnostic",
            r#"{"ServerInfo":{"DataCenter":"Fake","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"FAKE0000000001"}}"#,
        ),
    ]);
    if let Some(c) = &client_request_id {
        headers.push(("client-request-id".to_string(), c.clone()));
    }
    let inner_client_id = client_request_id
        .clone()
        .unwrap_or_else(|| request_id.clone());
    let error = |status: u16,
                 code: &str,
                 message: &str,
                 retry_after: Option<u64>,
                 mut headers: Vec<(String, String)>| {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
        if let Some(secs) = retry_after {
            headers.push(("Retry-After".to_string(), secs.to_string()));
        }
        build(
            status,
            &headers,
            FakeBody::full(graph_error_body(
                code,
                message,
                &request_id,
                &inner_client_id,
            )),
        )
    };

    let (version, report) = match match_report_path(req.uri().path()) {
        Ok(v) => v,
        Err(segment) => {
            let message = format!("Resource not found for the segment '{segment}'.");
            return error(404, "ResourceNotFound", &message, None, headers);
        }
    };
    if req.method() != Method::GET {
        return error(
            405,
            "BadRequest",
            "Specified HTTP method is not allowed for the request target.",
            None,
            headers,
        );
    }
    let query = parse_form(req.uri().query().unwrap_or(""));
    let format = form_get(&query, "$format").map(str::to_string);
    let option = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let skiptoken = option("$skiptoken");
    let top = option("$top");
    let origin = request_origin(&req, &shared.config.graph_endpoint);
    let cloud = FakeCloud::of_graph_host(&request_host(&req));
    let token = bearer_token(req.headers());
    let user_agent = header_str(req.headers(), "user-agent")
        .unwrap_or("")
        .to_string();
    let target = path_and_query(&req);
    let http_version = format!("{:?}", req.version());
    drop(req);

    let now = Instant::now();
    let outcome = {
        let mut state = shared.lock();
        let request = ReportRequest {
            version,
            report,
            format: format.as_deref(),
            skiptoken: skiptoken.as_deref(),
            top: top.as_deref(),
            token: token.as_deref(),
            client_request_id: client_request_id.clone(),
            user_agent,
            target,
            http_version,
            cloud,
        };
        graph_outcome(&mut state, &shared.config, request, now)
    };
    match outcome {
        GraphOutcome::Canned(c) => serve_canned(c, headers, Duration::ZERO).await,
        GraphOutcome::Error(status, code, message, retry_after) => {
            error(status, code, &message, retry_after, headers)
        }
        GraphOutcome::Json(report, snapshot, page) => {
            let body = render_json(report, &snapshot, &origin, page, SystemTime::now());
            headers.push((
                "Content-Type".to_string(),
                "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
                    .to_string(),
            ));
            build(200, &headers, FakeBody::full(body))
        }
        GraphOutcome::Redirect(location) => {
            headers.push(("Content-Type".to_string(), "text/plain".to_string()));
            headers.push(("Location".to_string(), location));
            build(302, &headers, FakeBody::full(Bytes::new()))
        }
    }
}

/// `https://<authority>` of the Graph host as the client addressed it (a national cloud's host
/// name, say), for absolute links in answers; `fallback` when the request names none usable.
fn request_origin<B>(req: &Request<B>, fallback: &str) -> String {
    let authority = request_authority(req);
    match authority.parse::<hyper::http::uri::Authority>() {
        Ok(a) if !a.host().is_empty() => format!("https://{a}"),
        _ => fallback.to_string(),
    }
}

/// The bearer token of a request: `None` when the header is absent, not Bearer, or empty.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, "authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The parts of a report request the Graph host decides on.
struct ReportRequest<'a> {
    /// API version addressed.
    version: ApiVersion,
    /// The report addressed.
    report: FakeReport,
    /// The `$format` query option, decoded.
    format: Option<&'a str>,
    /// The `$skiptoken` query option (a later page of the user detail JSON).
    skiptoken: Option<&'a str>,
    /// The `$top` query option (page size of the user detail JSON).
    top: Option<&'a str>,
    /// The bearer token, if any.
    token: Option<&'a str>,
    /// The `client-request-id` header, for the stats.
    client_request_id: Option<String>,
    /// The `User-Agent` header, for the stats.
    user_agent: String,
    /// Path and query, for the stats.
    target: String,
    /// The HTTP version the client chose, for the stats.
    http_version: String,
    /// The cloud whose Graph host name the request was sent to.
    cloud: FakeCloud,
}

/// Authenticates, authorises and throttles a report request like Graph, and answers it.
fn graph_outcome(
    state: &mut State,
    config: &Config,
    req: ReportRequest<'_>,
    now: Instant,
) -> GraphOutcome {
    const EXPIRED: &str = "Access token has expired or is not yet valid.";
    let token_info = req.token.and_then(|t| state.tokens.get(t)).map(|t| {
        (
            t.tenant_id.clone(),
            t.client_id.clone(),
            t.revoked || now >= t.expires_at,
            t.cloud,
        )
    });
    let Some((tenant_id, client_id, invalid, token_cloud)) = token_info else {
        return if req.token.is_none() {
            GraphOutcome::Error(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty.".to_string(),
                None,
            )
        } else {
            GraphOutcome::Error(401, "InvalidAuthenticationToken", EXPIRED.to_string(), None)
        };
    };
    let Some(tenant) = state.tenants.get_mut(&tenant_id) else {
        return GraphOutcome::Error(401, "InvalidAuthenticationToken", EXPIRED.to_string(), None);
    };
    let report = req.report;
    let per_report = tenant.report_stats(report);
    per_report.report_requests += 1;
    per_report.report_paths.push(req.target.clone());
    per_report.request_times.push(now);
    per_report
        .client_request_ids
        .push(req.client_request_id.clone());
    if report == FakeReport::UserCounts {
        tenant.stats.report_requests += 1;
        tenant
            .stats
            .report_client_request_ids
            .push(req.client_request_id);
        tenant.stats.report_paths.push(req.target);
        tenant.stats.user_agents.push(req.user_agent);
        tenant.stats.report_http_versions.push(req.http_version);
    }
    if let Some(c) = tenant.pop_canned(Endpoint::Report(report)) {
        return GraphOutcome::Canned(c);
    }
    if invalid {
        return GraphOutcome::Error(401, "InvalidAuthenticationToken", EXPIRED.to_string(), None);
    }
    if token_cloud != req.cloud {
        return GraphOutcome::Error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.".to_string(),
            None,
        );
    }
    // National clouds have only the beta report (graph-behaviour.md section 2).
    if req.cloud != FakeCloud::Global && req.version == ApiVersion::V1 {
        return GraphOutcome::Error(
            400,
            "BadRequest",
            format!(
                "Resource not found for the segment '{}'.",
                report.api_name()
            ),
            None,
        );
    }
    if !tenant.reports_permission {
        return GraphOutcome::Error(
            401,
            "S2SUnauthorized",
            "Invalid scope claims/roles.".to_string(),
            None,
        );
    }
    let budget = match (req.version, req.format) {
        (_, None) => Budget::Csv,
        (ApiVersion::V1, Some(_)) => {
            return GraphOutcome::Error(
                400,
                "BadRequest",
                "Query option '$format' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.".to_string(),
                None,
            );
        }
        (ApiVersion::Beta, Some(f))
            if f.eq_ignore_ascii_case("application/json") || f.eq_ignore_ascii_case("json") =>
        {
            Budget::Json
        }
        (ApiVersion::Beta, Some(f)) if f.eq_ignore_ascii_case("text/csv") => Budget::Csv,
        (ApiVersion::Beta, Some(f)) => {
            return GraphOutcome::Error(
                400,
                "BadRequest",
                format!("Invalid format '{f}' specified."),
                None,
            );
        }
    };
    let limit = match budget {
        Budget::Csv => config.throttle_limit,
        Budget::Json => config.json_throttle_limit,
    };
    // A malformed JSON page request is refused before it costs any budget.
    let page = match page_request(report, req.top, req.skiptoken, config.json_page_size) {
        Ok(page) => page,
        Err(message) if budget == Budget::Json => {
            return GraphOutcome::Error(400, "BadRequest", message, None)
        }
        Err(_) => PageRequest::first(config.json_page_size),
    };
    let window = tenant
        .throttle
        .entry((client_id, report, budget))
        .or_insert_with(VecDeque::new);
    if let Err(wait) = throttle_admit(window, limit, config.throttle_window, now) {
        tenant.report_stats(report).throttled_requests += 1;
        if report == FakeReport::UserCounts {
            tenant.stats.throttled_requests += 1;
        }
        return GraphOutcome::Error(
            429,
            "TooManyRequests",
            "Please retry again later.".to_string(),
            Some(retry_after_secs(wait)),
        );
    }
    if budget == Budget::Json {
        let at = page.snapshot_secs.map_or_else(wall_now, snapshot_time);
        let snapshot = tenant.snapshot(at);
        return GraphOutcome::Json(report, Box::new(snapshot), page);
    }
    let (opaque, sig) = state.issue_link(&tenant_id, report, now, config.link_ttl);
    let se = state
        .links
        .get(&opaque)
        .map(|l| l.expires_wall.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    GraphOutcome::Redirect(format!(
        "{}/data/download/{opaque}?sv=2021-08-06&sr=b&sp=r&se={}&sig={}",
        config.download_origin,
        percent_encode(&se),
        percent_encode(&sig)
    ))
}

/// Where a JSON page starts (`$skiptoken`) and how long it is (`$top`, else `page_size`); an
/// error message for a malformed option. Only the user detail is paged; the other reports ignore
/// both options.
fn page_request(
    report: FakeReport,
    top: Option<&str>,
    skiptoken: Option<&str>,
    page_size: usize,
) -> Result<PageRequest, String> {
    let mut page = PageRequest::first(page_size);
    if report != FakeReport::UserDetail {
        return Ok(page);
    }
    if let Some(top) = top {
        match top.trim().parse::<usize>() {
            Ok(n) if n > 0 => {
                page.size = n;
                page.top = Some(n);
            }
            _ => return Err(format!("Invalid value '{top}' for query option '$top'.")),
        }
    }
    if let Some(token) = skiptoken {
        let Some((offset, secs)) = decode_skiptoken(token.trim()) else {
            return Err("The skip token is invalid or has expired.".to_string());
        };
        page.offset = usize::try_from(offset).unwrap_or(usize::MAX);
        page.snapshot_secs = Some(secs);
    }
    Ok(page)
}

/// The wall-clock time now, in whole seconds: a paged listing keeps its first page's time in
/// whole seconds, so every page is taken at exactly the same instant.
fn wall_now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    snapshot_time(secs)
}

// ---------------------------------------------------------------------------------------------
// Download host
// ---------------------------------------------------------------------------------------------

/// What the download host decided under the lock.
enum DownloadOutcome {
    /// A scripted answer.
    Canned(Canned),
    /// An XML error: status, storage error code, message, detail.
    Error(u16, &'static str, &'static str, Option<String>),
    /// A body set by a test for this report.
    Body(FakeReport, Bytes),
    /// The report's CSV, to render once the lock is released.
    Report(FakeReport, Box<DataSnapshot>),
}

/// `GET /data/download/<opaque>?...sig=...`: the pre-authenticated report download.
async fn download(
    shared: &Shared,
    connection: &ConnectionContext,
    req: Request<Incoming>,
) -> Response<FakeBody> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let headers = hdrs([
        ("x-ms-request-id", &request_id),
        ("x-ms-version", "2021-08-06"),
        ("Server", "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"),
    ]);
    let authorization = header_str(req.headers(), "authorization").map(str::to_string);
    let opaque = req
        .uri()
        .path()
        .strip_prefix("/data/download/")
        .filter(|o| !o.is_empty() && !o.contains('/'))
        .map(str::to_string);
    let query = parse_form(req.uri().query().unwrap_or(""));
    let sig = form_get(&query, "sig").map(str::to_string);
    let method_ok = req.method() == Method::GET || req.method() == Method::HEAD;
    drop(req);

    let now = Instant::now();
    let (outcome, body_delay) = {
        let mut connection_tenant = connection
            .download_tenant
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut state = shared.lock();
        let request = DownloadRequest {
            opaque: opaque.as_deref(),
            sig: sig.as_deref(),
            authorization,
            method_ok,
            connection_tenant: &mut connection_tenant,
        };
        download_outcome(&mut state, &shared.config, request, now)
    };
    match outcome {
        DownloadOutcome::Canned(c) => serve_canned(c, headers, body_delay).await,
        DownloadOutcome::Error(status, code, message, detail) => {
            let mut headers = headers;
            headers.push(("Content-Type".to_string(), "application/xml".to_string()));
            headers.push(("x-ms-error-code".to_string(), code.to_string()));
            let body = blob_error_body(code, message, detail.as_deref());
            build(status, &headers, FakeBody::delayed(body, body_delay))
        }
        DownloadOutcome::Body(report, body) => csv_response(report, body, headers, body_delay),
        DownloadOutcome::Report(report, snapshot) => {
            let body = render_csv(report, &snapshot);
            csv_response(report, body, headers, body_delay)
        }
    }
}

/// The download host's `200` answer: the report's bytes as an attachment named per report.
fn csv_response(
    report: FakeReport,
    body: Bytes,
    mut headers: Vec<(String, String)>,
    body_delay: Duration,
) -> Response<FakeBody> {
    headers.push((
        "Content-Type".to_string(),
        "application/octet-stream".to_string(),
    ));
    headers.push((
        "Content-Disposition".to_string(),
        format!("attachment; filename=\"{}\"", report.file_name()),
    ));
    build(200, &headers, FakeBody::delayed(body, body_delay))
}

/// The parts of a download request the download host decides on.
struct DownloadRequest<'a> {
    /// The opaque link id from the path, if the path has the link shape.
    opaque: Option<&'a str>,
    /// The `sig` query parameter, decoded.
    sig: Option<&'a str>,
    /// The `Authorization` header, which should never be there.
    authorization: Option<String>,
    /// Whether the method is GET or HEAD.
    method_ok: bool,
    /// The tenant and report the connection's previous download request was attributed to
    /// (updated here).
    connection_tenant: &'a mut Option<(String, FakeReport)>,
}

/// Looks up a download link, records who asked, and checks the signature and expiry. Returns the
/// answer and the tenant's body delay.
///
/// A request is attributed to the link's tenant and report; failing that (a mangled or made-up
/// link) to the tenant of the bearer token that came along (exactly the leak the stats must
/// catch), to the tenant of the previous request on the same connection, or to the tenant of
/// the latest attributed download. Without a link, the report is that of the previous download
/// of the same tenant on the connection, else of the latest download, else the user counts.
fn download_outcome(
    state: &mut State,
    config: &Config,
    req: DownloadRequest<'_>,
    now: Instant,
) -> (DownloadOutcome, Duration) {
    const NOT_FOUND: &str = "The specified resource does not exist.";
    let DownloadRequest {
        opaque,
        sig,
        authorization,
        method_ok,
        connection_tenant,
    } = req;
    let link = opaque.and_then(|o| state.links.get(o));
    let link_info = link.map(|l| {
        (
            l.tenant_id.clone(),
            l.report,
            l.sig.clone(),
            l.created,
            l.expires_wall,
        )
    });
    let token_tenant = || {
        authorization
            .as_deref()
            .and_then(|a| a.trim().split_once(' '))
            .and_then(|(_, t)| state.tokens.get(t.trim()))
            .map(|t| t.tenant_id.clone())
    };
    // The report of an earlier download of `tenant`, on this connection or the latest.
    let earlier_report = |tenant: &str| {
        [connection_tenant.as_ref(), state.last_download.as_ref()]
            .into_iter()
            .flatten()
            .find(|(t, _)| t == tenant)
            .map_or(FakeReport::UserCounts, |&(_, r)| r)
    };
    let attributed = link_info
        .as_ref()
        .map(|l| (l.0.clone(), l.1))
        .or_else(|| token_tenant().map(|t| (t.clone(), earlier_report(&t))))
        .or_else(|| connection_tenant.clone())
        .or_else(|| state.last_download.clone());
    if let Some(a) = &attributed {
        *connection_tenant = Some(a.clone());
        state.last_download = Some(a.clone());
    }
    let Some((tenant, report)) =
        attributed.and_then(|(id, report)| state.tenants.get_mut(&id).map(|t| (t, report)))
    else {
        if authorization.is_some() {
            tracing::warn!("fake graph: an Authorization header reached the download host with an unknown link");
        }
        return (
            DownloadOutcome::Error(404, "ResourceNotFound", NOT_FOUND, None),
            Duration::ZERO,
        );
    };
    tenant.report_stats(report).download_requests += 1;
    if report == FakeReport::UserCounts {
        tenant.stats.download_requests += 1;
    }
    if let Some(a) = authorization {
        tracing::warn!("fake graph: an Authorization header reached the download host");
        tenant.stats.download_authorization_headers.push(a);
    }
    let delay = tenant.download_delay;
    if let Some(c) = tenant.pop_canned(Endpoint::Download(report)) {
        return (DownloadOutcome::Canned(c), delay);
    }
    if !method_ok {
        return (
            DownloadOutcome::Error(
                405,
                "UnsupportedHttpVerb",
                "The resource doesn't support specified Http Verb.",
                None,
            ),
            delay,
        );
    }
    let Some((_, _, expected_sig, created, expires_wall)) = link_info else {
        return (
            DownloadOutcome::Error(404, "ResourceNotFound", NOT_FOUND, None),
            delay,
        );
    };
    if sig != Some(expected_sig.as_str()) {
        return (
            DownloadOutcome::Error(404, "ResourceNotFound", NOT_FOUND, None),
            delay,
        );
    }
    let age = now.saturating_duration_since(created);
    if age >= config.link_ttl {
        // "Current time" on the fake's clock (tokio time, possibly paused), anchored at expiry.
        let overdue = chrono::Duration::from_std(age - config.link_ttl).unwrap_or_default();
        let current = expires_wall
            .checked_add_signed(overdue)
            .unwrap_or(expires_wall);
        let detail = format!(
            "Signed expiry time [{}] has to be after current time [{}]",
            expires_wall.format("%a, %d %b %Y %H:%M:%S GMT"),
            current.format("%a, %d %b %Y %H:%M:%S GMT"),
        );
        return (
            DownloadOutcome::Error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
                Some(detail),
            ),
            delay,
        );
    }
    let outcome = match tenant.body_override.get(&report) {
        Some(body) => DownloadOutcome::Body(report, body.clone()),
        None => DownloadOutcome::Report(report, Box::new(tenant.snapshot(wall_now()))),
    };
    (outcome, delay)
}
