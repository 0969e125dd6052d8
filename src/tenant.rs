//! One tenant: its cached report, and the state machine that decides when Graph may be asked.
//!
//! A scrape calls [`Tenant::ensure_fresh`]. When the cached report is older than the TTL, no
//! refresh is running, and Graph's Retry-After (or our own backoff after a failure) has passed,
//! it spawns one refresh task and hands back a receiver to wait on; every other scrape in the
//! meantime gets the same receiver (single flight). The refresh runs to its end even if the
//! scrape that started it gives up. A failed refresh keeps the last good report.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::TenantConfig;
use crate::credentials::{self, CredentialParams, TokenCache};
use crate::error::Error;
use crate::graph::{GraphClient, ReportFormat};
use crate::metrics::{encode_report, ReportSamples, TenantMetrics};
use crate::report::{self, ActivationReport};

/// The first retry after a failure waits about this long; each further failure doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Backoff never exceeds this (nor the TTL), so a fixed problem is noticed soon.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A fresh report is refreshed somewhat before its TTL ends, by up to this fraction of the TTL
/// (at random), so tenants loaded together do not all expire in the same second.
pub const TTL_JITTER: f64 = 0.1;

/// Graph's throttling window for report downloads: 14 per 10 minutes per app and tenant.
pub const REPORT_WINDOW: Duration = Duration::from_secs(600);

/// At most this many report requests per tenant in any [`REPORT_WINDOW`], under Graph's 14
/// whatever the TTL, the scrape rate and the failures (backoff after a success-failure mix, a
/// Graph 401 retried within a refresh) would otherwise add up to.
pub const REPORT_BUDGET: usize = 12;

/// The most report requests one refresh makes: the first, and one retry after a Graph 401.
const REPORT_REQUESTS_PER_REFRESH: usize = 2;

/// What all tenants of an exporter share.
#[derive(Clone)]
pub struct Shared {
    /// The outbound client: one connection pool per host for all tenants.
    pub http: crate::http_client::HttpClient,
    /// Bounds how many refreshes run at once, so a thousand tenants expiring together do not
    /// open a thousand connections or spend Graph's budget in one burst.
    pub refresh_slots: Arc<Semaphore>,
    /// Bumped whenever a refresh starts or ends: the exposition is rebuilt only when it moves.
    pub generation: Arc<AtomicU64>,
}

/// A report as served, with when it was fetched.
#[derive(Debug)]
pub struct CachedReport {
    /// The parsed report.
    pub report: ActivationReport,
    /// Its gauges, encoded once.
    pub samples: ReportSamples,
    /// Wall-clock time of the fetch, for the landing page.
    pub fetched: SystemTime,
}

/// What [`Tenant::ensure_fresh`] found.
#[derive(Debug)]
pub enum Freshness {
    /// A refresh runs; the receiver's `changed()` completes when it ends.
    Refreshing(watch::Receiver<()>),
    /// Nothing will be started before this instant.
    Until(Instant),
}

/// What the landing page shows of a tenant.
#[derive(Clone, Debug)]
pub struct Status {
    /// The latest completed refresh succeeded.
    pub up: bool,
    /// The report being served, if any.
    pub report: Option<Arc<CachedReport>>,
    /// The latest failure's message, cleared by a success.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct State {
    /// The last good report: replaced only by a newer good one, never cleared.
    report: Option<Arc<CachedReport>>,
    /// When `report` goes stale: fetched + TTL, less jitter.
    expires_at: Option<Instant>,
    /// No request to Graph before this instant (Retry-After, or backoff after a failure).
    not_before: Option<Instant>,
    /// Failures since the last success, for the exponential backoff.
    failures: u32,
    /// The running refresh; its sender is dropped when it ends.
    inflight: Option<watch::Receiver<()>>,
    /// The latest completed refresh succeeded.
    up: bool,
    /// The latest failure, for the landing page.
    last_error: Option<String>,
    /// When the report requests of the last [`REPORT_WINDOW`] were sent, oldest first, to keep
    /// within [`REPORT_BUDGET`].
    report_requests: VecDeque<Instant>,
}

