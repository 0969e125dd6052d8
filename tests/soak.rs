//! The soak test (issue 12): many tenants over simulated days on paused tokio time, scraped
//! every 30 s by two Prometheus scrapers (an HA pair), while faults are injected at random per
//! tenant, report and stage, data changes, secrets rotate and reloads add, remove and change
//! tenants. The invariants are checked at every scrape, not only at the end:
//!
//! - per tenant and report API, never more than [`REPORT_BUDGET`] report requests in any
//!   10-minute window (from the fake's `request_times`), Graph's own throttle never trips, and
//!   no report request before a Retry-After (seconds, fractional seconds, HTTP date) has passed;
//!   per tenant, no token request before the token endpoint's Retry-After has passed (whichever
//!   report asks);
//! - the last good values are served whenever a good report was ever fetched, and equal what the
//!   fake served at its latest successful download (the data carry a version the test changes);
//! - `up` and the last-success timestamp agree with what the fake actually served;
//! - no `Authorization` header reaches the download host; no secret, token or link in the logs;
//! - every scrape answers within its deadline (paused time);
//! - removed tenants leave no series and no state; once every tenant is removed and the
//!   connections have been idle past the pool's timeout, the task count is back to what it was
//!   before the first tenant (no refresh, connection or timer task left); after the run the
//!   tenant state is freed and the task count is back to its baseline.
//!
//! Deterministic: one seed (`SOAK_SEED`, else fixed) drives the fault plan and the exporter's own
//! jitter (`fastrand::seed` on the test's thread); it is printed at the start and in every
//! failure. The bounded form runs in CI (100 tenants over 12 simulated hours: 2,880 scrapes of a
//! 380 KiB body, under a minute in an idle debug build); the long form (`SOAK_TENANTS`, `SOAK_DAYS`, default
//! 1,000 tenants over 7 days) is ignored by default:
//! `cargo test --release --test soak -- --ignored --nocapture`.
//!
//! How the clock moves: scrapes are spawned at their paused instants and the test waits (in wall
//! time) for them. A scrape that answers at the very instant it started waited on no refresh
//! that was still running: every refresh has ended, so the test is at a quiescent point, where
//! it reads the fake's statistics, checks strictly, and injects the next faults. Only while a
//! scripted stall is known to hold a refresh does the test move the clock in 1 s ticks under a
//! waiting scrape, so the scrape's deadline is what answers it.

// The model indexes parallel arrays (reports, tenants, views) by position.
#![allow(clippy::needless_range_loop)]

mod common;

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::*;
use office365_activations_exporter::config::{ReportConfig, TenantConfig};
use office365_activations_exporter::credentials::client_secret::SecretSource;
use office365_activations_exporter::credentials::{CredentialConfig, Secret};
use office365_activations_exporter::fake_graph::{
    derived_activation_counts, derived_users, Canned, FakeGraph, FakeGraphOptions, FakeProduct,
    FakeReport, FakeStats, FakeTenant, ReportData,
};
use office365_activations_exporter::reports::{activation_counts, user_counts, user_detail};
use office365_activations_exporter::tenant::{Tenant, REPORT_BUDGET, REPORT_WINDOW};
use reqwest::Url;
use tokio::time::{advance, Instant};

/// The reports, in configuration order.
const REPORTS: [FakeReport; 3] = [
    FakeReport::UserCounts,
    FakeReport::ActivationCounts,
    FakeReport::UserDetail,
];
/// Their `report` label values.
const REPORT_NAMES: [&str; 3] = ["user_counts", "activation_counts", "user_detail"];
/// Their kinds, for the configuration.
fn kind(r: usize) -> ReportKind {
    [
        &user_counts::KIND,
        &activation_counts::KIND,
        &user_detail::KIND,
    ][r]
}

/// Each scraper scrapes this often.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(30);
/// The second scraper of the HA pair runs this far behind the first: it sometimes arrives while
/// the first one still waits on a refresh.
const SECOND_SCRAPER_OFFSET: Duration = Duration::from_secs(7);
/// Prometheus's scrape timeout, sent as X-Prometheus-Scrape-Timeout-Seconds.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// A stall holds the answer this long: past the exporter's 60 s request timeout.
const STALL: Duration = Duration::from_secs(120);
/// A consumed stall is over (timed out, failed, its slot freed) well within this.
const STALL_SPAN: Duration = Duration::from_secs(200);
/// The second product of every tenant, constant.
const PROJECT: &str = "PROJECT ONLINE DESKTOP CLIENT";
const ENTERPRISE: &str = "MICROSOFT 365 APPS FOR ENTERPRISE";

/// A scrape in flight: when it started, and its status and body.
type ScrapeInFlight = Option<(Instant, tokio::task::JoinHandle<(u16, String)>)>;

/// What one run does.
#[derive(Clone, Debug)]
struct Plan {
    seed: u64,
    tenants: usize,
    /// Simulated hours.
    hours: u64,
    ttl: Duration,
    concurrency: usize,
    /// Every tenant's statistics are read at least this often (besides after its refreshes).
    sweep: Duration,
    /// A reload adds, removes and changes tenants this often.
    reload_every: Duration,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Plan {
    /// SOAK_SEED, SOAK_TENANTS, SOAK_DAYS (or SOAK_HOURS) over these defaults.
    fn from_env(tenants: usize, days: u64) -> Plan {
        Plan {
            seed: env_u64("SOAK_SEED").unwrap_or(0x50a4_2026),
            tenants: env_u64("SOAK_TENANTS").map_or(tenants, |n| n as usize),
            hours: env_u64("SOAK_HOURS")
                .or_else(|| env_u64("SOAK_DAYS").map(|d| d * 24))
                .unwrap_or(days * 24),
            ttl: Duration::from_secs(3600),
            concurrency: 8,
            sweep: REPORT_WINDOW,
            reload_every: Duration::from_secs(90 * 60),
        }
    }
}

/// Panics with the seed and the simulated time, so a failure can be replayed.
macro_rules! check {
    ($ctx:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            panic!("[soak seed={} t={}s] {}", $ctx.seed, $ctx.elapsed_secs(), format!($($arg)+));
        }
    };
}

/// The data version `v` of a tenant: the products its fake serves.
fn products(v: u64) -> Vec<FakeProduct> {
    vec![
        FakeProduct::new(ENTERPRISE, 100 + v % 199, 10 + v % 89, v % 7),
        FakeProduct::new(PROJECT, 20, 5, 0),
    ]
}

/// What the exporter must serve for report `r` at data version `v`, as one number: user counts
/// `assigned * 100000 + activated` (summed over products), activation counts the devices summed
/// over products and platforms, user detail the users summed over products.
fn signature(r: usize, v: u64) -> u64 {
    /// The signatures of the first versions, computed once (the user detail's costs a list of
    /// users).
    static TABLE: std::sync::OnceLock<Vec<[u64; 3]>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..4096)
            .map(|v| std::array::from_fn(|r| compute_signature(r, v)))
            .collect()
    });
    match table.get(v as usize) {
        Some(signatures) => signatures[r],
        None => compute_signature(r, v),
    }
}

