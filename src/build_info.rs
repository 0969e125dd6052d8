//! What the binary knows about its own build, baked in by build.rs: the facts `--version` prints
//! and `office365_activations_exporter_build_info` carries, in one place so the two never differ.
//!
//! The labels, next to Prometheus's own (`prometheus_build_info`, `node_exporter_build_info`):
//!
//! | label | Prometheus's | value |
//! |---|---|---|
//! | `version` | `version` | Cargo.toml's version |
//! | `revision` | `revision` | git commit, 12 hex digits |
//! | `branch` | `branch` | git branch (`HEAD` when built detached) |
//! | `builddate` | (`--version` only) | `YYYYMMDD-HH:MM:SS` UTC; `SOURCE_DATE_EPOCH` in releases |
//! | `rustversion` | `goversion` | rustc's version, e.g. `1.95.0` |
//! | `target` | `goos` + `goarch` | Rust target triple, e.g. `x86_64-unknown-linux-gnu` |
//!
//! Missing facts (no git, say) read `unknown`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Cargo.toml's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from.
pub const REVISION: &str = or_unknown(option_env!("O365_EXPORTER_REVISION"));
/// The git branch the binary was built from.
pub const BRANCH: &str = or_unknown(option_env!("O365_EXPORTER_BRANCH"));
/// When it was built, `YYYYMMDD-HH:MM:SS` UTC.
pub const BUILD_DATE: &str = or_unknown(option_env!("O365_EXPORTER_BUILD_DATE"));
/// The rustc version that built it.
pub const RUST_VERSION: &str = or_unknown(option_env!("O365_EXPORTER_RUST_VERSION"));
/// The target triple it was built for.
pub const TARGET: &str = or_unknown(option_env!("O365_EXPORTER_TARGET"));

/// The build_info labels in exposition order: `revision` and `version` first, as every earlier
/// release exported them (in that, sorted, order), then the others in `--version`'s order.
pub const LABELS: [(&str, &str); 6] = [
    ("revision", REVISION),
    ("version", VERSION),
    ("branch", BRANCH),
    ("builddate", BUILD_DATE),
    ("rustversion", RUST_VERSION),
    ("target", TARGET),
];

const fn or_unknown(value: Option<&'static str>) -> &'static str {
    match value {
        Some(value) => value,
        None => "unknown",
    }
}

/// `--version`'s text, in the format of Prometheus's own tools:
///
/// ```text
/// office365-activations-exporter, version 0.1.0 (branch: main, revision: 43ff8cf0a1b2)
///   build date:       20251201-22:09:00
///   rustc version:    1.95.0
///   target:           x86_64-unknown-linux-gnu
/// ```
pub fn version_text() -> String {
    format!(
        "office365-activations-exporter, version {VERSION} (branch: {BRANCH}, revision: {REVISION})\n\
         \x20 build date:       {BUILD_DATE}\n\
         \x20 rustc version:    {RUST_VERSION}\n\
         \x20 target:           {TARGET}\n"
    )
}

/// The `..._build_info` gauge: always 1, labelled by [`LABELS`]. A collector of its own, because
/// the `prometheus` crate's vectors sort their labels, which would move `revision` from first.
#[derive(Debug)]
pub struct BuildInfoCollector {
    /// The metric's name and help, as the registry checks them.
    desc: Desc,
}

impl BuildInfoCollector {
    /// The collector of the metric `name`, whose HELP is `help`.
    pub fn new(name: &str, help: &str) -> prometheus::Result<BuildInfoCollector> {
        let labels = LABELS.iter().map(|(name, _)| (*name).to_owned()).collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), labels, Default::default())?;
        Ok(BuildInfoCollector { desc })
    }
}

impl Collector for BuildInfoCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut gauge = Gauge::default();
        gauge.set_value(1.0);
        let mut metric = Metric::default();
        metric.set_label(
            LABELS
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect(),
        );
        metric.set_gauge(gauge);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_has_every_label_value_and_the_prometheus_first_line() {
        let text = version_text();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!("office365-activations-exporter, version {VERSION} (branch: {BRANCH}, revision: {REVISION})")
        );
        for (_, value) in LABELS {
            assert!(text.contains(value), "{value} not in\n{text}");
        }
        assert!(
            TARGET.contains(std::env::consts::ARCH) && TARGET.contains(std::env::consts::OS),
            "{TARGET}"
        );
    }

    #[test]
    fn build_date_looks_like_prometheus_s() {
        let date = BUILD_DATE.as_bytes();
        assert_eq!(date.len(), 17, "{BUILD_DATE}");
        assert!(date[..8].iter().all(u8::is_ascii_digit), "{BUILD_DATE}");
        assert_eq!((date[8], date[11], date[14]), (b'-', b':', b':'));
    }

    #[test]
    fn the_collector_keeps_the_label_order() {
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(
                BuildInfoCollector::new("x_build_info", "help").unwrap(),
            ))
            .unwrap();
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = LABELS
            .iter()
            .map(|(name, value)| format!("{name}=\"{value}\""))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            text.contains(&format!("x_build_info{{{expected}}} 1\n")),
            "{text}"
        );
    }
}