impl State {
    /// When a refresh may start without taking the report requests of the window past
    /// [`REPORT_BUDGET`]; forgets the requests that left the window.
    fn budget_allows_at(&mut self, now: Instant) -> Option<Instant> {
        while self
            .report_requests
            .front()
            .is_some_and(|sent| *sent + REPORT_WINDOW <= now)
        {
            self.report_requests.pop_front();
        }
        let allowed = REPORT_BUDGET - REPORT_REQUESTS_PER_REFRESH;
        let excess = self.report_requests.len().checked_sub(allowed)?;
        // With `excess` requests too many, the refresh may start once the oldest `excess` have
        // left the window.
        let last_to_leave = excess.checked_sub(1)?;
        Some(self.report_requests[last_to_leave] + REPORT_WINDOW)
    }
}

/// One tenant of the exporter.
pub struct Tenant {
    /// The `tenant` label value.
    name: String,
    /// How long a report is served before a scrape refreshes it.
    ttl: Duration,
    /// The configuration it was built from, to tell on reload whether it changed.
    config: TenantConfig,
    /// What all tenants share.
    shared: Shared,
    /// This tenant's token, reused until shortly before it expires.
    token: TokenCache,
    /// Requests and downloads the report.
    graph: GraphClient,
    /// This tenant's self-metric handles.
    metrics: TenantMetrics,
    /// Everything that changes; the lock is never held across an `.await`.
    state: Mutex<State>,
}

/// Clears the in-flight marker when a refresh task ends, even by a panic.
struct InflightGuard<'a>(&'a Tenant);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.state().inflight = None;
    }
}

