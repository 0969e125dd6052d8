//! The report family (issue 11) end to end, in-process on paused time: the activation counts and
//! user detail reports in CSV and paged beta JSON with the exact numbers the fake serves; each
//! report's own TTL, budget, Retry-After and size cap; one failing report never touching another;
//! and the operator telling from `up`, `fetch_errors_total` and the landing page which report of
//! which tenant failed and why. The user detail's names never appear in anything the exporter
//! shows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use clap::Parser;
use common::*;
use office365_activations_exporter::config::{Cli, Config, TenantConfig};
use office365_activations_exporter::fake_graph::{
    Canned, FakeGraph, FakePlatformCounts, FakeReport, FakeUser, FakeUserProduct,
};
use office365_activations_exporter::graph::ReportFormat;
use office365_activations_exporter::reports::{activation_counts, user_detail};
use tokio::time::advance;

const UC: ReportKind = &user_counts::KIND;
const AC: ReportKind = &activation_counts::KIND;
const UD: ReportKind = &user_detail::KIND;

const ENTERPRISE: &str = "MICROSOFT 365 APPS FOR ENTERPRISE";
const PROJECT: &str = "PROJECT ONLINE DESKTOP CLIENT";
const TTL_1M: Duration = Duration::from_secs(60);

const DEVICES: &str = "office365_activations_activated_devices";
const DETAIL_USERS: &str = "office365_activations_detail_users";
const BY_COMPUTERS: &str = "office365_activations_users_by_activated_computers";
const AT_LIMIT: &str = "office365_activations_users_at_install_limit";
const SHARED: &str = "office365_activations_users_shared_computer_activated";
const INACTIVE: &str = "office365_activations_users_inactive";
const NEVER: &str = "office365_activations_users_never_activated";
const DETAIL_FAMILIES: [&str; 6] = [
    DETAIL_USERS,
    BY_COMPUTERS,
    AT_LIMIT,
    SHARED,
    INACTIVE,
    NEVER,
];

// ---------------------------------------------------------------------------------------------
// What the fake serves, and what the exporter must make of it.

/// Activation counts with a distinct number in every cell, so a swapped column shows.
fn platform_rows() -> Vec<FakePlatformCounts> {
    vec![
        FakePlatformCounts::new(ENTERPRISE, 1215, 160, 131, 178, 20),
        FakePlatformCounts::new(PROJECT, 81, 7, 3, 2, 1),
    ]
}

/// `(product, platform) -> activated devices` of [`platform_rows`].
fn expected_devices() -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for row in platform_rows() {
        for (platform, n) in [
            ("windows", row.windows),
            ("mac", row.mac),
            ("android", row.android),
            ("ios", row.ios),
            ("windows_10_mobile", row.windows10_mobile),
        ] {
            out.insert((row.product_type.clone(), platform.to_owned()), n as f64);
        }
    }
    out
}

fn days_ago(days: u64) -> NaiveDate {
    date().checked_sub_days(Days::new(days)).unwrap()
}

/// Nine users, ten user/product rows, chosen so every bucket and threshold has a case on each
/// side of it. Names are distinctive so any leak is found by a plain substring search.
fn users() -> Vec<FakeUser> {
    let e = || FakeUserProduct::new(ENTERPRISE);
    let p = || FakeUserProduct::new(PROJECT);
    vec![
        // 1 PC; phones and tablets do not count as computers; active yesterday.
        FakeUser::new("alice.zephyrine@contoso.test", "Zephyrine, Alice")
            .with_product(e().activated_on(days_ago(1)).devices(1, 0, 1, 3, 2)),
        // 2 PCs + 1 Mac = 3; exactly 30 days ago is not "more than 30"; shared computer.
        FakeUser::new("bob.quaxley@contoso.test", "Bob \"Builder\" Quaxley").with_product(
            e().activated_on(days_ago(30))
                .devices(2, 1, 0, 0, 0)
                .shared_computer(true),
        ),
        // Mobile only: 0 computers; 31 days ago.
        FakeUser::new("carol.vexmoor@contoso.test", "Carol Vexmoor")
            .with_product(e().activated_on(days_ago(31)).devices(0, 0, 0, 2, 1)),
        // 5 PCs: at the limit; 91 days ago.
        FakeUser::new("dave.ombrix@contoso.test", "Ombrix, Dave")
            .with_product(e().activated_on(days_ago(91)).devices(5, 0, 0, 0, 0)),
        // 4 PCs + 3 Macs = 7: 5+, at the limit; 181 days ago; shared.
        FakeUser::new("erin.glastvik@contoso.test", "Erin Glastvik").with_product(
            e().activated_on(days_ago(181))
                .devices(4, 3, 0, 1, 0)
                .shared_computer(true),
        ),
        // Never activated.
        FakeUser::new("frank.thurible@contoso.test", "Frank Thurible").with_product(e()),
        // Two products: 2 PCs + 2 Macs = 4, 180 days ago (not "more than 180"); and Project on
        // one PC, 200 days ago, shared.
        FakeUser::new("grace.pellucid@contoso.test", "Grace Pellucid")
            .with_product(e().activated_on(days_ago(180)).devices(2, 2, 0, 0, 0))
            .with_product(
                p().activated_on(days_ago(200))
                    .devices(1, 0, 0, 0, 0)
                    .shared_computer(true),
            ),
        // Project on 2 Macs, today.
        FakeUser::new("heidi.marrowgate@contoso.test", "Heidi Marrowgate")
            .with_product(p().activated_on(date()).devices(0, 2, 0, 0, 0)),
        // Project, never activated.
        FakeUser::new("ivan.quillon@contoso.test", "Ivan Quillon").with_product(p()),
    ]
}

/// Every name of [`users`], and the distinctive part of each, lower-cased.
fn secret_words() -> Vec<String> {
    let mut out = Vec::new();
    for u in users() {
        out.push(u.user_principal_name.to_lowercase());
        out.push(u.display_name.to_lowercase());
        let local = u.user_principal_name.split('@').next().unwrap().to_owned();
        out.extend(local.split('.').map(str::to_owned));
    }
    out
}

/// Fails if any user name (or a distinctive part of one) of [`users`] is in `text`.
fn assert_no_names(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for word in secret_words() {
        assert!(
            !lower.contains(&word),
            "{what} shows {word:?} from the user detail:\n{text}"
        );
    }
}

/// `(family, labels without tenant) -> value` the user detail of [`users`] must give.
fn expected_detail() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut put = |family: &str, product: &str, extra: Option<(&str, &str)>, v: f64| {
        let mut labels = vec![("product_type", product)];
        labels.extend(extra);
        out.insert(series_key(family, &labels), v);
    };
    // Enterprise: alice..grace (7 rows).
    put(DETAIL_USERS, ENTERPRISE, None, 7.0);
    for (bucket, v) in [
        ("0", 2.0),
        ("1", 1.0),
        ("2", 0.0),
        ("3", 1.0),
        ("4", 1.0),
        ("5+", 2.0),
    ] {
        put(BY_COMPUTERS, ENTERPRISE, Some(("computers", bucket)), v);
    }
    put(AT_LIMIT, ENTERPRISE, None, 2.0);
    put(SHARED, ENTERPRISE, None, 2.0);
    for (days, v) in [("30", 4.0), ("90", 3.0), ("180", 1.0)] {
        put(INACTIVE, ENTERPRISE, Some(("days", days)), v);
    }
    put(NEVER, ENTERPRISE, None, 1.0);
    // Project: grace, heidi, ivan.
    put(DETAIL_USERS, PROJECT, None, 3.0);
    for (bucket, v) in [
        ("0", 1.0),
        ("1", 1.0),
        ("2", 1.0),
        ("3", 0.0),
        ("4", 0.0),
        ("5+", 0.0),
    ] {
        put(BY_COMPUTERS, PROJECT, Some(("computers", bucket)), v);
    }
    put(AT_LIMIT, PROJECT, None, 0.0);
    put(SHARED, PROJECT, None, 1.0);
    for (days, v) in [("30", 1.0), ("90", 1.0), ("180", 1.0)] {
        put(INACTIVE, PROJECT, Some(("days", days)), v);
    }
    put(NEVER, PROJECT, None, 1.0);
    out
}

