//! Corporate networks: every outbound request through an HTTP proxy with authentication, the
//! download URL included, proved by counting the proxy's CONNECTs per host; and an https:// proxy
//! (TLS to the proxy itself), trusted through the same CA file as Graph.
//!
//! The proxy is a small CONNECT proxy written here rather than Debian's tinyproxy or squid: it
//! runs inside the test's runtime (so it works on paused time, without a process to install,
//! configure, and wait for), checks `Proxy-Authorization`, and counts CONNECTs per target, which
//! a packaged proxy would only give through its log format. It speaks the same protocol reqwest
//! speaks to any proxy for https URLs: `CONNECT host:port`, `200`, then a byte tunnel.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use office365_activations_exporter::fake_graph::{FakeGraph, FakeGraphOptions};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const PROXY_USER: &str = "exporter";
const PROXY_PASSWORD: &str = "p@ss:word";

/// A CONNECT proxy on loopback that requires Basic authentication and counts tunnels per target;
/// with a TLS slot, an https:// proxy.
struct ConnectProxy {
    address: SocketAddr,
    /// For an https:// proxy: the certificate it presents, set once known (a test's fake Graph
    /// starts after the proxy's address is needed); connections before then are dropped.
    tls: Option<Arc<std::sync::OnceLock<TlsAcceptor>>>,
    /// `host:port` → CONNECTs accepted.
    connects: Arc<Mutex<BTreeMap<String, u64>>>,
    /// CONNECTs refused with 407.
    refused: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        ConnectProxy::start_with(None).await
    }

    /// An https:// proxy; [`ConnectProxy::present`] gives it its certificate.
    async fn start_https() -> ConnectProxy {
        ConnectProxy::start_with(Some(Arc::default())).await
    }

    /// The certificate of an https:// proxy (`tls`'s), speaking HTTP/1.1 (CONNECT) inside TLS.
    fn present(&self, tls: Arc<rustls::ServerConfig>) {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let slot = self.tls.as_ref().expect("an https proxy");
        assert!(slot.set(TlsAcceptor::from(Arc::new(config))).is_ok());
    }

    async fn start_with(tls: Option<Arc<std::sync::OnceLock<TlsAcceptor>>>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connects = Arc::new(Mutex::new(BTreeMap::new()));
        let refused = Arc::new(Mutex::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
        );
        let task = tokio::spawn({
            let (connects, refused, tls) = (connects.clone(), refused.clone(), tls.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let (connects, refused, expected, tls) = (
                        connects.clone(),
                        refused.clone(),
                        expected.clone(),
                        tls.clone(),
                    );
                    tokio::spawn(async move {
                        let Some(slot) = tls else {
                            let _ = tunnel(client, &expected, &connects, &refused).await;
                            return;
                        };
                        // No certificate yet, or the client refused it: nothing is tunnelled.
                        let Some(tls) = slot.get() else { return };
                        let Ok(client) = tls.accept(client).await else {
                            return;
                        };
                        let _ = tunnel(client, &expected, &connects, &refused).await;
                    });
                }
            }
        });
        ConnectProxy {
            address,
            tls,
            connects,
            refused,
            task,
        }
    }

    fn url(&self, password: &str) -> Url {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut url = Url::parse(&format!("{scheme}://{}", self.address)).unwrap();
        url.set_username(PROXY_USER).unwrap();
        url.set_password(Some(password)).unwrap();
        url
    }

    fn connects(&self) -> BTreeMap<String, u64> {
        self.connects.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one client connection: reads the CONNECT head, checks the credentials, opens the tunnel.
async fn tunnel(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    expected: &str,
    connects: &Mutex<BTreeMap<String, u64>>,
    refused: &Mutex<u64>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let authorized = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("proxy-authorization") && value.trim() == expected
        })
    });
    if !authorized {
        *refused.lock().unwrap() += 1;
        client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    *connects
        .lock()
        .unwrap()
        .entry(target.to_owned())
        .or_default() += 1;
    let mut upstream = TcpStream::connect(target).await?;
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

fn authority(url: &str) -> String {
    url.trim_start_matches("https://").to_owned()
}

/// Scrapes `h` (the tenant must be served) and expects exactly the three hosts tunnelled through
/// `proxy`: Entra ID, Graph and the pre-authenticated download URL on its own host.
async fn assert_scrape_tunnels_every_host(h: &Harness, proxy: &ConnectProxy) {
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0), "{}", last_error(h, 0));
    let connects = proxy.connects();
    for host in [
        authority(&h.fake.authority_host()),
        authority(&h.fake.graph_endpoint()),
        authority(&h.fake.download_origin()),
    ] {
        assert!(
            connects.get(&host).copied().unwrap_or(0) >= 1,
            "{host} not tunnelled: {connects:?}"
        );
    }
    assert_eq!(connects.len(), 3, "{connects:?}");
}

