//! The one outbound HTTPS client, shared by every tenant, and the helpers every outbound call uses.
//!
//! One `reqwest::Client` means one connection pool per host for all tenants. Redirects are off:
//! the Graph client follows the report's 302 itself, so that the bearer token never leaves the
//! Graph host. Bodies are read through [`read_capped`], so a runaway answer cannot eat memory.
//!
//! Proxies: `--http.proxy` when given (with `user:password@` for proxy authentication, and
//! NO_PROXY still honoured); otherwise reqwest's own support of HTTPS_PROXY, HTTP_PROXY, ALL_PROXY
//! and NO_PROXY (upper or lower case). Requests to https URLs go through the proxy as CONNECT
//! tunnels; the extra CA (`--tls.ca-file`) is trusted for every TLS connection, including one to an
//! https:// proxy and the inner TLS of a proxy that inspects it. Managed identity endpoints, which
//! are on the host itself, use a client of their own without proxy.
//!
//! Every network, TLS and timeout error names where the request went ([`origin`]: scheme, host,
//! port, never a path or query) and, through [`HttpClient`], the proxy it went through: the
//! client keeps a copy of reqwest's proxy rules ([`ProxyRoutes`]), since reqwest's errors do not
//! say which proxy, if any, was used.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::proxy::matcher::Matcher;
use reqwest::Url;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Stage};

/// How long a TCP + TLS connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, from sending it to the end of its body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The User-Agent of every outbound request: Microsoft's throttling reports name it.
pub const USER_AGENT: &str = concat!("office365-activations-exporter/", env!("CARGO_PKG_VERSION"));

/// The shared outbound client, with the proxy rules it was built with, so that a failed request
/// can name the proxy it went through. Requests are built on the reqwest client it derefs to.
#[derive(Clone, Debug)]
pub struct HttpClient {
    /// The client every request is sent with.
    client: reqwest::Client,
    /// The same proxy choice reqwest makes for `client`, for error messages only.
    proxies: ProxyRoutes,
}

impl HttpClient {
    /// Wraps `client`, whose proxies are exactly `proxies`.
    pub fn new(client: reqwest::Client, proxies: ProxyRoutes) -> Self {
        HttpClient { client, proxies }
    }

    /// Which proxy the client uses for what.
    pub fn proxies(&self) -> &ProxyRoutes {
        &self.proxies
    }

    /// [`transport_error`], naming the proxy the request went through as well.
    pub fn transport_error(&self, stage: Stage, err: reqwest::Error) -> Error {
        transport_error_via(stage, err, None, &self.proxies)
    }

    /// Streams a body into `sink` as it arrives, capped at `limit` bytes, naming the proxy the
    /// body came through as well when reading it fails; returns the bytes read.
    pub async fn stream_capped(
        &self,
        response: reqwest::Response,
        stage: Stage,
        limit: u64,
        sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        stream_capped_via(response, stage, limit, &self.proxies, sink).await
    }

    /// [`read_capped`], naming the proxy the body came through as well when reading it fails.
    pub async fn read_capped(
        &self,
        response: reqwest::Response,
        stage: Stage,
        limit: u64,
    ) -> Result<Bytes, Error> {
        read_capped_via(response, stage, limit, &self.proxies).await
    }
}

impl Deref for HttpClient {
    type Target = reqwest::Client;

    fn deref(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A client built with reqwest's default proxy settings (the environment's, as
/// [`ProxyRoutes::from_environment`] reads them), e.g. `reqwest::Client::new()`.
impl From<reqwest::Client> for HttpClient {
    fn from(client: reqwest::Client) -> Self {
        HttpClient::new(client, ProxyRoutes::from_environment())
    }
}

/// Which proxy a URL is fetched through: the same rules, read from the same flag and environment
/// variables at the same time, as the ones given to reqwest (whose client does not expose them).
#[derive(Clone, Default)]
pub struct ProxyRoutes {
    /// hyper-util's matcher, the one reqwest itself uses; `None`: every request goes directly.
    matcher: Option<Arc<Matcher>>,
}

impl ProxyRoutes {
    /// No proxy at all (the managed identity client).
    pub fn direct() -> Self {
        ProxyRoutes::default()
    }

    /// reqwest's default: HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (upper or lower case).
    pub fn from_environment() -> Self {
        ProxyRoutes {
            matcher: Some(Arc::new(Matcher::from_system())),
        }
    }

    /// `--http.proxy` for every URL, except those NO_PROXY names.
    pub fn all_through(proxy: &Url) -> Self {
        let no_proxy = std::env::var("NO_PROXY")
            .or_else(|_| std::env::var("no_proxy"))
            .unwrap_or_default();
        ProxyRoutes {
            matcher: Some(Arc::new(
                Matcher::builder()
                    .all(proxy.as_str().to_owned())
                    .no(no_proxy)
                    .build(),
            )),
        }
    }

    /// The proxy `url` is fetched through, as `scheme://host:port` without credentials; `None`
    /// when it is fetched directly.
    pub fn proxy_for(&self, url: &Url) -> Option<String> {
        let uri: hyper::Uri = url.as_str().parse().ok()?;
        let intercept = self.matcher.as_ref()?.intercept(&uri)?;
        let proxy = intercept.uri();
        let scheme = proxy.scheme_str().unwrap_or("http");
        let port = proxy.port_u16().unwrap_or(match scheme {
            "https" => 443,
            "http" => 80,
            // SOCKS
            _ => 1080,
        });
        // host() and port only: the userinfo (`user:password@`) is never part of the text.
        Some(format!("{scheme}://{}:{port}", proxy.host()?))
    }
}

/// Says only whether proxies are configured: the rules may hold credentials.
impl std::fmt::Debug for ProxyRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.matcher.is_some() {
            "ProxyRoutes(configured)"
        } else {
            "ProxyRoutes(direct)"
        })
    }
}

