//! The exposition: report gauges from the cached reports, plus the exporter's self-metrics.
//!
//! HELP texts live here and nowhere else. The report gauges are encoded once per refresh, as
//! sample lines per metric family ([`ReportSamples`]), and stitched together per scrape: a
//! product that leaves the report leaves /metrics with the next refresh, and a scrape costs a
//! copy, not an encoding. The self-metrics (up, counters, histograms, process_*) are ordinary
//! `prometheus` crate collectors in a per-exporter [`Registry`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    Opts, Registry, TextEncoder,
};

use crate::error::{Error, Stage, REASONS};
use crate::report::ActivationReport;

/// The Content-Type of /metrics: exactly the text encoder's.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Names of the report gauges, in exposition order.
pub const ASSIGNED: &str = "office365_activations_assigned_users";
/// See [`ASSIGNED`].
pub const ACTIVATED: &str = "office365_activations_activated_users";
/// See [`ASSIGNED`].
pub const SHARED: &str = "office365_activations_shared_computer_activated_users";
/// See [`ASSIGNED`].
pub const REFRESH_TIMESTAMP: &str = "office365_activations_report_refresh_timestamp_seconds";

const REPORT_FAMILIES: [&str; 4] = [ASSIGNED, ACTIVATED, SHARED, REFRESH_TIMESTAMP];

/// The credential expiry gauge's name.
pub const CREDENTIAL_EXPIRY: &str = "office365_activations_credential_expiry_timestamp_seconds";

/// The version and git revision baked into the build (all the build facts: [`crate::build_info`]).
pub use crate::build_info::{REVISION, VERSION};

/// Sample lines of one tenant's report, one string per report family, encoded at refresh time.
#[derive(Clone, Debug, Default)]
pub struct ReportSamples {
    /// Lines for [`ASSIGNED`], [`ACTIVATED`], [`SHARED`], [`REFRESH_TIMESTAMP`], in that order.
    families: [String; 4],
}

/// Escapes a label value for the text format.
fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Encodes the report gauges of `tenant`.
pub fn encode_report(tenant: &str, report: &ActivationReport) -> ReportSamples {
    let mut tenant_label = String::new();
    escape_label(tenant, &mut tenant_label);
    let mut families: [String; 4] = Default::default();
    for product in &report.products {
        let mut labels = format!("{{tenant=\"{tenant_label}\",product_type=\"");
        escape_label(&product.product_type, &mut labels);
        labels.push_str("\"}");
        let _ = writeln!(families[0], "{ASSIGNED}{labels} {}", product.assigned);
        let _ = writeln!(families[1], "{ACTIVATED}{labels} {}", product.activated);
        if let Some(shared) = product.shared_computer_activation {
            let _ = writeln!(families[2], "{SHARED}{labels} {shared}");
        }
    }
    if let Some(date) = report.refresh_date {
        let midnight = date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc();
        let _ = writeln!(
            families[3],
            "{REFRESH_TIMESTAMP}{{tenant=\"{tenant_label}\"}} {}",
            midnight.timestamp()
        );
    }
    ReportSamples { families }
}

/// The self-metrics of one exporter, and the HELP texts of the report gauges.
pub struct Metrics {
    /// Holds the self-metrics, which change only when a refresh starts or ends.
    registry: Registry,
    /// Holds the process collector, whose values change all the time.
    process: Registry,
    /// `office365_activations_up{tenant}`.
    up: GaugeVec,
    /// `office365_activations_last_refresh_success_timestamp_seconds{tenant}`.
    last_success: GaugeVec,
    /// `office365_activations_refreshes_total{tenant}`.
    refreshes: IntCounterVec,
    /// `office365_activations_fetch_errors_total{tenant,stage,reason}`.
    fetch_errors: IntCounterVec,
    /// `office365_activations_redirect_latency_seconds{tenant}`.
    redirect_latency: HistogramVec,
    /// `office365_activations_refresh_duration_seconds{tenant}`.
    refresh_duration: HistogramVec,
    /// `office365_activations_credential_expiry_timestamp_seconds{tenant}`: only for tenants
    /// whose credential has a known expiry (a certificate).
    credential_expiry: GaugeVec,
    /// HELP text of each report family, naming the cache TTL.
    report_help: [String; 4],
}

/// Latency buckets, 50 ms to 2 min: a download is a few hundred ms; a slow proxy, seconds.
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are distinct");
    collector
}