#[tokio::test(start_paused = true)]
async fn every_request_goes_through_the_authenticating_proxy() {
    let proxy = ConnectProxy::start().await;
    let h = Harness::with(Options {
        proxy: Some(proxy.url(PROXY_PASSWORD)),
        ..Options::default()
    })
    .await;
    assert_scrape_tunnels_every_host(&h, &proxy).await;
    assert_eq!(*proxy.refused.lock().unwrap(), 0);
    assert!(h.stats(0).download_authorization_headers.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_proxy_password_fails_the_token_stage_as_network() {
    let proxy = ConnectProxy::start().await;
    let h = Harness::with(Options {
        proxy: Some(proxy.url("wrong")),
        ..Options::default()
    })
    .await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "token", "network"), 1.0);
    assert!(*proxy.refused.lock().unwrap() >= 1);
    assert!(proxy.connects().is_empty());
    let error = last_error(&h, 0);
    assert!(
        !error.contains("wrong"),
        "the proxy password leaked: {error}"
    );
    h.stop().await;
}

/// A failure behind an open tunnel (the download host stalls its body) names the host and the
/// proxy it went through, without the proxy's credentials or the link's path.
#[tokio::test(start_paused = true)]
async fn a_stalled_download_through_the_proxy_names_the_host_and_the_proxy() {
    let proxy = ConnectProxy::start().await;
    let h = Harness::with(Options {
        proxy: Some(proxy.url(PROXY_PASSWORD)),
        ..Options::default()
    })
    .await;
    h.fake
        .set_download_delay(&tenant_id(0), std::time::Duration::from_secs(600));
    let tenant = Arc::clone(&h.exporter.tenants()[0]);
    let refresh = tokio::spawn(async move { tenant.refresh().await.remove(0).1 });
    until("the download started", || h.stats(0).download_requests == 1).await;
    settle().await;
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    let error = refresh.await.unwrap().unwrap_err();
    assert_eq!(
        (error.stage().as_str(), error.reason()),
        ("download", "timeout")
    );
    let error = error.to_string();
    let expected = format!(
        "download request to {} via proxy http://{} failed",
        h.fake.download_origin(),
        proxy.address
    );
    assert!(error.starts_with(&expected), "{error}");
    for hidden in [
        PROXY_PASSWORD,
        "p%40ss",
        "exporter@",
        "/data/download",
        "sig=",
    ] {
        assert!(!error.contains(hidden), "{hidden:?} shown: {error}");
    }
    h.stop().await;
}

/// TLS to the proxy itself (`https://` proxy URL), verified against the same roots as Graph
/// (`--tls.ca-file`): every host is still tunnelled, and a proxy certificate from another CA is
/// refused rather than trusted.
#[tokio::test(start_paused = true)]
async fn an_https_proxy_is_reached_over_verified_tls() {
    // Trusted: the proxy presents a certificate of the harness's fake's CA (the CA file).
    let proxy = Arc::new(ConnectProxy::start_https().await);
    let h = Harness::with(Options {
        proxy: Some(proxy.url(PROXY_PASSWORD)),
        configure: Some(Box::new({
            let proxy = Arc::clone(&proxy);
            move |fake, _| proxy.present(fake.server_tls_config())
        })),
        ..Options::default()
    })
    .await;
    assert_scrape_tunnels_every_host(&h, &proxy).await;
    h.stop().await;

    // Untrusted: a certificate of another CA (another fake's) is refused, nothing is tunnelled.
    let other = FakeGraph::start(FakeGraphOptions::default()).await.unwrap();
    let untrusted = ConnectProxy::start_https().await;
    untrusted.present(other.server_tls_config());
    let h = Harness::with(Options {
        proxy: Some(untrusted.url(PROXY_PASSWORD)),
        ..Options::default()
    })
    .await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "token", "network"), 1.0);
    assert!(
        untrusted.connects().is_empty(),
        "{:?}",
        untrusted.connects()
    );
    let error = last_error(&h, 0);
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    h.stop().await;
}

/// The binary, with HTTPS_PROXY and NO_PROXY from its environment as Azure's tooling sets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_honours_https_proxy_and_no_proxy() {
    let proxy = ConnectProxy::start().await;
    let fake = start_fixed_fake(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let (graph, authority_host, tenant, client) = (
        fake.graph_endpoint(),
        fake.authority_host(),
        tenant_id(0),
        client_id(0),
    );
    let args = [
        "check",
        "--graph.endpoint",
        &graph,
        "--auth.authority-host",
        &authority_host,
        "--auth.tenant-id",
        &tenant,
        "--auth.client-id",
        &client,
        "--tls.ca-file",
        ca.to_str().unwrap(),
    ];
    let proxy_url = proxy.url(PROXY_PASSWORD).to_string();
    let output = run_binary(
        &args,
        &[
            ("AZURE_CLIENT_SECRET", SECRET),
            ("HTTPS_PROXY", &proxy_url),
            // The download host (localhost) is reached directly.
            ("NO_PROXY", "localhost"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("office365_activations_up{tenant="),
        "{stderr}"
    );
    let connects = proxy.connects();
    assert_eq!(
        connects.keys().cloned().collect::<Vec<_>>(),
        {
            let mut hosts = vec![authority(&authority_host), authority(&graph)];
            hosts.sort();
            hosts
        },
        "{connects:?}"
    );
    assert!(
        stderr.contains("proxy"),
        "the proxy in use is logged: {stderr}"
    );
    assert!(
        !stderr.contains(PROXY_PASSWORD) && !stderr.contains("p%40ss"),
        "the proxy password leaked: {stderr}"
    );
    fake.shutdown().await;
}
