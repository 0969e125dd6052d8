//! One tenant: its reports, each with its cache and the state machine that decides when Graph
//! may be asked for it.
//!
//! A tenant holds one [`Report`] per enabled report kind ([`crate::reports`]), each with its own
//! cache, TTL, request budget, Retry-After and backoff: one report failing or throttled never
//! touches another's. A scrape calls [`Tenant::ensure_fresh`]. When a cached report is older than
//! its TTL, no refresh of it is running, and Graph's Retry-After (or our own backoff after a
//! failure) has passed, it spawns one refresh task and hands back a receiver to wait on; every
//! other scrape in the meantime gets the same receiver (single flight). The refresh runs to its
//! end even if the scrape that started it gives up. A failed refresh keeps the last good report.
//! The reports of a tenant share its token, fetched once for all of them.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::{ReportConfig, TenantConfig};
use crate::credentials::{self, CredentialParams, Secret, TokenCache};
use crate::error::Error;
use crate::graph::{GraphClient, ReportFormat};
use crate::metrics::{Metrics, TenantParts};
use crate::reports::{Encoded, ReportKind};
use crate::status::Status as StatusSeries;

/// The first retry after a failure waits about this long; each further failure doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Backoff never exceeds this (nor the TTL), so a fixed problem is noticed soon.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A fresh report is refreshed somewhat before its TTL ends, by up to this fraction of the TTL
/// (at random), so tenants loaded together do not all expire in the same second.
pub const TTL_JITTER: f64 = 0.1;

/// Graph's throttling window for report downloads: 14 per 10 minutes per app, tenant and report
/// API (CSV); 100 for the beta JSON.
pub const REPORT_WINDOW: Duration = Duration::from_secs(600);

/// At most this many CSV report requests per tenant and report in any [`REPORT_WINDOW`], under
/// Graph's 14 whatever the TTL, the scrape rate and the failures (backoff after a success-failure
/// mix, a Graph 401 retried within a refresh) would otherwise add up to.
pub const REPORT_BUDGET: usize = 12;

/// The same for the beta JSON, whose limit is 100; every page of a paged report counts.
pub const JSON_REPORT_BUDGET: usize = 90;

/// The requests one refresh may need beyond its pages: the first, and one retry after a Graph
/// 401. A refresh starts only with this much room left in the window.
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
    /// The exporter-wide histograms and HELP texts.
    pub metrics: Arc<Metrics>,
}

/// A report as served, with when it was fetched.
#[derive(Debug)]
pub struct CachedReport {
    /// Which report.
    pub kind: ReportKind,
    /// Its gauges, encoded once, with its date and row count.
    pub encoded: Encoded,
    /// Wall-clock time of the fetch, for the landing page.
    pub fetched: SystemTime,
}

/// What [`Tenant::ensure_fresh`] found for one report.
#[derive(Debug)]
pub enum Freshness {
    /// A refresh runs; the receiver's `changed()` completes when it ends.
    Refreshing(watch::Receiver<()>),
    /// Nothing will be started before this instant.
    Until(Instant),
}

/// What the landing page shows of one report of a tenant.
#[derive(Clone, Debug)]
pub struct Status {
    /// Which report.
    pub kind: ReportKind,
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
    /// within the budget.
    report_requests: VecDeque<Instant>,
}

impl State {
    /// Forgets the requests that left the window at `now`.
    fn prune(&mut self, now: Instant) {
        while self
            .report_requests
            .front()
            .is_some_and(|sent| *sent + REPORT_WINDOW <= now)
        {
            self.report_requests.pop_front();
        }
    }

    /// When a refresh may start without taking the report requests of the window past
    /// `budget`; forgets the requests that left the window.
    fn budget_allows_at(&mut self, now: Instant, budget: usize) -> Option<Instant> {
        self.prune(now);
        let allowed = budget - REPORT_REQUESTS_PER_REFRESH;
        let excess = self.report_requests.len().checked_sub(allowed)?;
        // With `excess` requests too many, the refresh may start once the oldest `excess` have
        // left the window.
        let last_to_leave = excess.checked_sub(1)?;
        Some(self.report_requests[last_to_leave] + REPORT_WINDOW)
    }