/// A sample's identity without the tenant label: `family{k="v",...}` with sorted labels.
fn series_key(family: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{family}{{{}}}", inner.join(","))
}

/// Every sample of `families` for `tenant`, keyed as [`series_key`] (tenant label dropped).
fn samples_of(m: &Metrics, tenant: &str, families: &[&str]) -> BTreeMap<String, f64> {
    let tenant_label = format!("tenant={tenant:?}");
    m.samples
        .iter()
        .filter(|(k, _)| {
            families.iter().any(|f| k.starts_with(&format!("{f}{{"))) && k.contains(&tenant_label)
        })
        .map(|(k, v)| {
            let (name, rest) = k.split_once('{').unwrap();
            let inner: Vec<&str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.starts_with("tenant="))
                .collect();
            (format!("{name}{{{}}}", inner.join(",")), *v)
        })
        .collect()
}

/// The user counts gauges of a tenant (the three families and the report date).
fn user_count_gauges(m: &Metrics, tenant: &str) -> BTreeMap<String, f64> {
    let mut out = samples_of(
        m,
        tenant,
        &[
            "office365_activations_assigned_users",
            "office365_activations_activated_users",
            "office365_activations_shared_computer_activated_users",
        ],
    );
    out.insert(
        "date".into(),
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &[("tenant", tenant), ("report", "user_counts")],
        )
        .unwrap_or(-1.0),
    );
    out
}

fn midnight(d: NaiveDate) -> f64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() as f64
}

/// Sum of every `fetch_errors_total` sample of one report of a tenant.
fn error_total(m: &Metrics, tenant: &str, report: &str) -> f64 {
    let t = format!("tenant={tenant:?}");
    let r = format!("report={report:?}");
    m.series("office365_activations_fetch_errors_total")
        .iter()
        .filter(|(k, _)| k.contains(&t) && k.contains(&r))
        .map(|(_, v)| **v)
        .sum()
}

/// The cells of the landing page's row for `tenant` and `report` (`None` if there is none).
fn landing_row(html: &str, tenant: &str, report: &str) -> Option<Vec<String>> {
    let rows: Vec<Vec<String>> = html
        .split("<tr>")
        .skip(1)
        .map(|row| {
            let row = row.split("</tr>").next().unwrap_or("");
            row.split("<td>")
                .skip(1)
                .map(|cell| cell.split("</td>").next().unwrap_or("").to_owned())
                .collect::<Vec<String>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect();
    let matching: Vec<&Vec<String>> = rows
        .iter()
        .filter(|cells| cells.iter().any(|c| c == tenant) && cells.iter().any(|c| c == report))
        .collect();
    assert!(
        matching.len() <= 1,
        "one row per tenant and report: {matching:?}"
    );
    matching.first().map(|c| (*c).clone())
}

async fn landing(h: &Harness) -> String {
    let response = h.get("/").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Beta JSON for every tenant.
fn to_json(configs: &mut [TenantConfig]) {
    for c in configs {
        c.api_version = "beta".into();
        c.report_format = ReportFormat::Json;
    }
}

fn json_configure() -> Option<Configure> {
    Some(Box::new(
        |_: &FakeGraph, configs: &mut Vec<TenantConfig>| to_json(configs),
    ))
}

fn stats(
    h: &Harness,
    report: FakeReport,
) -> office365_activations_exporter::fake_graph::FakeReportStats {
    h.stats(0).report(report).clone()
}

// ---------------------------------------------------------------------------------------------
// 1. activation_counts end to end.

async fn activation_counts_end_to_end(json: bool) {
    let h = Harness::with(Options {
        reports: vec![UC, AC],
        configure: if json { json_configure() } else { None },
        ..Options::default()
    })
    .await;
    h.fake.set_activation_counts(&tenant_id(0), platform_rows());
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", "activation_counts"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        None,
        "user_detail is not enabled"
    );

    let mut seen = BTreeMap::new();
    let mut platforms = BTreeSet::new();
    for (key, value) in m.series(DEVICES) {
        let labels = key.split_once('{').unwrap().1.trim_end_matches('}');
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("{key} has no {name} label"))
        };
        assert_eq!(label("tenant"), "contoso", "{key}");
        assert_eq!(
            labels.split(',').count(),
            3,
            "exactly tenant, product_type, platform: {key}"
        );
        platforms.insert(label("platform"));
        seen.insert((label("product_type"), label("platform")), *value);
    }
    assert_eq!(seen, expected_devices(), "json={json}\n{}", m.text);
    assert_eq!(
        platforms,
        ["android", "ios", "mac", "windows", "windows_10_mobile"]
            .map(str::to_owned)
            .into(),
        "the platform label values, exactly"
    );
    // The report's own date series.
    assert_eq!(
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &[("tenant", "contoso"), ("report", "activation_counts")]
        ),
        Some(midnight(date()))
    );
    // user_counts is untouched by the second report.
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0));
    assert_eq!(m.assigned("contoso", PROJECT), Some(120.0));

    let ac = stats(&h, FakeReport::ActivationCounts);
    assert_eq!(ac.report_requests, 1);
    assert_eq!(stats(&h, FakeReport::UserCounts).report_requests, 1);
    assert_eq!(stats(&h, FakeReport::UserDetail).report_requests, 0);
    if json {
        assert_eq!(ac.download_requests, 0, "JSON comes without a redirect");
        assert!(
            ac.report_paths[0].starts_with("/beta/reports/getOffice365ActivationCounts")
                && ac.report_paths[0].ends_with("$format=application/json"),
            "{:?}",
            ac.report_paths
        );
    } else {
        assert_eq!(
            ac.download_requests, 1,
            "CSV through the 302 and the download host"
        );
        assert!(
            ac.report_paths[0].starts_with("/v1.0/reports/getOffice365ActivationCounts"),
            "{:?}",
            ac.report_paths
        );
    }
    assert_eq!(
        h.stats(0).token_requests,
        1,
        "both reports share the tenant's token"
    );
    let html = landing(&h).await;
    let row = landing_row(&html, "contoso", "activation_counts").expect("a row for the report");
    assert!(row.iter().any(|c| c == "up"), "{row:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn activation_counts_csv_exports_every_platform_exactly() {
    activation_counts_end_to_end(false).await;
}

#[tokio::test(start_paused = true)]
async fn activation_counts_json_exports_every_platform_exactly() {
    activation_counts_end_to_end(true).await;
}

// ---------------------------------------------------------------------------------------------
// 2. user_detail end to end.

