//! One tenant's status series (up, last success, refreshes, errors, durations, report dates,
//! credential expiry), kept and encoded by the tenant itself.
//!
//! They are not `prometheus` crate collectors: a registry child per series costs about a
//! kilobyte, and a registry can only be rendered whole, while `/probe?target=` serves one
//! tenant. Here each tenant keeps its few numbers and re-encodes its own sample lines (one string
//! per family of [`FAMILIES`]) whenever one changes; `/metrics` concatenates every tenant's lines
//! family by family, `/probe` serves one tenant's, and nothing is encoded twice.
//!
//! Per tenant and enabled report: `up`, `refreshes_total`, the throttled `fetch_errors_total` of
//! the report request (at 0 from the start, so `increase()` sees the first 429), and after a
//! refresh `last_refresh_success_timestamp_seconds`, `last_refresh_duration_seconds` and
//! `report_refresh_timestamp_seconds`: six series. Per tenant, once: the redirect latency
//! `_sum` and `_count`, the throttled token and download errors at 0 (on its first report), and a
//! certificate's expiry. With the user counts report alone that is at most 11 status series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use chrono::NaiveDate;

use crate::error::{Error, Stage};
use crate::reports::{escape_label, midnight, ReportKind};

/// `office365_activations_up`.
pub const UP: &str = "office365_activations_up";
/// `office365_activations_last_refresh_success_timestamp_seconds`.
pub const LAST_SUCCESS: &str = "office365_activations_last_refresh_success_timestamp_seconds";
/// `office365_activations_refreshes_total`.
pub const REFRESHES: &str = "office365_activations_refreshes_total";
/// `office365_activations_fetch_errors_total`.
pub const FETCH_ERRORS: &str = "office365_activations_fetch_errors_total";
/// `office365_activations_last_refresh_duration_seconds`.
pub const LAST_DURATION: &str = "office365_activations_last_refresh_duration_seconds";
/// `office365_activations_report_refresh_timestamp_seconds`.
pub const REFRESH_TIMESTAMP: &str = "office365_activations_report_refresh_timestamp_seconds";
/// `office365_activations_tenant_redirect_latency_seconds` (a summary: `_sum` and `_count`).
pub const TENANT_REDIRECT_LATENCY: &str = "office365_activations_tenant_redirect_latency_seconds";
/// `office365_activations_credential_expiry_timestamp_seconds`.
pub const CREDENTIAL_EXPIRY: &str = "office365_activations_credential_expiry_timestamp_seconds";

/// The status families, in exposition order: name and type.
pub const FAMILIES: [(&str, &str); 8] = [
    (UP, "gauge"),
    (LAST_SUCCESS, "gauge"),
    (REFRESHES, "counter"),
    (FETCH_ERRORS, "counter"),
    (LAST_DURATION, "gauge"),
    (REFRESH_TIMESTAMP, "gauge"),
    (TENANT_REDIRECT_LATENCY, "summary"),
    (CREDENTIAL_EXPIRY, "gauge"),
];

/// One tenant's encoded status lines, one string per entry of [`FAMILIES`].
pub type Lines = [String; 8];

/// The numbers of one report of a tenant.
#[derive(Debug)]
struct ReportNumbers {
    /// Which report.
    kind: ReportKind,
    /// The latest completed refresh succeeded.
    up: bool,
    /// Unix time of the latest success.
    last_success: Option<f64>,
    /// Refresh attempts.
    refreshes: u64,
    /// Failures by stage and reason.
    errors: BTreeMap<(&'static str, &'static str), u64>,
    /// Seconds the latest completed refresh took.
    last_duration: Option<f64>,
    /// The served report's date, as Unix time of its UTC midnight.
    report_date: Option<i64>,
}

/// Everything a tenant's status series show.
#[derive(Debug)]
struct Numbers {
    /// One entry per enabled report, in configuration order.
    reports: Vec<ReportNumbers>,
    /// Sum of download latencies (seconds) over all reports.
    redirect_sum: f64,
    /// Downloads timed.
    redirect_count: u64,
    /// The credential's expiry (Unix time), once it reported one.
    credential_expiry: Option<f64>,
}

