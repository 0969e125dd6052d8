//! Each cloud preset end to end: `--cloud` sets the Graph endpoint, the Entra ID host, the token
//! scope and the API version together. The exporter's client resolves the clouds' real host names
//! to the fake (whose certificate names them), and the fake behaves per cloud: each Entra ID
//! issues tokens only for its own Graph, national Graphs have only the beta report.

mod common;

use common::*;
use office365_activations_exporter::config::{Cli, Config, TenantConfig};
use office365_activations_exporter::graph::ReportFormat;

use clap::Parser;

/// Resolves a single-tenant configuration from flags, as the binary does.
fn tenant_from_flags(flags: &[&str]) -> TenantConfig {
    let tenant = tenant_id(0);
    let client = client_id(0);
    let mut args = vec![
        "office365-activations-exporter",
        "--auth.tenant-id",
        &tenant,
        "--auth.client-id",
        &client,
        "--tenant.name",
        "contoso",
    ];
    args.extend_from_slice(flags);
    let cli = Cli::try_parse_from(args).unwrap();
    let config = Config::resolve(&cli.flags, &|key| {
        (key == "AZURE_CLIENT_SECRET").then(|| SECRET.to_owned())
    })
    .unwrap();
    config.tenants[0].clone()
}

async fn cloud_harness(flags: &'static [&'static str]) -> Harness {
    Harness::with(Options {
        resolve_clouds: true,
        configure: Some(Box::new(move |_, configs: &mut Vec<TenantConfig>| {
            configs[0] = tenant_from_flags(flags);
        })),
        ..Options::default()
    })
    .await
}

fn report_lines(m: &Metrics) -> Vec<String> {
    m.text
        .lines()
        .filter(|l| l.starts_with("office365_activations_") && l.contains("product_type"))
        .map(str::to_owned)
        .collect()
}

async fn check_preset(cloud: &'static [&'static str], graph: &str, login: &str, version: &str) {
    let h = cloud_harness(cloud).await;
    let config = h.exporter.tenants()[0].config().clone();
    assert_eq!(config.graph_endpoint.as_str(), format!("https://{graph}/"));
    assert_eq!(config.authority_host.as_str(), format!("https://{login}/"));
    assert_eq!(config.scope, format!("https://{graph}/.default"));
    assert_eq!(config.api_version, version);
    let m = h.scrape().await;
    assert_eq!(
        m.up("contoso"),
        Some(1.0),
        "{cloud:?}: {}",
        last_error(&h, 0)
    );
    assert_eq!(
        m.assigned("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(2679.0)
    );
    let stats = h.stats(0);
    assert!(
        stats.report_paths[0].starts_with(&format!("/{version}/reports/")),
        "{:?}",
        stats.report_paths
    );
    assert!(stats.download_authorization_headers.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cloud_global() {
    check_preset(
        &["--cloud", "global"],
        "graph.microsoft.com",
        "login.microsoftonline.com",
        "v1.0",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn cloud_usgov() {
    check_preset(
        &["--cloud", "usgov"],
        "graph.microsoft.us",
        "login.microsoftonline.us",
        "beta",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn cloud_usgov_dod() {
    check_preset(
        &["--cloud", "usgov-dod"],
        "dod-graph.microsoft.us",
        "login.microsoftonline.us",
        "beta",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn cloud_china() {
    check_preset(
        &["--cloud", "china"],
        "microsoftgraph.chinacloudapi.cn",
        "login.chinacloudapi.cn",
        "beta",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn json_format_gives_the_same_metrics_as_csv() {
    let csv = cloud_harness(&["--cloud", "usgov"]).await;
    let csv_lines = report_lines(&csv.scrape().await);
    csv.stop().await;
    let json = cloud_harness(&["--cloud", "usgov", "--graph.format", "json"]).await;
    assert_eq!(
        json.exporter.tenants()[0].config().report_format,
        ReportFormat::Json
    );
    let m = json.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0), "{}", last_error(&json, 0));
    assert_eq!(report_lines(&m), csv_lines);
    assert!(!csv_lines.is_empty());
    let stats = json.stats(0);
    assert!(
        stats.report_paths[0].ends_with("?$format=application/json"),
        "{:?}",
        stats.report_paths
    );
    assert_eq!(stats.download_requests, 0, "JSON comes without a redirect");
    json.stop().await;
}

#[tokio::test(start_paused = true)]
async fn national_cloud_v1_is_a_400_and_tokens_do_not_cross_clouds() {
    // An explicit --graph.api-version overrides the preset: China has no v1.0 report.
    let h = cloud_harness(&["--cloud", "china", "--graph.api-version", "v1.0"]).await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "report", "http_4xx"), 1.0);
    let error = last_error(&h, 0);
    assert!(
        error.contains("Resource not found for the segment 'getOffice365ActivationsUserCounts'"),
        "{error}"
    );
    assert!(error.contains("national clouds only have beta"), "{error}");
    h.stop().await;

    // A US Gov scope asked of the global Entra ID: that resource does not exist there.
    let h = cloud_harness(&[
        "--cloud",
        "usgov",
        "--auth.authority-host",
        "https://login.microsoftonline.com",
    ])
    .await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS500011"), "{error}");
    assert!(error.contains("tokens do not cross clouds"), "{error}");
    h.stop().await;
}
