//! The set of tenants and the scrape flow: "make sure you are fresh, but do not make me wait past
//! my deadline", then render.

use std::sync::Arc;

use tokio::time::Instant;

use crate::config::TenantConfig;
use crate::metrics::Metrics;
use crate::tenant::Tenant;

/// Every tenant, with the exporter's metrics.
pub struct Exporter {
    /// The tenants, in configuration order.
    tenants: Vec<Arc<Tenant>>,
    /// Self-metrics and HELP texts.
    metrics: Metrics,
}

impl Exporter {
    /// Builds the tenants; `http` is the shared outbound client. Nothing is fetched yet.
    pub fn new(
        configs: &[TenantConfig],
        http: reqwest::Client,
        max_report_size: u64,
    ) -> Result<Exporter, String> {
        let ttl = match configs.first() {
            Some(first) if configs.iter().all(|c| c.cache_ttl == first.cache_ttl) => {
                humantime::format_duration(first.cache_ttl).to_string()
            }
            _ => "the tenant's cache_ttl".to_owned(),
        };
        let metrics = Metrics::new(&ttl);
        let tenants = configs
            .iter()
            .map(|config| {
                Tenant::new(
                    config,
                    http.clone(),
                    max_report_size,
                    metrics.tenant(&config.name),
                )
                .map(Arc::new)
                .map_err(|e| format!("tenant {}: {e}", config.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Exporter { tenants, metrics })
    }

    /// The tenants.
    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    /// Refreshes the tenants whose reports are stale, waiting for them at most until
    /// `wait_until`, then renders /metrics from whatever is cached by then.
    pub async fn scrape(&self, wait_until: Instant) -> Vec<u8> {
        let running: Vec<_> = self
            .tenants
            .iter()
            .filter_map(|t| t.ensure_fresh())
            .collect();
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
        self.render()
    }

    /// Renders /metrics from the cache, without refreshing anything.
    pub fn render(&self) -> Vec<u8> {
        let cached: Vec<_> = self.tenants.iter().filter_map(|t| t.cached()).collect();
        self.metrics.render(cached.iter().map(|c| &c.samples))
    }

    /// Every tenant has loaded a report at least once.
    pub fn ready(&self) -> bool {
        self.tenants.iter().all(|t| t.cached().is_some())
    }
}