impl Metrics {
    /// Self-metrics for an exporter whose reports are cached for `ttl` (a text such as `1h`, or
    /// `the tenant's cache_ttl` when tenants differ).
    pub fn new(ttl: &str) -> Metrics {
        let registry = Registry::new();
        let cached = format!(
            "Cached: refreshed from Microsoft Graph when a scrape finds it older than {ttl}."
        );
        let up = register(&registry, GaugeVec::new(
            Opts::new("office365_activations_up", format!("1 if the latest refresh of the tenant's report from Microsoft Graph succeeded, else 0 (the last good report is still served). {cached}")),
            &["tenant"],
        ).unwrap());
        let last_success = register(&registry, GaugeVec::new(
            Opts::new("office365_activations_last_refresh_success_timestamp_seconds", format!("Unix time of the latest successful refresh of the tenant's report. {cached}")),
            &["tenant"],
        ).unwrap());
        let refreshes = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "office365_activations_refreshes_total",
                    format!("Refresh attempts of the tenant's report, successful or not. {cached}"),
                ),
                &["tenant"],
            )
            .unwrap(),
        );
        let fetch_errors = register(&registry, IntCounterVec::new(
            Opts::new("office365_activations_fetch_errors_total", "Failed refreshes, by stage (token, report, download, parse) and reason (throttled, timeout, network, unauthorized, http_4xx, http_5xx, invalid_response, too_large, not_csv, missing_column, invalid_value)."),
            &["tenant", "stage", "reason"],
        ).unwrap());
        let redirect_latency = register(&registry, HistogramVec::new(
            HistogramOpts::new("office365_activations_redirect_latency_seconds", "Time from requesting Graph's pre-authenticated download URL to having the whole report body.").buckets(LATENCY_BUCKETS.to_vec()),
            &["tenant"],
        ).unwrap());
        let refresh_duration = register(&registry, HistogramVec::new(
            HistogramOpts::new("office365_activations_refresh_duration_seconds", "Duration of whole refreshes of the tenant's report: token, report request, download and parse.").buckets(LATENCY_BUCKETS.to_vec()),
            &["tenant"],
        ).unwrap());
        let credential_expiry = register(&registry, GaugeVec::new(
            Opts::new(CREDENTIAL_EXPIRY, "Unix time when the tenant's credential stops working: the notAfter of its client certificate (only for certificate credentials). Alert well before it: Entra ID refuses an expired certificate."),
            &["tenant"],
        ).unwrap());
        registry
            .register(Box::new(crate::build_info::BuildInfoCollector::new(
                "office365_activations_exporter_build_info",
                "A metric with a constant '1' value labeled by version, revision, branch, builddate, rustversion and target of office365-activations-exporter (as --version prints them).",
            ).unwrap()))
            .expect("metric names are distinct");
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(ProcessMetrics::new()))
            .expect("process metric names are distinct");

        let report_help = [
            format!("Users assigned a licence that includes the product (Assigned column of Graph's Office activations report). {cached}"),
            format!("Users who activated the product on at least one device (Activated column of Graph's Office activations report). {cached}"),
            format!("Users who activated the product through shared computer activation (Shared Computer Activation column, when the report has it). {cached}"),
            format!("Report Refresh Date of the tenant's cached report, as Unix time of that day's UTC midnight; Graph's data lags 24 to 48 hours. {cached}"),
        ];
        Metrics {
            registry,
            process,
            up,
            last_success,
            refreshes,
            fetch_errors,
            redirect_latency,
            refresh_duration,
            credential_expiry,
            report_help,
        }
    }

    /// The handles of one tenant's self-metrics; a new tenant's `up`, `refreshes_total` and
    /// throttled `fetch_errors_total` series start at 0. A tenant changed by a reload keeps its
    /// series (and `up`) until its first refresh, which the next scrape starts; creating the
    /// handles changes no value, so a reload that fails later changes nothing.
    pub fn tenant(&self, name: &str) -> TenantMetrics {
        let up = self.up.with_label_values(&[name]);
        // Office365ExporterThrottled takes increase() of these: a series born at 1 on the first
        // 429 would hide that 429 from it. Only the stages that can be throttled; every other
        // stage and reason pair (~25 per tenant) appears at its first error.
        for stage in [Stage::Token, Stage::Report, Stage::Download] {
            self.fetch_errors
                .with_label_values(&[name, stage.as_str(), "throttled"]);
        }
        TenantMetrics {
            name: name.to_owned(),
            up,
            last_success: self.last_success.clone(),
            refreshes: self.refreshes.with_label_values(&[name]),
            fetch_errors: self.fetch_errors.clone(),
            redirect_latency: self.redirect_latency.with_label_values(&[name]),
            refresh_duration: self.refresh_duration.with_label_values(&[name]),
            credential_expiry: self.credential_expiry.clone(),
        }
    }

    /// Forgets every series of a tenant that left the configuration.
    pub fn remove_tenant(&self, name: &str) {
        let _ = self.up.remove_label_values(&[name]);
        let _ = self.last_success.remove_label_values(&[name]);
        let _ = self.refreshes.remove_label_values(&[name]);
        let _ = self.redirect_latency.remove_label_values(&[name]);
        let _ = self.refresh_duration.remove_label_values(&[name]);
        let _ = self.credential_expiry.remove_label_values(&[name]);
        for stage in [Stage::Token, Stage::Report, Stage::Download, Stage::Parse] {
            for reason in REASONS {
                let _ = self
                    .fetch_errors
                    .remove_label_values(&[name, stage.as_str(), reason]);
            }
        }
    }

    /// The part of /metrics that changes only with refreshes: every tenant's report gauges,
    /// then the self-metrics.
    pub fn render_cached<'a>(
        &self,
        reports: impl Iterator<Item = &'a ReportSamples> + Clone,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        for (i, name) in REPORT_FAMILIES.iter().enumerate() {
            let mut lines = reports
                .clone()
                .map(|r| &r.families[i])
                .filter(|l| !l.is_empty())
                .peekable();
            if lines.peek().is_none() {
                continue;
            }
            let _ = write!(
                &mut out as &mut dyn std::io::Write,
                "# HELP {name} {}\n# TYPE {name} gauge\n",
                self.report_help[i]
            );
            for l in lines {
                out.extend_from_slice(l.as_bytes());
            }
        }
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// The process_* metrics (CPU, memory, file descriptors), which change all the time.
    pub fn render_process(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        TextEncoder::new()
            .encode(&self.process.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        out
    }
}