/// A tenant's status: its numbers, their encoding, and a generation that moves with them.
pub struct Status {
    /// The `tenant` label value, escaped.
    tenant: String,
    /// The numbers; the lock is held only to change them and re-encode.
    numbers: Mutex<Numbers>,
    /// The current encoding, read without a lock.
    lines: ArcSwap<Lines>,
    /// Bumped at every change: `/probe` bodies are cached per generation.
    generation: AtomicU64,
    /// The exporter's generation, bumped as well: the `/metrics` body is rebuilt when it moves.
    exporter_generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Status {
    /// The status of tenant `name` with `kinds` enabled: `up` and `refreshes_total` at 0, the
    /// throttled errors at 0.
    pub fn new(name: &str, kinds: &[ReportKind], exporter_generation: Arc<AtomicU64>) -> Status {
        let mut tenant = String::new();
        escape_label(name, &mut tenant);
        let reports = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let mut errors = BTreeMap::new();
                errors.insert((Stage::Report.as_str(), "throttled"), 0);
                // Token and download throttling concern the tenant: once, on its first report.
                if i == 0 {
                    errors.insert((Stage::Token.as_str(), "throttled"), 0);
                    errors.insert((Stage::Download.as_str(), "throttled"), 0);
                }
                ReportNumbers {
                    kind,
                    up: false,
                    last_success: None,
                    refreshes: 0,
                    errors,
                    last_duration: None,
                    report_date: None,
                }
            })
            .collect();
        let numbers = Numbers {
            reports,
            redirect_sum: 0.0,
            redirect_count: 0,
            credential_expiry: None,
        };
        let lines = encode(&tenant, &numbers);
        Status {
            tenant,
            numbers: Mutex::new(numbers),
            lines: ArcSwap::from_pointee(lines),
            generation: AtomicU64::new(0),
            exporter_generation,
        }
    }

    /// The current lines.
    pub fn lines(&self) -> Arc<Lines> {
        self.lines.load_full()
    }

    /// Moves at every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Applies `change`, re-encodes, and moves both generations.
    fn update(&self, change: impl FnOnce(&mut Numbers)) {
        let mut numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut numbers);
        self.lines.store(Arc::new(encode(&self.tenant, &numbers)));
        drop(numbers);
        self.generation.fetch_add(1, Ordering::Release);
        self.exporter_generation.fetch_add(1, Ordering::Release);
    }

    fn report(numbers: &mut Numbers, kind: ReportKind) -> Option<&mut ReportNumbers> {
        numbers.reports.iter_mut().find(|r| r.kind == kind)
    }

    /// A refresh of `kind` started.
    pub fn refresh_started(&self, kind: ReportKind) {
        self.update(|n| {
            if let Some(r) = Self::report(n, kind) {
                r.refreshes += 1;
            }
        });
    }

    /// A refresh of `kind` succeeded at `now` with a report of `date`.
    pub fn refresh_succeeded(
        &self,
        kind: ReportKind,
        now: SystemTime,
        date: Option<NaiveDate>,
        redirect_latency: Option<Duration>,
        took: Duration,
    ) {
        self.update(|n| {
            if let Some(latency) = redirect_latency {
                n.redirect_sum += latency.as_secs_f64();
                n.redirect_count += 1;
            }
            if let Some(r) = Self::report(n, kind) {
                r.up = true;
                r.last_success = Some(unix(now));
                r.last_duration = Some(took.as_secs_f64());
                // A header-only report has no date: no made-up timestamp.
                r.report_date = date.map(midnight);
            }
        });
    }

    /// A refresh of `kind` failed with `error`.
    pub fn refresh_failed(&self, kind: ReportKind, error: &Error, took: Duration) {
        self.update(|n| {
            if let Some(r) = Self::report(n, kind) {
                r.up = false;
                r.last_duration = Some(took.as_secs_f64());
                *r.errors
                    .entry((error.stage().as_str(), error.reason()))
                    .or_insert(0) += 1;
            }
        });
    }

    /// The credential reported when it expires.
    pub fn credential_expires(&self, at: SystemTime) {
        self.update(|n| n.credential_expiry = Some(unix(at)));
    }
}