async fn user_detail_end_to_end(json: bool) {
    let mut options = Options {
        reports: vec![UC, UD],
        configure: if json { json_configure() } else { None },
        ..Options::default()
    };
    options.fake.json_page_size = 2;
    let h = Harness::with(options).await;
    h.fake.set_users(&tenant_id(0), users());
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(m.report_up("contoso", "activation_counts"), None);
    assert_eq!(
        samples_of(&m, "contoso", &DETAIL_FAMILIES),
        expected_detail(),
        "json={json}\n{}",
        m.text
    );
    assert_eq!(
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &[("tenant", "contoso"), ("report", "user_detail")]
        ),
        Some(midnight(date()))
    );
    let ud = stats(&h, FakeReport::UserDetail);
    if json {
        // 9 users, 2 per page: 5 pages, each one report request.
        assert_eq!(ud.report_requests, 5, "{:?}", ud.report_paths);
        assert_eq!(ud.download_requests, 0);
        assert!(ud.report_paths[0].ends_with("$format=application/json"));
        assert!(
            ud.report_paths[1..]
                .iter()
                .all(|p| p.contains("$skiptoken=")),
            "{:?}",
            ud.report_paths
        );
    } else {
        assert_eq!((ud.report_requests, ud.download_requests), (1, 1));
    }
    assert_no_names("/metrics", &m.text);
    let html = landing(&h).await;
    assert_no_names("the landing page", &html);
    let row = landing_row(&html, "contoso", "user_detail").expect("a row for the report");
    assert!(row.iter().any(|c| c == "up"), "{row:?}");
    assert!(
        row.iter().any(|c| c.starts_with("10 ")),
        "10 user/product rows read: {row:?}"
    );
    for status in h.exporter.tenants()[0].status() {
        assert_no_names("a status", &format!("{:?}", status.last_error));
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn user_detail_csv_gives_exact_aggregates_and_no_names() {
    user_detail_end_to_end(false).await;
}

#[tokio::test(start_paused = true)]
async fn user_detail_paged_json_gives_exact_aggregates_one_request_per_page() {
    user_detail_end_to_end(true).await;
}

/// A fixed tenant with no explicit users serves the documented derived user detail: for the
/// harness products (2679 assigned, 1710 activated, 1024 shared; 120/88/0) the fake lists 300 and
/// 120 users. Computed here from the fake's rule, independently of the exporter.
#[tokio::test(start_paused = true)]
async fn user_detail_of_derived_users_matches_a_recount() {
    let h = Harness::with(Options {
        reports: vec![UD],
        ..Options::default()
    })
    .await;
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    let users =
        office365_activations_exporter::fake_graph::derived_users(date(), &default_products());
    let mut expected = BTreeMap::new();
    for product in [ENTERPRISE, PROJECT] {
        let rows: Vec<&FakeUserProduct> = users
            .iter()
            .flat_map(|u| &u.products)
            .filter(|p| p.product_type == product)
            .collect();
        let mut put = |family: &str, extra: Option<(&str, &str)>, v: usize| {
            let mut labels = vec![("product_type", product)];
            labels.extend(extra);
            expected.insert(series_key(family, &labels), v as f64);
        };
        put(DETAIL_USERS, None, rows.len());
        for (i, bucket) in ["0", "1", "2", "3", "4", "5+"].into_iter().enumerate() {
            let n = rows
                .iter()
                .filter(|r| (r.windows + r.mac).min(5) as usize == i)
                .count();
            put(BY_COMPUTERS, Some(("computers", bucket)), n);
        }
        put(
            AT_LIMIT,
            None,
            rows.iter().filter(|r| r.windows + r.mac >= 5).count(),
        );
        put(
            SHARED,
            None,
            rows.iter()
                .filter(|r| r.activated_on_shared_computer)
                .count(),
        );
        for days in [30, 90, 180] {
            let n = rows
                .iter()
                .filter(|r| {
                    r.last_activated_date
                        .is_some_and(|d| (date() - d).num_days() > days)
                })
                .count();
            put(INACTIVE, Some(("days", &days.to_string())), n);
        }
        put(
            NEVER,
            None,
            rows.iter()
                .filter(|r| r.last_activated_date.is_none())
                .count(),
        );
    }
    assert_eq!(
        samples_of(&m, "contoso", &DETAIL_FAMILIES),
        expected,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(
            DETAIL_USERS,
            &[("tenant", "contoso"), ("product_type", ENTERPRISE)]
        ),
        Some(300.0)
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Per-report TTL, from the flags and from the config file.

/// A single-tenant configuration resolved from flags as the binary does, pointed at the fake.
fn config_from_flags(fake: &FakeGraph, flags: &[&str]) -> Config {
    let (tenant, client) = (tenant_id(0), client_id(0));
    let (graph, authority) = (fake.graph_endpoint(), fake.authority_host());
    let mut args = vec![
        "office365-activations-exporter",
        "--auth.tenant-id",
        &tenant,
        "--auth.client-id",
        &client,
        "--tenant.name",
        "contoso",
        "--graph.endpoint",
        &graph,
        "--auth.authority-host",
        &authority,
    ];
    args.extend_from_slice(flags);
    let cli = Cli::try_parse_from(args).unwrap();
    Config::resolve(&cli.flags, &|key| {
        (key == "AZURE_CLIENT_SECRET").then(|| SECRET.to_owned())
    })
    .unwrap()
}

fn report_ttls(config: &TenantConfig) -> Vec<(&'static str, Duration)> {
    config
        .reports
        .iter()
        .map(|r| (r.kind.name, r.cache_ttl))
        .collect()
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn report_ttl_flag_gives_each_report_its_own_ttl() {
    let h = Harness::with(Options {
        configure: Some(Box::new(
            |fake: &FakeGraph, configs: &mut Vec<TenantConfig>| {
                let config = config_from_flags(
                    fake,
                    &[
                        "--reports",
                        "user_counts,user_detail",
                        "--cache.ttl",
                        "1m",
                        "--report.ttl",
                        "user_detail=6h",
                    ],
                );
                configs[0] = config.tenants[0].clone();
            },
        )),
        ..Options::default()
    })
    .await;
    let config = h.exporter.tenants()[0].config().clone();
    assert_eq!(
        report_ttls(&config),
        [("user_counts", TTL_1M), ("user_detail", 6 * HOUR)]
    );
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    let requests = |h: &Harness| {
        (
            stats(h, FakeReport::UserCounts).report_requests,
            stats(h, FakeReport::UserDetail).report_requests,
        )
    };
    assert_eq!(requests(&h), (1, 1));
    // Past user_counts' TTL, far from user_detail's.
    advance(TTL_1M).await;
    h.scrape().await;
    settle().await;
    assert_eq!(requests(&h), (2, 1), "only user_counts is requested again");
    advance(TTL_1M).await;
    h.scrape().await;
    settle().await;
    assert_eq!(requests(&h), (3, 1));
    // Just before the earliest user_detail could expire (6 h minus 10% jitter).
    advance(Duration::from_secs(5 * 3600)).await;
    h.scrape().await;
    settle().await;
    assert_eq!(requests(&h).1, 1, "user_detail still cached after 5 h");
    // Past 6 h.
    advance(HOUR).await;
    let m = h.scrape().await;
    assert_eq!(requests(&h).1, 2, "user_detail refreshed after its own 6 h");
    assert_eq!(m.report_up("contoso", "user_detail"), Some(1.0));
    h.stop().await;
}

#[tokio::test]
async fn report_ttl_and_reports_in_the_config_file_resolve_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        format!(
            "cache_ttl: 10m\n\
             reports: [user_counts, user_detail]\n\
             report_ttl: {{user_detail: 6h}}\n\
             tenants:\n\
             - name: a\n  tenant_id: {t0}\n  client_id: {c0}\n  client_secret_file: {s}\n  \
               report_ttl: {{user_counts: 2m}}\n\
             - name: b\n  tenant_id: {t1}\n  client_id: {c1}\n  client_secret_file: {s}\n  \
               cache_ttl: 5m\n  reports: [activation_counts, user_detail]\n  \
               report_ttl: {{user_detail: 1h}}\n\
             - name: c\n  tenant_id: {t2}\n  client_id: {c2}\n  client_secret_file: {s}\n",
            t0 = tenant_id(0),
            t1 = tenant_id(1),
            t2 = tenant_id(2),
            c0 = client_id(0),
            c1 = client_id(1),
            c2 = client_id(2),
            s = secret.display()
        ),
    )
    .unwrap();
    let cli = Cli::try_parse_from([
        "office365-activations-exporter",
        "--config.file",
        file.to_str().unwrap(),
    ])
    .unwrap();
    let config = Config::resolve(&cli.flags, &|_| None).unwrap();
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let by_name = |name: &str| report_ttls(config.tenants.iter().find(|t| t.name == name).unwrap());
    assert_eq!(
        by_name("a"),
        [("user_counts", minutes(2)), ("user_detail", 6 * HOUR)],
        "tenant TTL for user_counts, top-level for user_detail"
    );
    assert_eq!(
        by_name("b"),
        [("activation_counts", minutes(5)), ("user_detail", HOUR)],
        "the tenant's own list; its cache_ttl is the default TTL"
    );
    assert_eq!(
        by_name("c"),
        [("user_counts", minutes(10)), ("user_detail", 6 * HOUR)],
        "the top-level list and TTLs"
    );
    // The size caps follow the kind: user_detail gets the large cap.
    let a = config.tenants.iter().find(|t| t.name == "a").unwrap();
    assert_eq!(a.reports[0].max_size, 8 << 20);
    assert_eq!(a.reports[1].max_size, 1 << 30);
}

#[test]
fn flags_default_to_user_counts_and_activation_counts_with_the_tenant_ttl() {
    let cli = Cli::try_parse_from([
        "office365-activations-exporter",
        "--auth.tenant-id",
        "t",
        "--auth.client-id",
        "c",
        "--cache.ttl",
        "20m",
        "--graph.max-user-detail-size",
        "3MiB",
        "--graph.max-report-size",
        "1MiB",
    ])
    .unwrap();
    let config = Config::resolve(&cli.flags, &|key| {
        (key == "AZURE_CLIENT_SECRET").then(|| "s".to_owned())
    })
    .unwrap();
    let minutes = Duration::from_secs(20 * 60);
    assert_eq!(
        report_ttls(&config.tenants[0]),
        [("user_counts", minutes), ("activation_counts", minutes)]
    );
    assert!(config.tenants[0]
        .reports
        .iter()
        .all(|r| r.max_size == 1 << 20));
    let cli = Cli::try_parse_from([
        "office365-activations-exporter",
        "--auth.tenant-id",
        "t",
        "--auth.client-id",
        "c",
        "--reports",
        "user_detail",
        "--graph.max-user-detail-size",
        "3MiB",
        "--report.ttl",
        "user_detail=2h",
        "--report.ttl",
        "user_counts=5m",
    ])
    .unwrap();
    let config = Config::resolve(&cli.flags, &|key| {
        (key == "AZURE_CLIENT_SECRET").then(|| "s".to_owned())
    })
    .unwrap();
    assert_eq!(report_ttls(&config.tenants[0]), [("user_detail", 2 * HOUR)]);
    assert_eq!(config.tenants[0].reports[0].max_size, 3 << 20);
}

// ---------------------------------------------------------------------------------------------
// 6. Isolation: a failing report keeps the others and its own last good data.

/// A fault injected into one report after a good first load.
enum Fault {
    /// The next report request of the report is answered with this.
    Report(Canned),
    /// Downloads of the report serve these bytes.
    Body(Vec<u8>),
    /// The next report requests of the report (JSON pages) are answered with these, in order.
    Pages(Vec<Canned>),
    /// The next download of the report is answered with this.
    Download(Canned),
}

/// What the operator should see.
struct Expect {
    stage: &'static str,
    /// Acceptable stages, when more than one is a defensible reading of the issue.
    other_stage: Option<&'static str>,
    reason: &'static str,
    /// A word the landing page's reason (and `check`) must contain.
    hint: &'static str,
}

fn expect(stage: &'static str, reason: &'static str, hint: &'static str) -> Expect {
    Expect {
        stage,
        other_stage: None,
        reason,
        hint,
    }
}

async fn assert_report_fails_alone(
    name: &str,
    report: FakeReport,
    json: bool,
    fault: Fault,
    e: Expect,
) {
    let (kind, label) = match report {
        FakeReport::ActivationCounts => (AC, "activation_counts"),
        FakeReport::UserDetail => (UD, "user_detail"),
        FakeReport::UserCounts => unreachable!(),
    };
    let mut options = Options {
        ttl: TTL_1M,
        reports: vec![UC, kind],
        configure: if json { json_configure() } else { None },
        ..Options::default()
    };
    options.fake.json_page_size = 4;
    let h = Harness::with(options).await;
    let t = tenant_id(0);
    h.fake.set_activation_counts(&t, platform_rows());
    h.fake.set_users(&t, users());
    let families: &[&str] = match report {
        FakeReport::ActivationCounts => &[DEVICES],
        _ => &DETAIL_FAMILIES,
    };
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", label),
        Some(1.0),
        "{name}: first load"
    );
    let uc_before = user_count_gauges(&m, "contoso");
    assert_eq!(uc_before.len(), 7, "{name}: {uc_before:?}");
    let before = samples_of(&m, "contoso", families);
    assert!(!before.is_empty(), "{name}");
    let date_key = [("tenant", "contoso"), ("report", label)];
    let date_before = m.get(
        "office365_activations_report_refresh_timestamp_seconds",
        &date_key,
    );
    assert_eq!(date_before, Some(midnight(date())), "{name}");

    match fault {
        Fault::Report(c) => h.fake.push_report_response_for(report, &t, c),
        Fault::Body(b) => h.fake.set_report_body_for(report, &t, Some(b.into())),
        Fault::Download(c) => h.fake.push_download_response_for(report, &t, c),
        Fault::Pages(pages) => {
            for page in pages {
                h.fake.push_report_response_for(report, &t, page);
            }
        }
    }
    advance(TTL_1M).await;
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", label),
        Some(0.0),
        "{name}: up is 0\n{}",
        m.text
    );
    assert_eq!(
        m.report_up("contoso", "user_counts"),
        Some(1.0),
        "{name}: the other report is up"
    );
    assert_eq!(
        stats(&h, FakeReport::UserCounts).report_requests,
        2,
        "{name}: user_counts refreshed on its TTL"
    );
    assert_eq!(
        user_count_gauges(&m, "contoso"),
        uc_before,
        "{name}: user_counts' gauges"
    );
    assert_eq!(
        samples_of(&m, "contoso", families),
        before,
        "{name}: last good data kept"
    );
    assert_eq!(
        m.get(
            "office365_activations_report_refresh_timestamp_seconds",
            &date_key
        ),
        date_before,
        "{name}: last good date kept"
    );
    let stage = [Some(e.stage), e.other_stage]
        .into_iter()
        .flatten()
        .find(|s| m.report_error_series("contoso", label, s, e.reason) == Some(1.0));
    assert!(
        stage.is_some(),
        "{name}: counted as {}/{} (or {:?})\n{}",
        e.stage,
        e.reason,
        e.other_stage,
        m.text
    );
    assert_eq!(
        error_total(&m, "contoso", label),
        1.0,
        "{name}: exactly one error\n{}",
        m.text
    );
    assert_eq!(
        error_total(&m, "contoso", "user_counts"),
        0.0,
        "{name}: none for user_counts"
    );
    assert!(
        office365_activations_exporter::error::REASONS.contains(&e.reason),
        "{name}: a bounded reason"
    );
    assert_eq!(
        m.get(
            "office365_activations_refreshes_total",
            &[("tenant", "contoso"), ("report", label)]
        ),
        Some(2.0),
        "{name}"
    );
    let html = landing(&h).await;
    let row = landing_row(&html, "contoso", label).expect("a row for the failing report");
    let state = row
        .iter()
        .find(|c| c.starts_with("down"))
        .unwrap_or_else(|| {
            panic!("{name}: the row says down: {row:?}");
        });
    assert!(
        state.to_lowercase().contains(&e.hint.to_lowercase()),
        "{name}: the row says why ({:?}): {row:?}",
        e.hint
    );
    let uc_row = landing_row(&html, "contoso", "user_counts").unwrap();
    assert!(uc_row.iter().any(|c| c == "up"), "{name}: {uc_row:?}");
    assert_no_names(name, &html);
    assert_no_names(name, &m.text);
    h.stop().await;
}