/// The `prometheus` crate's process collector, with `process_cpu_seconds_total` in fractions of
/// a second: the crate counts whole seconds, which for an exporter that uses a fraction of a
/// second per hour reads 0 for days and makes `rate()` useless.
#[cfg(target_os = "linux")]
struct ProcessMetrics {
    /// Everything but the CPU counter comes from here.
    inner: prometheus::process_collector::ProcessCollector,
    /// CPU seconds (user + system), with the kernel's clock-tick resolution.
    cpu: prometheus::Counter,
}

#[cfg(target_os = "linux")]
impl ProcessMetrics {
    fn new() -> Self {
        ProcessMetrics {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
            cpu: prometheus::Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("a valid metric name"),
        }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.inner.collect();
        let stat = procfs::process::Process::myself().and_then(|p| p.stat());
        if let Ok(stat) = stat {
            let seconds = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
            let delta = seconds - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            let cpu = self.cpu.collect();
            for family in &mut families {
                if family.name() == "process_cpu_seconds_total" {
                    *family = cpu[0].clone();
                }
            }
        }
        families
    }
}

/// One tenant's self-metric handles, resolved once.
pub struct TenantMetrics {
    /// The `tenant` label value.
    name: String,
    /// Set on every completed refresh.
    up: Gauge,
    /// Created at the first success, so it never shows a made-up 0 timestamp.
    last_success: GaugeVec,
    /// Counts attempts.
    refreshes: IntCounter,
    /// Counts failures by stage and reason.
    fetch_errors: IntCounterVec,
    /// Download latency.
    redirect_latency: Histogram,
    /// Whole refresh duration.
    refresh_duration: Histogram,
    /// Created when the credential first reports an expiry.
    credential_expiry: GaugeVec,
}

impl TenantMetrics {
    /// A callback that sets this tenant's credential expiry gauge (creating the series at the
    /// first call, so credentials without an expiry never show one).
    pub fn credential_expiry_observer(&self) -> crate::credentials::ExpiryObserver {
        let gauge = self.credential_expiry.clone();
        let name = self.name.clone();
        std::sync::Arc::new(move |at: SystemTime| {
            let unix = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            gauge.with_label_values(&[&name]).set(unix);
        })
    }

