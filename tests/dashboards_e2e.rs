//! End to end: every dashboard query, every template-variable query and every rule of this
//! repository, run by a real Prometheus (Debian's package) over real exporter data.
//!
//! The setup, all on loopback in a temporary directory:
//! - the exporter in demo mode (`--demo`: tenant contoso with 5 product types, fabrikam with 3;
//!   all three reports, user_counts, activation_counts and user_detail, enabled);
//! - a second exporter for tenant `northwind`, against the project's fake Graph with a throttle of
//!   0 report requests per window: its report request is answered 429 (`stage="report",
//!   reason="throttled"`), so the error panels have real data. The demo itself never fails, and
//!   src/ is not this test's to change;
//! - 8 days of history of the demo's report gauges and status series, loaded with `promtool tsdb
//!   create-blocks-from openmetrics` before Prometheus starts, so the "change over 7 days" panels
//!   and rules (`offset 7d`) have data to compare with: the user_counts gauges computed by
//!   `demo_products` (the function the demo serves its numbers from), the activation_counts and
//!   user_detail gauges repeating the demo's values of its first complete scrape, the status series
//!   with a `report` label for every report that scrape showed;
//! - Prometheus scraping both exporters every second as job `office365-activations`, and loading
//!   every `prometheus/rules/*.yml` (copied with each group's `interval` set to 1s, so the rules
//!   evaluate within seconds instead of a minute; nothing else is changed).
//!
//! Then, once the targets have been scraped a few times and every rule group has evaluated since:
//! - every template variable of every dashboard (`label_values(...)` through
//!   `/api/v1/label/<label>/values`) must return values, and the demo's tenants, product types
//!   and reports;
//! - every panel target expression, with the variables substituted, through `/api/v1/query`:
//!   no error, no warning, and data (a NaN sample counts: a quantile between refreshes is one).
//!   Twice: once with every filter variable on "All" (`.*`), once with every value selected (the
//!   `(a|b|c)` regex Grafana sends), which proves the values returned by the variable queries
//!   match what the panels filter on;
//! - every recording rule Prometheus loaded: its expression, and the series it recorded, with a
//!   series for every combination of its level's labels (`tenant`, `tenant_report`,
//!   `tenant_product_type`, `tenant_product_type_platform`, ...) that the demo's raw series it
//!   derives from have ([`rule_coverage`]); those raw series must cover every demo tenant (and
//!   every report, for the status series);
//! - every alert expression evaluates without error, and `/api/v1/rules` reports every rule (alert
//!   and recording) healthy with no `lastError`; every `alert:` and `record:` of the rule files
//!   is among the loaded rules.
//!
//! A query that may lack data for a principled reason must be listed in [`NO_DATA_EXPECTED`] with
//! the reason; nothing is exempt silently, and an exemption whose query has data fails too.
//!
//! Needs `prometheus` and `promtool` (Debian/Ubuntu: `apt-get install prometheus`). Without them
//! the test FAILS: it never skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::NaiveDate;
use common::{listening_address, require_tool, start_demo_exporter, start_prometheus};
use office365_activations_exporter::fake_graph::{
    demo_products, FakeGraph, FakeGraphOptions, FakeProduct, FakeTenant, ReportData, DEMO_SEEDS,
    DEMO_TENANTS,
};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The scrape job name the alerts expect (Office365ExporterAbsent matches it).
const JOB: &str = "office365-activations";

/// The reports the demo fetches (the `report` label values of its status series): all three.
const DEMO_REPORTS: &[&str] = &["user_counts", "activation_counts", "user_detail"];

/// The report gauges of the activation_counts and user_detail reports. The fake Graph has no
/// public function for their past values, so the history repeats the demo's values of its first
/// complete scrape: the `offset 7d` rules over them then have something to compare with.
const SNAPSHOT_FAMILIES: &[&str] = &[
    "office365_activations_activated_devices",
    "office365_activations_detail_users",
    "office365_activations_users_by_activated_computers",
    "office365_activations_users_at_install_limit",
    "office365_activations_users_shared_computer_activated",
    "office365_activations_users_inactive",
    "office365_activations_users_never_activated",
];

/// Longest wait for the demo to have refreshed every report of every tenant once.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The second exporter's tenant, whose report requests are all throttled.
const THROTTLED_TENANT: &str = "northwind";
const THROTTLED_TENANT_ID: &str = "33333333-4444-4555-8666-777777777777";
const THROTTLED_CLIENT_ID: &str = "3a3a3a3a-0000-4000-8000-000000000003";
const THROTTLED_SECRET: &str = "northwind-client-secret";

/// Queries that may return no data in this setup, with the reason:
/// `(dashboard file, panel title, refId, reason)`. Keep it empty unless the data cannot exist for
/// a principled reason (an alert-state query with no alert firing, say); a query listed here
/// must still run without error, and fails if it does return data (stale exemption).
const NO_DATA_EXPECTED: &[(&str, &str, &str, &str)] = &[];

/// Longest wait for Prometheus to have scraped and evaluated (the whole test takes ~15 s; the
/// bound only turns a hang into a failure).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a query without (all of) its data is asked, 500 ms apart: a few scrape intervals.
const SETTLE_TRIES: usize = 8;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------------------------------------
// Processes

/// An exporter for [`THROTTLED_TENANT`] against a fake Graph that answers every report request
/// with 429 (a throttle of 0 requests per window).
async fn start_throttled_exporter(dir: &Path) -> (FakeGraph, Child, String) {
    let mut options = FakeGraphOptions {
        throttle_limit: 0,
        ..FakeGraphOptions::default()
    };
    options.tenants.push(FakeTenant::new(
        THROTTLED_TENANT_ID,
        THROTTLED_CLIENT_ID,
        THROTTLED_SECRET,
        ReportData::Demo { seed: 7 },
    ));
    let fake = FakeGraph::start(options)
        .await
        .expect("the fake Graph starts");
    let ca = dir.join("fake-graph-ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_office365-activations-exporter"))
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(["--graph.endpoint", &fake.graph_endpoint()])
        .args(["--auth.authority-host", &fake.authority_host()])
        .args(["--tls.ca-file", ca.to_str().unwrap()])
        .args(["--auth.tenant-id", THROTTLED_TENANT_ID])
        .args(["--auth.client-id", THROTTLED_CLIENT_ID])
        .args(["--tenant.name", THROTTLED_TENANT])
        .env("AZURE_CLIENT_SECRET", THROTTLED_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter binary starts");
    let address = listening_address(&mut child).await;
    (fake, child, address)
}