    /// Counts one request sent at `now` against the window, refusing it past `budget`.
    fn count_request_at(&mut self, now: Instant, budget: usize) -> Result<(), Error> {
        self.prune(now);
        if self.report_requests.len() >= budget {
            return Err(Error::OverBudget { budget });
        }
        self.report_requests.push_back(now);
        Ok(())
    }
}

/// One report of one tenant: what it fetches, and its state.
pub struct Report {
    /// Which report.
    kind: ReportKind,
    /// How long the report is served before a scrape refreshes it.
    ttl: Duration,
    /// Requests the report and downloads it.
    graph: GraphClient,
    /// Report requests allowed per [`REPORT_WINDOW`]: CSV and JSON have their own limits.
    budget: usize,
    /// Everything that changes; the lock is never held across an `.await`.
    state: Mutex<State>,
}

impl Report {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should it ever, the state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which report.
    pub fn kind(&self) -> ReportKind {
        self.kind
    }

    /// Counts one request to Graph against the window, refusing it past the budget.
    fn count_request(&self) -> Result<(), Error> {
        self.state().count_request_at(Instant::now(), self.budget)
    }
}

/// One tenant of the exporter.
pub struct Tenant {
    /// The `tenant` label value.
    name: String,
    /// The configuration it was built from, to tell on reload whether it changed.
    config: TenantConfig,
    /// What all tenants share.
    shared: Shared,
    /// This tenant's token, reused until shortly before it expires, for all its reports.
    token: TokenCache,
    /// Held while a token is fetched, so two reports refreshing at once ask Entra ID once.
    token_fetch: tokio::sync::Mutex<()>,
    /// The enabled reports, in the configuration's order.
    reports: Vec<Report>,
    /// Its status series, encoded whenever they change.
    series: Arc<StatusSeries>,
    /// Its `/probe` body and the status generation it was rendered at.
    probe: arc_swap::ArcSwapOption<(u64, bytes::Bytes)>,
}