const AC_HEADER: &str =
    "\u{FEFF}Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile\r\n";

#[tokio::test(start_paused = true)]
async fn a_failing_activation_counts_csv_keeps_everything_else() {
    let ac = FakeReport::ActivationCounts;
    assert_report_fails_alone(
        "500",
        ac,
        false,
        Fault::Report(Canned::graph_error(500, "UnknownError", "")),
        expect("report", "http_5xx", "500"),
    )
    .await;
    assert_report_fails_alone(
        "html",
        ac,
        false,
        Fault::Body(b"<!DOCTYPE html><html><body>Sign in to your account</body></html>".to_vec()),
        expect("parse", "not_csv", "html"),
    )
    .await;
    assert_report_fails_alone(
        "missing column",
        ac,
        false,
        Fault::Body(
            b"Report Refresh Date,Product Type,Windows,Android,iOS,Windows 10 Mobile\r\n2026-11-26,X,1,2,3,4\r\n".to_vec(),
        ),
        expect("parse", "missing_column", "Mac"),
    )
    .await;
    assert_report_fails_alone(
        "not an integer",
        ac,
        false,
        Fault::Body(
            b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile\r\n2026-11-26,X,1,many,3,4,5\r\n".to_vec(),
        ),
        expect("parse", "invalid_value", "many"),
    )
    .await;
    assert_report_fails_alone(
        "negative",
        ac,
        false,
        Fault::Body(
            b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile\r\n2026-11-26,X,1,2,-3,4,5\r\n".to_vec(),
        ),
        expect("parse", "invalid_value", "Android"),
    )
    .await;
    let truncated = format!("{AC_HEADER}2026-11-26,MICROSOFT 365 APPS FOR ENTERPRISE,1215,16");
    assert_report_fails_alone(
        "truncated mid-row",
        ac,
        false,
        Fault::Body(truncated.into_bytes()),
        expect("parse", "invalid_value", "fields"),
    )
    .await;
    let truncated = format!("{AC_HEADER}2026-11-26,\"MICROSOFT 365 APPS FOR");
    assert_report_fails_alone(
        "truncated in a quoted field",
        ac,
        false,
        Fault::Body(truncated.into_bytes()),
        expect("parse", "invalid_value", "row 2"),
    )
    .await;
}