fn compute_signature(r: usize, v: u64) -> u64 {
    let p = products(v);
    match r {
        0 => {
            p.iter().map(|p| p.assigned).sum::<u64>() * 100_000
                + p.iter().map(|p| p.activated).sum::<u64>()
        }
        1 => derived_activation_counts(&p)
            .iter()
            .map(|c| c.windows + c.mac + c.android + c.ios + c.windows10_mobile)
            .sum(),
        _ => derived_users(date(), &p)
            .iter()
            .map(|u| u.products.len() as u64)
            .sum(),
    }
}

/// The fault kinds, for the tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Throttled429Seconds,
    Throttled429Fraction,
    Throttled429Date,
    Unavailable503RetryAfter,
    Unavailable503,
    Other5xx,
    ConnectionRefused,
    ReportHtml,
    ExpiredLink,
    CorruptGzip,
    DownloadHtml,
    ResetMidBody,
    Download5xx,
    TokenOutage,
    Token429,
    RevokedToken,
    StallToken,
    StallReport,
    StallDownload,
    SecretRotated,
    DataChanged,
    ReloadAdd,
    ReloadRemove,
    ReloadChangeTtl,
    ReloadChangeReports,
    ReloadChangeCredential,
}

/// What the fake has answered of one tenant, as far as the test has read it.
#[derive(Default)]
struct Seen {
    token: u64,
    report: [u64; 3],
    download: [u64; 3],
    /// Request times already checked against the budget.
    times_checked: [usize; 3],
}

/// Canned answers queued on the fake and not consumed yet (the queues are first in, first out
/// and override everything, so the next requests take them).
#[derive(Default)]
struct Pending {
    /// Per canned token answer, the wait its Retry-After imposes on the token endpoint.
    token: VecDeque<Option<Duration>>,
    /// Per report: each canned report answer with the wait its Retry-After imposes.
    report: [VecDeque<Queued>; 3],
    download: [u64; 3],
}

/// One canned report answer waiting in the fake's queue.
struct Queued {
    kind: FaultKind,
    /// The wait its Retry-After imposes, counted from the request that takes it.
    wait: Option<Duration>,
    /// For an HTTP date: when it was written (wall time). The date is fixed, so the wait left
    /// when a request takes it is shorter by the wall time spent queued.
    written: Option<std::time::Instant>,
}

/// A Retry-After to honour: no report request before `at + wait` after request `index`.
struct RetryAfterCheck {
    index: usize,
    at: Instant,
    wait: Duration,
    kind: FaultKind,
}

#[derive(Default)]
struct ReportModel {
    enabled: bool,
    /// The signature of the last good report the exporter must serve.
    last_good: Option<u64>,
    /// Whether the latest refresh succeeded, when the test can tell.
    up: Option<bool>,
    /// `refreshes_total` at the last quiescent point.
    refreshes: u64,
    /// The last-success timestamp at the last quiescent point.
    last_success: Option<f64>,
    retry_after: Vec<RetryAfterCheck>,
    /// Last time the report was switched on or off by a reload.
    toggled_at: Option<Instant>,
}

struct TenantModel {
    name: String,
    tenant_id: String,
    client_id: String,
    secret: String,
    /// Its secret file, whether or not the configuration reads it now.
    file: PathBuf,
    use_file: bool,
    configured: bool,
    removed_at: Option<Instant>,
    version: u64,
    ttl: Duration,
    reports: [ReportModel; 3],
    seen: Seen,
    pending: Pending,
    rotations: u32,
    /// Retry-Afters of the token endpoint to honour: no token request before they pass.
    token_retry_after: Vec<RetryAfterCheck>,
}

/// The stall in progress (at most one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StallAt {
    Token,
    Report(usize),
    Download(usize),
}

struct Stall {
    tenant: usize,
    at: StallAt,
    /// The request count at the endpoint when queued.
    base: u64,
    consumed_at: Option<Instant>,
}

/// One tenant as a scrape shows it.
#[derive(Clone, Default)]
struct View {
    present: bool,
    assigned: Option<u64>,
    activated: Option<u64>,
    devices: Option<u64>,
    detail: Option<u64>,
    up: [Option<f64>; 3],
    last_success: [Option<f64>; 3],
    refreshes: [Option<f64>; 3],
}

impl View {
    fn signature(&self, r: usize) -> Option<u64> {
        match r {
            0 => Some(self.assigned? * 100_000 + self.activated?),
            1 => self.devices,
            _ => self.detail,
        }
    }
}

/// The value of a label; `needle` is `name="`.
fn label<'a>(labels: &'a str, needle: &str) -> Option<&'a str> {
    let start = labels.find(needle)? + needle.len();
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Reads what the checks need from an exposition, one pass; `all`: every tenant series counts
/// for [`View::present`], not only those the checks read.
fn parse_views(text: &str, tenants: usize, all: bool) -> Vec<View> {
    let mut views = vec![View::default(); tenants];
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // Only the families the checks read (every line of a tenant when `all`).
        let Some(rest) = line.strip_prefix("office365_activations_") else {
            continue;
        };
        if !all
            && ![
                "assigned_users{",
                "activated_users{",
                "activated_devices{",
                "detail_users{",
                "up{",
                "last_refresh_success_timestamp_seconds{",
                "refreshes_total{",
            ]
            .iter()
            .any(|f| rest.starts_with(f))
        {
            continue;
        }
        let Some(brace) = line.find('{') else {
            continue;
        };
        let Some(close) = line.rfind('}') else {
            continue;
        };
        let family = &line[..brace];
        let labels = &line[brace + 1..close];
        let Some(tenant) = label(labels, "tenant=\"") else {
            continue;
        };
        let Some(i) = tenant
            .strip_prefix('t')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < tenants)
        else {
            continue;
        };
        let value: f64 = line[close + 1..].trim().parse().unwrap_or(f64::NAN);
        let view = &mut views[i];
        view.present = true;
        let add = |slot: &mut Option<u64>| *slot = Some(slot.unwrap_or(0) + value as u64);
        let report =
            || label(labels, "report=\"").and_then(|r| REPORT_NAMES.iter().position(|n| *n == r));
        match family {
            "office365_activations_assigned_users" => add(&mut view.assigned),
            "office365_activations_activated_users" => add(&mut view.activated),
            "office365_activations_activated_devices" => add(&mut view.devices),
            "office365_activations_detail_users" => add(&mut view.detail),
            "office365_activations_up" => {
                if let Some(r) = report() {
                    view.up[r] = Some(value);
                }
            }
            "office365_activations_last_refresh_success_timestamp_seconds" => {
                if let Some(r) = report() {
                    view.last_success[r] = Some(value);
                }
            }
            "office365_activations_refreshes_total" => {
                if let Some(r) = report() {
                    view.refreshes[r] = Some(value);
                }
            }
            _ => {}
        }
    }
    views
}

