//! Every network, TLS and timeout error says where the request went: the scheme, host and port of
//! Entra ID, Graph, the download host or the managed identity endpoint, and the proxy it went
//! through; never the path or query of the download URL (its signature is a credential) nor the
//! proxy's credentials. One test per stage, each reading the text where an operator meets it: the
//! error's Display (what the log line prints), the landing page, and `check`'s output.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use office365_activations_exporter::config::TenantConfig;
use office365_activations_exporter::credentials::managed_identity::{
    ManagedIdentityConfig, ManagedIdentityEndpoint,
};
use office365_activations_exporter::credentials::{CredentialConfig, Secret};
use office365_activations_exporter::error::Error;
use office365_activations_exporter::fake_graph::{Canned, FakeGraph};
use reqwest::Url;
use tokio::time::advance;

/// A loopback port nothing listens on: connections to it are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A host that accepts every connection and closes it at once, before any TLS: a reset.
async fn closing_host() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    (address, task)
}

/// Runs one refresh of tenant 0, which must fail; returns the error.
async fn failed_refresh(h: &Harness) -> Error {
    match h.exporter.tenants()[0].refresh().await.remove(0).1 {
        Ok(()) => panic!("the refresh succeeded"),
        Err(error) => error,
    }
}

/// Asserts that the error `text` names `origin` (and `proxy`, when one is expected) and shows
/// none of `hidden`.
fn assert_names(place: &str, text: &str, origin: &str, proxy: Option<&str>, hidden: &[&str]) {
    assert!(text.contains(origin), "{place} names {origin}: {text}");
    match proxy {
        Some(proxy) => assert!(
            text.contains(&format!("via proxy {proxy}")),
            "{place} names the proxy {proxy}: {text}"
        ),
        None => assert!(!text.contains("via proxy"), "{place}: no proxy: {text}"),
    }
    for secret in hidden {
        assert!(!text.contains(secret), "{place} shows {secret:?}: {text}");
    }
}

/// One refresh of tenant 0 fails at `stage` for `reason`; its error's Display (the log line's
/// `error=`), the tenant's last error and the landing page all name `origin` and hide `hidden`.
async fn assert_error_names(
    h: &Harness,
    error: Error,
    (stage, reason): (&str, &str),
    origin: &str,
    proxy: Option<&str>,
    hidden: &[&str],
) {
    assert_eq!((error.stage().as_str(), error.reason()), (stage, reason));
    let display = error.to_string();
    assert!(
        display.starts_with(&format!("{stage} request to {origin}")),
        "{display}"
    );
    assert_names("the error", &display, origin, proxy, hidden);
    assert_names("the last error", &last_error(h, 0), origin, proxy, hidden);
    let page = h.get("/").await.text().await.unwrap();
    assert!(page.contains("down: "), "{page}");
    assert_names("the landing page", &page, origin, proxy, hidden);
}