// ------------------------------------------------------------------------------------------------
// The demo's exposition

/// One sample of a text exposition.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    /// The metric name.
    name: String,
    /// The labels, in the exposition's order.
    labels: Vec<(String, String)>,
    /// The value.
    value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The samples of a Prometheus text exposition (comments and blank lines skipped; a timestamp
/// after the value is ignored). A line it cannot read is an error naming it.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("cannot read the sample line {line:?}");
        let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
        let name = line[..name_end].to_owned();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut end = None;
            loop {
                while chars
                    .next_if(|(_, c)| *c == ',' || c.is_whitespace())
                    .is_some()
                {}
                match chars.peek() {
                    Some((i, '}')) => {
                        end = Some(*i);
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let label: String = chars
                    .by_ref()
                    .map(|(_, c)| c)
                    .take_while(|c| *c != '=')
                    .collect();
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad());
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => return Err(bad()),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(bad()),
                    }
                }
                labels.push((label.trim().to_owned(), value));
            }
            rest = &inner[end.ok_or_else(bad)? + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The demo exporter's samples once every report of every tenant has been refreshed: every
/// `office365_activations_up` 1 and every report refresh timestamp above 0 (it refreshes on
/// the first scrape, in the background).
async fn demo_snapshot(address: &str) -> Vec<Sample> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    let mut last = String::from("never scraped");
    while Instant::now() < deadline {
        let scraped = match client.get(format!("http://{address}/metrics")).send().await {
            Ok(response) => response.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match scraped.and_then(|text| parse_exposition(&text)) {
            Ok(samples) => {
                let of = |name: &str| -> Vec<f64> {
                    samples
                        .iter()
                        .filter(|s| s.name == name)
                        .map(|s| s.value)
                        .collect()
                };
                let up = of("office365_activations_up");
                let dates = of("office365_activations_report_refresh_timestamp_seconds");
                if !up.is_empty()
                    && up.iter().all(|v| *v == 1.0)
                    && !dates.is_empty()
                    && dates.iter().all(|v| *v > 0.0)
                {
                    return samples;
                }
                last = format!("up {up:?}, report refresh timestamps {dates:?}");
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the demo exporter did not refresh every report within {SNAPSHOT_TIMEOUT:?}: {last}");
}

// ------------------------------------------------------------------------------------------------
// History: 8 days of the demo's report gauges, as Prometheus would have scraped them

/// Escapes a label value for the exposition formats.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds since the epoch of UTC midnight of `date` (the exporter's report refresh timestamp).
fn midnight(date: NaiveDate) -> i64 {
    date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days()
        * 86_400
}

/// OpenMetrics text of the demo tenants' series, as scraped from `instance` by job [`JOB`], at
/// the sample times: hourly from 8 days ago to 3 hours ago (older than the head block, as
/// backfilling requires), and every minute for 20 minutes either side of exactly 7 days ago, so
/// that `offset 7d` finds a sample within the 5-minute lookback for the whole run of the test.
///
/// `snapshot` is the demo's exposition now ([`demo_snapshot`]): its status series say which
/// reports each tenant has (the history's status series get the same `report` labels, dated as
/// the user_counts report), and its [`SNAPSHOT_FAMILIES`] samples are repeated at every time.
/// Returns the text and its number of samples.
fn demo_history(instance: &str, now: u64, snapshot: &[Sample]) -> (String, usize) {
    const DAY: u64 = 86_400;
    let mut times = BTreeSet::new();
    let mut t = now - 8 * DAY;
    while t <= now - 3 * 3600 {
        times.insert(t);
        t += 3600;
    }
    times.extend((now - 7 * DAY - 20 * 60..=now - 7 * DAY + 20 * 60).step_by(60));

    // Per time, per demo tenant: (refresh timestamp, products).
    type TenantReport = (i64, Vec<FakeProduct>);
    let reports: Vec<(u64, Vec<TenantReport>)> = times
        .iter()
        .map(|&t| {
            let at = UNIX_EPOCH + Duration::from_secs(t);
            let tenants = DEMO_SEEDS
                .iter()
                .map(|&seed| {
                    let (date, products) = demo_products(seed, at);
                    (midnight(date), products)
                })
                .collect();
            (t, tenants)
        })
        .collect();

    let labels = |tenant: &str| {
        format!(
            "job=\"{}\",instance=\"{}\",tenant=\"{}\"",
            escape_label(JOB),
            escape_label(instance),
            escape_label(tenant)
        )
    };
    let mut out = String::new();
    let mut samples = 0;
    type Column = fn(&FakeProduct) -> u64;
    let product_families: [(&str, Column); 3] = [
        ("office365_activations_assigned_users", |p| p.assigned),
        ("office365_activations_activated_users", |p| p.activated),
        (
            "office365_activations_shared_computer_activated_users",
            |p| p.shared_computer_activation,
        ),
    ];
    for (family, column) in product_families {
        writeln!(out, "# TYPE {family} gauge").unwrap();
        for (i, (tenant, ..)) in DEMO_TENANTS.iter().enumerate() {
            let product_types: BTreeSet<&str> = reports
                .iter()
                .flat_map(|(_, r)| r[i].1.iter().map(|p| p.product_type.as_str()))
                .collect();
            for product_type in product_types {
                for (t, r) in &reports {
                    if let Some(p) = r[i].1.iter().find(|p| p.product_type == product_type) {
                        writeln!(
                            out,
                            "{family}{{{},product_type=\"{}\"}} {} {t}",
                            labels(tenant),
                            escape_label(product_type),
                            column(p)
                        )
                        .unwrap();
                        samples += 1;
                    }
                }
            }
        }
    }
    // The status series, per report the snapshot shows for the tenant (none: an exporter
    // without the report label).
    let tenant_reports = |tenant: &str| -> Vec<Option<String>> {
        let reports: BTreeSet<Option<String>> = snapshot
            .iter()
            .filter(|s| s.name == "office365_activations_up" && s.label("tenant") == Some(tenant))
            .map(|s| s.label("report").map(str::to_owned))
            .collect();
        if reports.is_empty() {
            vec![None]
        } else {
            reports.into_iter().collect()
        }
    };
    type TenantColumn = fn(&TenantReport) -> i64;
    let tenant_families: [(&str, TenantColumn); 2] = [
        (
            "office365_activations_report_refresh_timestamp_seconds",
            |r| r.0,
        ),
        ("office365_activations_up", |_| 1),
    ];
    for (family, value) in tenant_families {
        writeln!(out, "# TYPE {family} gauge").unwrap();
        for (i, (tenant, ..)) in DEMO_TENANTS.iter().enumerate() {
            for report in tenant_reports(tenant) {
                let report = report
                    .map(|r| format!(",report=\"{}\"", escape_label(&r)))
                    .unwrap_or_default();
                for (t, r) in &reports {
                    writeln!(
                        out,
                        "{family}{{{}{report}}} {} {t}",
                        labels(tenant),
                        value(&r[i])
                    )
                    .unwrap();
                    samples += 1;
                }
            }
        }
    }
    // The activation_counts and user_detail gauges: the snapshot's values at every time.
    let demo_tenants: BTreeSet<&str> = DEMO_TENANTS.iter().map(|t| t.0).collect();
    for family in SNAPSHOT_FAMILIES {
        let series: Vec<&Sample> = snapshot
            .iter()
            .filter(|s| s.name == *family)
            .filter(|s| s.label("tenant").is_some_and(|t| demo_tenants.contains(t)))
            .collect();
        if series.is_empty() {
            continue;
        }
        writeln!(out, "# TYPE {family} gauge").unwrap();
        for sample in series {
            let mut text = format!(
                "job=\"{}\",instance=\"{}\"",
                escape_label(JOB),
                escape_label(instance)
            );
            for (label, value) in sample
                .labels
                .iter()
                .filter(|(l, _)| l != "job" && l != "instance")
            {
                write!(text, ",{label}=\"{}\"", escape_label(value)).unwrap();
            }
            for t in &times {
                writeln!(out, "{family}{{{text}}} {} {t}", sample.value).unwrap();
                samples += 1;
            }
        }
    }
    // The scrape's own `up`, as Prometheus recorded it for the demo target.
    writeln!(out, "# TYPE up gauge").unwrap();
    for (t, _) in &reports {
        writeln!(
            out,
            "up{{job=\"{}\",instance=\"{}\"}} 1 {t}",
            escape_label(JOB),
            escape_label(instance)
        )
        .unwrap();
        samples += 1;
    }
    out.push_str("# EOF\n");
    (out, samples)
}

/// Writes `history` to a file and turns it into TSDB blocks in `data_dir` with promtool.
fn backfill(promtool: &str, dir: &Path, data_dir: &Path, history: &str) {
    let file = dir.join("history.om.txt");
    std::fs::write(&file, history).unwrap();
    // --max-block-duration (a hidden flag of `promtool tsdb create-blocks-from`) makes a few
    // day-long blocks instead of ~100 two-hour ones, which Prometheus opens and compacts faster.
    let output = std::process::Command::new(promtool)
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            "--max-block-duration=24h",
        ])
        .arg(&file)
        .arg(data_dir)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool tsdb create-blocks-from openmetrics failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ------------------------------------------------------------------------------------------------
// Rule files

/// `prometheus/rules/*.yml` (and `.yaml`), sorted.
fn rule_files() -> Vec<PathBuf> {
    let dir = repo().join("prometheus/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no prometheus/rules/*.yml");
    files
}

/// The rule file with every group's `interval:` set to 1s (the only change).
fn with_fast_interval(text: &str) -> String {
    text.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            if line.trim_start().starts_with("interval:") {
                format!("{}interval: 1s\n", &line[..indent])
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// The `- alert: X` and `- record: x` names of the rule files: (alerts, recording rules).
fn rule_names_in_files() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut alerts, mut records) = (BTreeSet::new(), BTreeSet::new());
    for file in rule_files() {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            let name = |rest: &str| {
                rest.trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_owned()
            };
            if let Some(rest) = line.strip_prefix("alert:") {
                alerts.insert(name(rest));
            } else if let Some(rest) = line.strip_prefix("record:") {
                records.insert(name(rest));
            }
        }
    }
    (alerts, records)
}

// ------------------------------------------------------------------------------------------------
// Prometheus's HTTP API

/// Prometheus's HTTP API, with the log to show on failure.
struct Prometheus {
    base: String,
    client: reqwest::Client,
    log: PathBuf,
}

impl Prometheus {
    /// GET an API path; the `data` of a successful answer, else what went wrong.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {text}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or(&text)
            ));
        }
        if let Some(warnings) = body["warnings"].as_array().filter(|w| !w.is_empty()) {
            return Err(format!("warnings: {warnings:?}"));
        }
        Ok(body["data"].clone())
    }

    /// An instant query at the current time.
    async fn query(&self, expr: &str) -> Result<Value, String> {
        self.get("/api/v1/query", &[("query", expr)]).await
    }

    /// [`Self::query`], asked again (up to [`SETTLE_TRIES`] times, 500 ms apart) while `complete`
    /// rejects its data: on a loaded machine one scrape can exceed its 1 s timeout, and Prometheus
    /// then marks that target's series stale until its next good scrape. Returns the last answer.
    async fn query_settled(
        &self,
        expr: &str,
        complete: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let mut answer = self.query(expr).await;
        for _ in 1..SETTLE_TRIES {
            if !answer.as_ref().is_ok_and(&complete) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                answer = self.query(expr).await;
            }
        }
        answer
    }

    /// `/api/v1/label/<label>/values`, optionally restricted to a series selector and a start.
    async fn label_values(
        &self,
        label: &str,
        selector: Option<&str>,
        start: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let mut params = Vec::new();
        if let Some(selector) = selector {
            params.push(("match[]", selector));
        }
        if let Some(start) = start {
            params.push(("start", start));
        }
        let data = self
            .get(&format!("/api/v1/label/{label}/values"), &params)
            .await?;
        Ok(data
            .as_array()
            .ok_or_else(|| format!("not a list: {data}"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// The last lines Prometheus logged, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Whether a query's `data` holds something to show: a non-empty vector or matrix, or a
/// scalar/string (NaN values count: a quantile of a histogram with no new observation is NaN).
fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("vector" | "matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
        Some("scalar" | "string") => true,
        _ => false,
    }
}

fn series_count(data: &Value) -> usize {
    match data["resultType"].as_str() {
        Some("vector" | "matrix") => data["result"].as_array().map_or(0, Vec::len),
        _ => 1,
    }
}

/// The values of `label` over a query's result series.
fn label_set(data: &Value, label: &str) -> BTreeSet<String> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect()
}

/// Polls `check` until it succeeds (Prometheus scrapes and evaluates on its own schedule; the
/// bound only turns a hang into a failure that says what was missing).
async fn wait_for<T, F, Fut>(prometheus: &Prometheus, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("never checked");
    while Instant::now() < deadline {
        match check().await {
            Ok(value) => return value,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "gave up after {READY_TIMEOUT:?} waiting for {what}: {last}\n--- Prometheus log (tail) ---\n{}",
        prometheus.log_tail()
    );
}

// ------------------------------------------------------------------------------------------------
// Dashboards

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards/*.json");
    files
        .into_iter()
        .map(|path| {
            let file = format!("dashboards/{}", path.file_name().unwrap().to_string_lossy());
            let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            Dashboard { file, json }
        })
        .collect()
}

/// One panel target: (panel title, refId, expr).
fn panel_targets(dashboard: &Value) -> Vec<(String, String, String)> {
    fn walk(list: &Value, out: &mut Vec<(String, String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((
                        panel["title"].as_str().unwrap_or("").to_owned(),
                        target["refId"].as_str().unwrap_or("").to_owned(),
                        expr.to_owned(),
                    ));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The query string of a query variable (`query` is a string or `{ "query": ... }`).
fn variable_query(variable: &Value) -> String {
    match &variable["query"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

/// The arguments of `name(...)` when `query` is exactly that call.
fn call_args<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .trim()
        .strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Splits `selector, label` at the last top-level comma.
fn split_last_argument(args: &str) -> Option<(&str, &str)> {
    let (mut depth, mut in_string, mut split) = (0i32, false, None);
    for (i, c) in args.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' | '{' | '[' if !in_string => depth += 1,
            ')' | '}' | ']' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    split.map(|i| (args[..i].trim(), args[i + 1..].trim()))
}

/// Escapes `value` as Grafana does for a regex matcher: regex metacharacters get a backslash,
/// then the result is escaped for a PromQL double-quoted string.
fn regex_escape(value: &str) -> String {
    let mut regex = String::new();
    for c in value.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What Grafana puts in a regex matcher for these selected values: `v` or `(v1|v2|...)`.
fn regex_of(values: &[String]) -> String {
    match values {
        [one] => regex_escape(one),
        _ => format!(
            "({})",
            values
                .iter()
                .map(|v| regex_escape(v))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// Grafana's built-in variables, for a 1 s scrape interval and a 1 h dashboard range.
fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "__rate_interval" => "15s",
        "__rate_interval_ms" => "15000",
        "__interval" => "1s",
        "__interval_ms" => "1000",
        "__range" => "1h",
        "__range_s" => "3600",
        "__range_ms" => "3600000",
        _ => return None,
    })
}

/// `expr` with every `$name`, `${name}` and `${name:regex}` replaced: dashboard variables from
/// `variables`, Grafana's built-ins from [`builtin`]. Anything else is an error (teach the test
/// the new variable rather than let a query run with a `$` in it).
fn substitute(expr: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    if expr.contains("[[") {
        return Err("uses the deprecated [[variable]] syntax".into());
    }
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, format, len) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| "an unclosed ${".to_owned())?;
            let (name, format) = match inner[..end].split_once(':') {
                Some((name, format)) => (name, Some(format)),
                None => (&inner[..end], None),
            };
            (name, format, end + 2)
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], None, len)
        };
        if name.is_empty() {
            // Grafana leaves a `$` that starts no variable name alone (a regex anchor).
            out.push('$');
            rest = after;
            continue;
        }
        if !matches!(format, None | Some("regex")) {
            return Err(format!(
                "${{{name}:{}}}: this test knows no variable format but regex",
                format.unwrap_or_default()
            ));
        }
        let value = match (variables.get(name), builtin(name)) {
            (Some(value), _) => value.as_str(),
            (None, Some(value)) => value,
            (None, None) => {
                return Err(format!(
                    "${name} is neither a variable of the dashboard nor a built-in this test knows"
                ))
            }
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How the filter variables are set for a run over a dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selection {
    /// "All" (the variable's allValue, `.*`).
    All,
    /// Every value the variable query returned, selected one by one: `(a|b|c)`.
    EveryValue,
}

/// The values of a template variable the demo must offer (subset), by variable name.
fn expected_values(name: &str) -> Option<BTreeSet<String>> {
    let values: Vec<String> = match name {
        "job" => vec![JOB.to_owned()],
        "tenant" => DEMO_TENANTS
            .iter()
            .map(|t| t.0.to_owned())
            .chain([THROTTLED_TENANT.to_owned()])
            .collect(),
        "product_type" => DEMO_SEEDS
            .iter()
            .flat_map(|&seed| demo_products(seed, SystemTime::now()).1)
            .map(|p| p.product_type)
            .collect(),
        "report" => DEMO_REPORTS.iter().map(|r| (*r).to_owned()).collect(),
        _ => return None,
    };
    Some(values.into_iter().collect())
}

/// Everything the checks found wrong, and how much they ran.
#[derive(Default)]
struct Findings {
    failures: Vec<String>,
    /// (what, how many queries) for the summary.
    counts: Vec<(String, usize)>,
}

/// The dashboard's `time.from` (`now-30d`) as a start for label queries, as Grafana sends it.
fn dashboard_start(dashboard: &Value) -> Option<String> {
    let from = dashboard["time"]["from"].as_str()?.strip_prefix("now-")?;
    let range = humantime::parse_duration(from).ok()?;
    let start = SystemTime::now().checked_sub(range)?;
    Some(start.duration_since(UNIX_EPOCH).ok()?.as_secs().to_string())
}

/// Resolves the dashboard's template variables in order (later ones may use earlier ones):
/// name -> what replaces it in expressions. Checks each variable query on the way.
async fn resolve_variables(
    prometheus: &Prometheus,
    d: &Dashboard,
    selection: Selection,
    findings: &mut Findings,
) -> (BTreeMap<String, String>, usize) {
    let start = dashboard_start(&d.json);
    let mut resolved = BTreeMap::new();
    let mut queries = 0;
    for variable in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = variable["name"].as_str().unwrap_or("").to_owned();
        let at = format!("{}: variable ${name} ({selection:?})", d.file);
        let values: Vec<String> = match variable["type"].as_str().unwrap_or("") {
            // Picks the datasource; never part of PromQL.
            "datasource" => continue,
            "constant" | "textbox" => vec![variable_query(variable)],
            "custom" => variable_query(variable)
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect(),
            "query" => {
                queries += 1;
                let query = variable_query(variable);
                if variable["regex"].as_str().is_some_and(|r| !r.is_empty()) {
                    findings.failures.push(format!(
                        "{at}: has a `regex` filter, which this test cannot apply yet: teach it"
                    ));
                }
                let substituted = match substitute(&query, &resolved) {
                    Ok(s) => s,
                    Err(e) => {
                        findings.failures.push(format!("{at}: {query:?}: {e}"));
                        continue;
                    }
                };
                let result = if let Some(args) = call_args(&substituted, "label_values") {
                    match split_last_argument(args) {
                        Some((selector, label)) => {
                            prometheus
                                .label_values(label, Some(selector), start.as_deref())
                                .await
                        }
                        None => {
                            prometheus
                                .label_values(args.trim(), None, start.as_deref())
                                .await
                        }
                    }
                } else if let Some(expr) = call_args(&substituted, "query_result") {
                    prometheus.query(expr).await.map(|data| {
                        data["result"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| s["metric"].to_string())
                            .collect()
                    })
                } else {
                    Err(
                        "this test runs label_values(...) and query_result(...) variable \
                         queries only: teach it this form"
                            .to_owned(),
                    )
                };
                match result {
                    Ok(values) => values,
                    Err(e) => {
                        findings
                            .failures
                            .push(format!("{at}: {query:?} (run as {substituted:?}): {e}"));
                        Vec::new()
                    }
                }
            }
            other => {
                findings.failures.push(format!(
                    "{at}: variable type {other:?} is unknown to this test: teach it"
                ));
                continue;
            }
        };
        if values.is_empty() {
            findings.failures.push(format!(
                "{at}: {:?} returned no values",
                variable_query(variable)
            ));
        }
        if let Some(expected) = expected_values(&name) {
            let got: BTreeSet<String> = values.iter().cloned().collect();
            let missing: Vec<&String> = expected.difference(&got).collect();
            if !missing.is_empty() {
                findings.failures.push(format!(
                    "{at}: {:?} lacks {missing:?} (got {got:?})",
                    variable_query(variable)
                ));
            }
        }
        let all_value = variable["allValue"].as_str().filter(|v| !v.is_empty());
        let replacement = match (selection, variable["includeAll"].as_bool(), all_value) {
            (Selection::All, Some(true), Some(all)) => all.to_owned(),
            _ if values.is_empty() => ".*".to_owned(),
            _ => regex_of(&values),
        };
        resolved.insert(name, replacement);
    }
    (resolved, queries)
}

/// Runs every panel target of `d` with the variables set per `selection`.
async fn check_dashboard(
    prometheus: &Prometheus,
    d: &Dashboard,
    selection: Selection,
    findings: &mut Findings,
) {
    let (variables, variable_queries) = resolve_variables(prometheus, d, selection, findings).await;
    let targets = panel_targets(&d.json);
    for (panel, ref_id, expr) in &targets {
        let at = format!(
            "{}: panel \"{panel}\" target {ref_id} ({selection:?})",
            d.file
        );
        let exemption = NO_DATA_EXPECTED
            .iter()
            .find(|(file, title, id, _)| *file == d.file && title == panel && id == ref_id);
        let substituted = match substitute(expr, &variables) {
            Ok(s) => s,
            Err(e) => {
                findings.failures.push(format!("{at}: {expr}: {e}"));
                continue;
            }
        };
        let expect_data = exemption.is_none();
        match prometheus
            .query_settled(&substituted, |data| has_data(data) == expect_data)
            .await
        {
            Err(e) => findings
                .failures
                .push(format!("{at}: {expr}\n    run as {substituted}\n    {e}")),
            Ok(data) => match (has_data(&data), exemption) {
                (false, None) => findings.failures.push(format!(
                    "{at}: no data: {expr}\n    run as {substituted}\n    (list it in \
                     NO_DATA_EXPECTED with the reason only if it cannot have data)"
                )),
                (true, Some((.., reason))) => findings.failures.push(format!(
                    "{at}: is exempt in NO_DATA_EXPECTED ({reason}) but has data now: remove \
                     the exemption\n    {expr}"
                )),
                _ => {}
            },
        }
    }
    for (file, title, ref_id, _) in NO_DATA_EXPECTED {
        if *file == d.file
            && !targets
                .iter()
                .any(|(panel, id, _)| panel == title && id == ref_id)
        {
            findings.failures.push(format!(
                "NO_DATA_EXPECTED names {file} panel \"{title}\" target {ref_id}, which does not exist"
            ));
        }
    }
    findings.counts.push((
        format!(
            "{} ({selection:?}): {variable_queries} variable queries, {} panel queries",
            d.file,
            targets.len()
        ),
        variable_queries + targets.len(),
    ));
}

// ------------------------------------------------------------------------------------------------
// Rules

/// Every rule Prometheus loaded: (group, type, name, query, health, lastError).
fn loaded_rules(data: &Value) -> Vec<[String; 6]> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| {
            group["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |rule| {
                    [
                        s(&group["name"]),
                        s(&rule["type"]),
                        s(&rule["name"]),
                        s(&rule["query"]),
                        s(&rule["health"]),
                        s(&rule["lastError"]),
                    ]
                })
        })
        .collect()
}

/// The labels a recording rule's level keeps besides `job` (`tenant_product_type_platform` ->
/// tenant, product_type, platform); `None` for a level that is no label list (the thresholds'
/// `office365_activations`).
fn level_labels(level: &str) -> Option<Vec<&'static str>> {
    const LABELS: [&str; 6] = [
        "tenant",
        "report",
        "product_type",
        "platform",
        "days",
        "computers",
    ];
    let mut labels = Vec::new();
    let mut rest = level;
    while !rest.is_empty() {
        let label = LABELS.into_iter().find(|label| {
            rest.strip_prefix(label)
                .is_some_and(|after| after.is_empty() || after.starts_with('_'))
        })?;
        labels.push(label);
        rest = rest[label.len()..].trim_start_matches('_');
    }
    Some(labels)
}

/// What a recording rule must cover: the labels of its level, and a query over the demo
/// exporter's (`demo`: its instance) raw series the rule derives from, whose combinations of
/// those labels must all have a series of the rule. `Ok(None)` for rules that only need some data
/// (the thresholds); `Err` for a rule this test does not know how to check (teach it).
fn rule_coverage(name: &str, demo: &str) -> Result<Option<(Vec<&'static str>, String)>, String> {
    let mut parts = name.split(':');
    let (level, metric, operation) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let Some(labels) = level_labels(level) else {
        return Ok(None);
    };
    let raw = |family: &str| format!("{family}{{job=\"{JOB}\",instance=\"{demo}\"}}");
    let week_ago =
        |family: &str| format!("{family}{{job=\"{JOB}\",instance=\"{demo}\"}} offset 7d");
    let source = match (metric, operation) {
        ("office365_activations_activation_ratio", None) => {
            format!("{} > 0", raw("office365_activations_assigned_users"))
        }
        ("office365_activations_not_activated_users", None) => {
            raw("office365_activations_assigned_users")
        }
        ("office365_activations_report_age_seconds", None) => format!(
            "{} > 0",
            raw("office365_activations_report_refresh_timestamp_seconds")
        ),
        (
            "office365_activations_install_limit_ratio"
            | "office365_activations_never_activated_ratio",
            None,
        ) => {
            format!("{} > 0", raw("office365_activations_detail_users"))
        }
        ("office365_activations_inactive_ratio", None) => format!(
            "{} and on (tenant, product_type) ({} > 0)",
            raw("office365_activations_users_inactive"),
            raw("office365_activations_detail_users")
        ),
        // changes against 7 days earlier: where the raw series has a value now and then ...
        (_, Some("delta7d")) => format!("{} and {}", raw(metric), week_ago(metric)),
        // ... a ratio only where it was above 0 then, but for the install limit, where 0 counts as 1
        ("office365_activations_users_at_install_limit", Some("change_ratio7d")) => {
            format!("{} and {}", raw(metric), week_ago(metric))
        }
        (_, Some("change_ratio7d")) => format!("{} and ({} > 0)", raw(metric), week_ago(metric)),
        (_, Some("max" | "sum")) => raw(metric),
        _ => {
            return Err(format!(
                "this test does not know which raw series {name} derives from: teach rule_coverage"
            ))
        }
    };
    Ok(Some((labels, source)))
}

/// The combinations of `labels` in a query's result.
fn label_combinations(data: &Value, labels: &[&str]) -> BTreeSet<Vec<String>> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| {
            labels
                .iter()
                .map(|label| series["metric"][*label].as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .collect()
}

/// What of the demo a rule's source lacks: a demo tenant (and, for a level with `report`, a
/// demo report of it) without any series. Empty when the source covers the whole demo.
fn demo_gaps(labels: &[&str], combinations: &BTreeSet<Vec<String>>) -> Vec<String> {
    let column = |label: &str| labels.iter().position(|l| *l == label);
    let Some(tenant) = column("tenant") else {
        return Vec::new();
    };
    let report = column("report");
    let mut gaps = Vec::new();
    for (demo_tenant, ..) in DEMO_TENANTS {
        let of_tenant: Vec<&Vec<String>> = combinations
            .iter()
            .filter(|c| c[tenant] == *demo_tenant)
            .collect();
        match report {
            None if of_tenant.is_empty() => gaps.push((*demo_tenant).to_owned()),
            Some(report) => {
                for demo_report in DEMO_REPORTS {
                    if !of_tenant.iter().any(|c| c[report] == *demo_report) {
                        gaps.push(format!("{demo_tenant}/{demo_report}"));
                    }
                }
            }
            None => {}
        }
    }
    gaps
}

/// Runs every recording rule's expression and reads back the series it recorded, checking both
/// against [`rule_coverage`]; runs every alert expression (errors only: quiet alerts have no
/// series). `demo` is the demo exporter's instance.
async fn check_rules(prometheus: &Prometheus, rules: &Value, demo: &str, findings: &mut Findings) {
    let (mut records, mut alerts, mut sources) = (0, 0, 0);
    for [group, kind, name, query, ..] in loaded_rules(rules) {
        let at = format!("rule group {group}: {kind} {name}");
        if kind == "alerting" {
            alerts += 1;
            if let Err(e) = prometheus.query(&query).await {
                findings
                    .failures
                    .push(format!("{at}: expression fails: {query}\n    {e}"));
            }
            continue;
        }
        records += 1;
        let expected = match rule_coverage(&name, demo) {
            Err(e) => {
                findings.failures.push(format!("{at}: {e}"));
                continue;
            }
            Ok(None) => None,
            Ok(Some((labels, source))) => {
                sources += 1;
                let complete = |data: &Value| {
                    demo_gaps(&labels, &label_combinations(data, &labels)).is_empty()
                };
                match prometheus.query_settled(&source, complete).await {
                    Err(e) => {
                        findings
                            .failures
                            .push(format!("{at}: its source fails: {source}\n    {e}"));
                        continue;
                    }
                    Ok(data) => {
                        let combinations = label_combinations(&data, &labels);
                        let gaps = demo_gaps(&labels, &combinations);
                        if !gaps.is_empty() {
                            findings.failures.push(format!(
                                "{at}: the demo's raw series have nothing for {gaps:?}: {source}"
                            ));
                        }
                        Some((labels, combinations))
                    }
                }
            }
        };
        for (what, expr) in [
            ("expression", query.clone()),
            ("recorded series", format!("{{__name__=\"{name}\"}}")),
        ] {
            let missing = |data: &Value| -> Vec<String> {
                match &expected {
                    Some((labels, combinations)) => combinations
                        .difference(&label_combinations(data, labels))
                        .map(|c| c.join("/"))
                        .collect(),
                    None if has_data(data) => Vec::new(),
                    None => vec!["any series".to_owned()],
                }
            };
            let data = match prometheus
                .query_settled(&expr, |data| missing(data).is_empty())
                .await
            {
                Ok(data) => data,
                Err(e) => {
                    findings
                        .failures
                        .push(format!("{at}: {what} fails: {expr}\n    {e}"));
                    continue;
                }
            };
            let missing = missing(&data);
            if !missing.is_empty() {
                findings.failures.push(format!(
                    "{at}: {what} has no data for {missing:?} ({} series): {expr}",
                    series_count(&data)
                ));
            }
        }
    }
    findings.counts.push((
        format!(
            "recording rules: {records} expressions + {records} recorded series + {sources} sources"
        ),
        2 * records + sources,
    ));
    findings
        .counts
        .push((format!("alert expressions: {alerts}"), alerts));
}

/// Every loaded rule healthy; every rule of the files loaded.
fn check_rule_health(rules: &Value, findings: &mut Findings) {
    let loaded = loaded_rules(rules);
    for [group, kind, name, _, health, last_error] in &loaded {
        if health != "ok" || !last_error.is_empty() {
            findings.failures.push(format!(
                "rule group {group}: {kind} {name}: health {health:?}, lastError {last_error:?}"
            ));
        }
    }
    let (alerts, records) = rule_names_in_files();
    let loaded_alerts: BTreeSet<&str> = loaded
        .iter()
        .filter(|r| r[1] == "alerting")
        .map(|r| r[2].as_str())
        .collect();
    let loaded_records: BTreeSet<&str> = loaded
        .iter()
        .filter(|r| r[1] == "recording")
        .map(|r| r[2].as_str())
        .collect();
    for alert in &alerts {
        if !loaded_alerts.contains(alert.as_str()) {
            findings
                .failures
                .push(format!("alert {alert} is in the rule files but not loaded"));
        }
    }
    for record in &records {
        if !loaded_records.contains(record.as_str()) {
            findings.failures.push(format!(
                "recording rule {record} is in the rule files but not loaded"
            ));
        }
    }
    assert!(
        !alerts.is_empty() && !records.is_empty(),
        "found no `alert:` or no `record:` in prometheus/rules/*.yml"
    );
}

/// `/api/v1/rules` once every group has evaluated at or after `since` and no rule is still
/// `unknown` (not yet evaluated).
async fn rules_evaluated_since(
    prometheus: &Prometheus,
    since: SystemTime,
) -> Result<Value, String> {
    let data = prometheus.get("/api/v1/rules", &[]).await?;
    let groups = data["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        return Err("no rule groups loaded yet".into());
    }
    for group in &groups {
        let name = group["name"].as_str().unwrap_or("?");
        let last = group["lastEvaluation"].as_str().unwrap_or("");
        let evaluated = chrono::DateTime::parse_from_rfc3339(last)
            .map_err(|e| format!("group {name}: lastEvaluation {last:?}: {e}"))?;
        if SystemTime::from(evaluated) < since {
            return Err(format!(
                "group {name} last evaluated at {last}, before the data"
            ));
        }
        for rule in group["rules"].as_array().into_iter().flatten() {
            if rule["health"] == "unknown" {
                return Err(format!("group {name}: {} not evaluated yet", rule["name"]));
            }
        }
    }
    Ok(data)
}

// ------------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_rule_has_data_in_a_real_prometheus() {
    let started = Instant::now();
    let promtool = require_tool("promtool");
    let dir = tempfile::tempdir().unwrap();

    let (_demo, demo_address) = start_demo_exporter(&[]).await;
    let (_fake, _throttled, throttled_address) = start_throttled_exporter(dir.path()).await;

    // History first: blocks must be in the data directory before Prometheus opens it.
    let data_dir = dir.path().join("data");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let snapshot = demo_snapshot(&demo_address).await;
    let (history, samples) = demo_history(&demo_address, now, &snapshot);
    backfill(&promtool, dir.path(), &data_dir, &history);

    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    for file in rule_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            rules_dir.join(file.file_name().unwrap()),
            with_fast_interval(&text),
        )
        .unwrap();
    }
    let server = start_prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules/*.yml\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      \
             - targets: ['{demo_address}', '{throttled_address}']\n"
        ),
    );
    let prometheus = Prometheus {
        base: server.base.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        log: server.log.clone(),
    };

    // Both targets up and scraped at least 5 times (so rates over $__rate_interval have samples).
    let scraped =
        format!("count_over_time(up{{job=\"{JOB}\"}}[1m]) >= 5 and up{{job=\"{JOB}\"}} == 1");
    let (p, scraped) = (&prometheus, scraped.as_str());
    wait_for(
        p,
        "both exporters to be scraped 5 times",
        move || async move {
            let data = p.query(scraped).await?;
            match series_count(&data) {
                2 => Ok(()),
                n => Err(format!("{n} of 2 targets so far: {data}")),
            }
        },
    )
    .await;
    // ... and every rule group evaluated since, so the recording rules saw the data.
    let data_since = SystemTime::now();
    wait_for(p, "every rule group to evaluate", move || {
        rules_evaluated_since(p, data_since)
    })
    .await;
    let ready = started.elapsed();

    let mut findings = Findings::default();
    // one family of each report's gauges, and the status series of every report
    for query in [
        "count(office365_activations_activated_users offset 7d)",
        "count(office365_activations_activated_devices offset 7d)",
        "count(office365_activations_users_at_install_limit offset 7d)",
        "count by (report) (office365_activations_report_refresh_timestamp_seconds offset 7d)",
    ] {
        let backfilled = prometheus.query(query).await;
        if !backfilled.as_ref().is_ok_and(has_data) {
            findings.failures.push(format!(
                "the backfilled history ({samples} samples) is not in Prometheus: {query}: \
                 {backfilled:?}"
            ));
        }
    }
    let reports = prometheus
        .query("count by (report) (office365_activations_up offset 7d)")
        .await
        .map(|data| label_set(&data, "report"));
    let want: BTreeSet<String> = DEMO_REPORTS.iter().map(|r| (*r).to_owned()).collect();
    if !reports.as_ref().is_ok_and(|got| got.is_superset(&want)) {
        findings.failures.push(format!(
            "the backfilled status series lack reports: want {want:?}, got {reports:?} (does the \
             demo enable every report?)"
        ));
    }
    for d in dashboards() {
        for selection in [Selection::All, Selection::EveryValue] {
            check_dashboard(&prometheus, &d, selection, &mut findings).await;
        }
    }
    let rules = prometheus.get("/api/v1/rules", &[]).await.unwrap();
    check_rules(&prometheus, &rules, &demo_address, &mut findings).await;
    // Health after the queries: more evaluations have run by now.
    let rules = prometheus.get("/api/v1/rules", &[]).await.unwrap();
    check_rule_health(&rules, &mut findings);

    let total: usize = findings.counts.iter().map(|(_, n)| n).sum();
    let summary = findings
        .counts
        .iter()
        .map(|(what, _)| format!("  {what}"))
        .collect::<Vec<_>>()
        .join("\n");
    println!(
        "backfilled {samples} samples; Prometheus ready after {ready:?}; ran {total} queries in \
         {:?} total:\n{summary}",
        started.elapsed()
    );
    assert!(
        findings.failures.is_empty(),
        "{} problem(s):\n{}\n\nqueries run:\n{summary}\n--- Prometheus log (tail) ---\n{}",
        findings.failures.len(),
        findings.failures.join("\n"),
        prometheus.log_tail()
    );
}

/// The helpers that decide what runs: a wrong substitution would test another query than
/// Grafana's.
#[test]
fn substitution_and_variable_helpers() {
    let variables = BTreeMap::from([
        ("job".to_owned(), ".*".to_owned()),
        (
            "tenant".to_owned(),
            regex_of(&["contoso".into(), "fab.rikam".into()]),
        ),
    ]);
    assert_eq!(
        substitute(
            r#"sum(rate(x{job=~"${job:regex}", tenant=~"$tenant"}[$__rate_interval])) * $__range_s"#,
            &variables
        )
        .unwrap(),
        r#"sum(rate(x{job=~".*", tenant=~"(contoso|fab\\.rikam)"}[15s])) * 3600"#
    );
    assert_eq!(
        substitute(r#"x{a=~"b$"} offset $__range"#, &variables).unwrap(),
        r#"x{a=~"b$"} offset 1h"#
    );
    assert!(substitute("x[$__from]", &variables)
        .unwrap_err()
        .contains("$__from"));
    assert!(substitute("x{a=~\"$product\"}", &variables).is_err());
    assert!(substitute("x{a=~\"${job:csv}\"}", &variables).is_err());
    assert_eq!(regex_of(&["A B".into()]), "A B");
    assert_eq!(
        call_args(r#"label_values(up{job=~"a,b"}, tenant)"#, "label_values")
            .and_then(split_last_argument),
        Some((r#"up{job=~"a,b"}"#, "tenant"))
    );
    assert_eq!(
        with_fast_interval("groups:\n  - name: g\n    interval: 1m\n    rules: []\n"),
        "groups:\n  - name: g\n    interval: 1s\n    rules: []\n"
    );
    let snapshot = parse_exposition(concat!(
        "# HELP office365_activations_up ...\n",
        "office365_activations_up{tenant=\"contoso\",report=\"user_counts\"} 1\n",
        "office365_activations_up{tenant=\"contoso\",report=\"user_detail\"} 1\n",
        "office365_activations_activated_devices{tenant=\"contoso\",product_type=\"VISIO \\\"2\\\"\",platform=\"mac\"} 7\n",
        "office365_activations_activated_devices{tenant=\"northwind\",product_type=\"X\",platform=\"mac\"} 1\n",
        "process_start_time_seconds 1.7e9 1795773600000\n",
    ))
    .unwrap();
    assert_eq!(snapshot.len(), 5);
    assert_eq!(snapshot[2].label("product_type"), Some("VISIO \"2\""));
    assert_eq!(snapshot[4].value, 1.7e9);
    assert!(parse_exposition("x{a=\"b} 1").is_err());
    let (history, samples) = demo_history("127.0.0.1:1", 1_795_773_600, &snapshot);
    assert!(history.ends_with("# EOF\n"));
    assert_eq!(
        history.lines().filter(|l| !l.starts_with('#')).count(),
        samples
    );
    // contoso's status series per report; fabrikam (no report in the snapshot) unlabelled; the
    // snapshot's device gauge of contoso, not northwind's
    assert!(history.contains("tenant=\"contoso\",report=\"user_detail\"}"));
    assert!(!history.contains("tenant=\"contoso\",report=\"activation_counts\"}"));
    assert!(history.contains("office365_activations_up{job=\"office365-activations\",instance=\"127.0.0.1:1\",tenant=\"fabrikam\"} 1 "));
    assert!(history.contains("office365_activations_activated_devices{job=\"office365-activations\",instance=\"127.0.0.1:1\",tenant=\"contoso\",product_type=\"VISIO \\\"2\\\"\",platform=\"mac\"} 7 "));
    assert!(!history.contains("northwind"));
    assert_eq!(
        level_labels("tenant_product_type_platform"),
        Some(vec!["tenant", "product_type", "platform"])
    );
    assert_eq!(
        level_labels("tenant_report"),
        Some(vec!["tenant", "report"])
    );
    assert_eq!(level_labels("office365_activations"), None);
    assert!(rule_coverage("tenant_product_type:office365_activations_frobs", "d").is_err());
    assert_eq!(
        rule_coverage("office365_activations:alert_threshold:drop_fraction", "d"),
        Ok(None)
    );
    assert_eq!(
        demo_gaps(
            &["tenant", "report"],
            &BTreeSet::from([vec!["contoso".to_owned(), "user_counts".to_owned()]])
        )
        .len(),
        2 * DEMO_REPORTS.len() - 1
    );
}