/// A body cut off on the wire: the connection closes before Content-Length bytes arrived.
#[tokio::test(start_paused = true)]
async fn an_activation_counts_download_cut_off_on_the_wire_keeps_everything_else() {
    let partial =
        format!("{AC_HEADER}2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,1215,160,131,178,20\r\n");
    let mut cut = Canned::body(200, "application/octet-stream", partial.clone());
    cut.headers
        .push(("Content-Length".into(), (partial.len() + 500).to_string()));
    assert_report_fails_alone(
        "cut off",
        FakeReport::ActivationCounts,
        false,
        Fault::Download(cut),
        expect("download", "network", "download"),
    )
    .await;
}

/// A streamed user detail cut off on the wire after many good rows: the rows already counted
/// must not replace the last good report.
#[tokio::test(start_paused = true)]
async fn a_user_detail_download_cut_off_after_good_rows_keeps_the_last_good_report() {
    let mut partial = String::from("\u{FEFF}Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer\r\n");
    for i in 0..2000 {
        partial.push_str(&format!(
            "2026-11-25,u{i}@cut.test,U {i},{ENTERPRISE},2026-11-20,1,0,0,0,0,False\r\n"
        ));
    }
    let mut cut = Canned::body(200, "application/octet-stream", partial.clone());
    cut.headers
        .push(("Content-Length".into(), (partial.len() * 2).to_string()));
    assert_report_fails_alone(
        "ud cut off",
        FakeReport::UserDetail,
        false,
        Fault::Download(cut),
        expect("download", "network", "download"),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_activation_counts_json_keeps_everything_else() {
    let ac = FakeReport::ActivationCounts;
    let row = r#"{"reportRefreshDate":"2026-11-25","productType":"Microsoft 365 Apps for enterprise","windows":1,"mac":2,"android":3,"ios":4,"windows10Mobile":5}"#;
    assert_report_fails_alone(
        "json 500",
        ac,
        true,
        Fault::Report(Canned::graph_error(500, "UnknownError", "")),
        expect("report", "http_5xx", "500"),
    )
    .await;
    assert_report_fails_alone(
        "json html",
        ac,
        true,
        Fault::Report(Canned::body(
            200,
            "text/html",
            "<html><body>Sign in</body></html>",
        )),
        expect("parse", "invalid_response", "JSON"),
    )
    .await;
    assert_report_fails_alone(
        "json truncated",
        ac,
        true,
        Fault::Report(Canned::json(format!(
            r#"{{"value":[{row},{{"reportRefreshDate":"2026-11-25","productType":"Proj"#
        ))),
        expect("parse", "invalid_response", "JSON"),
    )
    .await;
    assert_report_fails_alone(
        "json missing field",
        ac,
        true,
        Fault::Report(Canned::json(
            r#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"Visio","windows":1,"android":3,"ios":4}]}"#,
        )),
        expect("parse", "invalid_value", "mac"),
    )
    .await;
    assert_report_fails_alone(
        "json not an integer",
        ac,
        true,
        Fault::Report(Canned::json(
            r#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"Visio","windows":1,"mac":"lots","android":3,"ios":4}]}"#,
        )),
        expect("parse", "invalid_value", "lots"),
    )
    .await;
}

/// `h`'s Graph origin, for nextLinks that stay on it.
fn loop_link(fake: &FakeGraph, api: &str) -> String {
    format!(
        "{}/beta/reports/{api}?$format=application%2Fjson&$skiptoken=LOOP",
        fake.graph_endpoint()
    )
}

#[tokio::test(start_paused = true)]
async fn an_activation_counts_json_next_link_loop_keeps_everything_else() {
    // A relative link resolves against the page it is on: this very page, a loop.
    let page = Canned::json(format!(
        r#"{{"value":[{{"reportRefreshDate":"2026-11-25","productType":"Visio","windows":1,"mac":2,"android":3,"ios":4,"windows10Mobile":5}}],"@odata.nextLink":"{}"}}"#,
        "/beta/reports/getOffice365ActivationCounts?$format=application/json"
    ));
    assert_report_fails_alone(
        "json nextLink loop",
        FakeReport::ActivationCounts,
        true,
        Fault::Pages(vec![page]),
        Expect {
            stage: "report",
            other_stage: Some("parse"),
            reason: "invalid_response",
            hint: "nextLink",
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_user_detail_keeps_everything_else_and_shows_no_name() {
    let ud = FakeReport::UserDetail;
    const UD_HEADER: &str = "Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer\r\n";
    assert_report_fails_alone(
        "ud 503",
        ud,
        false,
        Fault::Report(Canned::body(
            503,
            "text/html",
            "<html>Service Unavailable</html>",
        )),
        expect("report", "http_5xx", "503"),
    )
    .await;
    assert_report_fails_alone(
        "ud html",
        ud,
        false,
        Fault::Body(b"<!DOCTYPE html><html><body>Sign in to your account</body></html>".to_vec()),
        expect("parse", "not_csv", "html"),
    )
    .await;
    assert_report_fails_alone(
        "ud missing column",
        ud,
        false,
        Fault::Body(
            b"Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Windows 10 Mobile,iOS,Android,Activated On Shared Computer\r\n2026-11-25,alice.zephyrine@contoso.test,\"Zephyrine, Alice\",X,2026-11-01,1,0,0,0,False\r\n".to_vec(),
        ),
        expect("parse", "missing_column", "Mac"),
    )
    .await;
    // A name where a count belongs (a shifted row): the error must not repeat the value.
    let shifted = format!(
        "{UD_HEADER}2026-11-25,x,y,{ENTERPRISE},2026-11-01,alice.zephyrine@contoso.test,0,0,0,0,False\r\n"
    );
    assert_report_fails_alone(
        "ud name in a count column",
        ud,
        false,
        Fault::Body(shifted.into_bytes()),
        expect("parse", "invalid_value", "Windows"),
    )
    .await;
    let bad_date =
        format!("{UD_HEADER}2026-11-25,x,y,{ENTERPRISE},Zephyrine Alice,1,0,0,0,0,False\r\n");
    assert_report_fails_alone(
        "ud name in the date column",
        ud,
        false,
        Fault::Body(bad_date.into_bytes()),
        expect("parse", "invalid_value", "Last Activated Date"),
    )
    .await;
    let truncated = format!(
        "{UD_HEADER}2026-11-25,alice.zephyrine@contoso.test,\"Zephyrine, Alice\",{ENTERPRISE},2026-11-01,1,0"
    );
    assert_report_fails_alone(
        "ud truncated",
        ud,
        false,
        Fault::Body(truncated.into_bytes()),
        expect("parse", "invalid_value", "fields"),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_user_detail_json_keeps_everything_else_and_shows_no_name() {
    let ud = FakeReport::UserDetail;
    let user = r#"{"reportRefreshDate":"2026-11-25","userPrincipalName":"alice.zephyrine@contoso.test","displayName":"Zephyrine, Alice","userActivationCounts":[{"productType":"Microsoft 365 Apps for enterprise","lastActivatedDate":"2026-11-01","windows":1,"mac":0,"windows10Mobile":0,"ios":0,"android":0,"activatedOnSharedComputer":false}]}"#;
    assert_report_fails_alone(
        "ud json truncated",
        ud,
        true,
        Fault::Report(Canned::json(format!(
            r#"{{"value":[{user},{{"reportRefreshDate":"2026-11-25","userPrincipalName":"bob.quaxley@con"#
        ))),
        expect("parse", "invalid_response", "JSON"),
    )
    .await;
    assert_report_fails_alone(
        "ud json name as a count",
        ud,
        true,
        Fault::Report(Canned::json(format!(
            r#"{{"value":[{}]}}"#,
            user.replace(
                r#""windows":1"#,
                r#""windows":"alice.zephyrine@contoso.test""#
            )
        ))),
        expect("parse", "invalid_value", "windows"),
    )
    .await;
    // A second page whose nextLink points back at itself: a loop after two pages.
    let looping = |fake_origin: &str| {
        Canned::json(format!(
            r#"{{"value":[{user}],"@odata.nextLink":"{}"}}"#,
            format_args!(
                "{fake_origin}/beta/reports/getOffice365ActivationsUserDetail?$format=application%2Fjson&$skiptoken=LOOP"
            )
        ))
    };
    // A relative link resolves against Graph's origin, so it is the same URL twice.
    let relative = "";
    assert_report_fails_alone(
        "ud json nextLink loop",
        ud,
        true,
        Fault::Pages(vec![looping(relative), looping(relative)]),
        expect("report", "invalid_response", "nextLink"),
    )
    .await;
    // The page answered is a later page's error.
    assert_report_fails_alone(
        "ud json page 500",
        ud,
        true,
        Fault::Pages(vec![
            looping(relative),
            Canned::graph_error(500, "UnknownError", ""),
        ]),
        expect("report", "http_5xx", "500"),
    )
    .await;
}

/// The absolute form of Graph's own nextLink looping, as Graph writes it.
#[tokio::test(start_paused = true)]
async fn an_absolute_user_detail_next_link_loop_is_caught() {
    let mut options = Options {
        ttl: TTL_1M,
        reports: vec![UC, UD],
        configure: json_configure(),
        ..Options::default()
    };
    options.fake.json_page_size = 4;
    let h = Harness::with(options).await;
    let t = tenant_id(0);
    h.fake.set_users(&t, users());
    assert_eq!(
        h.scrape().await.report_up("contoso", "user_detail"),
        Some(1.0)
    );
    let link = loop_link(&h.fake, "getOffice365ActivationsUserDetail");
    for _ in 0..2 {
        h.fake.push_report_response_for(
            FakeReport::UserDetail,
            &t,
            Canned::json(format!(r#"{{"value":[],"@odata.nextLink":"{link}"}}"#)),
        );
    }
    let requests_before = stats(&h, FakeReport::UserDetail).report_requests;
    advance(TTL_1M).await;
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_detail"), Some(0.0));
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(
        m.report_error_series("contoso", "user_detail", "report", "invalid_response"),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        stats(&h, FakeReport::UserDetail).report_requests - requests_before,
        2,
        "the loop is seen at the second page, not followed further"
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Retry-After per report.

#[tokio::test(start_paused = true)]
async fn retry_after_on_activation_counts_does_not_delay_user_counts() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        reports: vec![UC, AC],
        ..Options::default()
    })
    .await;
    let t = tenant_id(0);
    h.fake.push_report_response_for(
        FakeReport::ActivationCounts,
        &t,
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.").retry_after("600"),
    );
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "activation_counts"), Some(0.0));
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(
        m.report_error_series("contoso", "activation_counts", "report", "throttled"),
        Some(1.0)
    );
    assert_eq!(
        m.report_error_series("contoso", "user_counts", "report", "throttled"),
        Some(0.0),
        "user_counts' throttled series exists at 0"
    );
    let requests = |h: &Harness| {
        (
            stats(h, FakeReport::UserCounts).report_requests,
            stats(h, FakeReport::ActivationCounts).report_requests,
        )
    };
    // Nine minutes of scrapes every 15 s: user_counts on its TTL, activation_counts held back.
    let mut last_uc = 1;
    for step in 1..=39u64 {
        advance(Duration::from_secs(15)).await;
        h.scrape().await;
        settle().await;
        let (uc, ac) = requests(&h);
        assert_eq!(
            ac,
            1,
            "activation_counts not asked before its Retry-After (at {}s)",
            step * 15
        );
        assert!(uc >= last_uc, "{uc}");
        last_uc = uc;
    }
    // 585 s: user_counts refreshed each minute (54-60 s with jitter): 10 refreshes.
    let (uc, _) = requests(&h);
    assert!(
        (9..=11).contains(&uc),
        "user_counts kept its TTL: {uc} requests in 585 s"
    );
    advance(Duration::from_secs(15)).await; // 600 s
    let m = h.scrape().await;
    assert_eq!(requests(&h).1, 2, "asked again once Retry-After passed");
    assert_eq!(m.report_up("contoso", "activation_counts"), Some(1.0));
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Budget per report.

#[tokio::test(start_paused = true)]
async fn each_report_has_its_own_request_budget() {
    let h = Harness::with(Options {
        ttl: TTL_1M,
        reports: vec![UC, AC],
        ..Options::default()
    })
    .await;
    for _ in 0..(20 * 4) {
        let m = h.scrape().await;
        assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
        assert_eq!(m.report_up("contoso", "activation_counts"), Some(1.0));
        advance(Duration::from_secs(15)).await;
    }
    for report in [FakeReport::UserCounts, FakeReport::ActivationCounts] {
        let s = stats(&h, report);
        let most = s
            .request_times
            .iter()
            .map(|start| {
                s.request_times
                    .iter()
                    .filter(|t| **t >= *start && **t < *start + Duration::from_secs(600))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 12, "{report:?}: {most} requests in 10 minutes");
        // A shared budget of 12 per 10 minutes would leave each report about 12 in 20 minutes.
        assert!(
            s.report_requests >= 18,
            "{report:?} refreshed on its own TTL: {} requests in 20 minutes",
            s.report_requests
        );
        assert_eq!(s.throttled_requests, 0, "{report:?}");
    }
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Size cap per report.

fn cap_user_detail(max: u64) -> Configure {
    Box::new(move |_: &FakeGraph, configs: &mut Vec<TenantConfig>| {
        for c in configs.iter_mut() {
            for r in &mut c.reports {
                if r.kind == UD {
                    r.max_size = max;
                }
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_oversized_user_detail_csv_fails_alone_as_too_large() {
    let h = Harness::with(Options {
        reports: vec![UC, AC, UD],
        configure: Some(cap_user_detail(300)),
        ..Options::default()
    })
    .await;
    h.fake.set_users(&tenant_id(0), users()); // about 1.2 KB of CSV
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_detail"), Some(0.0));
    assert_eq!(
        m.report_error_series("contoso", "user_detail", "download", "too_large"),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(error_total(&m, "contoso", "user_detail"), 1.0);
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(m.report_up("contoso", "activation_counts"), Some(1.0));
    assert_eq!(m.activated("contoso", ENTERPRISE), Some(1710.0));
    let html = landing(&h).await;
    let row = landing_row(&html, "contoso", "user_detail").unwrap();
    assert!(
        row.iter()
            .any(|c| c.starts_with("down") && c.contains("300")),
        "the row names the limit: {row:?}"
    );
    h.stop().await;
}

/// The small reports' cap does not apply to the user detail, and the other way round.
#[tokio::test(start_paused = true)]
async fn the_small_reports_cap_does_not_apply_to_the_user_detail() {
    let h = Harness::with(Options {
        reports: vec![UC, UD],
        max_report_size: 1024,
        configure: Some(cap_user_detail(1 << 20)),
        ..Options::default()
    })
    .await;
    let many: Vec<FakeUser> = (0..100)
        .map(|i| {
            FakeUser::new(format!("u{i}@x.test"), format!("U {i}")).with_product(
                FakeUserProduct::new(ENTERPRISE)
                    .activated_on(date())
                    .devices(1, 0, 0, 0, 0),
            )
        })
        .collect();
    h.fake.set_users(&tenant_id(0), many);
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", "user_counts"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        Some(1.0),
        "{:?}",
        h.exporter.tenants()[0].status()
    );
    assert_eq!(
        m.get(
            DETAIL_USERS,
            &[("tenant", "contoso"), ("product_type", ENTERPRISE)]
        ),
        Some(100.0)
    );
    h.stop().await;
}

/// The bytes of every user detail JSON page the fake serves `tenant`, fetched with a token of
/// its own (each counts as a report request of the fake).
async fn json_page_sizes(fake: &FakeGraph, tenant: usize) -> Vec<usize> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let token = client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            fake.authority_host(),
            tenant_id(tenant)
        ))
        .form(&[
            ("client_id", client_id(tenant)),
            ("client_secret", SECRET.to_owned()),
            ("scope", format!("{}/.default", fake.graph_endpoint())),
            ("grant_type", "client_credentials".to_owned()),
        ])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let token: serde_json::Value = serde_json::from_slice(&token).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mut url = format!(
        "{}/beta/reports/getOffice365ActivationsUserDetail?$format=application/json",
        fake.graph_endpoint()
    );
    let mut sizes = Vec::new();
    loop {
        let body = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        sizes.push(body.len());
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return sizes,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_user_detail_json_cap_is_on_all_pages_together() {
    for (slack, ok) in [(0i64, true), (-1, false)] {
        let mut options = Options {
            reports: vec![UC, UD],
            configure: json_configure(),
            ..Options::default()
        };
        options.fake.json_page_size = 2;
        let h = Harness::with(options).await;
        h.fake.set_users(&tenant_id(0), users());
        // Learn the pages' sizes from this very fake (same origin in every link), then set the
        // cap from them (a changed configuration: the tenant starts afresh).
        let sizes = json_page_sizes(&h.fake, 0).await;
        assert_eq!(sizes.len(), 5);
        let total: usize = sizes.iter().sum();
        let biggest = *sizes.iter().max().unwrap();
        let cap = (total as i64 + slack) as u64;
        assert!(
            cap > biggest as u64 * 2,
            "every page alone is well under the cap"
        );
        let mut config = h.exporter.tenants()[0].config().clone();
        config.reports[1].max_size = cap;
        h.exporter.reload(&[config]).unwrap();
        let probed = stats(&h, FakeReport::UserDetail).report_requests;

        let m = h.scrape().await;
        assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
        let requests = stats(&h, FakeReport::UserDetail).report_requests - probed;
        if ok {
            assert_eq!(
                m.report_up("contoso", "user_detail"),
                Some(1.0),
                "a report of exactly the cap ({cap} bytes, pages {sizes:?}) is accepted: {}",
                last_error(&h, 0)
            );
            assert_eq!(
                samples_of(&m, "contoso", &DETAIL_FAMILIES),
                expected_detail()
            );
        } else {
            assert_eq!(m.report_up("contoso", "user_detail"), Some(0.0));
            assert_eq!(
                m.report_error_series("contoso", "user_detail", "report", "too_large"),
                Some(1.0),
                "pages {sizes:?} against a cap of {cap}\n{}",
                m.text
            );
        }
        assert_eq!(
            requests, 5,
            "every page was asked for (the cap trips on the last one)"
        );
        h.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// check's outcomes per report (in-process: Tenant::refresh).

#[tokio::test(start_paused = true)]
async fn refresh_reports_each_outcome_by_report() {
    let h = Harness::with(Options {
        reports: vec![UC, AC, UD],
        ..Options::default()
    })
    .await;
    h.fake.push_report_response_for(
        FakeReport::ActivationCounts,
        &tenant_id(0),
        Canned::graph_error(403, "MissingCredentials", "Missing credentials."),
    );
    let outcomes = h.exporter.tenants()[0].refresh().await;
    let shown: Vec<(&str, Result<(), String>)> = outcomes
        .iter()
        .map(|(kind, r)| {
            (
                kind.name,
                r.as_ref().map(|_| ()).map_err(|e| e.reason().to_owned()),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("user_counts", Ok(())),
            ("activation_counts", Err("unauthorized".to_owned())),
            ("user_detail", Ok(())),
        ]
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// What the operator sees: one landing page row per tenant and report, status series per report.

#[tokio::test(start_paused = true)]
async fn the_landing_page_has_one_row_per_tenant_and_report() {
    let h = Harness::with(Options {
        tenants: 2,
        reports: vec![UC, AC, UD],
        ..Options::default()
    })
    .await;
    let html = landing(&h).await;
    for tenant in ["contoso", "fabrikam"] {
        for report in ["user_counts", "activation_counts", "user_detail"] {
            let row = landing_row(&html, tenant, report)
                .unwrap_or_else(|| panic!("a row for {tenant} {report}:\n{html}"));
            assert!(
                row.iter().any(|c| c.contains("waiting")),
                "before the first scrape: {row:?}"
            );
        }
    }
    h.fake.set_users(&tenant_id(1), users());
    h.scrape().await;
    let html = landing(&h).await;
    for tenant in ["contoso", "fabrikam"] {
        for (report, rows) in [
            ("user_counts", "2 "),
            ("activation_counts", "2 "),
            // The derived users of the harness products for contoso: 300 + 120 rows.
            (
                "user_detail",
                if tenant == "contoso" { "420 " } else { "10 " },
            ),
        ] {
            let row = landing_row(&html, tenant, report).unwrap();
            assert!(row.iter().any(|c| c == "up"), "{tenant} {report}: {row:?}");
            assert!(
                row.iter().any(|c| c.starts_with(rows)),
                "{tenant} {report}: {rows}rows: {row:?}"
            );
            assert!(
                row.iter().any(|c| c == "2026-11-25"),
                "{tenant} {report}: the report date: {row:?}"
            );
        }
    }
    assert_no_names("the landing page", &html);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_status_series_carries_the_report_label() {
    let h = Harness::with(Options {
        reports: vec![UC, AC, UD],
        ..Options::default()
    })
    .await;
    let m = h.scrape().await;
    for report in ["user_counts", "activation_counts", "user_detail"] {
        let labels = [("tenant", "contoso"), ("report", report)];
        assert_eq!(
            m.get("office365_activations_up", &labels),
            Some(1.0),
            "{report}"
        );
        assert_eq!(
            m.get("office365_activations_refreshes_total", &labels),
            Some(1.0),
            "{report}"
        );
        assert!(
            m.get(
                "office365_activations_last_refresh_success_timestamp_seconds",
                &labels
            )
            .is_some_and(|t| t > 1.7e9),
            "{report}\n{}",
            m.text
        );
        assert_eq!(
            m.get(
                "office365_activations_refresh_duration_seconds_count",
                &labels
            ),
            Some(1.0),
            "{report}"
        );
        assert_eq!(
            m.get(
                "office365_activations_redirect_latency_seconds_count",
                &labels
            ),
            Some(1.0),
            "{report}: one CSV download"
        );
        assert_eq!(
            m.get(
                "office365_activations_report_refresh_timestamp_seconds",
                &labels
            ),
            Some(midnight(date())),
            "{report}"
        );
        for stage in ["token", "report", "download"] {
            assert_eq!(
                m.report_error_series("contoso", report, stage, "throttled"),
                Some(0.0),
                "{report}: the throttled series start at 0"
            );
        }
    }
    // No status series without the report label.
    for (key, _) in m.series("office365_activations_up") {
        assert!(key.contains("report="), "{key}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_report_of_one_tenant_never_touches_another_tenant() {
    let h = Harness::with(Options {
        tenants: 2,
        ttl: TTL_1M,
        reports: vec![UC, AC],
        ..Options::default()
    })
    .await;
    h.fake.set_activation_counts(&tenant_id(1), platform_rows());
    h.fake.push_report_response_for(
        FakeReport::ActivationCounts,
        &tenant_id(0),
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.").retry_after("600"),
    );
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "activation_counts"), Some(0.0));
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(m.report_up("fabrikam", "activation_counts"), Some(1.0));
    assert_eq!(m.report_up("fabrikam", "user_counts"), Some(1.0));
    assert_eq!(
        m.get(
            DEVICES,
            &[
                ("tenant", "fabrikam"),
                ("product_type", ENTERPRISE),
                ("platform", "mac")
            ]
        ),
        Some(160.0)
    );
    assert!(
        samples_of(&m, "contoso", &[DEVICES]).is_empty(),
        "nothing loaded yet for contoso's activation counts"
    );
    advance(TTL_1M).await;
    h.scrape().await;
    settle().await;
    let ac = |i: usize| {
        h.stats(i)
            .report(FakeReport::ActivationCounts)
            .report_requests
    };
    assert_eq!(
        (ac(0), ac(1)),
        (1, 2),
        "contoso's Retry-After delays only contoso"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_later_user_detail_page_holds_back_only_the_user_detail() {
    let mut options = Options {
        ttl: TTL_1M,
        reports: vec![UC, UD],
        configure: json_configure(),
        ..Options::default()
    };
    options.fake.json_page_size = 4;
    let h = Harness::with(options).await;
    let t = tenant_id(0);
    h.fake.set_users(&t, users());
    let first_page = Canned::json(
        r#"{"value":[],"@odata.nextLink":"/beta/reports/getOffice365ActivationsUserDetail?$format=application/json&$skiptoken=PAGE2"}"#,
    );
    h.fake
        .push_report_response_for(FakeReport::UserDetail, &t, first_page);
    h.fake.push_report_response_for(
        FakeReport::UserDetail,
        &t,
        Canned::graph_error(429, "TooManyRequests", "Please retry again later.").retry_after("300"),
    );
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_detail"), Some(0.0));
    assert_eq!(
        m.report_error_series("contoso", "user_detail", "report", "throttled"),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(stats(&h, FakeReport::UserDetail).report_requests, 2);
    for _ in 0..4 {
        advance(TTL_1M).await; // 240 s in all
        h.scrape().await;
        settle().await;
        assert_eq!(
            stats(&h, FakeReport::UserDetail).report_requests,
            2,
            "nothing before the page's Retry-After"
        );
    }
    assert_eq!(
        stats(&h, FakeReport::UserCounts).report_requests,
        5,
        "user_counts on its TTL"
    );
    advance(TTL_1M).await; // 300 s
    let m = h.scrape().await;
    assert_eq!(
        m.report_up("contoso", "user_detail"),
        Some(1.0),
        "{}",
        last_error(&h, 0)
    );
    assert_eq!(
        samples_of(&m, "contoso", &DETAIL_FAMILIES),
        expected_detail()
    );
    // 9 users at 4 per page.
    assert_eq!(stats(&h, FakeReport::UserDetail).report_requests, 2 + 3);
    h.stop().await;
}

/// A reload that changes one report's TTL leaves the other reports' cache (and so their budget
/// and Retry-After state) alone: each report has its own.
#[tokio::test(start_paused = true)]
#[ignore = "BUG (reading of 'each report has its own cache'): a reload changing only user_detail's TTL rebuilds the whole tenant; user_counts' cache, budget and Retry-After are dropped and it is requested again"]
async fn a_reload_changing_one_reports_ttl_keeps_the_others_cache() {
    let h = Harness::with(Options {
        reports: vec![UC, UD],
        ..Options::default()
    })
    .await;
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    let mut config = h.exporter.tenants()[0].config().clone();
    config.reports[1].cache_ttl = 6 * HOUR;
    h.exporter.reload(&[config]).unwrap();
    let m = h.scrape().await;
    settle().await;
    assert_eq!(m.report_up("contoso", "user_counts"), Some(1.0));
    assert_eq!(
        stats(&h, FakeReport::UserCounts).report_requests,
        1,
        "user_counts was served from its cache"
    );
    h.stop().await;
}

/// A nextLink to another origin is not followed: the token only ever goes to Graph.
#[tokio::test(start_paused = true)]
async fn a_user_detail_next_link_to_another_host_is_refused_without_the_token() {
    let mut options = Options {
        ttl: TTL_1M,
        reports: vec![UC, UD],
        configure: json_configure(),
        ..Options::default()
    };
    options.fake.json_page_size = 4;
    let h = Harness::with(options).await;
    let t = tenant_id(0);
    h.fake.set_users(&t, users());
    assert_eq!(
        h.scrape().await.report_up("contoso", "user_detail"),
        Some(1.0)
    );
    let elsewhere = format!(
        "{}/beta/reports/getOffice365ActivationsUserDetail?$skiptoken=X",
        h.fake.download_origin()
    );
    h.fake.push_report_response_for(
        FakeReport::UserDetail,
        &t,
        Canned::json(format!(r#"{{"value":[],"@odata.nextLink":"{elsewhere}"}}"#)),
    );
    advance(TTL_1M).await;
    let m = h.scrape().await;
    assert_eq!(m.report_up("contoso", "user_detail"), Some(0.0));
    assert_eq!(
        m.report_error_series("contoso", "user_detail", "report", "invalid_response"),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        samples_of(&m, "contoso", &DETAIL_FAMILIES),
        expected_detail()
    );
    let s = h.stats(0);
    assert_eq!(s.report(FakeReport::UserDetail).download_requests, 0);
    assert!(s.download_authorization_headers.is_empty());
    h.stop().await;
}
