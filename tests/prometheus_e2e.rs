//! A real Prometheus (Debian's package) scrapes the exporter in demo mode; the series come back
//! through Prometheus's query API.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_demo_and_queries_the_series_back() {
    let (_exporter, address) = start_demo_exporter(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: office365-activations\n    static_configs:\n      - targets: ['{address}']\n"
        ),
    );

    let up = prometheus
        .query_until("up{job=\"office365-activations\"}", |r| {
            r.as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["value"][1] == "1")
        })
        .await;
    assert_eq!(up[0]["metric"]["instance"], address.as_str());

    let activated = prometheus
        .query_until("office365_activations_activated_users", |r| {
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

    // The demo runs all three reports of both tenants.
    let exporter_up = prometheus
        .query_until("office365_activations_up == 1", |r| {
            r.as_array().is_some_and(|a| a.len() == 6)
        })
        .await;
    assert_eq!(exporter_up.as_array().unwrap().len(), 6);
    // Every activated count is within its assigned count.
    prometheus.query_until("count(office365_activations_activated_users <= on(tenant, product_type) office365_activations_assigned_users)", |r| r[0]["value"][1] == "8").await;
    // Scrape-health: Prometheus itself saw no scrape error and no sample-timestamp trouble.
    prometheus
        .query_until(
            "scrape_samples_scraped{job=\"office365-activations\"} > 50",
            |r| r.as_array().is_some_and(|a| a.len() == 1),
        )
        .await;
}