/// Where a request went, for an error message: `scheme://host:port` (the port even when it is
/// the scheme's default), without user, path, query or fragment. A download URL's query is a
/// credential, so only this may be shown of it.
pub fn origin(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        (None, _) => format!("{}:", url.scheme()),
    }
}

/// Builds the shared client. `extra_ca_pem` holds PEM certificates trusted in addition to the
/// bundled public roots: a corporate TLS-inspecting proxy's CA, or the fake Graph's. Proxies come
/// from the environment.
pub fn build(extra_ca_pem: Option<&[u8]>) -> Result<HttpClient, String> {
    build_with(&HttpOptions {
        extra_ca_pem,
        ..HttpOptions::default()
    })
}

/// How the shared client is built.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions<'a> {
    /// Extra trusted CA certificates (PEM).
    pub extra_ca_pem: Option<&'a [u8]>,
    /// `--http.proxy`; `None`: the environment's proxies.
    pub proxy: Option<&'a Url>,
    /// Host names resolved to these addresses instead of DNS (the tests point the national
    /// clouds' real host names at the fake Graph).
    pub resolve: &'a [(String, SocketAddr)],
}

/// A proxy URL without its credentials, for logs.
pub fn redact_proxy(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        Err(_) => "(unparsable proxy URL)".to_owned(),
    }
}

/// Which proxy outbound requests use, for the log at start: the flag's, or the environment's.
pub fn describe_proxy(proxy: Option<&Url>, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(url) = proxy {
        return Some(format!("{} (--http.proxy)", redact_proxy(url.as_str())));
    }
    let found: Vec<String> = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .filter_map(|name| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| format!("{name}={}", redact_proxy(v.trim())))
    })
    .collect();
    if found.is_empty() {
        return None;
    }
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .unwrap_or_default();
    Some(format!("{} NO_PROXY={no_proxy}", found.join(" ")))
}

/// Builds the shared client from `options`.
pub fn build_with(options: &HttpOptions<'_>) -> Result<HttpClient, String> {
    let extra_ca_pem = options.extra_ca_pem;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(USER_AGENT)
        .https_only(false)
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("cannot read CA certificates: {e}"))?;
        if certs.is_empty() {
            return Err("no PEM certificate found".into());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    // The routes are read now, as reqwest reads the environment now.
    let proxies = match options.proxy {
        Some(proxy) => {
            // Adding a proxy turns off reqwest's reading of the environment; NO_PROXY still applies.
            builder = builder.proxy(
                reqwest::Proxy::all(proxy.as_str())
                    .map_err(|e| format!("--http.proxy: {e}"))?
                    .no_proxy(reqwest::NoProxy::from_env()),
            );
            ProxyRoutes::all_through(proxy)
        }
        None => ProxyRoutes::from_environment(),
    };
    for (host, address) in options.resolve {
        builder = builder.resolve(host, *address);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
    Ok(HttpClient::new(client, proxies))
}

/// Maps an error of a client without proxy to [`Error::Transport`]: see
/// [`HttpClient::transport_error`] for the shared client.
///
/// The message names the request's [`origin`] but not its URL (a download URL is a credential),
/// and adds the causes that reqwest's own message leaves out (e.g. the TLS certificate problem).
pub fn transport_error(stage: Stage, err: reqwest::Error) -> Error {
    transport_error_via(stage, err, None, &ProxyRoutes::direct())
}

/// [`transport_error`] for a request through `proxies`, to `url` when the error carries none
/// (errors reading a body do not).
fn transport_error_via(
    stage: Stage,
    err: reqwest::Error,
    url: Option<&Url>,
    proxies: &ProxyRoutes,
) -> Error {
    let timeout = err.is_timeout();
    let connection_lost = connection_lost(&err);
    let url = url.or(err.url());
    let origin = url.map_or_else(|| "(unknown host)".to_owned(), origin);
    let proxy = url.and_then(|url| proxies.proxy_for(url));
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    Error::Transport {
        stage,
        timeout,
        connection_lost,
        origin,
        proxy,
        message,
    }
}

/// Whether `err` is the failure of a whole HTTP/2 connection rather than of the request's own
/// stream: a GOAWAY (sent by the server, or by h2 itself, which closes a connection once it has
/// reset 1,024 of its streams for the server's protocol errors over the connection's whole life)
/// or the connection's I/O failing. Every request multiplexed on the connection fails with it,
/// whichever of them caused it.
fn connection_lost(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.is_io();
        }
        source = cause.source();
    }
    false
}

