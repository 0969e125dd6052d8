//! The HTTP server (hyper 1): TLS and basic auth from the web config, routing, scrape
//! deadlines, graceful shutdown.
//!
//! GET and HEAD only. `/` is a landing page, the telemetry path serves metrics (every tenant of
//! this process), `/probe?target=<tenant>` one tenant's, `/sd` the tenants as Prometheus HTTP
//! service discovery, `/-/healthy` answers without touching Graph, `/-/ready` once every tenant
//! has loaded its reports, POST `/-/reload` when the lifecycle API is enabled.
//!
//! Limits ([`Limits`]) keep a flood of connections, clients that never finish a request and
//! clients that never read their answer from starving scrapes or growing memory: at most
//! `--web.max-connections` connections at once (more are answered 503 and closed), a request head
//! must arrive whole within [`HEADER_READ_TIMEOUT`], an answer the client stops reading is cut
//! after [`STALL_TIMEOUT`] without progress, an idle kept-alive connection closes after
//! [`IDLE_TIMEOUT`], and a request head over [`MAX_REQUEST_HEAD`] or a body over
//! [`MAX_REQUEST_BODY`] is refused. Each closing is counted in
//! `office365_activations_exporter_http_connections_closed_total{reason}`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE,
    VARY, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

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

/// `--web.max-connections` by default: Prometheus's own default for its flag of that name. A
/// Prometheus needs one or two connections per exporter; the rest is headroom for people and
/// probes. Each connection costs a few tens of KiB at most (buffers, TLS state; the /metrics body
/// is shared, never copied per connection), so the cap also bounds memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// A request head (request line and headers) must arrive whole within this time: counted from
/// the accept for a connection's first request, so one that connects and sends nothing holds its
/// slot no longer, and from the request's first byte on a kept-alive connection. A scrape's head
/// is a few hundred bytes sent at once; this only ever cuts slowloris clients, which trickle a
/// head to hold connections. (hyper's own `header_read_timeout` would also count the idle time
/// between requests and so close the kept-alive connections Prometheus reuses: it is off.)
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection whose client reads nothing of its answer for this long (the socket stays full:
/// no byte written) is closed. A Prometheus that gave up closes its connection itself; this
/// frees what a dead peer or a client that never reads would otherwise hold until TCP gives up
/// (about 15 minutes). A slow reader that makes progress is never cut.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A kept-alive connection without a request for this long is closed: longer than the usual
/// scrape intervals, so Prometheus keeps reusing its connection between scrapes, yet a slot that
/// a client holds idle comes back. A client whose idle connection was closed connects anew
/// (Go's HTTP client, Prometheus's, retries a GET on a reused connection the server closed).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The largest request head accepted (request line included); a larger one is answered 431 and
/// the connection closed. Scrapes send a few hundred bytes; 32 KiB leaves room for a browser's
/// cookies on the landing page while bounding what a connection buffers (hyper's default: about
/// 400 KiB).
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// The largest request body a request may announce (Content-Length); a larger one is answered
/// 413 and the connection closed. No endpoint reads a body (POST /-/reload needs none): bodies
/// are never buffered, at most drained if they arrived with the head.
pub const MAX_REQUEST_BODY: u64 = 4 * 1024;

/// At most this many refused connections (over `--web.max-connections`) are answered 503 at
/// once; further ones are closed without an answer, so a flood cannot grow the refusals' tasks.
const REFUSALS_AT_ONCE: usize = 64;

/// A refused connection gets this long to take its 503 and close.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// What the server takes on at once, and how long it waits for a client. The defaults are the
/// constants above; only the connection cap is a flag (`--web.max-connections`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Why a limit closed or refused a connection: the `reason` label of the counter.
#[derive(Clone, Copy, Debug)]
enum Limit {
    MaxConnections,
    HeaderTimeout,
    StallTimeout,
    IdleTimeout,
    TooLarge,
}

impl Limit {
    const ALL: [Limit; 5] = [
        Limit::MaxConnections,
        Limit::HeaderTimeout,
        Limit::StallTimeout,
        Limit::IdleTimeout,
        Limit::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::HeaderTimeout => "header_timeout",
            Limit::StallTimeout => "stall_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::TooLarge => "too_large",
        }
    }
}

/// `office365_activations_exporter_http_connections_closed_total`, process-wide like
/// `process_*` (one server per process), and each reason's counter resolved once.
struct LimitCounters {
    family: prometheus::IntCounterVec,
    each: Vec<prometheus::IntCounter>,
}

