//! The exposition: report gauges and status series, stitched per scrape from what each tenant
//! encoded once, plus the exporter-wide self-metrics.
//!
//! HELP texts live here and nowhere else. A tenant's report gauges are encoded once per refresh
//! ([`crate::reports::Encoded`]) and its status series whenever they change
//! ([`crate::status`]); `/metrics` concatenates every tenant's lines family by family and
//! `/probe` one tenant's, so a scrape costs a copy, not an encoding. What is exporter-wide (the
//! latency and duration histograms by report, build info, process_*) is an ordinary `prometheus`
//! crate [`Registry`].

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{Encoder, HistogramOpts, HistogramVec, Registry, TextEncoder};

use crate::reports::{ReportKind, KINDS};
use crate::status::{self, Lines};
use crate::tenant::CachedReport;

pub use crate::status::{CREDENTIAL_EXPIRY, REFRESH_TIMESTAMP};

/// The Content-Type of /metrics: exactly the text encoder's.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The version and git revision baked into the build (all the build facts: [`crate::build_info`]).
pub use crate::build_info::{REVISION, VERSION};

/// What one tenant shows: its cached reports and its status lines.
#[derive(Clone, Debug)]
pub struct TenantParts {
    /// The reports it serves.
    pub reports: Vec<Arc<CachedReport>>,
    /// Its status lines.
    pub status: Arc<Lines>,
}

/// Which lines of a tenant a section shows.
#[derive(Clone, Copy)]
enum Pick {
    /// Family `family` of the tenant's report of `kind`.
    Report {
        /// The report.
        kind: ReportKind,
        /// Its family, by position in the kind's families.
        family: usize,
    },
    /// Status family `f` ([`status::FAMILIES`] order).
    Status(usize),
}

/// One metric family of a [`Body`].
struct Section {
    /// `# HELP` and `# TYPE`.
    header: String,
    /// Whose lines.
    pick: Pick,
}

impl Section {
    fn new(name: &str, kind: &str, help: &str, pick: Pick) -> Section {
        Section {
            header: format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
            pick,
        }
    }
}

/// The stable part of /metrics for one generation, as the lines the tenants hold
/// ([`crate::exposition::Source`]): with ten thousand tenants its text is tens of MB, which this
/// does not hold a second time. Families without a line are left out, HELP and all.
pub struct Body {
    /// Whose lines, in order.
    tenants: Vec<TenantParts>,
    /// The families that have lines, in order.
    sections: Vec<Section>,
    /// The registry's text, last.
    registry: Vec<u8>,
    /// The text's length, counted once.
    len: usize,
}

impl Body {
    fn new(tenants: Vec<TenantParts>, sections: Vec<Section>, registry: Vec<u8>) -> Body {
        let mut body = Body {
            tenants,
            sections: Vec::new(),
            registry,
            len: 0,
        };
        body.sections = sections
            .into_iter()
            .filter(|section| {
                body.tenants
                    .iter()
                    .any(|t| body.lines(section.pick, t).any(|l| !l.is_empty()))
            })
            .collect();
        body.len = body.count();
        body
    }

    fn count(&self) -> usize {
        let lines: usize = self
            .sections
            .iter()
            .map(|section| {
                section.header.len()
                    + self
                        .tenants
                        .iter()
                        .flat_map(|t| self.lines(section.pick, t))
                        .map(str::len)
                        .sum::<usize>()
            })
            .sum();
        lines + self.registry.len()
    }

    /// The lines of `tenant` that `pick` names.
    fn lines<'a>(&self, pick: Pick, tenant: &'a TenantParts) -> impl Iterator<Item = &'a str> {
        let (reports, status) = match pick {
            Pick::Report { kind, family } => (Some((kind, family)), None),
            Pick::Status(f) => (None, Some(tenant.status[f].as_str())),
        };
        let reports = reports.into_iter().flat_map(move |(kind, family)| {
            tenant
                .reports
                .iter()
                .filter(move |c| c.kind == kind)
                .filter_map(move |c| c.encoded.families.get(family).map(String::as_str))
        });
        reports.chain(status)
    }

    /// The text in one piece.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::exposition::Source::len(self));
        crate::exposition::Source::write(
            self,
            &mut crate::exposition::Position::default(),
            &mut out,
            usize::MAX,
        );
        out
    }
}

/// Item 0 of a section is its header, item `1 + i` tenant `i`'s lines; the section after the
/// families is the registry.
impl crate::exposition::Source for Body {
    fn len(&self) -> usize {
        self.len
    }

    fn write(&self, position: &mut crate::exposition::Position, out: &mut Vec<u8>, want: usize) {
        while out.len() < want {
            let Some(section) = self.sections.get(position.section) else {
                if position.section == self.sections.len() {
                    out.extend_from_slice(&self.registry);
                    position.section += 1;
                }
                return;
            };
            match position.item.checked_sub(1) {
                None => out.extend_from_slice(section.header.as_bytes()),
                Some(t) => match self.tenants.get(t) {
                    Some(tenant) => {
                        for line in self.lines(section.pick, tenant) {
                            out.extend_from_slice(line.as_bytes());
                        }
                    }
                    None => {
                        position.section += 1;
                        position.item = 0;
                        continue;
                    }
                },
            }
            position.item += 1;
        }
    }
}

