//! `/probe?target=<tenant>` and `/sd` in process (issue 10): one tenant's series and nothing
//! else, refreshed under the same TTL, single flight and Retry-After rules as /metrics; the 400s;
//! a name that needs percent-encoding; the service discovery document, also while a reload
//! swaps the tenant list; and the series count per tenant (issue 10 §1).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use office365_activations_exporter::config::TenantConfig;
use office365_activations_exporter::fake_graph::{Canned, FakeReport};
use office365_activations_exporter::reports::{activation_counts, user_detail};
use office365_activations_exporter::status;
use tokio::time::advance;

const ENTERPRISE: &str = "MICROSOFT 365 APPS FOR ENTERPRISE";
const PROJECT: &str = "PROJECT ONLINE DESKTOP CLIENT";
const USER_COUNTS_GAUGES: [&str; 3] = [
    "office365_activations_assigned_users",
    "office365_activations_activated_users",
    "office365_activations_shared_computer_activated_users",
];

/// The sample lines of an exposition (no comments, no blank lines).
fn sample_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The metric name of a sample line.
fn name_of(line: &str) -> &str {
    line.split(['{', ' ']).next().unwrap_or(line)
}

/// Whether a sample line belongs to one of the tenant status families of `src/status.rs`
/// (the summary's `_sum` and `_count` included).
fn is_status(line: &str) -> bool {
    let name = name_of(line);
    status::FAMILIES.iter().any(|(family, _)| {
        name == *family
            || name
                .strip_prefix(family)
                .is_some_and(|s| s == "_sum" || s == "_count")
    })
}

/// The value of label `label` in a parsed sample key of [`Metrics`].
fn label_in_key<'a>(key: &'a str, label: &str) -> Option<&'a str> {
    let start = key.find(&format!("{label}=\""))? + label.len() + 2;
    let rest = &key[start..];
    Some(&rest[..rest.find('"')?])
}

