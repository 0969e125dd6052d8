//! Which reports a tenant runs, and each one's TTL and size cap: `--reports`, `--report.ttl`,
//! the size flags, and the `reports` / `report_ttl` keys of the config file (top level and per
//! tenant; the most specific level that names a report list or a TTL wins).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{check_ttl, err, parse_duration, ConfigError};
use crate::reports::{self, ReportKind};

/// One enabled report of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    /// Which report.
    pub kind: ReportKind,
    /// How long it is served before a scrape refreshes it.
    pub cache_ttl: Duration,
    /// The largest body accepted (all JSON pages together).
    pub max_size: u64,
}

/// The size caps, from the flags.
#[derive(Clone, Copy, Debug)]
pub struct SizeCaps {
    /// `--graph.max-report-size`: the small reports.
    pub report: u64,
    /// `--graph.max-user-detail-size`: the user detail, which is streamed.
    pub user_detail: u64,
}

impl SizeCaps {
    /// The cap of `kind`.
    pub fn of(&self, kind: ReportKind) -> u64 {
        if kind.large {
            self.user_detail
        } else {
            self.report
        }
    }
}

/// A report list or TTL map given at one level, with where it came from.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The reports named at this level, if it names any.
    pub reports: Option<Vec<ReportKind>>,
    /// TTLs per report given at this level.
    pub ttls: BTreeMap<&'static str, Duration>,
}

/// Parses a list of report names; `what` names the flag or key in the error.
pub fn parse_list<S: AsRef<str>>(names: &[S], what: &str) -> Result<Vec<ReportKind>, ConfigError> {
    let mut kinds: Vec<ReportKind> = Vec::new();
    for name in names.iter().flat_map(|n| n.as_ref().split(',')) {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let Some(kind) = reports::by_name(name) else {
            return err(format!(
                "{what}: unknown report {name:?} (known: {})",
                reports::names()
            ));
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return err(format!(
            "{what}: name at least one report ({})",
            reports::names()
        ));
    }
    Ok(kinds)
}

/// Parses `name=duration` pairs (`--report.ttl user_detail=6h`, repeatable or comma-separated).
pub fn parse_ttl_flags(
    values: &[String],
    what: &str,
) -> Result<BTreeMap<&'static str, Duration>, ConfigError> {
    let mut ttls = BTreeMap::new();
    for pair in values.iter().flat_map(|v| v.split(',')) {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((name, ttl)) = pair.split_once('=') else {
            return err(format!(
                "{what}: {pair:?} must be report=duration, e.g. user_detail=6h"
            ));
        };
        let ttl = parse_duration(ttl).map_err(|e| ConfigError(format!("{what}: {e}")))?;
        ttls.insert(kind(name, what)?.name, check_ttl(ttl, what)?);
    }
    Ok(ttls)
}

/// Checks a config file's `report_ttl` map.
pub fn check_ttl_map(
    map: &BTreeMap<String, Duration>,
    what: &str,
) -> Result<BTreeMap<&'static str, Duration>, ConfigError> {
    let mut ttls = BTreeMap::new();
    for (name, ttl) in map {
        let at = format!("{what}.{name}");
        ttls.insert(kind(name, &at)?.name, check_ttl(*ttl, &at)?);
    }
    Ok(ttls)
}

fn kind(name: &str, what: &str) -> Result<ReportKind, ConfigError> {
    reports::by_name(name).ok_or_else(|| {
        ConfigError(format!(
            "{what}: unknown report {:?} (known: {})",
            name.trim(),
            reports::names()
        ))
    })
}

/// The reports of one tenant from the levels given most specific first, falling back to
/// `default` (the kinds enabled by default); each TTL from the most specific level that sets it,
/// else the tenant's `cache_ttl`.
pub fn resolve(
    levels: &[&Selection],
    default: &[ReportKind],
    cache_ttl: Duration,
    caps: SizeCaps,
) -> Vec<ReportConfig> {
    let kinds = levels
        .iter()
        .find_map(|l| l.reports.clone())
        .unwrap_or_else(|| default.to_vec());
    kinds
        .into_iter()
        .map(|kind| ReportConfig {
            kind,
            cache_ttl: levels
                .iter()
                .find_map(|l| l.ttls.get(kind.name).copied())
                .unwrap_or(cache_ttl),
            max_size: caps.of(kind),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_dedupe_and_name_unknown_reports() {
        let kinds = parse_list(&["user_counts, user_detail", "user_counts"], "--reports").unwrap();
        assert_eq!(
            kinds.iter().map(|k| k.name).collect::<Vec<_>>(),
            ["user_counts", "user_detail"]
        );
        let error = parse_list(&["user_counts,activations"], "--reports").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--reports: unknown report \"activations\" (known: user_counts, activation_counts, user_detail)"
        );
        assert!(parse_list(&[" , "], "--reports").is_err());
    }

    #[test]
    fn ttl_flags_parse_and_are_checked() {
        let ttls = parse_ttl_flags(
            &["user_detail=6h,activation_counts=2h".into()],
            "--report.ttl",
        )
        .unwrap();
        assert_eq!(ttls["user_detail"], Duration::from_secs(6 * 3600));
        assert_eq!(ttls["activation_counts"], Duration::from_secs(7200));
        for bad in [
            "user_detail",
            "nope=1h",
            "user_detail=soon",
            "user_detail=10s",
        ] {
            assert!(
                parse_ttl_flags(&[bad.into()], "--report.ttl").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_most_specific_level_wins() {
        let caps = SizeCaps {
            report: 1,
            user_detail: 2,
        };
        let hour = Duration::from_secs(3600);
        let top = Selection {
            reports: Some(parse_list(&["user_counts,user_detail"], "x").unwrap()),
            ttls: [("user_detail", hour * 6)].into(),
        };
        let tenant = Selection {
            reports: None,
            ttls: [("user_counts", hour * 2)].into(),
        };
        let resolved = resolve(&[&tenant, &top], &reports::default_kinds(), hour, caps);
        let shown: Vec<_> = resolved
            .iter()
            .map(|r| (r.kind.name, r.cache_ttl, r.max_size))
            .collect();
        assert_eq!(
            shown,
            [("user_counts", hour * 2, 1), ("user_detail", hour * 6, 2)]
        );
        let defaults = resolve(&[], &reports::default_kinds(), hour, caps);
        assert_eq!(defaults.len(), 2);
    }
}
