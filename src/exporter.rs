//! The set of tenants and the scrape flow: "make sure you are fresh, but do not make me wait past
//! my deadline", then serve the body from [`crate::exposition`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::TenantConfig;
use crate::exposition::{Exposition, Snapshot};
use crate::http_client::HttpClient;
use crate::metrics::Metrics;
use crate::tenant::{Freshness, Shared, Tenant};

/// The tenants, in configuration order, with the earliest time one of them can be due; a reload
/// replaces the whole set, so a due time computed from the old set can never hold back the new
/// one (a scrape still working on the old set stores into the set being dropped).
pub struct TenantSet {
    /// The tenants.
    tenants: Vec<Arc<Tenant>>,
    /// Position of each tenant by name, for `/probe?target=`.
    by_name: std::collections::HashMap<String, usize>,
    /// No tenant of this set can need a refresh before this instant (nanoseconds after the
    /// exporter's `epoch`), so a scrape before it skips the per-tenant checks: with a thousand
    /// tenants those cost more than serving the cached body. Only ever early, never late: a
    /// tenant's due time only moves forward, and a running refresh keeps it at "now".
    next_due: AtomicU64,
    /// The same, per tenant (by position), for `/probe`: a probe before it serves the tenant's
    /// cached body without looking at its reports. Set by each probe that looks.
    probe_due: Vec<AtomicU64>,
}

impl std::ops::Deref for TenantSet {
    type Target = [Arc<Tenant>];

    fn deref(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }
}

/// Every tenant, with the exporter's metrics.
pub struct Exporter {
    /// The tenants; replaced whole by a reload.
    tenants: ArcSwap<TenantSet>,
    /// Serializes reloads (SIGHUP and POST /-/reload may arrive together on two threads), so one
    /// reload's new tenants are never dropped by another built from the same old set.
    reloading: Mutex<()>,
    /// Self-metrics and HELP texts.
    metrics: Arc<Metrics>,
    /// What every tenant shares: the outbound client, the refresh slots, the generation.
    shared: Shared,
    /// The body as served, rebuilt only when the generation moves.
    exposition: Exposition,
    /// The origin of [`TenantSet::next_due`].
    epoch: Instant,
}

fn ttl_text(configs: &[TenantConfig]) -> String {
    let mut ttls = configs
        .iter()
        .flat_map(|c| c.reports.iter().map(|r| r.cache_ttl));
    match ttls.next() {
        Some(first) if ttls.all(|ttl| ttl == first) => {
            humantime::format_duration(first).to_string()
        }
        _ => "the report's TTL (cache_ttl, report_ttl)".to_owned(),
    }
}

impl TenantSet {
    fn new(tenants: Vec<Arc<Tenant>>) -> TenantSet {
        TenantSet {
            by_name: tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name().to_owned(), i))
                .collect(),
            probe_due: tenants.iter().map(|_| AtomicU64::new(0)).collect(),
            tenants,
            next_due: AtomicU64::new(0),
        }
    }
}

/// What a reload changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tenants that are new.
    pub added: Vec<String>,
    /// Tenants whose configuration changed: they start afresh, but for the reports they keep
    /// when only their reports or TTLs changed.
    pub changed: Vec<String>,
    /// Tenants that are gone, with their series.
    pub removed: Vec<String>,
    /// Tenants kept as they were, cache and all.
    pub kept: usize,
}

