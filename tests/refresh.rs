//! The refresh flow end to end, against the fake Graph over TLS: values, the redirect without the
//! token, token reuse, single flight, lazy loading, the TTL.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::advance;

#[tokio::test(start_paused = true)]
async fn scrape_serves_the_report_values() {
    let h = Harness::start().await;
    let response = h.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4",
        "exactly the text encoder's Content-Type"
    );
    let m = Metrics::parse(&response.text().await.unwrap());
    let enterprise = "MICROSOFT 365 APPS FOR ENTERPRISE";
    assert_eq!(m.assigned("contoso", enterprise), Some(2679.0));
    assert_eq!(m.activated("contoso", enterprise), Some(1710.0));
    assert_eq!(
        m.get(
            "office365_activations_shared_computer_activated_users",
            &[("tenant", "contoso"), ("product_type", enterprise)]
        ),
        Some(1024.0)
    );
    assert_eq!(
        m.activated("contoso", "PROJECT ONLINE DESKTOP CLIENT"),
        Some(88.0)
    );
    assert_eq!(
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &[("tenant", "contoso"), ("report", "user_counts")]
        ),
        Some(1_795_564_800.0), // 2026-11-25T00:00:00Z
    );
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(
        m.get(
            "office365_activations_refreshes_total",
            &[("tenant", "contoso"), ("report", "user_counts")]
        ),
        Some(1.0)
    );
    let success = m
        .get(
            "office365_activations_last_refresh_success_timestamp_seconds",
            &[("tenant", "contoso"), ("report", "user_counts")],
        )
        .expect("last success timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 600.0, "{success} vs {now}");
    // Per tenant: the redirect latency counters and the last duration; the histograms are
    // exporter-wide, by report.
    assert_eq!(
        m.get(
            "office365_activations_tenant_redirect_latency_seconds_count",
            &[("tenant", "contoso")]
        ),
        Some(1.0)
    );
    assert!(m
        .get(
            "office365_activations_tenant_redirect_latency_seconds_sum",
            &[("tenant", "contoso")]
        )
        .is_some_and(|s| s >= 0.0));
    assert!(m
        .get(
            "office365_activations_last_refresh_duration_seconds",
            &[("tenant", "contoso"), ("report", "user_counts")]
        )
        .is_some());
    for histogram in [
        "office365_activations_redirect_latency_seconds_count",
        "office365_activations_refresh_duration_seconds_count",
    ] {
        assert_eq!(
            m.get(histogram, &[("report", "user_counts")]),
            Some(1.0),
            "{histogram}"
        );
    }
    assert!(m
        .text
        .contains("office365_activations_exporter_build_info{revision="));
    assert!(m.text.contains("process_resident_memory_bytes"));
    for line in m.text.lines().filter(|l| !l.starts_with('#')) {
        let after_labels = line.rsplit_once('}').map_or(line, |(_, rest)| rest);
        let fields = after_labels.split_whitespace().count();
        assert_eq!(
            fields,
            if line.contains('}') { 1 } else { 2 },
            "no sample timestamps: {line}"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_token_never_reaches_the_download_host() {
    let h = Harness::start().await;
    h.scrape().await;
    let stats = h.stats(0);
    assert_eq!((stats.report_requests, stats.download_requests), (1, 1));
    assert!(
        stats.download_authorization_headers.is_empty(),
        "Authorization reached the download host: {:?}",
        stats.download_authorization_headers
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn graph_calls_carry_a_client_request_id_and_user_agent() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    h.scrape().await;
    advance(Duration::from_secs(61)).await;
    h.scrape().await;
    let stats = h.stats(0);
    let ids: Vec<String> = stats
        .report_client_request_ids
        .iter()
        .map(|id| id.clone().expect("client-request-id sent"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "a fresh id per call");
    for id in &ids {
        uuid::Uuid::parse_str(id).expect("a UUID");
    }
    assert!(
        stats.user_agents.iter().all(|ua| ua
            == &format!(
                "office365-activations-exporter/{}",
                env!("CARGO_PKG_VERSION")
            )),
        "{:?}",
        stats.user_agents
    );
    assert_eq!(
        stats.report_paths[0],
        "/v1.0/reports/getOffice365ActivationsUserCounts"
    );
    assert_eq!(
        stats.report_http_versions,
        vec!["HTTP/2.0"; 2],
        "HTTP/2 where the server offers it"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_fetched_before_the_first_scrape() {
    let h = Harness::start().await;
    assert_eq!(h.get("/-/healthy").await.status(), 200);
    assert_eq!(h.get("/").await.status(), 200);
    assert_eq!(
        h.get("/-/ready").await.status(),
        503,
        "not ready before a report loaded"
    );
    let stats = h.stats(0);
    assert_eq!(
        (stats.token_requests, stats.report_requests),
        (0, 0),
        "lazy: nothing before a scrape"
    );
    h.scrape().await;
    assert_eq!(h.get("/-/ready").await.status(), 200);
    assert_eq!(h.get("/-/healthy").await.status(), 200);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_served_until_the_ttl_passes() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    h.scrape().await;
    h.fake.set_products(
        &tenant_id(0),
        date(),
        vec![product("MICROSOFT 365 APPS FOR ENTERPRISE", 3000, 2000, 5)],
    );
    // Expiry is jittered into the last 10% of the TTL, never later.
    advance(Duration::from_secs(269)).await;
    let m = h.scrape().await;
    assert_eq!(h.stats(0).report_requests, 1, "cached within the TTL");
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(1710.0)
    );
    advance(Duration::from_secs(31)).await;
    let m = h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        2,
        "refreshed once the TTL passed"
    );
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(2000.0)
    );
    assert_eq!(
        m.activated("contoso", "PROJECT ONLINE DESKTOP CLIENT"),
        None,
        "a product that left the report leaves /metrics"
    );
    assert!(!m.text.contains("PROJECT ONLINE DESKTOP CLIENT"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_token_per_token_lifetime() {
    // Tokens live 3599 s; the exporter renews 5 minutes before expiry.
    let h = Harness::with(Options {
        ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    for _ in 0..54 {
        h.scrape().await;
        advance(Duration::from_secs(60)).await;
    }
    let stats = h.stats(0);
    assert_eq!(stats.report_requests, 54);
    assert_eq!(stats.token_requests, 1, "one token reused for 54 refreshes");
    for _ in 0..6 {
        h.scrape().await;
        advance(Duration::from_secs(60)).await;
    }
    assert_eq!(
        h.stats(0).token_requests,
        2,
        "renewed shortly before expiry"
    );
    assert_eq!(
        h.stats(0).throttled_requests,
        0,
        "a 1m TTL stays within 14 requests per 10 minutes"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_scrapes_cause_one_refresh() {
    let h = Harness::start().await;
    h.fake
        .set_download_delay(&tenant_id(0), Duration::from_secs(1));
    let scrapes: Vec<_> = (0..100).map(|_| h.spawn_scrape(None)).collect();
    until("the download started", || h.stats(0).download_requests == 1).await;
    settle().await;
    advance(Duration::from_secs(1)).await;
    for scrape in scrapes {
        let m = Metrics::parse(&scrape.await.unwrap());
        assert_eq!(
            m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
            Some(1710.0)
        );
    }
    let stats = h.stats(0);
    assert_eq!(
        (
            stats.token_requests,
            stats.report_requests,
            stats.download_requests
        ),
        (1, 1, 1)
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_scrape_that_times_out_answers_with_the_cache_while_the_refresh_finishes() {
    let h = Harness::start().await;
    h.fake
        .set_download_delay(&tenant_id(0), Duration::from_secs(20));
    let scrape = h.spawn_scrape(Some("2"));
    until("the download started", || h.stats(0).download_requests == 1).await;
    advance(Duration::from_secs(2)).await;
    // Bounded: a scrape that ignored its deadline fails here instead of hanging.
    until("the scrape answered within its 2 s", || {
        scrape.is_finished()
    })
    .await;
    let m = Metrics::parse(&scrape.await.unwrap());
    assert_eq!(m.up("contoso"), Some(0.0), "no report yet");
    assert!(m.series("office365_activations_activated_users").is_empty());
    // The abandoned refresh goes on and lands.
    advance(Duration::from_secs(18)).await;
    until("the refresh landed", || h.exporter.tenants()[0].loaded()).await;
    let m = h.scrape().await;
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(1710.0)
    );
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(
        h.stats(0).report_requests,
        1,
        "the running refresh was not restarted"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_the_header_the_default_scrape_timeout_applies() {
    let h = Harness::with(Options {
        scrape_timeout: Duration::from_secs(4),
        ..Options::default()
    })
    .await;
    h.fake
        .set_download_delay(&tenant_id(0), Duration::from_secs(20));
    let scrape = h.spawn_scrape(None);
    until("the download started", || h.stats(0).download_requests == 1).await;
    advance(Duration::from_millis(3500)).await;
    settle().await;
    assert!(!scrape.is_finished(), "waits up to 3.6 s of its 4 s");
    advance(Duration::from_millis(200)).await;
    let m = Metrics::parse(&scrape.await.unwrap());
    assert_eq!(m.up("contoso"), Some(0.0));
    h.stop().await;
}