/// A harness whose tenant 0 is edited by `edit` (the fake is running by then).
async fn harness_with(
    edit: impl FnOnce(&FakeGraph, &mut TenantConfig) + Send + 'static,
) -> Harness {
    Harness::with(Options {
        configure: Some(Box::new(move |fake, configs| edit(fake, &mut configs[0]))),
        ..Options::default()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn token_errors_name_the_entra_id_host() {
    // A closed port.
    let port = closed_port();
    let h = harness_with(move |_, tenant| {
        tenant.authority_host = Url::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    })
    .await;
    let error = failed_refresh(&h).await;
    let origin = format!("https://127.0.0.1:{port}");
    assert_error_names(&h, error, ("token", "network"), &origin, None, &["oauth2"]).await;
    // The label values are those of every other network error.
    assert_eq!(h.scrape().await.errors("contoso", "token", "network"), 1.0);
    h.stop().await;

    // A host name that does not resolve (`.invalid` never does, RFC 6761): the default port is
    // spelled out.
    let h = harness_with(|_, tenant| {
        tenant.authority_host = Url::parse("https://login.invalid").unwrap();
    })
    .await;
    let error = failed_refresh(&h).await;
    assert!(error.to_string().contains("dns error"), "{error}");
    assert_error_names(
        &h,
        error,
        ("token", "network"),
        "https://login.invalid:443",
        None,
        &["oauth2", "v2.0"],
    )
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn report_errors_name_the_graph_host() {
    // Down: nothing listens.
    let port = closed_port();
    let h = harness_with(move |_, tenant| {
        tenant.graph_endpoint = Url::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    })
    .await;
    let error = failed_refresh(&h).await;
    let origin = format!("https://127.0.0.1:{port}");
    assert_error_names(&h, error, ("report", "network"), &origin, None, &["/v1.0"]).await;
    h.stop().await;

    // Reset: the connection is closed before the TLS handshake completes.
    let (address, closing) = closing_host().await;
    let h = harness_with(move |_, tenant| {
        tenant.graph_endpoint = Url::parse(&format!("https://{address}")).unwrap();
    })
    .await;
    let error = failed_refresh(&h).await;
    let origin = format!("https://{address}");
    assert_error_names(&h, error, ("report", "network"), &origin, None, &["/v1.0"]).await;
    h.stop().await;
    closing.abort();
}

#[tokio::test(start_paused = true)]
async fn download_errors_name_the_download_host_but_never_the_link() {
    let port = closed_port();
    let h = Harness::start().await;
    h.fake.push_report_response(
        &tenant_id(0),
        Canned::redirect(&format!(
            "https://localhost:{port}/data/download/activations.csv?sv=2020-08-04&se=2026&sig=c2lnbmF0dXJl"
        )),
    );
    let error = failed_refresh(&h).await;
    let origin = format!("https://localhost:{port}");
    assert_error_names(
        &h,
        error,
        ("download", "network"),
        &origin,
        None,
        &[
            "/data/download",
            "activations.csv",
            "sig=",
            "c2lnbmF0dXJl",
            "sv=",
        ],
    )
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn managed_identity_errors_name_the_identity_endpoint() {
    // IMDS refused (no VM here).
    let port = closed_port();
    let h = harness_with(move |_, tenant| {
        tenant.credential = CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
            id: None,
            endpoint: ManagedIdentityEndpoint::Imds(
                Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            ),
        });
    })
    .await;
    let error = failed_refresh(&h).await;
    let origin = format!("http://127.0.0.1:{port}");
    let hidden = ["/metadata", "resource=", "api-version"];
    assert_error_names(&h, error, ("token", "network"), &origin, None, &hidden).await;
    h.stop().await;

    // App Service's endpoint refused: its path is not shown, its header secret never.
    let port = closed_port();
    let h = harness_with(move |_, tenant| {
        tenant.credential = CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
            id: None,
            endpoint: ManagedIdentityEndpoint::AppService {
                endpoint: Url::parse(&format!("http://127.0.0.1:{port}/MSI/token/")).unwrap(),
                header: Secret::new("identity-header-secret"),
            },
        });
    })
    .await;
    let error = failed_refresh(&h).await;
    let origin = format!("http://127.0.0.1:{port}");
    let hidden = ["/MSI", "identity-header-secret", "resource="];
    assert_error_names(&h, error, ("token", "network"), &origin, None, &hidden).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn proxy_errors_name_the_proxy_without_its_credentials() {
    let port = closed_port();
    let proxy = Url::parse(&format!("http://exporter:pr0xy-pa55@127.0.0.1:{port}")).unwrap();
    let h = Harness::with(Options {
        proxy: Some(proxy),
        ..Options::default()
    })
    .await;
    let error = failed_refresh(&h).await;
    // The request was for Entra ID, through the proxy that refused the connection.
    let origin = h.fake.authority_host();
    let proxy_origin = format!("http://127.0.0.1:{port}");
    assert_error_names(
        &h,
        error,
        ("token", "network"),
        &origin,
        Some(&proxy_origin),
        &["pr0xy-pa55", "exporter@", "exporter:"],
    )
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn timeouts_name_the_host_that_stalled() {
    // Graph never answers the report request: the 60 s request timeout fires at send.
    let h = Harness::start().await;
    h.fake.push_report_response(
        &tenant_id(0),
        Canned::graph_error(503, "ServiceUnavailable", "late").delayed(Duration::from_secs(600)),
    );
    let tenant = Arc::clone(&h.exporter.tenants()[0]);
    let refresh = tokio::spawn(async move { tenant.refresh().await.remove(0).1 });
    until("the report request arrived", || {
        h.stats(0).report_requests == 1
    })
    .await;
    settle().await;
    advance(Duration::from_secs(61)).await;
    let error = refresh.await.unwrap().unwrap_err();
    let origin = h.fake.graph_endpoint();
    assert_error_names(&h, error, ("report", "timeout"), &origin, None, &["/v1.0"]).await;
    h.stop().await;

    // The download host sends its headers, then stalls the body: the timeout fires while
    // reading it, and names the download host without the link.
    let h = Harness::start().await;
    h.fake
        .set_download_delay(&tenant_id(0), Duration::from_secs(600));
    let tenant = Arc::clone(&h.exporter.tenants()[0]);
    let refresh = tokio::spawn(async move { tenant.refresh().await.remove(0).1 });
    until("the download started", || h.stats(0).download_requests == 1).await;
    settle().await;
    advance(Duration::from_secs(61)).await;
    let error = refresh.await.unwrap().unwrap_err();
    let origin = h.fake.download_origin();
    let hidden = ["/data/download", "sig=", "?"];
    assert_error_names(&h, error, ("download", "timeout"), &origin, None, &hidden).await;
    h.stop().await;
}

/// Runs `check` against the fake, with Entra ID at `authority` (the fake's when `None`) and
/// `extra` flags; returns stderr: the log line of the failed refresh, then `check`'s own
/// one-line summary.
async fn check_fails_with(fake: &FakeGraph, authority: Option<&str>, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let (graph, authority, tenant, client) = (
        fake.graph_endpoint(),
        authority.map_or_else(|| fake.authority_host(), str::to_owned),
        tenant_id(0),
        client_id(0),
    );
    let mut args = vec![
        "check",
        "--graph.endpoint",
        &graph,
        "--auth.authority-host",
        &authority,
        "--auth.tenant-id",
        &tenant,
        "--auth.client-id",
        &client,
        "--tls.ca-file",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = run_binary(&args, &[("AZURE_CLIENT_SECRET", SECRET)]).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

/// Asserts that both the log line (logfmt, `level=warn`) and `check`'s summary name `origin`.
fn assert_check_names(stderr: &str, origin: &str, proxy: Option<&str>, hidden: &[&str]) {
    let log_line = stderr
        .lines()
        .find(|l| l.contains("level=warn") && l.contains("error="))
        .unwrap_or_else(|| panic!("a warn line with the error: {stderr}"));
    assert_names("the log line", log_line, origin, proxy, hidden);
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("office365-activations-exporter: tenant "))
        .unwrap_or_else(|| panic!("check's summary line: {stderr}"));
    assert_names("check's summary", summary, origin, proxy, hidden);
    assert_names("stderr", stderr, origin, proxy, hidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_dead_endpoint() {
    let fake = start_fixed_fake(1).await;

    // Entra ID down.
    let port = closed_port();
    let authority = format!("https://127.0.0.1:{port}");
    let stderr = check_fails_with(&fake, Some(&authority), &[]).await;
    assert!(stderr.contains("stage=token"), "{stderr}");
    assert_check_names(
        &stderr,
        &format!("token request to {authority}"),
        None,
        &["oauth2"],
    );

    // A proxy that refuses connections, given with credentials.
    let port = closed_port();
    let proxy = format!("http://exporter:pr0xy-pa55@127.0.0.1:{port}");
    let stderr = check_fails_with(&fake, None, &["--http.proxy", &proxy]).await;
    assert_check_names(
        &stderr,
        &fake.authority_host(),
        Some(&format!("http://127.0.0.1:{port}")),
        &["pr0xy-pa55"],
    );

    // The download host down, behind a signed link.
    let port = closed_port();
    fake.push_report_response(
        &tenant_id(0),
        Canned::redirect(&format!(
            "https://localhost:{port}/data/download/activations.csv?sv=2020-08-04&sig=c2lnbmF0dXJl"
        )),
    );
    let stderr = check_fails_with(&fake, None, &[]).await;
    assert!(stderr.contains("stage=download"), "{stderr}");
    assert_check_names(
        &stderr,
        &format!("download request to https://localhost:{port}"),
        None,
        &["/data/download", "sig=", "c2lnbmF0dXJl"],
    );
    fake.shutdown().await;
}