/// A `Write` into the shared log buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts the bytes allocated and not yet freed, so that what the exporter keeps can be told
/// from what the allocator keeps (RSS does not go back down) and from the fake's history.
struct CountingAllocator;

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { std::alloc::System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        q
    }
}

/// Bytes allocated and not freed, by every thread of this process.
fn live_heap() -> usize {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The exporter's latest error of one report of a tenant, for failure messages.
fn exporter_error(h: &Harness, tenant: &str, report: &str) -> String {
    h.exporter
        .tenants()
        .iter()
        .find(|t| t.name() == tenant)
        .and_then(|t| t.status().into_iter().find(|s| s.kind.name == report))
        .and_then(|s| s.last_error)
        .unwrap_or_else(|| "none".to_owned())
}

/// Fails the run, naming the seed and the simulated time.
fn die(seed: u64, elapsed: u64, msg: String) -> ! {
    panic!("[soak seed={seed} t={elapsed}s] {msg}")
}

fn graph_error(status: u16, code: &str) -> Canned {
    Canned::graph_error(status, code, "Soak test fault.")
}

/// The whole run's state.
struct Soak {
    seed: u64,
    plan: Plan,
    rng: fastrand::Rng,
    h: Harness,
    scraper: reqwest::Client,
    start: Instant,
    tenants: Vec<TenantModel>,
    /// Holds the secret files.
    _dir: tempfile::TempDir,
    stall: Option<Stall>,
    /// The quiescent point events were last injected at.
    injected_at: Instant,
    last_sweep: Instant,
    last_reload: Instant,
    faults: std::collections::BTreeMap<FaultKind, u64>,
    /// Every secret ever used: none may show in the logs.
    secrets: Vec<String>,
    /// Tenants removed by reloads: their state must be freed.
    removed: Vec<(String, Weak<Tenant>)>,
    scrapes: u64,
    quiescent: u64,
    slowest_scrape: Duration,
    successes: u64,
    failures: u64,
    ticks: u64,
    unexpected_waits: u64,
    max_in_window: usize,
    /// What the exporter logs, scanned and emptied at every sweep.
    log: Arc<Mutex<Vec<u8>>>,
    log_lines: u64,
    /// Wall time spent waiting for scrapes, reading them, checking, injecting, advancing.
    prof: [Duration; 5],
    /// Size of the latest /metrics body.
    body_bytes: usize,
}

impl Soak {
    fn elapsed_secs(&self) -> u64 {
        Instant::now().duration_since(self.start).as_secs()
    }

    fn tally(&mut self, kind: FaultKind) {
        *self.faults.entry(kind).or_default() += 1;
    }

    fn config(&self, i: usize) -> TenantConfig {
        let t = &self.tenants[i];
        let credential = if t.use_file {
            SecretSource::File(t.file.clone())
        } else {
            SecretSource::Value(Secret::new(&t.secret))
        };
        TenantConfig {
            name: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            client_id: t.client_id.clone(),
            credential: CredentialConfig::ClientSecret(credential),
            authority_host: Url::parse(&self.h.fake.authority_host()).unwrap(),
            graph_endpoint: Url::parse(&self.h.fake.graph_endpoint()).unwrap(),
            api_version: "v1.0".into(),
            report_format: Default::default(),
            scope: format!("{}/.default", self.h.fake.graph_endpoint()),
            cache_ttl: t.ttl,
            reports: (0..3)
                .filter(|r| t.reports[*r].enabled)
                .map(|r| ReportConfig {
                    kind: kind(r),
                    cache_ttl: t.ttl,
                    max_size: 8 << 20,
                })
                .collect(),
        }
    }

    fn configs(&self) -> Vec<TenantConfig> {
        (0..self.tenants.len())
            .filter(|i| self.tenants[*i].configured)
            .map(|i| self.config(i))
            .collect()
    }

    /// The request count at a stall's endpoint.
    fn stall_count(stats: &FakeStats, at: StallAt) -> u64 {
        match at {
            StallAt::Token => stats.token_requests,
            StallAt::Report(r) => stats.report(REPORTS[r]).report_requests,
            StallAt::Download(r) => stats.report(REPORTS[r]).download_requests,
        }
    }

    /// A scripted stall holds a refresh now (or may, any moment).
    fn stall_active(&mut self) -> bool {
        let now = Instant::now();
        let Some(stall) = &mut self.stall else {
            return false;
        };
        if stall.consumed_at.is_none() {
            let stats = self.h.fake.stats(&self.tenants[stall.tenant].tenant_id);
            if Self::stall_count(&stats, stall.at) > stall.base {
                stall.consumed_at = Some(now);
            }
        }
        stall.consumed_at.is_some()
    }

    async fn run(&mut self) {
        let end = self.start + Duration::from_secs(self.plan.hours * 3600);
        let mut next = [self.start, self.start + SECOND_SCRAPER_OFFSET];
        let mut inflight: [ScrapeInFlight; 2] = [None, None];
        let mut warm_rss = None;
        let mut peak_rss = 0;
        let mut last_hour = 0;
        loop {
            let now = Instant::now();
            for s in 0..2 {
                if next[s] <= now && now < end {
                    check!(
                        self,
                        inflight[s].is_none(),
                        "scraper {s}: the previous scrape is still waiting at its next interval"
                    );
                    let request = self.scraper.get(format!("{}/metrics", self.h.base)).header(
                        "X-Prometheus-Scrape-Timeout-Seconds",
                        SCRAPE_TIMEOUT.as_secs().to_string(),
                    );
                    inflight[s] = Some((
                        now,
                        tokio::spawn(async move {
                            let response = request.send().await.expect("the exporter answers");
                            let status = response.status().as_u16();
                            // Bytes, not text(): no charset decoding of a 400 KiB body in a debug build.
                            let body = response.bytes().await.unwrap_or_default();
                            (status, String::from_utf8(body.to_vec()).unwrap_or_default())
                        }),
                    ));
                    next[s] += SCRAPE_INTERVAL;
                }
            }
            let w = std::time::Instant::now();
            self.wait_for(&inflight).await;
            self.prof[0] += w.elapsed();
            for s in 0..2 {
                if !inflight[s].as_ref().is_some_and(|(_, h)| h.is_finished()) {
                    continue;
                }
                let (started, handle) = inflight[s].take().unwrap();
                let (status, body) = handle.await.expect("the scrape task");
                let took = now.duration_since(started);
                self.scrapes += 1;
                self.slowest_scrape = self.slowest_scrape.max(took);
                check!(self, status == 200, "scraper {s}: status {status}");
                check!(
                    self,
                    took <= SCRAPE_TIMEOUT,
                    "scraper {s}: answered after {took:?}, past its {SCRAPE_TIMEOUT:?} deadline"
                );
                let w = std::time::Instant::now();
                self.body_bytes = body.len();
                // Every 10 simulated minutes, all of a removed tenant's series must be gone.
                let all = self.scrapes % 40 == 0;
                let views = parse_views(&body, self.tenants.len(), all);
                self.check_scrape(&views);
                self.prof[1] += w.elapsed();
                let others_waiting = inflight.iter().any(Option::is_some);
                if took.is_zero() && !others_waiting {
                    self.quiescent += 1;
                    let w = std::time::Instant::now();
                    self.checkpoint(&views);
                    self.prof[2] += w.elapsed();
                    if warm_rss.is_none() && self.elapsed_secs() >= 3600 {
                        warm_rss = Some(rss());
                    }
                    let hour = self.elapsed_secs() / 3600;
                    if hour != last_hour {
                        last_hour = hour;
                        peak_rss = peak_rss.max(rss());
                    }
                    let w = std::time::Instant::now();
                    self.inject();
                    self.prof[3] += w.elapsed();
                }
            }
            if now >= end && inflight.iter().all(Option::is_none) {
                break;
            }
            let mut target = next[0].min(next[1]);
            if inflight.iter().any(Option::is_some) {
                target = target.min(now + Duration::from_secs(1));
                self.ticks += 1;
            }
            if target > now {
                let w = std::time::Instant::now();
                advance(target - now).await;
                self.prof[4] += w.elapsed();
            }
        }
        let [wait, parse, checkpoint, inject, advance] = self.prof.map(|d| d.as_secs_f64());
        eprintln!(
            "[soak seed={}] wall time: waiting for scrapes {wait:.1} s, reading them {parse:.1} s, quiescent checks {checkpoint:.1} s, injecting {inject:.1} s, moving the clock {advance:.1} s; last body {} KiB",
            self.seed,
            self.body_bytes >> 10
        );
        eprintln!(
            "[soak seed={}] rss: warm {} MiB, peak {} MiB",
            self.seed,
            warm_rss.unwrap_or(0) >> 20,
            peak_rss >> 20
        );
    }

    /// Waits (wall time) until the scrapes in flight answer; while a scripted stall holds a
    /// refresh, only briefly, so the caller moves the clock to the scrape's deadline.
    async fn wait_for(&mut self, inflight: &[ScrapeInFlight; 2]) {
        let done = || {
            inflight
                .iter()
                .all(|s| s.as_ref().is_none_or(|(_, h)| h.is_finished()))
        };
        let started = std::time::Instant::now();
        let mut turns = 0u64;
        let mut last_poll = started;
        let mut stalled = self.stall_active();
        while !done() {
            tokio::task::yield_now().await;
            turns += 1;
            let waited = started.elapsed();
            if stalled && turns > 200 && waited > Duration::from_millis(5) {
                return;
            }
            if !stalled && last_poll.elapsed() > Duration::from_millis(2) {
                last_poll = std::time::Instant::now();
                stalled = self.stall_active();
            }
            if waited > Duration::from_secs(20) {
                // Something waits on the clock that the test did not script: move it on, count.
                self.unexpected_waits += 1;
                return;
            }
        }
    }

    /// At every scrape: nothing invented, nothing lost, removed tenants gone.
    fn check_scrape(&mut self, views: &[View]) {
        for (i, view) in views.iter().enumerate() {
            let t = &self.tenants[i];
            if !t.configured {
                check!(
                    self,
                    !view.present,
                    "{}: removed by a reload, yet still exported",
                    t.name
                );
                continue;
            }
            for r in 0..3 {
                let m = &t.reports[r];
                let served = view.signature(r);
                if !m.enabled {
                    if r > 0 {
                        check!(
                            self,
                            served.is_none() && view.up[r].is_none(),
                            "{} {}: disabled, yet exported",
                            t.name,
                            REPORT_NAMES[r]
                        );
                    }
                    continue;
                }
                let current = signature(r, t.version);
                match (m.last_good, served) {
                    (Some(good), Some(s)) => check!(
                        self,
                        s == good || s == current,
                        "{} {}: serves {s}, neither the last good {good} nor the fake's current {current}",
                        t.name,
                        REPORT_NAMES[r]
                    ),
                    (Some(good), None) => check!(
                        self,
                        false,
                        "{} {}: the last good report ({good}) is no longer served",
                        t.name,
                        REPORT_NAMES[r]
                    ),
                    (None, Some(s)) => check!(
                        self,
                        s == current,
                        "{} {}: serves {s}, the fake serves {current}",
                        t.name,
                        REPORT_NAMES[r]
                    ),
                    (None, None) => {}
                }
                check!(
                    self,
                    matches!(view.up[r], Some(u) if u == 0.0 || u == 1.0),
                    "{} {}: up is {:?}",
                    t.name,
                    REPORT_NAMES[r],
                    view.up[r]
                );
            }
        }
    }

    /// At a quiescent point: read the fake's statistics of every tenant that refreshed since
    /// the last one (and of all of them every 10 simulated minutes), account for the canned
    /// answers taken, and check budget, Retry-After, values, `up` and the last success.
    fn checkpoint(&mut self, views: &[View]) {
        let now = Instant::now();
        let sweep = now.duration_since(self.last_sweep) >= self.plan.sweep;
        if sweep {
            self.last_sweep = now;
            self.scan_log();
        }
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for i in 0..self.tenants.len() {
            let view = &views[i];
            let t = &self.tenants[i];
            let refreshes: [u64; 3] =
                std::array::from_fn(|r| view.refreshes[r].unwrap_or(0.0) as u64);
            let active = t.configured
                && (0..3).any(|r| t.reports[r].enabled && refreshes[r] != t.reports[r].refreshes);
            if !(active || sweep) {
                continue;
            }
            let stats = self.h.fake.stats(&t.tenant_id);
            self.account(i, &stats, view, refreshes, wall_now);
        }
    }

    fn account(
        &mut self,
        i: usize,
        stats: &FakeStats,
        view: &View,
        refreshes: [u64; 3],
        wall_now: f64,
    ) {
        let seed = self.seed;
        let elapsed = self.elapsed_secs();
        let fail = |msg: String| die(seed, elapsed, msg);
        let (mut max_in_window, mut successes, mut failures) = (self.max_in_window, 0, 0);
        let t = &mut self.tenants[i];
        let name = t.name.clone();
        if !stats.download_authorization_headers.is_empty() {
            fail(format!(
                "{}: {} Authorization header(s) reached the download host",
                name,
                stats.download_authorization_headers.len()
            ));
        }
        let seen_tokens = t.seen.token as usize;
        let new_tokens = stats.token_requests as usize - seen_tokens;
        for k in 0..new_tokens.min(t.pending.token.len()) {
            if let Some(wait) = t.pending.token.pop_front().unwrap() {
                t.token_retry_after.push(RetryAfterCheck {
                    index: seen_tokens + k,
                    at: stats.token_request_times[seen_tokens + k],
                    wait,
                    kind: FaultKind::Token429,
                });
            }
        }
        t.seen.token = stats.token_requests;
        let token_times = &stats.token_request_times;
        t.token_retry_after
            .retain(|c| match token_times.get(c.index + 1) {
                None => true,
                Some(next) => {
                    if *next < c.at + c.wait {
                        fail(format!(
                            "{name}: token request {:?} after a {:?} with a Retry-After of {:?}",
                            next.duration_since(c.at),
                            c.kind,
                            c.wait
                        ));
                    }
                    false
                }
            });
        for r in 0..3 {
            let rs = stats.report(REPORTS[r]);
            if rs.throttled_requests > 0 {
                fail(format!(
                    "{} {}: Graph's own throttle answered {} request(s) 429",
                    name, REPORT_NAMES[r], rs.throttled_requests
                ));
            }
            let seen = t.seen.report[r] as usize;
            let new = rs.report_requests as usize - seen;
            let taken = new.min(t.pending.report[r].len());
            for k in 0..taken {
                let queued = t.pending.report[r].pop_front().unwrap();
                if let Some(mut wait) = queued.wait {
                    if let Some(written) = queued.written {
                        wait = wait.saturating_sub(written.elapsed());
                    }
                    t.reports[r].retry_after.push(RetryAfterCheck {
                        index: seen + k,
                        at: rs.request_times[seen + k],
                        wait,
                        kind: queued.kind,
                    });
                }
            }
            t.seen.report[r] = rs.report_requests;
            let times = &rs.request_times;
            t.reports[r]
                .retry_after
                .retain(|c| match times.get(c.index + 1) {
                    None => true,
                    Some(next) => {
                        if *next < c.at + c.wait {
                            fail(format!(
                            "{} {}: report request {:?} after a {:?} with a Retry-After of {:?}",
                            name,
                            REPORT_NAMES[r],
                            next.duration_since(c.at),
                            c.kind,
                            c.wait
                        ));
                        }
                        false
                    }
                });
            for j in t.seen.times_checked[r]..times.len() {
                let lo = times.partition_point(|s| *s + REPORT_WINDOW <= times[j]);
                let in_window = j + 1 - lo;
                max_in_window = max_in_window.max(in_window);
                if in_window > REPORT_BUDGET {
                    fail(format!(
                        "{} {}: {in_window} report requests in the 10 minutes up to request {j} (budget {REPORT_BUDGET})",
                        name, REPORT_NAMES[r]
                    ));
                }
            }
            t.seen.times_checked[r] = times.len();
            let downloads = rs.download_requests - t.seen.download[r];
            let canned = downloads.min(t.pending.download[r]);
            t.pending.download[r] -= canned;
            t.seen.download[r] = rs.download_requests;
            let good = downloads - canned;
            let m = &mut t.reports[r];
            if !m.enabled || !t.configured {
                if good > 0 {
                    fail(format!(
                        "{} {}: downloaded while not configured",
                        name, REPORT_NAMES[r]
                    ));
                }
                continue;
            }
            let attempts = refreshes[r] - m.refreshes;
            if good > 0 && attempts == 0 {
                fail(format!(
                    "{} {}: {good} download(s) without a refresh",
                    name, REPORT_NAMES[r]
                ));
            }
            if good > 0 {
                m.last_good = Some(signature(r, t.version));
                successes += 1;
            }
            if attempts > 0 && good == 0 {
                failures += 1;
            }
            match attempts {
                0 => {}
                1 => m.up = Some(good > 0),
                _ => m.up = if good == 0 { Some(false) } else { None },
            }
            m.refreshes = refreshes[r];
            let served = view.signature(r);
            if served != m.last_good {
                fail(format!(
                    "{} {}: serves {served:?}, the fake's latest good download was {:?} (the exporter's last error: {})",
                    name, REPORT_NAMES[r], m.last_good, exporter_error(&self.h, &name, REPORT_NAMES[r])
                ));
            }
            if let Some(up) = m.up {
                if view.up[r] != Some(f64::from(u8::from(up))) {
                    fail(format!(
                        "{} {}: up is {:?}, the fake's answers say {up} ({good} good download(s) in {attempts} refresh(es); the exporter's last error: {})",
                        name, REPORT_NAMES[r], view.up[r], exporter_error(&self.h, &name, REPORT_NAMES[r])
                    ));
                }
            }
            let success = view.last_success[r];
            match (m.last_good, success) {
                (None, None) => {}
                (None, Some(s)) => fail(format!(
                    "{} {}: a last success at {s} but no good download",
                    name, REPORT_NAMES[r]
                )),
                (Some(_), None) => fail(format!(
                    "{} {}: served, but no last-success timestamp",
                    name, REPORT_NAMES[r]
                )),
                (Some(_), Some(s)) => {
                    let moved = m.last_success != Some(s);
                    if moved != (good > 0) {
                        fail(format!(
                            "{} {}: last success {:?} -> {s} while the fake served {good} good download(s)",
                            name, REPORT_NAMES[r], m.last_success
                        ));
                    }
                    if s > wall_now + 1.0 || m.last_success.is_some_and(|p| s < p) {
                        fail(format!(
                            "{} {}: last success {s} goes back or into the future (now {wall_now})",
                            name, REPORT_NAMES[r]
                        ));
                    }
                }
            }
            m.last_success = success;
        }
        self.max_in_window = max_in_window;
        self.successes += successes;
        self.failures += failures;
    }

    /// Reads the logs written since the last scan: no secret, bearer token or download link.
    fn scan_log(&mut self) {
        let bytes = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        let log = String::from_utf8_lossy(&bytes);
        self.log_lines += log.lines().count() as u64;
        for secret in &self.secrets {
            check!(
                self,
                !log.contains(secret.as_str()),
                "a client secret is in the logs"
            );
        }
        for needle in [
            "Bearer ",
            "sig=",
            "access_token",
            "soaksignature",
            "/data/download/",
        ] {
            check!(
                self,
                !log.contains(needle),
                "{needle:?} in the logs: {}",
                log.lines().find(|l| l.contains(needle)).unwrap_or_default()
            );
        }
        // The fake's tokens are three dot-separated random runs (27, 120, 64 characters).
        let longest_run = log
            .split(|c: char| !c.is_ascii_alphanumeric())
            .map(str::len)
            .max()
            .unwrap_or(0);
        check!(
            self,
            longest_run < 100,
            "a {longest_run}-character token-like run in the logs"
        );
    }

    /// Picks what happens next, at a quiescent point (nothing is in flight).
    fn inject(&mut self) {
        let now = Instant::now();
        let hours = now.duration_since(self.injected_at).as_secs_f64() / 3600.0;
        self.injected_at = now;
        if hours <= 0.0 {
            return;
        }
        if let Some(stall) = &self.stall {
            if stall
                .consumed_at
                .is_some_and(|at| now.duration_since(at) > STALL_SPAN)
            {
                self.stall = None;
            }
        }
        let chance = |rng: &mut fastrand::Rng, per_hour: f64| rng.f64() < per_hour * hours;
        for i in 0..self.tenants.len() {
            if !self.tenants[i].configured {
                continue;
            }
            let tid = self.tenants[i].tenant_id.clone();
            if chance(&mut self.rng, 0.5) {
                self.tenants[i].version += 1;
                self.h
                    .fake
                    .set_products(&tid, date(), products(self.tenants[i].version));
                self.tally(FaultKind::DataChanged);
            }
            for r in 0..3 {
                if !self.tenants[i].reports[r].enabled || !chance(&mut self.rng, 0.3) {
                    continue;
                }
                self.fault(i, r);
            }
            if chance(&mut self.rng, 0.06) && self.tenants[i].pending.token.is_empty() {
                if self.rng.bool() {
                    for _ in 0..3 {
                        self.h.fake.push_token_response(
                            &tid,
                            Canned::aadsts_error(
                                503,
                                "temporarily_unavailable",
                                50076,
                                "The service is temporarily unavailable.",
                            ),
                        );
                    }
                    self.tenants[i].pending.token.extend([None; 3]);
                    self.tally(FaultKind::TokenOutage);
                } else {
                    let wait = self.rng.u64(30..=300);
                    self.h.fake.push_token_response(
                        &tid,
                        Canned::aadsts_error(
                            429,
                            "temporarily_unavailable",
                            50196,
                            "Too many requests.",
                        )
                        .retry_after(&wait.to_string()),
                    );
                    self.tenants[i]
                        .pending
                        .token
                        .push_back(Some(Duration::from_secs(wait)));
                    self.tally(FaultKind::Token429);
                }
                self.h.fake.revoke_tokens(&tid);
            } else if chance(&mut self.rng, 0.1) {
                self.h.fake.revoke_tokens(&tid);
                self.tally(FaultKind::RevokedToken);
            }
            if self.tenants[i].use_file && chance(&mut self.rng, 0.05) {
                self.rotate(i);
            }
        }
        if self.stall.is_none() && chance(&mut self.rng, 3.0) {
            self.start_stall();
        }
        if now.duration_since(self.last_reload) >= self.plan.reload_every {
            self.last_reload = now;
            self.reload();
        }
    }

    /// One fault on report `r` of tenant `i`, at the report request or the download.
    fn fault(&mut self, i: usize, r: usize) {
        let tid = self.tenants[i].tenant_id.clone();
        let report = REPORTS[r];
        let fake = &self.h.fake;
        let download_stage = self.rng.bool();
        if !download_stage {
            if !self.tenants[i].pending.report[r].is_empty() {
                return;
            }
            let seconds = self.rng.u64(30..=900);
            let (kind, canned, wait) = match self.rng.usize(0..8) {
                0 => (
                    FaultKind::Throttled429Seconds,
                    graph_error(429, "TooManyRequests").retry_after(&seconds.to_string()),
                    Some(Duration::from_secs(seconds)),
                ),
                1 => (
                    FaultKind::Throttled429Fraction,
                    graph_error(429, "TooManyRequests").retry_after(&format!("{seconds}.5")),
                    Some(Duration::from_millis(seconds * 1000 + 500)),
                ),
                2 => {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds as i64);
                    (
                        FaultKind::Throttled429Date,
                        graph_error(429, "TooManyRequests")
                            .retry_after(&at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
                        // Whole seconds, read a moment later: at least one second less.
                        Some(Duration::from_secs(seconds - 1)),
                    )
                }
                3 => (
                    FaultKind::Unavailable503RetryAfter,
                    graph_error(503, "ServiceUnavailable").retry_after(&seconds.to_string()),
                    Some(Duration::from_secs(seconds)),
                ),
                4 => (
                    FaultKind::Unavailable503,
                    graph_error(503, "ServiceUnavailable"),
                    None,
                ),
                5 => (
                    FaultKind::Other5xx,
                    graph_error(
                        *self.rng.choice(&[500u16, 502, 504]).unwrap(),
                        "UnknownError",
                    ),
                    None,
                ),
                6 => (
                    FaultKind::ConnectionRefused,
                    Canned::redirect(
                        "https://localhost:1/data/download/soak?sv=1&sig=soaksignature",
                    ),
                    None,
                ),
                _ => (
                    FaultKind::ReportHtml,
                    Canned::body(
                        200,
                        "text/html",
                        "<html><body>Service Unavailable</body></html>",
                    ),
                    None,
                ),
            };
            fake.push_report_response_for(report, &tid, canned);
            self.tenants[i].pending.report[r].push_back(Queued {
                kind,
                wait,
                written: (kind == FaultKind::Throttled429Date).then(std::time::Instant::now),
            });
            self.tally(kind);
        } else {
            if self.tenants[i].pending.download[r] > 0 {
                return;
            }
            let (kind, canned) = match self.rng.usize(0..5) {
                0 => (
                    FaultKind::ExpiredLink,
                    Canned::body(
                        403,
                        "application/xml",
                        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Signed expiry time has to be after signed start time</Message></Error>",
                    ),
                ),
                1 => {
                    let mut c = Canned::body(200, "application/octet-stream", &b"\x1f\x8b\x08\x00garbage, not deflate"[..]);
                    c.headers.push(("Content-Encoding".into(), "gzip".into()));
                    (FaultKind::CorruptGzip, c)
                }
                2 => (
                    FaultKind::DownloadHtml,
                    Canned::body(200, "text/html", "<!DOCTYPE html><html><body>Sign in to your account</body></html>"),
                ),
                3 => {
                    let mut c = Canned::body(200, "application/octet-stream", "\u{feff}Report Refresh Date,Product Type,Assig");
                    c.headers.push(("Content-Length".into(), "100000".into()));
                    (FaultKind::ResetMidBody, c)
                }
                _ => (
                    FaultKind::Download5xx,
                    Canned::body(*self.rng.choice(&[500u16, 503]).unwrap(), "text/plain", "oops"),
                ),
            };
            fake.push_download_response_for(report, &tid, canned);
            self.tenants[i].pending.download[r] += 1;
            self.tally(kind);
        }
    }

    /// Queues one stall (an answer held past the exporter's timeouts) on a random tenant.
    fn start_stall(&mut self) {
        let configured: Vec<usize> = (0..self.tenants.len())
            .filter(|i| self.tenants[*i].configured)
            .collect();
        let Some(&i) = self.rng.choice(&configured) else {
            return;
        };
        let enabled: Vec<usize> = (0..3)
            .filter(|r| self.tenants[i].reports[*r].enabled)
            .collect();
        let r = *self.rng.choice(&enabled).unwrap();
        let tid = self.tenants[i].tenant_id.clone();
        let stats = self.h.fake.stats(&tid);
        let at = match self.rng.usize(0..3) {
            0 if self.tenants[i].pending.token.is_empty() => {
                self.h.fake.push_token_response(
                    &tid,
                    Canned::aadsts_error(503, "temporarily_unavailable", 50076, "Stalled.")
                        .delayed(STALL),
                );
                self.h.fake.revoke_tokens(&tid);
                self.tenants[i].pending.token.push_back(None);
                self.tally(FaultKind::StallToken);
                StallAt::Token
            }
            1 if self.tenants[i].pending.report[r].is_empty() => {
                self.h.fake.push_report_response_for(
                    REPORTS[r],
                    &tid,
                    graph_error(503, "ServiceUnavailable").delayed(STALL),
                );
                self.tenants[i].pending.report[r].push_back(Queued {
                    kind: FaultKind::StallReport,
                    wait: None,
                    written: None,
                });
                self.tally(FaultKind::StallReport);
                StallAt::Report(r)
            }
            _ if self.tenants[i].pending.download[r] == 0 => {
                self.h.fake.push_download_response_for(
                    REPORTS[r],
                    &tid,
                    Canned::body(500, "text/plain", "late").delayed(STALL),
                );
                self.tenants[i].pending.download[r] += 1;
                self.tally(FaultKind::StallDownload);
                StallAt::Download(r)
            }
            _ => return,
        };
        self.stall = Some(Stall {
            tenant: i,
            at,
            base: Self::stall_count(&stats, at),
            consumed_at: None,
        });
    }

    /// Rotates a file tenant's secret: the file and Entra ID change together, and the cached
    /// token is revoked so that the next refresh needs the new secret.
    fn rotate(&mut self, i: usize) {
        let t = &mut self.tenants[i];
        t.rotations += 1;
        t.secret = format!("soak-secret-{}-{i}-rotation-{}", self.seed, t.rotations);
        let mut file = std::fs::File::create(&t.file).unwrap();
        writeln!(file, "{}", t.secret).unwrap();
        self.h.fake.set_client_secret(&t.tenant_id, &t.secret);
        self.h.fake.revoke_tokens(&t.tenant_id);
        self.secrets.push(t.secret.clone());
        self.tally(FaultKind::SecretRotated);
    }

    /// A reload that removes some tenants, adds back some removed long enough ago (a tenant
    /// back within 10 minutes would start a fresh budget while Graph still counts the old
    /// requests), and changes some: TTL, reports, credential source.
    fn reload(&mut self) {
        let now = Instant::now();
        let before = self.h.exporter.tenants();
        let stalled = self.stall.as_ref().map(|s| s.tenant);
        let mut events = Vec::new();
        for i in 0..self.tenants.len() {
            let roll = self.rng.f64();
            let untouchable = Some(i) == stalled;
            let ttl = self.plan.ttl;
            let t = &mut self.tenants[i];
            if !t.configured {
                if t.removed_at
                    .is_some_and(|at| now.duration_since(at) > REPORT_WINDOW)
                    && roll < 0.5
                {
                    t.configured = true;
                    t.removed_at = None;
                    Self::forget(t);
                    events.push(FaultKind::ReloadAdd);
                }
                continue;
            }
            if untouchable {
                continue;
            }
            if roll < 0.03 {
                t.configured = false;
                t.removed_at = Some(now);
                if let Some(tenant) = before.iter().find(|x| x.name() == t.name) {
                    self.removed.push((t.name.clone(), Arc::downgrade(tenant)));
                }
                events.push(FaultKind::ReloadRemove);
            } else if roll < 0.05 {
                t.ttl = if t.ttl == ttl {
                    ttl - Duration::from_secs(600)
                } else {
                    ttl
                };
                events.push(FaultKind::ReloadChangeTtl);
            } else if roll < 0.07
                && i % 3 != 0
                && t.reports[1]
                    .toggled_at
                    .is_none_or(|at| now.duration_since(at) > REPORT_WINDOW)
            {
                let m = &mut t.reports[1];
                m.enabled = !m.enabled;
                m.toggled_at = Some(now);
                m.last_good = None;
                m.up = None;
                m.refreshes = 0;
                m.last_success = None;
                m.retry_after.clear();
                events.push(FaultKind::ReloadChangeReports);
            } else if roll < 0.08 {
                // Not the same tenant any more for the exporter: it starts afresh.
                t.use_file = !t.use_file;
                if t.use_file {
                    std::fs::write(&t.file, format!("{}\n", t.secret)).unwrap();
                }
                Self::forget(t);
                events.push(FaultKind::ReloadChangeCredential);
            }
        }
        for event in events {
            self.tally(event);
        }
        let configs = self.configs();
        let summary = self.h.exporter.reload(&configs);
        check!(self, summary.is_ok(), "reload refused: {summary:?}");
    }

    /// A tenant the exporter builds afresh: no cache, no status, a new budget.
    fn forget(t: &mut TenantModel) {
        t.token_retry_after.clear();
        for m in &mut t.reports {
            m.last_good = None;
            m.up = None;
            m.refreshes = 0;
            m.last_success = None;
            m.retry_after.clear();
        }
    }
}

async fn soak(plan: Plan) {
    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = Arc::clone(&log);
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,office365_activations_exporter=debug,office365_activations_exporter::fake_graph=off",
        ))
        .with_ansi(false)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);
    let wall = std::time::Instant::now();
    let seed = plan.seed;
    eprintln!(
        "[soak seed={seed}] {} tenants, {} simulated hours, TTL {:?}, scrapes every {:?} by 2 scrapers (SOAK_SEED={seed} replays this run)",
        plan.tenants, plan.hours, plan.ttl, SCRAPE_INTERVAL
    );
    fastrand::seed(seed);
    let baseline_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let dir = tempfile::tempdir().unwrap();
    let mut fake_options = FakeGraphOptions::default();
    let mut models = Vec::new();
    for i in 0..plan.tenants {
        let tenant_id = format!("{i:08x}-aaaa-4bbb-8ccc-{:012x}", seed & 0xffff_ffff);
        let client_id = format!("{i:08x}-1111-4222-8333-444444444444");
        let secret = format!("soak-secret-{seed}-{i}-initial");
        let file = dir.path().join(format!("t{i:04}.secret"));
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        fake_options.tenants.push(FakeTenant::new(
            &tenant_id,
            &client_id,
            &secret,
            ReportData::Fixed {
                refresh_date: date(),
                products: products(0),
            },
        ));
        let all = i % 3 == 0;
        models.push(TenantModel {
            name: format!("t{i:04}"),
            tenant_id,
            client_id,
            secret,
            file,
            use_file: i % 4 == 1,
            configured: true,
            removed_at: None,
            version: 0,
            ttl: plan.ttl,
            reports: std::array::from_fn(|r| ReportModel {
                enabled: r == 0 || all,
                ..ReportModel::default()
            }),
            seen: Seen::default(),
            pending: Pending::default(),
            rotations: 0,
            token_retry_after: Vec::new(),
        });
    }
    let fake = FakeGraph::start(fake_options)
        .await
        .expect("fake Graph starts");
    let secrets = models.iter().map(|t| t.secret.clone()).collect();
    let heap_before_exporter = live_heap();
    let h = Harness::serve(fake, &[], plan.concurrency, SCRAPE_TIMEOUT).await;
    // The exporter with no tenant, its client and its server, at birth.
    let exporter_heap_at_start = live_heap().saturating_sub(heap_before_exporter);
    let start = Instant::now();
    // The configurations need the fake's addresses: built through the model.
    let mut soak = Soak {
        seed,
        rng: fastrand::Rng::with_seed(seed),
        h,
        scraper: reqwest::Client::builder().no_gzip().build().unwrap(),
        start,
        tenants: models,
        _dir: dir,
        stall: None,
        last_sweep: start,
        last_reload: start,
        faults: Default::default(),
        secrets,
        removed: Vec::new(),
        scrapes: 0,
        quiescent: 0,
        slowest_scrape: Duration::ZERO,
        successes: 0,
        failures: 0,
        ticks: 0,
        unexpected_waits: 0,
        max_in_window: 0,
        injected_at: start,
        plan: plan.clone(),
        log: Arc::clone(&log),
        log_lines: 0,
        prof: Default::default(),
        body_bytes: 0,
    };
    // Tasks of the exporter, its server and the fake before the first tenant and connection.
    let setup_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let configs = soak.configs();
    soak.h.exporter.reload(&configs).expect("the tenants load");
    soak.run().await;
    let simulated = soak.elapsed_secs();
    let mut errors = std::collections::BTreeMap::<String, f64>::new();
    for (key, value) in soak
        .h
        .scrape()
        .await
        .series("office365_activations_fetch_errors_total")
    {
        let stage = key
            .split("stage=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        let reason = key
            .split("reason=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        *errors.entry(format!("{stage}/{reason}")).or_default() += value;
    }
    errors.retain(|_, v| *v > 0.0);
    eprintln!("[soak seed={seed}] fetch errors of the tenants configured at the end: {errors:?}");

    // Teardown: remove every tenant, then stop everything; state and tasks must be gone.
    let remaining: Vec<(String, Weak<Tenant>)> = soak
        .h
        .exporter
        .tenants()
        .iter()
        .map(|t| (t.name().to_owned(), Arc::downgrade(t)))
        .collect();
    soak.h.exporter.reload(&[]).unwrap();
    // A refresh still held by a stall ends at its timeout; then every pooled connection has
    // been idle past the clients' 90 s and is closed.
    for _ in 0..STALL_SPAN.as_secs() / 10 {
        advance(Duration::from_secs(10)).await;
        settle().await;
    }
    let idle_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    eprintln!("[soak seed={seed}] tasks: {setup_tasks} before the first tenant, {idle_tasks} with none left and the connections idle");
    check!(
        soak,
        idle_tasks <= setup_tasks,
        "{idle_tasks} tasks alive with no tenant left and every connection idle past 90 s, {setup_tasks} before the first tenant: a refresh, connection or timer leaked"
    );
    let body = soak.h.scrape().await;
    check!(
        soak,
        !body.text.contains("tenant=\""),
        "tenant series left after removing every tenant"
    );
    let mut removed = std::mem::take(&mut soak.removed);
    removed.extend(remaining);
    until("every removed tenant's state is freed", || {
        removed.iter().all(|(_, w)| w.strong_count() == 0)
    })
    .await;
    let end_rss = rss();
    soak.scan_log();
    let Soak {
        h,
        scraper,
        faults,
        scrapes,
        quiescent,
        slowest_scrape,
        successes,
        failures,
        ticks,
        unexpected_waits,
        max_in_window,
        log_lines,
        ..
    } = soak;
    let connections = h.fake.connections();
    drop(scraper);
    let heap_idle = live_heap();
    // Stops the server and drops the fake; the exporter, with no tenant, is kept a moment.
    let exporter = Arc::clone(&h.exporter);
    h.stop().await;
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive() > baseline_tasks && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert!(
        alive() <= baseline_tasks,
        "[soak seed={seed}] {} tasks alive after the run, {baseline_tasks} before",
        alive()
    );
    let heap_exporter_only = live_heap();
    drop(exporter);
    let heap_after = live_heap();
    let exporter_heap_at_end = heap_exporter_only.saturating_sub(heap_after);
    let fake_heap = heap_idle.saturating_sub(heap_exporter_only);
    eprintln!(
        "[soak seed={seed}] live heap: the exporter with no tenant {} KiB at start, {} KiB at the end (after every tenant was removed); the fake's state and history {} MiB; left after both are dropped {} MiB over before (the test's own model)",
        exporter_heap_at_start >> 10,
        exporter_heap_at_end >> 10,
        fake_heap >> 20,
        heap_after.saturating_sub(heap_before_exporter) >> 20
    );
    assert!(
        exporter_heap_at_end <= exporter_heap_at_start + (4 << 20),
        "[soak seed={seed}] the exporter keeps {} KiB with no tenant after the run, {} KiB at start",
        exporter_heap_at_end >> 10,
        exporter_heap_at_start >> 10
    );

    let total_faults: u64 = faults.values().sum();
    eprintln!(
        "[soak seed={seed}] done: {simulated} simulated s in {:.1} s wall; {scrapes} scrapes ({quiescent} at quiescent points, slowest {slowest_scrape:?}, {ticks} 1 s ticks, {unexpected_waits} unexpected waits); {successes} good refresh intervals, {failures} failed; most report requests in a 10-minute window {max_in_window}; {total_faults} events injected; connections accepted {connections:?}; end RSS {} MiB; log {} lines",
        wall.elapsed().as_secs_f64(),
        end_rss >> 20,
        log_lines
    );
    eprintln!("[soak seed={seed}] events: {faults:?}");
    assert!(
        unexpected_waits == 0,
        "[soak seed={seed}] {unexpected_waits} scrape(s) waited on the clock without a scripted stall"
    );
    assert!(
        quiescent * 2 > scrapes,
        "[soak seed={seed}] only {quiescent} of {scrapes} scrapes at quiescent points: the strict checks ran too rarely"
    );
    assert!(successes > 0 && failures > 0, "[soak seed={seed}] no mix");
}

/// The bounded form, in CI: 100 tenants (all three reports on a third of them) over 12 simulated
/// hours (SOAK_SEED applies; SOAK_TENANTS and SOAK_DAYS only to the long form).
#[tokio::test(start_paused = true)]
async fn soak_bounded() {
    let plan = Plan {
        tenants: 100,
        hours: 12,
        ..Plan::from_env(100, 2)
    };
    soak(plan).await;
}

/// The long form: 1,000 tenants over 7 simulated days unless SOAK_TENANTS / SOAK_DAYS say
/// otherwise; its figures go into BENCHMARKS.md.
#[tokio::test(start_paused = true)]
#[ignore = "long run: cargo test --release --test soak -- --ignored --nocapture"]
async fn soak_long() {
    soak(Plan {
        sweep: Duration::from_secs(3600),
        reload_every: Duration::from_secs(4 * 3600),
        ..Plan::from_env(1000, 7)
    })
    .await;
}
