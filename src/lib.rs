//! office365-activations-exporter: Microsoft 365 Apps (Office) activation counts from Microsoft
//! Graph, as Prometheus metrics.
//!
//! The parts, in the order data meets them:
//!
//! - [`config`]: flags, environment and the YAML file, validated into one [`config::Config`].
//! - [`credentials`]: access tokens from Entra ID, cached until shortly before they expire.
//! - [`http_client`]: the one shared outbound HTTPS client (no automatic redirects, capped bodies).
//! - [`graph`]: the report request, the manual 302, the download without the token.
//! - [`report`]: the CSV parser; pure, strict where it matters, lenient where Graph varies.
//! - [`tenant`]: one tenant's cache and its state machine (TTL, single flight, Retry-After, backoff).
//! - [`metrics`]: the exposition: report gauges encoded once per refresh, plus self-metrics.
//! - [`exporter`]: all tenants, and the scrape flow (refresh what is stale, within the deadline);
//!   reloads of the tenant list.
//! - [`exposition`]: the /metrics body, rebuilt only when a refresh changed it; gzip composed
//!   from a once-per-refresh deflate of the stable part.
//! - [`server`]: the HTTP server: landing page, /metrics, health, readiness, graceful shutdown.
//! - [`web_config`]: `--web.config.file` (exporter-toolkit format): TLS, basic auth, headers.
//! - [`app`]: wiring for `serve` and `check`, and the demo.
//! - [`fake_graph`]: a faithful fake of Entra ID, Graph and the download host, over TLS, for the
//!   demo and the tests.
//! - [`error`]: the refresh error type and its bounded `stage` / `reason` label values.
//! - [`build_info`]: the build facts (version, revision, branch, build date, rustc, target) that
//!   `--version` prints and the build_info metric carries.
//! - [`manual`]: the man page and the bash, zsh and fish completions, rendered from the clap
//!   definitions by the hidden `man` and `completion` subcommands.
//!
//! Two flows, one way each. Scrape: Prometheus, [`server`], [`exporter`], each [`tenant`] ("be
//! fresh, but do not make me wait past my deadline"), [`metrics`]. Refresh (one per tenant at a
//! time, in its own task): [`tenant`], [`credentials`], [`graph`], [`report`], the tenant's cache.

pub mod app;
pub mod build_info;
pub mod config;
pub mod credentials;
pub mod error;
pub mod exporter;
pub mod exposition;
pub mod fake_graph;
pub mod graph;
pub mod http_client;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod report;
pub mod server;
pub mod tenant;
pub mod web_config;