    /// A refresh has started.
    pub fn refresh_started(&self) {
        self.refreshes.inc();
    }

    /// A refresh succeeded at `now`.
    pub fn refresh_succeeded(
        &self,
        now: SystemTime,
        redirect_latency: Option<Duration>,
        took: Duration,
    ) {
        self.up.set(1.0);
        let unix = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.last_success.with_label_values(&[&self.name]).set(unix);
        if let Some(latency) = redirect_latency {
            self.redirect_latency.observe(latency.as_secs_f64());
        }
        self.refresh_duration.observe(took.as_secs_f64());
    }

    /// A refresh failed with `error`.
    pub fn refresh_failed(&self, error: &Error, took: Duration) {
        self.up.set(0.0);
        self.fetch_errors
            .with_label_values(&[&self.name, error.stage().as_str(), error.reason()])
            .inc();
        self.refresh_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProductCounts;

    #[test]
    fn report_lines_escape_labels_and_skip_missing_columns() {
        let report = ActivationReport {
            refresh_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 25),
            products: vec![ProductCounts {
                product_type: "A \"B\" \\ C".into(),
                assigned: 10,
                activated: 7,
                shared_computer_activation: None,
            }],
        };
        let samples = encode_report("con\"toso", &report);
        assert_eq!(
            samples.families[0],
            "office365_activations_assigned_users{tenant=\"con\\\"toso\",product_type=\"A \\\"B\\\" \\\\ C\"} 10\n"
        );
        assert!(samples.families[2].is_empty());
        assert_eq!(
            samples.families[3],
            "office365_activations_report_refresh_timestamp_seconds{tenant=\"con\\\"toso\"} 1795564800\n"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_seconds_have_sub_second_resolution() {
        let metrics = Metrics::new("1h");
        let cpu_seconds = || {
            let text = String::from_utf8(metrics.render_process()).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("process_cpu_seconds_total "))
                .expect("the CPU counter is exported")
                .to_owned();
            line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
        };
        // A whole-second counter never shows a fraction; ours does within a few clock ticks.
        let fractional = (0..50).any(|_| {
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < Duration::from_millis(20) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            cpu_seconds().fract() != 0.0
        });
        assert!(
            fractional,
            "process_cpu_seconds_total only ever showed whole seconds"
        );
    }

    #[test]
    fn render_groups_each_family_once_across_tenants() {
        let metrics = Metrics::new("1h");
        let report = |n| ActivationReport {
            refresh_date: None,
            products: vec![ProductCounts {
                product_type: "P".into(),
                assigned: n,
                activated: n,
                shared_computer_activation: Some(n),
            }],
        };
        let a = encode_report("a", &report(1));
        let b = encode_report("b", &report(2));
        let text = String::from_utf8(metrics.render_cached([&a, &b].into_iter())).unwrap();
        assert_eq!(
            text.matches("# TYPE office365_activations_assigned_users gauge")
                .count(),
            1
        );
        let assigned: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("office365_activations_assigned_users{"))
            .collect();
        assert_eq!(assigned.len(), 2);
        assert!(
            !text.contains(REFRESH_TIMESTAMP),
            "no date, no timestamp gauge"
        );
        assert!(text.contains("office365_activations_exporter_build_info{revision="));
        assert!(text.contains("older than 1h"));
    }

    #[test]
    fn credential_expiry_appears_only_when_reported_and_leaves_with_the_tenant() {
        let metrics = Metrics::new("1h");
        let tenant = metrics.tenant("contoso");
        let render = |m: &Metrics| String::from_utf8(m.render_cached(std::iter::empty())).unwrap();
        assert!(!render(&metrics).contains(CREDENTIAL_EXPIRY));
        let observe = tenant.credential_expiry_observer();
        observe(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        let text = render(&metrics);
        assert!(
            text.contains(&format!("# HELP {CREDENTIAL_EXPIRY} ")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{CREDENTIAL_EXPIRY}{{tenant=\"contoso\"}} 1900000000"
            )),
            "{text}"
        );
        metrics.remove_tenant("contoso");
        assert!(!render(&metrics).contains(&format!("{CREDENTIAL_EXPIRY}{{")));
    }
}