/// The exporter-wide self-metrics, and the HELP texts of every family.
pub struct Metrics {
    /// Histograms and build info, which change only when a refresh ends.
    registry: Registry,
    /// Holds the process collector, whose values change all the time.
    process: Registry,
    /// `office365_activations_redirect_latency_seconds{report}`.
    redirect_latency: HistogramVec,
    /// `office365_activations_refresh_duration_seconds{report}`.
    refresh_duration: HistogramVec,
    /// HELP text of each family of each kind (in [`KINDS`] order), naming the cache TTL.
    report_help: Vec<Vec<String>>,
    /// HELP text of each status family ([`status::FAMILIES`] order).
    status_help: Vec<String>,
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
    /// `the report's TTL` when reports differ).
    pub fn new(ttl: &str) -> Metrics {
        let registry = Registry::new();
        let cached = format!(
            "Cached: refreshed from Microsoft Graph when a scrape finds it older than {ttl}."
        );
        let redirect_latency = register(&registry, HistogramVec::new(
            HistogramOpts::new("office365_activations_redirect_latency_seconds", "Time from requesting Graph's pre-authenticated download URL to having the whole report body, over all tenants (per tenant: office365_activations_tenant_redirect_latency_seconds).").buckets(LATENCY_BUCKETS.to_vec()),
            &["report"],
        ).unwrap());
        let refresh_duration = register(&registry, HistogramVec::new(
            HistogramOpts::new("office365_activations_refresh_duration_seconds", "Duration of whole refreshes (token, report request, download and parse), over all tenants (per tenant: office365_activations_last_refresh_duration_seconds).").buckets(LATENCY_BUCKETS.to_vec()),
            &["report"],
        ).unwrap());
        registry
            .register(Box::new(crate::build_info::BuildInfoCollector::new(
                "office365_activations_exporter_build_info",
                "A metric with a constant '1' value labeled by version, revision, branch, builddate, rustversion and target of office365-activations-exporter (as --version prints them).",
            ).unwrap()))
            .expect("metric names are distinct");
        let process = Registry::new();
        // The HTTP server's limits counter changes at any time, like process_*.
        process
            .register(crate::server::limit_counters())
            .expect("metric names are distinct");
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(ProcessMetrics::new()))
            .expect("process metric names are distinct");

