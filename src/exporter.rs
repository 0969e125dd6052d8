//! The set of tenants and the scrape flow: "make sure you are fresh, but do not make me wait past
//! my deadline", then serve the body from [`crate::exposition`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::TenantConfig;
use crate::exposition::{Exposition, Snapshot};
use crate::metrics::Metrics;
use crate::tenant::{Freshness, Shared, Tenant};

/// Every tenant, with the exporter's metrics.
pub struct Exporter {
    /// The tenants, in configuration order; replaced whole by a reload.
    tenants: RwLock<Arc<Vec<Arc<Tenant>>>>,
    /// Self-metrics and HELP texts.
    metrics: Arc<Metrics>,
    /// What every tenant shares: the outbound client, the refresh slots, the generation.
    shared: Shared,
    /// The largest report body accepted.
    max_report_size: u64,
    /// The body as served, rebuilt only when the generation moves.
    exposition: Exposition,
    /// The origin of `next_due`.
    epoch: Instant,
    /// No tenant can need a refresh before this instant (nanoseconds after `epoch`), so a
    /// scrape before it skips the per-tenant checks: with a thousand tenants those cost more than
    /// serving the cached body. Only ever early, never late: a tenant's due time only moves
    /// forward, a running refresh keeps it at "now", and a reload resets it.
    next_due: AtomicU64,
}

fn ttl_text(configs: &[TenantConfig]) -> String {
    match configs.first() {
        Some(first) if configs.iter().all(|c| c.cache_ttl == first.cache_ttl) => {
            humantime::format_duration(first.cache_ttl).to_string()
        }
        _ => "the tenant's cache_ttl".to_owned(),
    }
}

/// What a reload changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tenants that are new.
    pub added: Vec<String>,
    /// Tenants whose configuration changed: they start afresh.
    pub changed: Vec<String>,
    /// Tenants that are gone, with their series.
    pub removed: Vec<String>,
    /// Tenants kept as they were, cache and all.
    pub kept: usize,
}

impl Exporter {
    /// Builds the tenants; `http` is the shared outbound client, `concurrency` the number of
    /// refreshes that may run at once across tenants. Nothing is fetched yet.
    pub fn new(
        configs: &[TenantConfig],
        http: reqwest::Client,
        max_report_size: u64,
        concurrency: usize,
    ) -> Result<Exporter, String> {
        let metrics = Arc::new(Metrics::new(&ttl_text(configs)));
        let shared = Shared {
            http,
            refresh_slots: Arc::new(Semaphore::new(concurrency.max(1))),
            generation: Arc::new(AtomicU64::new(0)),
        };
        let tenants = configs
            .iter()
            .map(|config| Self::build_tenant(config, &shared, &metrics, max_report_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exporter {
            tenants: RwLock::new(Arc::new(tenants)),
            metrics,
            shared,
            max_report_size,
            exposition: Exposition::default(),
            epoch: Instant::now(),
            next_due: AtomicU64::new(0),
        })
    }

    fn build_tenant(
        config: &TenantConfig,
        shared: &Shared,
        metrics: &Metrics,
        max_report_size: u64,
    ) -> Result<Arc<Tenant>, String> {
        Tenant::new(
            config,
            shared.clone(),
            max_report_size,
            metrics.tenant(&config.name),
        )
        .map(Arc::new)
        .map_err(|e| format!("tenant {}: {e}", config.name))
    }

    /// The tenants.
    pub fn tenants(&self) -> Arc<Vec<Arc<Tenant>>> {
        Arc::clone(&self.tenants.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the tenant list: unchanged tenants keep their cache and state, changed ones
    /// start afresh, removed ones disappear from /metrics. All or nothing: on an error nothing
    /// changes.
    pub fn reload(&self, configs: &[TenantConfig]) -> Result<ReloadSummary, String> {
        let current = self.tenants();
        let mut summary = ReloadSummary::default();
        let mut next = Vec::with_capacity(configs.len());
        for config in configs {
            match current.iter().find(|t| t.name() == config.name) {
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
                    next.push(Self::build_tenant(
                        config,
                        &self.shared,
                        &self.metrics,
                        self.max_report_size,
                    )?);
                }
            }
        }
        for tenant in current.iter() {
            if !configs.iter().any(|c| c.name == tenant.name()) {
                summary.removed.push(tenant.name().to_owned());
                self.metrics.remove_tenant(tenant.name());
            }
        }
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.next_due.store(0, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::Release);
        Ok(summary)
    }

    /// The body from the cache when no tenant can be due for a refresh yet; `None` when a scrape
    /// must look at the tenants ([`Exporter::scrape`]). One clock read serves the whole path.
    pub fn cached(&self) -> Option<Arc<Snapshot>> {
        let now = Instant::now();
        (self.nanos(now) < self.next_due.load(Ordering::Acquire)).then(|| self.snapshot_at(now))
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
        for tenant in self.tenants().iter() {
            match tenant.ensure_fresh(now) {
                Freshness::Refreshing(refresh) => {
                    running.push(refresh);
                    next_due = now_nanos;
                }
                Freshness::Until(due) => next_due = next_due.min(self.nanos(due)),
            }
        }
        self.next_due.store(next_due, Ordering::Release);
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
                let cached: Vec<_> = self.tenants().iter().filter_map(|t| t.cached()).collect();
                self.metrics
                    .render_cached(cached.iter().map(|c| &c.samples))
            },
            || self.metrics.render_process(),
        )
    }

    /// Every tenant has loaded a report at least once.
    pub fn ready(&self) -> bool {
        self.tenants().iter().all(|t| t.cached().is_some())
    }
}