/// Exponential backoff after `failures` consecutive failures, capped, with ±20% jitter so that
/// tenants and replicas that failed together do not retry together.
pub fn backoff(failures: u32, ttl: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE
        .saturating_mul(1 << exponent)
        .min(BACKOFF_MAX)
        .min(ttl);
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

impl Tenant {
    /// A tenant from its configuration; nothing is fetched until the first scrape.
    pub fn new(
        config: &TenantConfig,
        shared: Shared,
        max_report_size: u64,
        metrics: TenantMetrics,
    ) -> Result<Tenant, String> {
        let credential = credentials::build(
            &config.credential,
            CredentialParams {
                tenant_name: &config.name,
                tenant_id: &config.tenant_id,
                client_id: &config.client_id,
                authority_host: &config.authority_host,
                scope: &config.scope,
                expiry: Some(metrics.credential_expiry_observer()),
            },
        )?;
        Ok(Tenant {
            name: config.name.clone(),
            ttl: config.cache_ttl,
            graph: GraphClient::new(
                shared.http.clone(),
                &config.graph_endpoint,
                &config.api_version,
                max_report_size,
            )
            .with_format(config.report_format),
            config: config.clone(),
            shared,
            token: TokenCache::new(credential),
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// The `tenant` label value.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should it ever, the state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The report being served.
    pub fn cached(&self) -> Option<Arc<CachedReport>> {
        self.state().report.clone()
    }

    /// A snapshot for the landing page.
    pub fn status(&self) -> Status {
        let state = self.state();
        Status {
            up: state.up,
            report: state.report.clone(),
            last_error: state.last_error.clone(),
        }
    }

    /// Starts a refresh if the report is stale at `now` and Graph may be asked. Returns the
    /// running refresh (new or already running) to wait on, or the instant until which nothing
    /// will be started (the TTL, a Retry-After or the backoff).
    pub fn ensure_fresh(self: &Arc<Self>, now: Instant) -> Freshness {
        let mut state = self.state();
        if let Some(running) = &state.inflight {
            return Freshness::Refreshing(running.clone());
        }
        // Stale once the TTL has passed, and allowed once Retry-After or the backoff has.
        let due = state.expires_at.max(state.not_before);
        if let Some(due) = due.filter(|due| now < *due) {
            return Freshness::Until(due);
        }
        if let Some(due) = state.budget_allows_at(now).filter(|due| now < *due) {
            tracing::info!(
                tenant = %self.name,
                budget = REPORT_BUDGET,
                wait_seconds = due.duration_since(now).as_secs_f64(),
                "Report request budget of the 10-minute window used up; serving the cache until it frees"
            );
            return Freshness::Until(due);
        }
        let (done, running) = watch::channel(());
        state.inflight = Some(running.clone());
        drop(state);
        let tenant = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = InflightGuard(&tenant);
            // Closed only if the exporter is going away; then refreshing anyway is harmless.
            let _slot = tenant.shared.refresh_slots.acquire().await.ok();
            let _ = tenant.refresh().await;
            drop(done);
        });
        Freshness::Refreshing(running)
    }

    /// Runs one refresh now and records its outcome; the error is returned as well (for
    /// `check`). Scrapes go through [`Tenant::ensure_fresh`] instead.
    pub async fn refresh(&self) -> Result<(), Error> {
        let started = Instant::now();
        self.metrics.refresh_started();
        self.shared.generation.fetch_add(1, Ordering::Release);
        let result = self.fetch().await;
        let took = started.elapsed();
        let now = Instant::now();
        let mut state = self.state();
        let outcome = match result {
            Ok((report, redirect_latency)) => {
                tracing::info!(
                    tenant = %self.name,
                    products = report.products.len(),
                    refresh_date = %report.refresh_date.map_or_else(|| "-".to_owned(), |d| d.to_string()),
                    duration_seconds = took.as_secs_f64(),
                    "Refreshed the activations report"
                );
                let fetched = SystemTime::now();
                state.report = Some(Arc::new(CachedReport {
                    samples: encode_report(&self.name, &report),
                    report,
                    fetched,
                }));
                let jitter = self.ttl.mul_f64(TTL_JITTER * fastrand::f64());
                state.expires_at = Some(now + self.ttl - jitter);
                state.not_before = None;
                state.failures = 0;
                state.up = true;
                state.last_error = None;
                self.metrics
                    .refresh_succeeded(fetched, redirect_latency, took);
                Ok(())
            }
            Err(error) => {
                state.failures += 1;
                let wait =
                    backoff(state.failures, self.ttl).max(error.retry_after().unwrap_or_default());
                state.not_before = Some(now + wait);
                state.up = false;
                state.last_error = Some(error.to_string());
                tracing::warn!(
                    tenant = %self.name,
                    stage = error.stage().as_str(),
                    reason = error.reason(),
                    retry_after_seconds = wait.as_secs_f64(),
                    serving_stale = state.report.is_some(),
                    error = %error,
                    "Refresh of the activations report failed"
                );
                self.metrics.refresh_failed(&error, took);
                Err(error)
            }
        };
        // The exposition is rebuilt once it sees the generation move.
        self.shared.generation.fetch_add(1, Ordering::Release);
        outcome
    }

    /// Token, report, download, parse; a Graph 401 drops the token and tries once more.
    async fn fetch(&self) -> Result<(ActivationReport, Option<Duration>), Error> {
        let mut retried = false;
        loop {
            let token = self.token.token(&self.shared.http).await?;
            self.state().report_requests.push_back(Instant::now());
            match self.graph.fetch_report(&token).await {
                Err(error) if error.is_unauthorized_token() && !retried => {
                    tracing::debug!(tenant = %self.name, "Graph refused the token; fetching a new one");
                    self.token.invalidate();
                    retried = true;
                }
                Err(error) => {
                    if error.is_unauthorized_token() {
                        self.token.invalidate();
                    }
                    return Err(error);
                }
                Ok(download) => {
                    let report = match self.graph.format() {
                        ReportFormat::Csv => report::parse_csv(&download.body)?,
                        ReportFormat::Json => report::parse_json(&download.body)?,
                    };
                    return Ok((report, download.redirect_latency));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_for_a_whole_refresh() {
        let start = Instant::now();
        let mut state = State::default();
        for i in 0..10 {
            state
                .report_requests
                .push_back(start + Duration::from_secs(i));
        }
        assert_eq!(
            state.budget_allows_at(start + Duration::from_secs(10)),
            None
        );
        state
            .report_requests
            .push_back(start + Duration::from_secs(10));
        // 11 sent: the refresh may make 2, so the oldest must leave the window first.
        let now = start + Duration::from_secs(11);
        assert_eq!(state.budget_allows_at(now), Some(start + REPORT_WINDOW));
        // Once it has, it is forgotten.
        assert_eq!(state.budget_allows_at(start + REPORT_WINDOW), None);
        assert_eq!(state.report_requests.len(), 10);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let hour = Duration::from_secs(3600);
        for _ in 0..100 {
            let first = backoff(1, hour);
            assert!(
                first >= Duration::from_secs(24) && first <= Duration::from_secs(36),
                "{first:?}"
            );
            let third = backoff(3, hour);
            assert!(
                third >= Duration::from_secs(96) && third <= Duration::from_secs(144),
                "{third:?}"
            );
            let many = backoff(40, hour);
            assert!(many <= BACKOFF_MAX.mul_f64(1.2), "{many:?}");
            let short_ttl = backoff(5, Duration::from_secs(60));
            assert!(short_ttl <= Duration::from_secs(72), "{short_ttl:?}");
        }
    }
}
