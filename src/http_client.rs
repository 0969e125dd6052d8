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

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Stage};

/// How long a TCP + TLS connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, from sending it to the end of its body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The User-Agent of every outbound request: Microsoft's throttling reports name it.
pub const USER_AGENT: &str = concat!("office365-activations-exporter/", env!("CARGO_PKG_VERSION"));

/// Builds the shared client. `extra_ca_pem` holds PEM certificates trusted in addition to the
/// bundled public roots: a corporate TLS-inspecting proxy's CA, or the fake Graph's. Proxies come
/// from the environment.
pub fn build(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
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
pub fn build_with(options: &HttpOptions<'_>) -> Result<reqwest::Client, String> {
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
    if let Some(proxy) = options.proxy {
        // Adding a proxy turns off reqwest's reading of the environment; NO_PROXY still applies.
        let proxy = reqwest::Proxy::all(proxy.as_str())
            .map_err(|e| format!("--http.proxy: {e}"))?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    for (host, address) in options.resolve {
        builder = builder.resolve(host, *address);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

/// Maps a client error to [`Error::Transport`], without the URL (a download URL is a credential)
/// and with the causes that reqwest's own message leaves out (e.g. the TLS certificate problem).
pub fn transport_error(stage: Stage, err: reqwest::Error) -> Error {
    let timeout = err.is_timeout();
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
        message,
    }
}

/// Reads a whole body, failing with [`Error::TooLarge`] as soon as it passes `limit` bytes
/// (before reading further when Content-Length already says so).
pub async fn read_capped(
    mut response: reqwest::Response,
    stage: Stage,
    limit: u64,
) -> Result<Bytes, Error> {
    // With gzip the header gives the compressed size; the decoded bytes are counted below.
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(Error::TooLarge { stage, limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(stage, e))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::TooLarge { stage, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Streams a body into `sink` chunk by chunk as it arrives, failing with [`Error::TooLarge`] as
/// soon as it passes `limit` bytes; nothing is held beyond the current chunk. Returns the bytes
/// read. An error of `sink` ends the reading.
pub async fn stream_capped(
    mut response: reqwest::Response,
    stage: Stage,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<u64, Error> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(Error::TooLarge { stage, limit });
    }
    let mut read = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(stage, e))?
    {
        read += chunk.len() as u64;
        if read > limit {
            return Err(Error::TooLarge { stage, limit });
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