/// Reads a whole body, failing with [`Error::TooLarge`] as soon as it passes `limit` bytes
/// (before reading further when Content-Length already says so). A failure to read it names the
/// response's origin, not the proxy: see [`HttpClient::read_capped`] for the shared client.
pub async fn read_capped(
    response: reqwest::Response,
    stage: Stage,
    limit: u64,
) -> Result<Bytes, Error> {
    read_capped_via(response, stage, limit, &ProxyRoutes::direct()).await
}

/// [`read_capped`] of a response that came through `proxies`.
async fn read_capped_via(
    response: reqwest::Response,
    stage: Stage,
    limit: u64,
    proxies: &ProxyRoutes,
) -> Result<Bytes, Error> {
    let mut body = BytesMut::new();
    stream_capped_via(response, stage, limit, proxies, |chunk| {
        body.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(body.freeze())
}

/// Streams a body into `sink` chunk by chunk as it arrives, failing with [`Error::TooLarge`] as
/// soon as it passes `limit` bytes (before reading at all when Content-Length already says so);
/// nothing is held beyond the current chunk. Returns the bytes read. An error of `sink` ends the
/// reading.
async fn stream_capped_via(
    mut response: reqwest::Response,
    stage: Stage,
    limit: u64,
    proxies: &ProxyRoutes,
    mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<u64, Error> {
    // With gzip the header gives the compressed size; the decoded bytes are counted below.
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(Error::TooLarge {
            stage,
            limit,
            setting: None,
        });
    }
    // Errors while reading the body carry no URL.
    let url = response.url().clone();
    let mut read = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error_via(stage, e, Some(&url), proxies))?
    {
        read += chunk.len() as u64;
        if read > limit {
            return Err(Error::TooLarge {
                stage,
                limit,
                setting: None,
            });
        }
        sink(&chunk)?;
    }
    Ok(read)
}

/// Reads an error answer's body for the log: at most this many bytes.
pub const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The first line of a body, trimmed and cut to a log-friendly length.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.trim_start_matches('\u{feff}').trim();
    let line = line.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        let origin_of = |url: &str| origin(&Url::parse(url).unwrap());
        assert_eq!(
            origin_of("https://login.microsoftonline.com/tenant/oauth2/v2.0/token"),
            "https://login.microsoftonline.com:443"
        );
        assert_eq!(
            origin_of("https://user:pw@reports.office.com/data/download/x.csv?sv=1&sig=abc#f"),
            "https://reports.office.com:443"
        );
        assert_eq!(
            origin_of("http://169.254.169.254/metadata/identity/oauth2/token?resource=r"),
            "http://169.254.169.254:80"
        );
        assert_eq!(origin_of("https://[::1]:8443/x"), "https://[::1]:8443");
    }

    #[test]
    fn the_proxy_is_named_without_its_credentials() {
        let proxy = Url::parse("http://exporter:p%40ss@proxy.example:3128").unwrap();
        let routes = ProxyRoutes::all_through(&proxy);
        let graph = Url::parse("https://graph.microsoft.com/v1.0/reports").unwrap();
        assert_eq!(
            routes.proxy_for(&graph).as_deref(),
            Some("http://proxy.example:3128")
        );
        let default_port = ProxyRoutes::all_through(&Url::parse("https://proxy.example").unwrap());
        assert_eq!(
            default_port.proxy_for(&graph).as_deref(),
            Some("https://proxy.example:443")
        );
        assert_eq!(ProxyRoutes::direct().proxy_for(&graph), None);
        assert!(!format!("{routes:?}").contains("p%40ss"));
    }
}