/// Clears the in-flight marker when a refresh task ends, even by a panic.
struct InflightGuard<'a>(&'a Report);

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
    pub fn new(config: &TenantConfig, shared: Shared) -> Result<Tenant, String> {
        let kinds: Vec<ReportKind> = config.reports.iter().map(|r| r.kind).collect();
        let series = Arc::new(StatusSeries::new(
            &config.name,
            &kinds,
            Arc::clone(&shared.generation),
        ));
        let expiry: credentials::ExpiryObserver = {
            let series = Arc::clone(&series);
            Arc::new(move |at| series.credential_expires(at))
        };
        let credential = credentials::build(
            &config.credential,
            CredentialParams {
                tenant_name: &config.name,
                tenant_id: &config.tenant_id,
                client_id: &config.client_id,
                authority_host: &config.authority_host,
                scope: &config.scope,
                expiry: Some(expiry),
            },
        )?;
        let reports = config
            .reports
            .iter()
            .map(|report: &ReportConfig| Report {
                kind: report.kind,
                ttl: report.cache_ttl,
                graph: GraphClient::new(
                    shared.http.clone(),
                    &config.graph_endpoint,
                    &config.api_version,
                    report.kind.api,
                    report.max_size,
                )
                .with_format(config.report_format)
                .with_cap_setting(if report.kind.large {
                    "--graph.max-user-detail-size"
                } else {
                    "--graph.max-report-size"
                }),
                budget: match config.report_format {
                    ReportFormat::Csv => REPORT_BUDGET,
                    ReportFormat::Json => JSON_REPORT_BUDGET,
                },
                state: Mutex::new(State::default()),
            })
            .collect();
        Ok(Tenant {
            name: config.name.clone(),
            config: config.clone(),
            shared,
            token: TokenCache::new(credential),
            token_fetch: tokio::sync::Mutex::new(()),
            reports,
            series,
            probe: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// Takes over, from the tenant this one replaces in a reload, the state of every report
    /// both fetch from the same place: cache, budget, Retry-After, backoff and status series;
    /// and the token, with the token endpoint's Retry-After. A reload that changes one report's
    /// settings then refetches nothing else. The caller checks that both are the same tenant
    /// with the same credentials.
    pub fn take_over(&self, old: &Tenant) {
        self.token.take_over(&old.token);
        for report in &self.reports {
            let Some(previous) = old
                .reports
                .iter()
                .find(|r| r.kind == report.kind && r.graph.same_target(&report.graph))
            else {
                continue;
            };
            let mut from = previous.state();
            let mut to = report.state();
            to.report = from.report.clone();
            to.expires_at = from.expires_at;
            to.not_before = from.not_before;
            to.failures = from.failures;
            to.up = from.up;
            to.last_error = from.last_error.clone();
            to.report_requests = std::mem::take(&mut from.report_requests);
            // The old tenant is going away; its budget now lives here.
            from.report_requests = to.report_requests.clone();
            self.series.take_over(&old.series, report.kind);
        }
    }

    /// What the tenant shows on /metrics and /probe.
    pub fn parts(&self) -> TenantParts {
        TenantParts {
            reports: self.cached().collect(),
            status: self.series.lines(),
        }
    }

    /// The tenant's `/probe` body, rendered again only when something of it changed.
    pub fn probe_body(&self) -> bytes::Bytes {
        // Read the generation first: a change landing meanwhile is rendered again next time.
        let generation = self.series.generation();
        if let Some(cached) = self.probe.load().as_ref() {
            if cached.0 == generation {
                return cached.1.clone();
            }
        }
        let body = bytes::Bytes::from(self.shared.metrics.render_tenant(&self.parts()));
        self.probe.store(Some(Arc::new((generation, body.clone()))));
        body
    }

    /// The `tenant` label value.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// The enabled reports.
    pub fn reports(&self) -> &[Report] {
        &self.reports
    }

    /// The reports being served (those loaded at least once).
    pub fn cached(&self) -> impl Iterator<Item = Arc<CachedReport>> + '_ {
        self.reports.iter().filter_map(|r| r.state().report.clone())
    }

    /// Every enabled report has loaded at least once.
    pub fn loaded(&self) -> bool {
        self.reports.iter().all(|r| r.state().report.is_some())
    }

    /// A snapshot of each report, for the landing page.
    pub fn status(&self) -> Vec<Status> {
        self.reports
            .iter()
            .map(|r| {
                let state = r.state();
                Status {
                    kind: r.kind,
                    up: state.up,
                    report: state.report.clone(),
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }

    /// Starts a refresh of each report that is stale at `now` and that Graph may be asked for.
    /// Returns, per report, the running refresh (new or already running) to wait on, or the
    /// instant until which nothing will be started (the TTL, a Retry-After or the backoff).
    pub fn ensure_fresh(self: &Arc<Self>, now: Instant) -> Vec<Freshness> {
        (0..self.reports.len())
            .map(|index| self.ensure_report_fresh(index, now))
            .collect()
    }

    fn ensure_report_fresh(self: &Arc<Self>, index: usize, now: Instant) -> Freshness {
        let report = &self.reports[index];
        let mut state = report.state();
        if let Some(running) = &state.inflight {
            return Freshness::Refreshing(running.clone());
        }
        // Stale once the TTL has passed, and allowed once Retry-After or the backoff has.
        let due = state.expires_at.max(state.not_before);
        if let Some(due) = due.filter(|due| now < *due) {
            return Freshness::Until(due);
        }
        if let Some(due) = state
            .budget_allows_at(now, report.budget)
            .filter(|due| now < *due)
        {
            tracing::info!(
                tenant = %self.name,
                report = report.kind.name,
                budget = report.budget,
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
            let report = &tenant.reports[index];
            let _guard = InflightGuard(report);
            // Closed only if the exporter is going away; then refreshing anyway is harmless.
            let _slot = tenant.shared.refresh_slots.acquire().await.ok();
            let _ = tenant.refresh_report(report).await;
            drop(done);
        });
        Freshness::Refreshing(running)
    }

    /// Refreshes every report once, one after another, and returns each outcome (for `check`).
    /// Scrapes go through [`Tenant::ensure_fresh`] instead.
    pub async fn refresh(&self) -> Vec<(ReportKind, Result<(), Error>)> {
        let mut outcomes = Vec::with_capacity(self.reports.len());
        for report in &self.reports {
            outcomes.push((report.kind, self.refresh_report(report).await));
        }
        outcomes
    }

    /// Runs one refresh of `report` now and records its outcome.
    async fn refresh_report(&self, report: &Report) -> Result<(), Error> {
        let started = Instant::now();
        self.series.refresh_started(report.kind);
        let result = self.fetch(report).await;
        let took = started.elapsed();
        let now = Instant::now();
        let mut state = report.state();
        let outcome = match result {
            Ok((encoded, redirect_latency)) => {
                tracing::info!(
                    tenant = %self.name,
                    report = report.kind.name,
                    rows = encoded.rows,
                    refresh_date = %encoded.refresh_date.map_or_else(|| "-".to_owned(), |d| d.to_string()),
                    duration_seconds = took.as_secs_f64(),
                    "Refreshed the report"
                );
                let fetched = SystemTime::now();
                self.shared
                    .metrics
                    .observe(report.kind, redirect_latency, took);
                // The report first: the status change below moves the generation.
                let date = encoded.refresh_date;
                state.report = Some(Arc::new(CachedReport {
                    kind: report.kind,
                    encoded,
                    fetched,
                }));
                let jitter = report.ttl.mul_f64(TTL_JITTER * fastrand::f64());
                state.expires_at = Some(now + report.ttl - jitter);
                state.not_before = None;
                state.failures = 0;
                state.up = true;
                state.last_error = None;
                self.series
                    .refresh_succeeded(report.kind, fetched, date, redirect_latency, took);
                Ok(())
            }
            Err(error) => {
                state.failures += 1;
                let wait = backoff(state.failures, report.ttl)
                    .max(error.retry_after().unwrap_or_default());
                state.not_before = Some(now + wait);
                state.up = false;
                state.last_error = Some(error.to_string());
                tracing::warn!(
                    tenant = %self.name,
                    report = report.kind.name,
                    stage = error.stage().as_str(),
                    reason = error.reason(),
                    retry_after_seconds = wait.as_secs_f64(),
                    serving_stale = state.report.is_some(),
                    error = %error,
                    "Refresh of the report failed"
                );
                self.shared.metrics.observe(report.kind, None, took);
                self.series.refresh_failed(report.kind, &error, took);
                Err(error)
            }
        };
        outcome
    }

    /// The tenant's token, fetched once however many reports ask at the same time.
    async fn token(&self) -> Result<Secret, Error> {
        let _one_at_a_time = self.token_fetch.lock().await;
        self.token.token(&self.shared.http).await
    }

    /// Token, report, download, parse; a Graph 401 drops the token and tries once more.
    async fn fetch(&self, report: &Report) -> Result<(Encoded, Option<Duration>), Error> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut parser = (report.kind.parser)();
            let mut count = || report.count_request();
            match report
                .graph
                .fetch(&token, parser.as_mut(), &mut count)
                .await
            {
                Err(error) if error.is_unauthorized_token() && !retried => {
                    tracing::debug!(tenant = %self.name, report = report.kind.name, "Graph refused the token; fetching a new one");
                    self.token.invalidate();
                    retried = true;
                }
                Err(error) => {
                    if error.is_unauthorized_token() {
                        self.token.invalidate();
                    }
                    return Err(error);
                }
                Ok(fetched) => {
                    let encoded = parser.finish(&self.name)?;
                    return Ok((encoded, fetched.redirect_latency));
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
            state.budget_allows_at(start + Duration::from_secs(10), REPORT_BUDGET),
            None
        );
        state
            .report_requests
            .push_back(start + Duration::from_secs(10));
        // 11 sent: the refresh may make 2, so the oldest must leave the window first.
        let now = start + Duration::from_secs(11);
        assert_eq!(
            state.budget_allows_at(now, REPORT_BUDGET),
            Some(start + REPORT_WINDOW)
        );
        // Once it has, it is forgotten.
        assert_eq!(
            state.budget_allows_at(start + REPORT_WINDOW, REPORT_BUDGET),
            None
        );
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

/// The request budget against any sequence of refreshes: successes, failures, Graph 401 retries
/// and paged reports, at any spacing. proptest prints the failing sequence (and keeps it in
/// `proptest-regressions/`), so a failure is reproducible.
#[cfg(test)]
mod budget_properties {
    use super::*;
    use proptest::prelude::*;

    /// One refresh a scrape would start: the wait before it, and its requests to Graph.
    #[derive(Clone, Debug)]
    struct Refresh {
        /// Seconds since the previous refresh ended.
        gap: u64,
        /// Report requests it makes if nothing stops it: the first, one more after a Graph 401,
        /// one per further page of a paged JSON report.
        requests: usize,
        /// Seconds between two of its requests (the download, a page).
        step: u64,
        /// It fails (a 5xx, a parse error) after this many requests, if fewer than `requests`.
        fails_after: usize,
    }

    fn refresh() -> impl Strategy<Value = Refresh> {
        (0u64..400, 1usize..8, 0u64..40, 1usize..8).prop_map(
            |(gap, requests, step, fails_after)| Refresh {
                gap,
                requests,
                step,
                fails_after,
            },
        )
    }

    /// Runs the refreshes the way [`Tenant`] does: one starts only when
    /// [`State::budget_allows_at`] lets it, each request goes through
    /// [`State::count_request_at`]. Returns when each request was sent, and whether the budget
    /// ever refused one of the first [`REPORT_REQUESTS_PER_REFRESH`] requests of a refresh it let
    /// start (a CSV refresh, even with a 401 retry, must never be cut short).
    fn run(budget: usize, refreshes: &[Refresh]) -> (Vec<Instant>, bool) {
        let start = Instant::now();
        let mut now = start;
        let mut state = State::default();
        let mut sent = Vec::new();
        let mut first_requests_refused = false;
        for r in refreshes {
            now += Duration::from_secs(r.gap);
            if state
                .budget_allows_at(now, budget)
                .is_some_and(|due| now < due)
            {
                continue;
            }
            let wanted = r.requests.min(r.fails_after);
            for i in 0..wanted {
                if i > 0 {
                    now += Duration::from_secs(r.step);
                }
                match state.count_request_at(now, budget) {
                    Ok(()) => sent.push(now),
                    Err(_) => {
                        first_requests_refused |= i < REPORT_REQUESTS_PER_REFRESH;
                        break;
                    }
                }
            }
        }
        (sent, first_requests_refused)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_more_than_the_budget_in_any_window(
            json in any::<bool>(),
            refreshes in prop::collection::vec(refresh(), 1..120),
        ) {
            let budget = if json { JSON_REPORT_BUDGET } else { REPORT_BUDGET };
            let (sent, first_requests_refused) = run(budget, &refreshes);
            for (i, first) in sent.iter().enumerate() {
                let in_window = sent[i..]
                    .iter()
                    .take_while(|t| **t < *first + REPORT_WINDOW)
                    .count();
                prop_assert!(
                    in_window <= budget,
                    "{in_window} requests in the window from request {i} (budget {budget})"
                );
            }
            prop_assert!(
                !first_requests_refused,
                "a refresh the budget let start was cut short within its first {REPORT_REQUESTS_PER_REFRESH} requests"
            );
        }
    }
}