/// The body of a successful probe of `target`.
async fn probe_ok(h: &Harness, target: &str) -> Metrics {
    let response = h.probe(target).await;
    assert_eq!(response.status(), 200, "probe of {target:?}");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    Metrics::parse(&response.text().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_probe_serves_exactly_the_targets_series_with_their_values() {
    let h = Harness::with(Options {
        tenants: 2,
        ..Options::default()
    })
    .await;
    let m = probe_ok(&h, "contoso").await;

    // The report gauges, exactly.
    for (product, assigned, activated, shared) in [
        (ENTERPRISE, 2679.0, 1710.0, 1024.0),
        (PROJECT, 120.0, 88.0, 0.0),
    ] {
        let labels = [("tenant", "contoso"), ("product_type", product)];
        assert_eq!(m.assigned("contoso", product), Some(assigned), "{}", m.text);
        assert_eq!(m.activated("contoso", product), Some(activated));
        assert_eq!(
            m.get(
                "office365_activations_shared_computer_activated_users",
                &labels
            ),
            Some(shared)
        );
    }
    // Its status series.
    let report = [("tenant", "contoso"), ("report", "user_counts")];
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(
        m.get("office365_activations_refreshes_total", &report),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &report
        ),
        Some(1_795_564_800.0)
    );
    assert!(m
        .get(
            "office365_activations_last_refresh_success_timestamp_seconds",
            &report
        )
        .is_some());
    assert!(m
        .get(
            "office365_activations_last_refresh_duration_seconds",
            &report
        )
        .is_some());
    for stage in ["token", "report", "download"] {
        assert_eq!(
            m.error_series("contoso", stage, "throttled"),
            Some(0.0),
            "{stage}"
        );
    }
    assert_eq!(
        m.get(
            "office365_activations_tenant_redirect_latency_seconds_count",
            &[("tenant", "contoso")]
        ),
        Some(1.0)
    );

    // Nothing else: every sample is contoso's; no other tenant, no process or exporter-wide
    // series.
    for key in m.samples.keys() {
        assert_eq!(
            label_in_key(key, "tenant"),
            Some("contoso"),
            "a sample that is not contoso's: {key}"
        );
    }
    assert!(!m.text.contains("fabrikam"), "{}", m.text);
    for foreign in [
        "process_",
        "build_info",
        "office365_activations_redirect_latency_seconds",
        "office365_activations_refresh_duration_seconds",
    ] {
        assert!(!m.text.contains(foreign), "{foreign} in\n{}", m.text);
    }
    let (valid, said) = promtool_metrics_check(&m.text);
    assert!(valid, "promtool check metrics: {said}\n{}", m.text);

    // Lazy per tenant: probing contoso fetched nothing of fabrikam's.
    assert_eq!(h.stats(0).report_requests, 1);
    assert_eq!(
        (h.stats(1).token_requests, h.stats(1).report_requests),
        (0, 0)
    );
    let fabrikam = probe_ok(&h, "fabrikam").await;
    assert_eq!(fabrikam.up("fabrikam"), Some(1.0));
    assert!(!fabrikam.text.contains("contoso"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_refreshes_under_the_ttl() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    probe_ok(&h, "contoso").await;
    h.fake.set_products(
        &tenant_id(0),
        date(),
        vec![product(ENTERPRISE, 3000, 2000, 5)],
    );
    // Expiry is jittered into the last 10% of the TTL, never later.
    advance(Duration::from_secs(269)).await;
    let m = probe_ok(&h, "contoso").await;
    assert_eq!(h.stats(0).report_requests, 1, "cached within the TTL");
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0));
    advance(Duration::from_secs(31)).await;
    let m = probe_ok(&h, "contoso").await;
    assert_eq!(
        h.stats(0).report_requests,
        2,
        "refreshed once the TTL passed"
    );
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(2000.0));
    assert_eq!(m.activated("contoso", PROJECT), None);
    assert_eq!(
        m.get(
            "office365_activations_refreshes_total",
            &[("tenant", "contoso"), ("report", "user_counts")]
        ),
        Some(2.0)
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_within_the_ttl_is_answered_from_the_cache_until_a_report_can_be_due() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    assert_eq!(h.exporter.cached_probe("contoso"), None, "never looked at");
    let first = probe_ok(&h, "contoso").await;
    assert_eq!(
        h.exporter.cached_probe("contoso"),
        None,
        "that probe waited for a refresh: the next one looks again"
    );
    let second = probe_ok(&h, "contoso").await;
    let cached = h
        .exporter
        .cached_probe("contoso")
        .expect("nothing due for 270 s");
    assert_eq!(String::from_utf8_lossy(&cached), second.text);
    assert_eq!(first.text, second.text);
    let served = probe_ok(&h, "contoso").await;
    assert_eq!(
        served.text, second.text,
        "the server's cached path serves the same"
    );
    assert_eq!(h.exporter.cached_probe("fabrikam"), None, "per tenant");
    assert_eq!(h.exporter.cached_probe("nobody"), None);
    // Expiry is jittered into the last 10% of the TTL: the cache answers only before that.
    advance(Duration::from_secs(269)).await;
    assert!(h.exporter.cached_probe("contoso").is_some());
    advance(Duration::from_secs(31)).await;
    assert_eq!(
        h.exporter.cached_probe("contoso"),
        None,
        "due: a probe must look"
    );
    probe_ok(&h, "contoso").await;
    assert_eq!(h.stats(0).report_requests, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn two_concurrent_probes_and_a_scrape_cause_one_report_request() {
    let h = Harness::start().await;
    h.fake
        .set_download_delay(&tenant_id(0), Duration::from_secs(1));
    let probes = [
        h.spawn_get("/probe?target=contoso"),
        h.spawn_get("/probe?target=contoso"),
    ];
    let scrape = h.spawn_scrape(None);
    until("the download started", || h.stats(0).download_requests == 1).await;
    settle().await;
    advance(Duration::from_secs(1)).await;
    for probe in probes {
        let (status, body) = probe.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let m = Metrics::parse(&body);
        assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0), "{body}");
        assert_eq!(m.up("contoso"), Some(1.0));
    }
    let m = Metrics::parse(&scrape.await.unwrap());
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0));
    let stats = h.stats(0);
    assert_eq!(
        (
            stats.token_requests,
            stats.report_requests,
            stats.download_requests
        ),
        (1, 1, 1),
        "one refresh for all three"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_waits_for_retry_after() {
    let h = Harness::with(Options {
        ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    h.fake.push_report_response(
        &tenant_id(0),
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.")
            .retry_after("120.5"),
    );
    let m = probe_ok(&h, "contoso").await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "report", "throttled"), 1.0);
    // Probes (and a scrape) every 15 s for two minutes: none reaches Graph before Retry-After
    // has passed, although backoff alone would have allowed it.
    for i in 0..8 {
        advance(Duration::from_secs(15)).await;
        let m = probe_ok(&h, "contoso").await;
        if i == 4 {
            h.scrape().await;
        }
        assert_eq!(m.up("contoso"), Some(0.0));
        assert_eq!(
            h.stats(0).report_requests,
            1,
            "nothing sent before Retry-After passed"
        );
    }
    advance(Duration::from_millis(500)).await;
    let m = probe_ok(&h, "contoso").await;
    assert_eq!(
        h.stats(0).report_requests,
        2,
        "sent once Retry-After passed"
    );
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_without_a_known_target_is_a_400_with_one_line() {
    let h = Harness::start().await;
    for (path, says) in [
        ("/probe", "Missing target"),
        ("/probe?target=", "Missing target"),
        ("/probe?module=x", "Missing target"),
        ("/probe?target=nowhere", "Unknown target \"nowhere\""),
        ("/probe?target=CONTOSO", "Unknown target \"CONTOSO\""),
        ("/probe?target=contoso%20", "Unknown target \"contoso \""),
    ] {
        let response = h.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8",
            "{path}"
        );
        let body = response.text().await.unwrap();
        assert!(body.starts_with(says), "{path}: {body:?}");
        assert_eq!(body.lines().count(), 1, "{path}: one line: {body:?}");
        assert!(body.ends_with('\n') && !body.trim_end().contains('\n'));
    }
    assert_eq!(
        (h.stats(0).token_requests, h.stats(0).report_requests),
        (0, 0),
        "a refused probe touches no tenant"
    );
    // A very long unknown name is cut in the answer, still on one line.
    let long = "x".repeat(5000);
    let response = h.probe(&long).await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.len() < 400, "{} bytes", body.len());
    assert_eq!(body.lines().count(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_name_that_needs_percent_encoding_is_found() {
    const NAME: &str = "A&B Corp/€";
    let h = Harness::with(Options {
        tenants: 2,
        configure: Some(Box::new(|_, configs: &mut Vec<TenantConfig>| {
            configs[0].name = NAME.to_owned();
        })),
        ..Options::default()
    })
    .await;
    // Percent-encoded by hand (%20 for the space), as reqwest encodes it (`+` for the space,
    // as Prometheus's url.Values does too), and by /sd's name.
    for path in [
        "/probe?target=A%26B%20Corp%2F%E2%82%AC",
        "/probe?target=A%26B+Corp%2F%E2%82%AC",
    ] {
        let response = h.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let m = Metrics::parse(&response.text().await.unwrap());
        assert_eq!(m.up(NAME), Some(1.0), "{path}\n{}", m.text);
        assert_eq!(m.assigned(NAME, ENTERPRISE), Some(2679.0));
        assert!(!m.text.contains("fabrikam"));
    }
    let m = probe_ok(&h, NAME).await;
    assert_eq!(m.activated(NAME, ENTERPRISE), Some(1710.0));
    assert_eq!(h.stats(0).report_requests, 1);
    // Not encoded, the & splits the query: an unknown "A" (a 400), never another tenant.
    let response = h.get("/probe?target=A&B%20Corp").await;
    assert_eq!(response.status(), 400);
    let sd: serde_json::Value =
        serde_json::from_str(&h.get("/sd").await.text().await.unwrap()).unwrap();
    assert_eq!(sd[0]["targets"][0], NAME);
    assert_eq!(sd[0]["labels"]["__meta_office365_tenant"], NAME);
    h.stop().await;
}

/// The tenant names of an /sd document, checking the shape of each group on the way.
fn sd_names(sd: &serde_json::Value, exporter: &str, shard: &str) -> Vec<String> {
    let groups = sd.as_array().expect("a JSON array");
    groups
        .iter()
        .map(|group| {
            let object = group.as_object().expect("a group is an object");
            assert_eq!(
                object.keys().collect::<BTreeSet<_>>(),
                BTreeSet::from([&"labels".to_owned(), &"targets".to_owned()]),
                "{group}"
            );
            let targets = group["targets"].as_array().expect("targets");
            assert_eq!(targets.len(), 1, "one target per group: {group}");
            let name = targets[0].as_str().expect("a string target").to_owned();
            let labels = group["labels"].as_object().expect("labels");
            assert_eq!(
                labels.keys().map(String::as_str).collect::<BTreeSet<_>>(),
                BTreeSet::from([
                    "__meta_office365_tenant",
                    "__meta_office365_cloud",
                    "__meta_office365_exporter",
                    "__meta_office365_shard",
                ]),
                "{group}"
            );
            assert_eq!(labels["__meta_office365_tenant"], name.as_str());
            assert_eq!(labels["__meta_office365_exporter"], exporter);
            assert_eq!(labels["__meta_office365_shard"], shard);
            name
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn sd_lists_one_group_per_tenant_with_its_meta_labels() {
    let h = Harness::with(Options {
        tenants: 4,
        configure: Some(Box::new(|_, configs: &mut Vec<TenantConfig>| {
            // /sd reads the configuration only: national cloud endpoints need no connection.
            for (config, endpoint) in configs[1..].iter_mut().zip([
                "https://graph.microsoft.us",
                "https://dod-graph.microsoft.us",
                "https://microsoftgraph.chinacloudapi.cn",
            ]) {
                config.graph_endpoint = endpoint.parse().unwrap();
            }
        })),
        ..Options::default()
    })
    .await;
    let response = h.get("/sd").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let sd: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        sd_names(&sd, "exporter.example:10036", "0"),
        ["contoso", "fabrikam", "northwind", "tailspin"]
    );
    let clouds: Vec<&str> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["labels"]["__meta_office365_cloud"].as_str().unwrap())
        .collect();
    assert_eq!(clouds, ["custom", "usgov", "usgov-dod", "china"]);
    assert_eq!(
        (h.stats(0).token_requests, h.stats(0).report_requests),
        (0, 0),
        "/sd fetches nothing"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sd_during_reloads_shows_the_old_or_the_new_list_never_a_mix() {
    let h = Harness::with(Options {
        tenants: 4,
        ..Options::default()
    })
    .await;
    let all: Vec<TenantConfig> = h
        .exporter
        .tenants()
        .iter()
        .map(|t| t.config().clone())
        .collect();
    let old = vec![all[0].clone(), all[1].clone()];
    let new = vec![all[0].clone(), all[2].clone(), all[3].clone()];
    let names = |configs: &[TenantConfig]| -> Vec<String> {
        configs.iter().map(|c| c.name.clone()).collect()
    };
    let (old_names, new_names) = (names(&old), names(&new));
    h.exporter.reload(&old).unwrap();

    // Reloads back and forth on another thread, in the test's runtime (its paused clock), while
    // this task fetches /sd.
    let stop = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicUsize::new(0));
    let reloader = {
        let (exporter, stop, reloads) = (
            Arc::clone(&h.exporter),
            Arc::clone(&stop),
            Arc::clone(&reloads),
        );
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let _runtime = runtime.enter();
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                let summary = exporter
                    .reload(if flip { &old } else { &new })
                    .expect("the reload applies");
                assert_eq!(summary.kept, 1, "contoso stays");
                flip = !flip;
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut seen: BTreeMap<bool, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut fetches = 0;
    while fetches < 300 || seen.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "saw only {seen:?} in {fetches} fetches"
        );
        let response = h.get("/sd").await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let sd: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("/sd is not JSON ({e}): {text}"));
        let listed = sd_names(&sd, "exporter.example:10036", "0");
        assert!(
            listed == old_names || listed == new_names,
            "a mix of the lists: {listed:?}"
        );
        *seen.entry(listed == new_names).or_default() += 1;
        fetches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    reloader.join().expect("the reloads never failed");
    assert!(reloads.load(Ordering::Relaxed) > 2);
    h.stop().await;
}

/// The sample lines of a probe of `target`, split into report gauges and status series.
async fn probe_series(h: &Harness, target: &str) -> (Vec<String>, Vec<String>) {
    let response = h.probe(target).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let (status, gauges): (Vec<&str>, Vec<&str>) =
        sample_lines(&text).into_iter().partition(|l| is_status(l));
    let owned = |lines: Vec<&str>| lines.into_iter().map(str::to_owned).collect();
    (owned(gauges), owned(status))
}

fn five_products() -> Vec<office365_activations_exporter::fake_graph::FakeProduct> {
    [
        "MICROSOFT 365 APPS FOR ENTERPRISE",
        "MICROSOFT 365 APPS FOR BUSINESS",
        "PROJECT ONLINE DESKTOP CLIENT",
        "VISIO ONLINE PLAN 2",
        "OFFICE 365 E3",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| product(name, 100 + i as u64, 50 + i as u64, i as u64))
    .collect()
}

#[tokio::test(start_paused = true)]
async fn user_counts_alone_with_five_products_is_at_most_26_series_per_tenant() {
    let h = Harness::with(Options {
        configure: Some(Box::new(|fake, _| {
            fake.set_products(&tenant_id(0), date(), five_products());
        })),
        ..Options::default()
    })
    .await;
    // Before the first refresh: up, refreshes_total and the throttled errors only.
    let body = h.exporter.tenants()[0].probe_body();
    let before = sample_lines(std::str::from_utf8(&body).unwrap()).len();
    assert_eq!(before, 5, "{body:?}");
    let (gauges, status) = probe_series(&h, "contoso").await;
    assert_eq!(gauges.len(), 15, "3 gauges x 5 products: {gauges:#?}");
    assert!(gauges
        .iter()
        .all(|l| USER_COUNTS_GAUGES.contains(&name_of(l))));
    assert!(
        status.len() <= 11,
        "{} status series: {status:#?}",
        status.len()
    );
    assert!(
        gauges.len() + status.len() <= 26,
        "{} series",
        gauges.len() + status.len()
    );
    // The ones a refresh with a client secret must have (no credential expiry: 10 of 11).
    assert_eq!(status.len(), 10, "{status:#?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_further_report_adds_its_gauges_and_at_most_six_status_series() {
    let base = probe_series_with(&[&user_counts::KIND]).await;
    let with_counts = probe_series_with(&[&user_counts::KIND, &activation_counts::KIND]).await;
    let with_detail = probe_series_with(&[
        &user_counts::KIND,
        &activation_counts::KIND,
        &user_detail::KIND,
    ])
    .await;
    let families = |kind: ReportKind| -> BTreeSet<&'static str> {
        kind.families.iter().map(|f| f.name).collect()
    };
    for (before, after, kind) in [
        (&base, &with_counts, &activation_counts::KIND as ReportKind),
        (&with_counts, &with_detail, &user_detail::KIND),
    ] {
        let (gauges_before, status_before) = before;
        let (gauges_after, status_after) = after;
        // Every earlier gauge stays; the new ones are all of the added report's families.
        assert!(gauges_before.iter().all(|g| gauges_after.contains(g)));
        let added: Vec<&String> = gauges_after
            .iter()
            .filter(|g| !gauges_before.contains(g))
            .collect();
        assert!(!added.is_empty(), "{} added no gauge", kind.name);
        let own = families(kind);
        assert!(
            added.iter().all(|g| own.contains(name_of(g))),
            "{}: {added:#?}",
            kind.name
        );
        let more = status_after.len() - status_before.len();
        assert!(
            more <= 6,
            "{} added {more} status series: {status_after:#?}",
            kind.name
        );
        let labelled = format!("report=\"{}\"", kind.name);
        assert_eq!(
            status_after
                .iter()
                .filter(|l| l.contains(&labelled))
                .count(),
            more,
            "the added status series are the report's own"
        );
    }
    // 5 products x 5 platforms.
    assert_eq!(with_counts.0.len() - base.0.len(), 25);
}

/// The gauges and status series of a probe of contoso (5 products) after its refresh, with
/// `reports` enabled.
async fn probe_series_with(reports: &[ReportKind]) -> (Vec<String>, Vec<String>) {
    let h = Harness::with(Options {
        reports: reports.to_vec(),
        configure: Some(Box::new(|fake, _| {
            fake.set_products(&tenant_id(0), date(), five_products());
        })),
        ..Options::default()
    })
    .await;
    let series = probe_series(&h, "contoso").await;
    for kind in reports {
        assert!(
            series.1.contains(&format!(
                "office365_activations_up{{tenant=\"contoso\",report=\"{}\"}} 1",
                kind.name
            )),
            "{} is up: {:#?}",
            kind.name,
            series.1
        );
    }
    let stats = h.stats(0);
    for report in FakeReport::ALL
        .iter()
        .filter(|r| reports.iter().any(|k| k.api == r.api_name()))
    {
        assert_eq!(stats.report(*report).report_requests, 1, "{report:?}");
    }
    h.stop().await;
    series
}