static LIMIT_COUNTERS: LazyLock<LimitCounters> = LazyLock::new(|| {
    let help = format!(
        "Connections the HTTP server refused or closed because of its limits, by reason: \
         max_connections (answered 503: --web.max-connections were open), header_timeout (no \
         whole request head within {}s), stall_timeout (the client read nothing of its answer \
         for {}s), idle_timeout (kept alive without a request for {}s), too_large (a request \
         head over {} KiB or a body over {} KiB).",
        HEADER_READ_TIMEOUT.as_secs(),
        STALL_TIMEOUT.as_secs(),
        IDLE_TIMEOUT.as_secs(),
        MAX_REQUEST_HEAD / 1024,
        MAX_REQUEST_BODY / 1024,
    );
    let family = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "office365_activations_exporter_http_connections_closed_total",
            help,
        ),
        &["reason"],
    )
    .expect("a valid metric");
    // Every reason from the start at 0, so increase() sees the first one.
    let each = Limit::ALL
        .iter()
        .map(|limit| family.with_label_values(&[limit.label()]))
        .collect();
    LimitCounters { family, each }
});

/// The limits' counter, for the registry of the live self-metrics.
pub fn limit_counters() -> Box<dyn prometheus::core::Collector> {
    Box::new(LIMIT_COUNTERS.family.clone())
}

fn count(limit: Limit) {
    LIMIT_COUNTERS.each[limit as usize].inc();
}

/// Serves until `shutdown` completes, then lets open connections finish (up to
/// [`SHUTDOWN_GRACE`]), with the default [`Limits`].
pub async fn run(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    run_with(listener, exporter, options, Limits::default(), shutdown).await;
}

/// [`run`] with these limits.
pub async fn run_with(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    options: ServerOptions,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    // One Arc per request to clone, not two: at tens of thousands of scrapes a second, each
    // shared counter touched costs.
    let context = Arc::new((exporter, options));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
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
                // Full: accept and refuse rather than stop accepting. Left in the kernel's
                // backlog, a flood's connections would be served first, in arrival order, once
                // slots free; refused, the next scrape finds the slot that a timed-out slow
                // client freed. Kept-alive connections, Prometheus's included, keep theirs.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    count(Limit::MaxConnections);
                    let plain = context.1.web.tls.is_none();
                    refuse(stream, plain, &refusals, limits.max_connections);
                    continue;
                };
                let context = Arc::clone(&context);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let activity = Arc::new(Activity::default());
                    let stream = Guarded::new(stream, limits, Arc::clone(&activity));
                    match context.1.web.tls.clone() {
                        None => serve_connection(stream, context, watcher, activity).await,
                        Some(tls) => {
                            let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(stream)) => {
                                    serve_connection(stream, context, watcher, activity).await
                                }
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

/// A connection over `--web.max-connections`: a 503 that says why (plain HTTP only, and only
/// [`REFUSALS_AT_ONCE`] at a time), then closed; over TLS, or with too many refusals under way,
/// closed at once.
fn refuse(stream: TcpStream, plain: bool, refusals: &Arc<Semaphore>, max_connections: usize) {
    let Some(permit) = plain
        .then(|| Arc::clone(refusals).try_acquire_owned().ok())
        .flatten()
    else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let body = format!(
            "Too many connections: this exporter serves at most {max_connections} at once \
             (--web.max-connections)\n"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            // Until the client closes: closing with its request unread would reset the
            // connection, and the client might lose the 503.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// Serves HTTP/1.1 on one connection, plain or TLS; `activity` is shared with the connection's
/// [`Guarded`] socket.
async fn serve_connection<I>(
    io: I,
    context: Arc<(Arc<Exporter>, ServerOptions)>,
    watcher: Watcher,
    activity: Arc<Activity>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        activity.started.fetch_add(1, Relaxed);
        let activity = Arc::clone(&activity);
        if request.body().size_hint().lower() > MAX_REQUEST_BODY {
            count(Limit::TooLarge);
            let answer = Tracked::new(too_large(&context.1), activity);
            return Either::Left(std::future::ready(Ok::<_, Infallible>(answer)));
        }
        // Most requests are scrapes that the cache answers as it is: answer those right here,
        // without the state machine of the general path (a measurable share of a scrape's cost
        // at tens of thousands of scrapes a second).
        if let Some(answer) = cached_scrape(&context.0, &context.1, &request) {
            let answer = Tracked::new(answer, activity);
            return Either::Left(std::future::ready(Ok::<_, Infallible>(answer)));
        }
        let context = Arc::clone(&context);
        Either::Right(Box::pin(async move {
            let (exporter, options) = &*context;
            let answer = guarded(exporter, options, request).await;
            let answer = Tracked::new(with_extra_headers(answer, options), activity);
            Ok::<_, Infallible>(answer)
        }))
    });
    // hyper's header read timeout is off (see HEADER_READ_TIMEOUT): Guarded keeps the time.
    let connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_header_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(io), service);
    match watcher.watch(connection).await {
        Ok(()) => {}
        Err(error) if error.is_parse_too_large() => {
            count(Limit::TooLarge);
            tracing::debug!(%error, "Request head too large; answered 431");
        }
        Err(error) => tracing::debug!(%error, "Connection ended with an error"),
    }
}