/// A sample value as the text format writes it.
fn value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Encodes the sample lines of every family.
fn encode(tenant: &str, n: &Numbers) -> Lines {
    let mut out: Lines = Default::default();
    for r in &n.reports {
        let labels = format!("tenant=\"{tenant}\",report=\"{}\"", r.kind.name);
        let _ = writeln!(out[0], "{UP}{{{labels}}} {}", u8::from(r.up));
        if let Some(at) = r.last_success {
            let _ = writeln!(out[1], "{LAST_SUCCESS}{{{labels}}} {}", value(at));
        }
        let _ = writeln!(out[2], "{REFRESHES}{{{labels}}} {}", r.refreshes);
        for ((stage, reason), count) in &r.errors {
            let _ = writeln!(
                out[3],
                "{FETCH_ERRORS}{{{labels},stage=\"{stage}\",reason=\"{reason}\"}} {count}"
            );
        }
        if let Some(took) = r.last_duration {
            let _ = writeln!(out[4], "{LAST_DURATION}{{{labels}}} {}", value(took));
        }
        if let Some(date) = r.report_date {
            let _ = writeln!(out[5], "{REFRESH_TIMESTAMP}{{{labels}}} {date}");
        }
    }
    if n.redirect_count > 0 {
        let _ = writeln!(
            out[6],
            "{TENANT_REDIRECT_LATENCY}_sum{{tenant=\"{tenant}\"}} {}\n{TENANT_REDIRECT_LATENCY}_count{{tenant=\"{tenant}\"}} {}",
            value(n.redirect_sum),
            n.redirect_count
        );
    }
    if let Some(at) = n.credential_expiry {
        let _ = writeln!(
            out[7],
            "{CREDENTIAL_EXPIRY}{{tenant=\"{tenant}\"}} {}",
            value(at)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::{activation_counts, user_counts};

    fn all(status: &Status) -> String {
        status.lines().concat()
    }

    #[test]
    fn a_new_tenant_shows_up_refreshes_and_throttled_errors_at_zero() {
        let status = Status::new(
            "con\"toso",
            &[&user_counts::KIND, &activation_counts::KIND],
            Arc::default(),
        );
        let text = all(&status);
        assert_eq!(text.lines().count(), 2 + 2 + 3 + 1, "{text}");
        assert!(text.contains(
            "office365_activations_up{tenant=\"con\\\"toso\",report=\"user_counts\"} 0\n"
        ));
        assert!(text.contains("office365_activations_fetch_errors_total{tenant=\"con\\\"toso\",report=\"activation_counts\",stage=\"report\",reason=\"throttled\"} 0\n"));
        assert!(!text.contains("report=\"activation_counts\",stage=\"token\""));
    }

    #[test]
    fn refreshes_move_the_numbers_and_both_generations() {
        let exporter = Arc::new(AtomicU64::new(0));
        let status = Status::new("t", &[&user_counts::KIND], Arc::clone(&exporter));
        let kind: ReportKind = &user_counts::KIND;
        status.refresh_started(kind);
        status.refresh_succeeded(
            kind,
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            NaiveDate::from_ymd_opt(2026, 11, 25),
            Some(Duration::from_millis(250)),
            Duration::from_millis(1500),
        );
        status.refresh_started(kind);
        let error = Error::TooLarge {
            stage: Stage::Download,
            limit: 1,
        };
        status.refresh_failed(kind, &error, Duration::from_secs(2));
        let text = all(&status);
        for line in [
            "office365_activations_up{tenant=\"t\",report=\"user_counts\"} 0\n",
            "office365_activations_refreshes_total{tenant=\"t\",report=\"user_counts\"} 2\n",
            "office365_activations_last_refresh_success_timestamp_seconds{tenant=\"t\",report=\"user_counts\"} 1800000000\n",
            "office365_activations_last_refresh_duration_seconds{tenant=\"t\",report=\"user_counts\"} 2\n",
            "office365_activations_report_refresh_timestamp_seconds{tenant=\"t\",report=\"user_counts\"} 1795564800\n",
            "office365_activations_fetch_errors_total{tenant=\"t\",report=\"user_counts\",stage=\"download\",reason=\"too_large\"} 1\n",
            "office365_activations_tenant_redirect_latency_seconds_sum{tenant=\"t\"} 0.25\n",
            "office365_activations_tenant_redirect_latency_seconds_count{tenant=\"t\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(status.generation(), 4);
        assert_eq!(exporter.load(Ordering::Relaxed), 4);
        status.credential_expires(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        assert!(all(&status).contains(
            "office365_activations_credential_expiry_timestamp_seconds{tenant=\"t\"} 1900000000\n"
        ));
    }
}
