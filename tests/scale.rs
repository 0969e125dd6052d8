//! What keeps one process serving many tenants: gzip composed once per refresh, bounded refresh
//! concurrency, TTL expiry jittered so tenants loaded together do not expire together, reloading
//! the tenant list without losing other tenants' data.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use office365_activations_exporter::config::TenantConfig;
use office365_activations_exporter::tenant::{Freshness, TTL_JITTER};
use tokio::time::advance;

#[tokio::test(start_paused = true)]
async fn gzip_is_served_when_accepted_and_decodes_to_the_plain_body() {
    let h = Harness::with(Options {
        tenants: 2,
        ..Options::default()
    })
    .await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let plain = raw.get(format!("{}/metrics", h.base)).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "Accept-Encoding");
    let plain = plain.bytes().await.unwrap();
    let gz = raw
        .get(format!("{}/metrics", h.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(gz.headers()["content-type"], "text/plain; version=0.0.4");
    let gz = gz.bytes().await.unwrap();
    assert!(
        gz.len() * 3 < plain.len(),
        "{} vs {}",
        gz.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    // One ordinary gzip member: a single-member decoder reads all of it.
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.to_vec(), "same body within the same second");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_body_changes_when_a_refresh_lands_and_not_otherwise() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let first = h.exporter.snapshot();
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0));
    let loaded = h.exporter.snapshot();
    assert!(
        !std::sync::Arc::ptr_eq(&first, &loaded),
        "a refresh made a new body"
    );
    assert!(
        std::sync::Arc::ptr_eq(&loaded, &h.exporter.snapshot()),
        "cached between refreshes"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn refreshes_run_at_most_concurrency_at_a_time() {
    let h = Harness::with(Options {
        tenants: 3,
        concurrency: 1,
        ..Options::default()
    })
    .await;
    for i in 0..3 {
        h.fake
            .set_download_delay(&tenant_id(i), Duration::from_secs(10));
    }
    let scrape = h.spawn_scrape(Some("60"));
    let downloads = || (0..3).map(|i| h.stats(i).download_requests).sum::<u64>();
    until("one download started", || downloads() == 1).await;
    settle().await;
    assert_eq!(downloads(), 1, "the other two wait for the slot");
    advance(Duration::from_secs(10)).await;
    until("the second download started", || downloads() == 2).await;
    settle().await;
    assert_eq!(downloads(), 2);
    advance(Duration::from_secs(10)).await;
    until("the third download started", || downloads() == 3).await;
    advance(Duration::from_secs(10)).await;
    let m = Metrics::parse(&scrape.await.unwrap());
    for tenant in ["contoso", "fabrikam", "northwind"] {
        assert_eq!(m.up(tenant), Some(1.0), "{tenant}");
    }
    h.stop().await;
}

/// Tenants loaded by the same scrape (the same instant: the clock is frozen) do not all expire in
/// the same second: each expiry is jittered into the last 10% of the TTL (360 s of a 1 h TTL; the
/// chance that 4 random expiries share one second anyway is about 1 in 50 million).
#[tokio::test(start_paused = true)]
async fn tenants_loaded_together_expire_at_different_seconds() {
    let h = Harness::with(Options {
        tenants: 4,
        ..Options::default()
    })
    .await;
    h.scrape().await;
    let now = tokio::time::Instant::now();
    let mut expiry_seconds: Vec<u64> = h
        .exporter
        .tenants()
        .iter()
        .flat_map(|tenant| {
            tenant
                .ensure_fresh(now)
                .into_iter()
                .map(move |f| (tenant, f))
        })
        .map(|(tenant, freshness)| match freshness {
            Freshness::Until(due) => due.duration_since(now).as_secs(),
            Freshness::Refreshing(_) => panic!("{} is due right after loading", tenant.name()),
        })
        .collect();
    let earliest = TTL.mul_f64(1.0 - TTL_JITTER).as_secs();
    for seconds in &expiry_seconds {
        assert!(
            (earliest..=TTL.as_secs()).contains(seconds),
            "expiry {seconds} s after loading, outside the last 10% of the TTL"
        );
    }
    expiry_seconds.sort_unstable();
    expiry_seconds.dedup();
    assert!(
        expiry_seconds.len() > 1,
        "4 tenants loaded together all expire in the same second: {expiry_seconds:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_adds_removes_and_keeps_tenants() {
    let h = Harness::with(Options {
        tenants: 3,
        ..Options::default()
    })
    .await;
    h.scrape().await;
    let configs: Vec<TenantConfig> = h
        .exporter
        .tenants()
        .iter()
        .map(|t| t.config().clone())
        .collect();
    // Keep contoso as it is, drop fabrikam, change where northwind's report comes from (the
    // beta API: a change of reports or TTLs alone would keep its cache), add tailspin (reusing
    // fabrikam's app registration in the fake under a new name).
    let mut northwind = configs[2].clone();
    northwind.api_version = "beta".into();
    let mut tailspin = configs[1].clone();
    tailspin.name = "tailspin".into();
    let summary = h
        .exporter
        .reload(&[configs[0].clone(), northwind, tailspin])
        .unwrap();
    assert_eq!(summary.kept, 1);
    assert_eq!(summary.removed, vec!["fabrikam".to_owned()]);
    assert_eq!(summary.changed, vec!["northwind".to_owned()]);
    assert_eq!(summary.added, vec!["tailspin".to_owned()]);

    let before = (h.stats(0).report_requests, h.stats(2).report_requests);
    let m = h.scrape().await;
    assert_eq!(
        h.stats(0).report_requests,
        before.0,
        "contoso kept its cache"
    );
    assert_eq!(
        h.stats(2).report_requests,
        before.1 + 1,
        "northwind starts afresh"
    );
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(1710.0)
    );
    assert_eq!(m.up("tailspin"), Some(1.0));
    assert!(
        !m.text.contains("tenant=\"fabrikam\""),
        "every fabrikam series is gone:\n{}",
        m.text
    );
    assert_eq!(
        m.get(
            "office365_activations_refreshes_total",
            &[("tenant", "contoso"), ("report", "user_counts")]
        ),
        Some(1.0)
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_changes_nothing() {
    let h = Harness::with(Options {
        tenants: 1,
        ..Options::default()
    })
    .await;
    h.scrape().await;
    let contoso = h.exporter.tenants()[0].config().clone();
    let mut changed = contoso.clone();
    changed.cache_ttl = Duration::from_secs(7200);
    let mut added = contoso.clone();
    added.name = "newbie".into();
    let mut broken = contoso.clone();
    broken.name = "broken".into();
    broken.authority_host = reqwest::Url::parse("mailto:nobody@example.com").unwrap();
    // Changing contoso and adding newbie are built before broken fails.
    assert!(h.exporter.reload(&[changed, added, broken]).is_err());
    // A reload that changes nothing re-renders /metrics (a new generation) without a refresh.
    let summary = h.exporter.reload(std::slice::from_ref(&contoso)).unwrap();
    assert_eq!(summary.kept, 1);
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(1.0), "{}", m.text);
    assert_eq!(h.exporter.tenants().len(), 1);
    for name in ["newbie", "broken"] {
        assert!(
            !m.text.contains(&format!("tenant=\"{name}\"")),
            "the failed reload left series of {name}:\n{}",
            m.text
        );
    }
    h.stop().await;
}