/// The 413 for a request that announces a body over [`MAX_REQUEST_BODY`]; the connection closes
/// after it, so the body is never read.
fn too_large(options: &ServerOptions) -> Response<Payload> {
    let mut answer = with_extra_headers(
        response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain; charset=utf-8",
            format!(
                "Request body too large: at most {MAX_REQUEST_BODY} bytes (no endpoint reads one)\n"
            ),
        ),
        options,
    );
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// The requests of one connection: whose head was read whole (the service was called) and whose
/// answer's body hyper is done with. A request is under way while they differ.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

/// An answer's body that tells the connection's [`Activity`] when hyper is done with it (sent
/// whole, or dropped: HEAD, an error, a closed connection).
struct Tracked {
    body: Payload,
    activity: Arc<Activity>,
}

impl Tracked {
    fn new(answer: Response<Payload>, activity: Arc<Activity>) -> Response<Tracked> {
        answer.map(|body| Tracked { body, activity })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.finished.fetch_add(1, Relaxed);
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket (under TLS, if any) that keeps the limits' time: the header read
/// timeout while no request is under way and a head has begun (or since the accept, for the
/// first), the idle timeout while none has begun, and the stall timeout while a write finds the
/// socket full. One timer serves them all; it is moved only when a deadline comes earlier than
/// the one it is set for, or when it fired early, so a kept-alive scrape seldom resets it.
///
/// A request's head that arrived with the previous request (pipelining) is not noticed as
/// begun; a connection that then never completes it is closed by the idle timeout instead.
struct Guarded<I> {
    io: I,
    limits: Limits,
    activity: Arc<Activity>,
    timer: Pin<Box<Sleep>>,
    /// When the head being read must be whole; `None` when no head has begun.
    head_deadline: Option<Instant>,
    /// Since when no request is under way and no byte has arrived (set when an answer's end is
    /// written, or at the first read that found nothing to read).
    idle_since: Option<Instant>,
    /// `activity.started` when last looked at: a change means a head was read whole.
    seen_started: u64,
    /// Since when writes have found the socket full, with no byte written since.
    stalled_since: Option<Instant>,
}

impl<I> Guarded<I> {
    fn new(io: I, limits: Limits, activity: Arc<Activity>) -> Self {
        let deadline = Instant::now() + limits.header_read_timeout;
        Guarded {
            io,
            limits,
            activity,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            head_deadline: Some(deadline),
            idle_since: None,
            seen_started: 0,
            stalled_since: None,
        }
    }

    /// Takes note of a head read whole since the last look; whether a request is under way.
    fn busy(&mut self) -> bool {
        let started = self.activity.started.load(Relaxed);
        if started != self.seen_started {
            // A head was read whole: its deadline is met.
            self.seen_started = started;
            self.head_deadline = None;
            self.idle_since = None;
        }
        started != self.activity.finished.load(Relaxed)
    }

    /// Whether `deadline` has passed; if not, the timer wakes the task by then.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let armed = self.timer.deadline();
            if armed > deadline || armed <= now {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    fn timed_out(limit: Limit) -> io::Error {
        count(limit);
        tracing::debug!(reason = limit.label(), "Closing a connection");
        io::Error::new(io::ErrorKind::TimedOut, limit.label())
    }

    /// The stall timeout around a write (or flush) that `progressed` tells apart.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
        progressed: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Ok(value)) => {
                if progressed(&value) {
                    self.stalled_since = None;
                }
                // The end of an answer is written after hyper is done with its body, and hyper
                // reads again only once woken: the idle timeout starts here, not at that read.
                if !self.busy() && self.idle_since.is_none() && self.head_deadline.is_none() {
                    let now = Instant::now();
                    self.idle_since = Some(now);
                    self.expired(cx, now + self.limits.idle_timeout);
                }
                Poll::Ready(Ok(value))
            }
            Poll::Pending => {
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                if self.expired(cx, since + self.limits.stall_timeout) {
                    Poll::Ready(Err(Self::timed_out(Limit::StallTimeout)))
                } else {
                    Poll::Pending
                }
            }
            error => error,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // While a request is under way, reads are hyper's watch for a closed connection.
        let busy = this.busy();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !busy && buf.filled().len() > before {
                    this.idle_since = None;
                    this.head_deadline
                        .get_or_insert_with(|| Instant::now() + this.limits.header_read_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if !busy => {
                let (deadline, limit) = match this.head_deadline {
                    Some(deadline) => (deadline, Limit::HeaderTimeout),
                    None => (
                        *this.idle_since.get_or_insert_with(Instant::now)
                            + this.limits.idle_timeout,
                        Limit::IdleTimeout,
                    ),
                };
                if this.expired(cx, deadline) {
                    Poll::Ready(Err(Self::timed_out(limit)))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.on_write(cx, result, |written| *written > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.on_write(cx, result, |written| *written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.on_write(cx, result, |_| true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.on_write(cx, result, |_| true)
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