impl Exporter {
    /// Builds the tenants; `http` is the shared outbound client, `concurrency` the number of
    /// refreshes that may run at once across tenants and reports. Nothing is fetched yet.
    pub fn new(
        configs: &[TenantConfig],
        http: HttpClient,
        concurrency: usize,
    ) -> Result<Exporter, String> {
        let metrics = Arc::new(Metrics::new(&ttl_text(configs)));
        let shared = Shared {
            metrics: Arc::clone(&metrics),
            http,
            refresh_slots: Arc::new(Semaphore::new(concurrency.max(1))),
            generation: Arc::new(AtomicU64::new(0)),
        };
        let tenants = configs
            .iter()
            .map(|config| Self::build_tenant(config, &shared))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exporter {
            tenants: ArcSwap::from_pointee(TenantSet::new(tenants)),
            reloading: Mutex::new(()),
            metrics,
            shared,
            exposition: Exposition::default(),
            epoch: Instant::now(),
        })
    }

    fn build_tenant(config: &TenantConfig, shared: &Shared) -> Result<Arc<Tenant>, String> {
        Tenant::new(config, shared.clone())
            .map(Arc::new)
            .map_err(|e| format!("tenant {}: {e}", config.name))
    }

    /// The tenants.
    pub fn tenants(&self) -> Arc<TenantSet> {
        self.tenants.load_full()
    }

    /// Replaces the tenant list: unchanged tenants keep their cache and state, changed ones
    /// start afresh, removed ones disappear from /metrics. All or nothing: on an error nothing
    /// changes, and the tenants it was adding leave no series behind.
    pub fn reload(&self, configs: &[TenantConfig]) -> Result<ReloadSummary, String> {
        self.reload_from(|| Ok(configs.to_vec()))
    }

    /// [`Exporter::reload`] with the tenants `read` returns, read under the reload lock: two
    /// reloads at once (SIGHUP and POST /-/reload) apply in the order they read the file.
    pub fn reload_from(
        &self,
        read: impl FnOnce() -> Result<Vec<TenantConfig>, String>,
    ) -> Result<ReloadSummary, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let configs = read()?;
        let current = self.tenants();
        let mut summary = ReloadSummary::default();
        let mut next = Vec::with_capacity(configs.len());
        for config in &configs {
            match current
                .by_name
                .get(&config.name)
                .map(|&i| &current.tenants[i])
            {
                Some(tenant) if tenant.config() == config => {
                    summary.kept += 1;
                    next.push(Arc::clone(tenant));
                }
                found => {
                    let list = if found.is_some() {
                        &mut summary.changed
                    } else {
                        &mut summary.added
                    };
                    list.push(config.name.clone());
                    // A tenant carries its own series: a refused reload leaves none behind.
                    let tenant = Self::build_tenant(config, &self.shared)?;
                    if let Some(old) = found.filter(|old| old.config().same_but_reports(config)) {
                        tenant.take_over(old);
                    }
                    next.push(tenant);
                }
            }
        }
        let names: std::collections::HashSet<&str> =
            configs.iter().map(|c| c.name.as_str()).collect();
        for tenant in current.iter() {
            if !names.contains(tenant.name()) {
                summary.removed.push(tenant.name().to_owned());
            }
        }
        self.tenants.store(Arc::new(TenantSet::new(next)));
        self.shared.generation.fetch_add(1, Ordering::Release);
        Ok(summary)
    }

    /// The body from the cache when no tenant can be due for a refresh yet; `None` when a scrape
    /// must look at the tenants ([`Exporter::scrape`]). One clock read serves the whole path.
    pub fn cached(&self) -> Option<Arc<Snapshot>> {
        let now = Instant::now();
        let next_due = self.tenants.load().next_due.load(Ordering::Acquire);
        (self.nanos(now) < next_due).then(|| self.snapshot_at(now))
    }

    /// Refreshes the tenants whose reports are stale, waiting for them at most `budget`, then
    /// returns the body from whatever is cached by then.
    pub async fn scrape(&self, budget: Duration) -> Arc<Snapshot> {
        if let Some(snapshot) = self.cached() {
            return snapshot;
        }
        let now = Instant::now();
        let now_nanos = self.nanos(now);
        let mut running = Vec::new();
        let mut next_due = u64::MAX;
        let tenants = self.tenants();
        for tenant in tenants.iter() {
            for freshness in tenant.ensure_fresh(now) {
                match freshness {
                    Freshness::Refreshing(refresh) => {
                        running.push(refresh);
                        next_due = now_nanos;
                    }
                    Freshness::Until(due) => next_due = next_due.min(self.nanos(due)),
                }
            }
        }
        tenants.next_due.store(next_due, Ordering::Release);
        if running.is_empty() {
            return self.snapshot_at(now);
        }
        let wait_until = now + budget;
        for mut refresh in running {
            // Err: the refresh ended (its sender is dropped), which is what we wait for.
            if tokio::time::timeout_at(wait_until, refresh.changed())
                .await
                .is_err()
            {
                tracing::debug!("Scrape deadline reached while a refresh runs; serving the cache");
                break;
            }
        }
        self.snapshot()
    }

    /// One tenant's series for `/probe?target=`: its stale reports refreshed first (the same
    /// single flight, budget and Retry-After rules as a scrape of /metrics), waiting at most
    /// `budget`. `None`: no such tenant (in this shard).
    pub async fn probe(&self, target: &str, budget: Duration) -> Option<bytes::Bytes> {
        let tenants = self.tenants();
        let index = *tenants.by_name.get(target)?;
        let tenant = Arc::clone(&tenants.tenants[index]);
        let now = Instant::now();
        let wait_until = now + budget;
        let mut running = Vec::new();
        let mut due = u64::MAX;
        for freshness in tenant.ensure_fresh(now) {
            match freshness {
                Freshness::Refreshing(refresh) => {
                    running.push(refresh);
                    due = 0;
                }
                Freshness::Until(until) => due = due.min(self.nanos(until)),
            }
        }
        tenants.probe_due[index].store(due, Ordering::Release);
        drop(tenants);
        for mut refresh in running {
            // Err: the refresh ended (its sender is dropped), which is what we wait for.
            if tokio::time::timeout_at(wait_until, refresh.changed())
                .await
                .is_err()
            {
                tracing::debug!(tenant = %tenant.name(), "Probe deadline reached while a refresh runs; serving the cache");
                break;
            }
        }
        Some(tenant.probe_body())
    }

    /// One tenant's `/probe` body from its cache when none of its reports can be due yet;
    /// `None` when a probe must look ([`Exporter::probe`]), or there is no such tenant.
    pub fn cached_probe(&self, target: &str) -> Option<bytes::Bytes> {
        let now = self.nanos(Instant::now());
        let tenants = self.tenants.load();
        let index = *tenants.by_name.get(target)?;
        (now < tenants.probe_due[index].load(Ordering::Acquire))
            .then(|| tenants.tenants[index].probe_body())
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The body from the cache, without refreshing anything.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Arc<Snapshot> {
        // Read the generation first: a refresh landing meanwhile is at worst rendered early and
        // rendered again at the next scrape.
        let generation = self.shared.generation.load(Ordering::Acquire);
        self.exposition.snapshot(
            generation,
            now,
            || {
                let parts: Vec<_> = self.tenants().iter().map(|t| t.parts()).collect();
                Arc::new(self.metrics.body(parts))
            },
            || self.metrics.render_process(),
        )
    }

    /// Every tenant has loaded each of its reports at least once.
    pub fn ready(&self) -> bool {
        self.tenants().iter().all(|t| t.loaded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::client_secret::SecretSource;
    use crate::credentials::{CredentialConfig, Secret};

    fn config(name: &str) -> TenantConfig {
        let graph = reqwest::Url::parse("https://graph.invalid").unwrap();
        TenantConfig {
            name: name.to_owned(),
            tenant_id: "00000000-0000-4000-8000-000000000000".to_owned(),
            client_id: "00000000-0000-4000-8000-000000000001".to_owned(),
            credential: CredentialConfig::ClientSecret(SecretSource::Value(Secret::new("s"))),
            authority_host: reqwest::Url::parse("https://login.invalid").unwrap(),
            scope: "https://graph.invalid/.default".to_owned(),
            graph_endpoint: graph,
            api_version: "v1.0".to_owned(),
            report_format: Default::default(),
            cache_ttl: Duration::from_secs(3600),
            reports: vec![crate::config::ReportConfig {
                kind: &crate::reports::user_counts::KIND,
                cache_ttl: Duration::from_secs(3600),
                max_size: 1 << 20,
            }],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_time_from_before_a_reload_does_not_hold_back_the_reloaded_tenants() {
        let exporter = Exporter::new(&[config("a")], reqwest::Client::new().into(), 1).unwrap();
        let before = exporter.tenants();
        exporter.reload(&[config("a"), config("b")]).unwrap();
        // A scrape that read the tenants before the reload stores its due time only now: an hour
        // ahead, from tenant "a" alone.
        let late = exporter.nanos(Instant::now() + Duration::from_secs(3600));
        before.next_due.store(late, Ordering::Release);
        assert!(
            exporter.cached().is_none(),
            "tenant b, added by the reload, is due now: a scrape must look at it"
        );
    }
}
