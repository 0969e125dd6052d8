//! A real Prometheus (Debian's package) scrapes the exporter in demo mode; the series come back
//! through Prometheus's query API.

mod common;

use std::time::Duration;

use common::*;
use tokio::process::{Child, Command};

/// A free loopback port for Prometheus (it cannot report a port 0 choice back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_exporter() -> (Child, String) {
    let mut child = Command::new(binary())
        .args(["--demo", "--web.listen-address", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address = listening_address(&mut child).await;
    (child, address)
}

/// Queries Prometheus until `accept` likes the answer (Prometheus scrapes on its own schedule,
/// so this waits for it; the bound only turns a hang into a failure).
async fn query_until(
    prometheus: &str,
    query: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..240 {
        if let Ok(response) = client
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
        {
            if let Ok(body) = serde_json::from_str::<serde_json::Value>(
                &response.text().await.unwrap_or_default(),
            ) {
                if body["status"] == "success" && accept(&body["data"]["result"]) {
                    return body["data"]["result"].clone();
                }
                last = body;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus never answered {query} as expected; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_demo_and_queries_the_series_back() {
    let prometheus_bin = require_tool("prometheus");
    let (_exporter, address) = start_exporter().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: office365-activations\n    static_configs:\n      - targets: ['{address}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Command::new(prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let prometheus = format!("http://127.0.0.1:{port}");

    let up = query_until(&prometheus, "up{job=\"office365-activations\"}", |r| {
        r.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["value"][1] == "1")
    })
    .await;
    assert_eq!(up[0]["metric"]["instance"], address.as_str());

    let activated = query_until(&prometheus, "office365_activations_activated_users", |r| {
        r.as_array().is_some_and(|a| a.len() == 8)
    })
    .await;
    let mut seen: Vec<(String, String)> = activated
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["tenant"].as_str().unwrap().to_owned(),
                s["metric"]["product_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert!(
        seen.contains(&("contoso".into(), "MICROSOFT 365 APPS FOR ENTERPRISE".into())),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|(t, _)| t == "fabrikam").count(), 3);

    let exporter_up = query_until(&prometheus, "office365_activations_up == 1", |r| {
        r.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(exporter_up.as_array().unwrap().len(), 2);
    // Every activated count is within its assigned count.
    query_until(&prometheus, "count(office365_activations_activated_users <= on(tenant, product_type) office365_activations_assigned_users)", |r| r[0]["value"][1] == "8").await;
    // Scrape-health: Prometheus itself saw no scrape error and no sample-timestamp trouble.
    query_until(
        &prometheus,
        "scrape_samples_scraped{job=\"office365-activations\"} > 50",
        |r| r.as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
}