        let report_help = KINDS
            .iter()
            .map(|kind| {
                kind.families
                    .iter()
                    .map(|family| format!("{} {cached}", family.help))
                    .collect()
            })
            .collect();
        let status_help = vec![
            format!("1 if the latest refresh of the tenant's report from Microsoft Graph succeeded, else 0 (the last good report is still served); one series per enabled report. {cached}"),
            format!("Unix time of the latest successful refresh of the tenant's report. {cached}"),
            format!("Refresh attempts of the tenant's report, successful or not. {cached}"),
            "Failed refreshes, by stage (token, report, download, parse) and reason (throttled, timeout, network, unauthorized, http_4xx, http_5xx, invalid_response, too_large, not_csv, missing_column, invalid_value).".to_owned(),
            "Duration of the latest completed refresh of the tenant's report (token, report request, download and parse), successful or not.".to_owned(),
            format!("Report Refresh Date of the tenant's cached report, as Unix time of that day's UTC midnight; Graph's data lags 24 to 48 hours. {cached}"),
            "Time from requesting Graph's pre-authenticated download URL to having the whole report body, per tenant over its reports (rate of _sum over rate of _count: the mean).".to_owned(),
            "Unix time when the tenant's credential stops working: the notAfter of its client certificate (only for certificate credentials). Alert well before it: Entra ID refuses an expired certificate.".to_owned(),
        ];
        Metrics {
            registry,
            process,
            redirect_latency,
            refresh_duration,
            report_help,
            status_help,
        }
    }

    /// Records a finished refresh of `kind` in the exporter-wide histograms.
    pub fn observe(&self, kind: ReportKind, redirect_latency: Option<Duration>, took: Duration) {
        if let Some(latency) = redirect_latency {
            self.redirect_latency
                .with_label_values(&[kind.name])
                .observe(latency.as_secs_f64());
        }
        self.refresh_duration
            .with_label_values(&[kind.name])
            .observe(took.as_secs_f64());
    }

    /// The stable body of `tenants`: each family once with its HELP and TYPE, every tenant's
    /// lines of it, then the exporter-wide registry (histograms, build info). It holds the
    /// tenants' lines (shared, not copied) and writes the text out on demand.
    pub fn body(&self, tenants: Vec<TenantParts>) -> Body {
        let mut registry = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut registry)
            .expect("encoding into a Vec cannot fail");
        self.body_with(tenants, registry)
    }

    fn body_with(&self, tenants: Vec<TenantParts>, registry: Vec<u8>) -> Body {
        let mut sections = Vec::new();
        for (k, kind) in KINDS.iter().enumerate() {
            for (f, family) in kind.families.iter().enumerate() {
                let pick = Pick::Report { kind, family: f };
                sections.push(Section::new(
                    family.name,
                    "gauge",
                    &self.report_help[k][f],
                    pick,
                ));
            }
        }
        for (f, (name, kind)) in status::FAMILIES.iter().enumerate() {
            sections.push(Section::new(
                name,
                kind,
                &self.status_help[f],
                Pick::Status(f),
            ));
        }
        Body::new(tenants, sections, registry)
    }

    /// The stable body of `tenants` in one piece ([`Metrics::body`], written out).
    pub fn render_cached(&self, tenants: &[TenantParts]) -> Vec<u8> {
        self.body(tenants.to_vec()).to_vec()
    }

    /// One tenant's series, for `/probe`.
    pub fn render_tenant(&self, tenant: &TenantParts) -> Vec<u8> {
        self.body_with(vec![tenant.clone()], Vec::new()).to_vec()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::user_counts::{self, ActivationReport, ProductCounts};
    use crate::reports::Encoded;
    use crate::status::Status;

    fn tenant(name: &str, n: u64) -> TenantParts {
        let report = ActivationReport {
            refresh_date: None,
            products: vec![ProductCounts {
                product_type: "P".into(),
                assigned: n,
                activated: n,
                shared_computer_activation: Some(n),
            }],
        };
        let status = Status::new(name, &[&user_counts::KIND], Arc::default());
        TenantParts {
            reports: vec![Arc::new(CachedReport {
                kind: &user_counts::KIND,
                encoded: Encoded {
                    refresh_date: None,
                    rows: 1,
                    families: user_counts::encode(name, &report),
                },
                fetched: std::time::SystemTime::now(),
            })],
            status: status.lines(),
        }
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
        let text =
            String::from_utf8(metrics.render_cached(&[tenant("a", 1), tenant("b", 2)])).unwrap();
        for family in [
            "office365_activations_assigned_users gauge",
            "office365_activations_up gauge",
            "office365_activations_fetch_errors_total counter",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family}")).count(),
                1,
                "{family}"
            );
        }
        let assigned: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("office365_activations_assigned_users{"))
            .collect();
        assert_eq!(assigned.len(), 2);
        assert!(
            !text.contains(REFRESH_TIMESTAMP),
            "no date, no timestamp gauge"
        );
        assert!(
            !text.contains(CREDENTIAL_EXPIRY),
            "no certificate, no expiry"
        );
        assert!(text.contains("office365_activations_exporter_build_info{revision="));
        assert!(text.contains("older than 1h"));
        let probe = String::from_utf8(metrics.render_tenant(&tenant("b", 2))).unwrap();
        assert!(probe.contains("office365_activations_up{tenant=\"b\",report=\"user_counts\"} 0"));
        assert!(!probe.contains("tenant=\"a\""));
        assert!(
            !probe.contains("build_info"),
            "the exporter's own series stay on /metrics"
        );
    }

    #[test]
    fn the_body_written_piece_by_piece_is_the_body_written_whole() {
        use crate::exposition::{Position, Source};
        let metrics = Metrics::new("1h");
        metrics.observe(&user_counts::KIND, None, Duration::from_secs(1));
        let body = metrics.body((0..50).map(|i| tenant(&format!("t{i}"), i)).collect());
        let whole = body.to_vec();
        assert_eq!(whole.len(), body.len(), "the length is exact");
        for want in [1, 100, 4096] {
            let (mut position, mut out) = (Position::default(), Vec::new());
            loop {
                let mut piece = Vec::new();
                body.write(&mut position, &mut piece, want);
                if piece.is_empty() {
                    break;
                }
                out.extend_from_slice(&piece);
            }
            assert!(out == whole, "pieces of {want} bytes");
        }
        let text = String::from_utf8(whole).unwrap();
        assert_eq!(
            text.matches("# TYPE office365_activations_up gauge")
                .count(),
            1
        );
        assert!(
            text.rfind("office365_activations_up{").unwrap()
                < text
                    .find("# TYPE office365_activations_exporter_build_info")
                    .unwrap(),
            "the registry comes after the tenants"
        );
        assert!(text.contains(
            "office365_activations_refresh_duration_seconds_count{report=\"user_counts\"} 1"
        ));
    }

    #[test]
    fn histograms_are_exporter_wide_by_report() {
        let metrics = Metrics::new("1h");
        metrics.observe(
            &user_counts::KIND,
            Some(Duration::from_millis(300)),
            Duration::from_secs(1),
        );
        let text = String::from_utf8(metrics.render_cached(&[])).unwrap();
        assert!(text.contains(
            "office365_activations_redirect_latency_seconds_bucket{report=\"user_counts\",le=\"0.5\"} 1"
        ), "{text}");
        assert!(
            !text.contains("tenant="),
            "no tenant label on the histograms"
        );
    }
}
