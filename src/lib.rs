//! office365-activations-exporter: Microsoft 365 Apps (Office) activation counts from Microsoft
//! Graph, as Prometheus metrics.
//!
//! The parts, in the order data meets them:
//!
//! - [`config`]: flags, environment and the YAML file, validated into one [`config::Config`];
//!   which reports each tenant runs.
//! - [`shard`]: which tenants this process owns (`--shard.index` of `--shard.count`), decided
//!   when the configuration is read, so nothing downstream sees another shard's tenants.
//! - [`credentials`]: access tokens from Entra ID, cached until shortly before they expire.
//! - [`http_client`]: the one shared outbound HTTPS client (no automatic redirects, capped bodies).
//! - [`graph`]: any report's request, the manual 302, the streamed download without the token,
//!   the JSON pages.
//! - [`reports`]: the report kinds, one file each ([`reports::user_counts`],
//!   [`reports::activation_counts`], [`reports::user_detail`]): the Graph function each asks
//!   for, its streaming CSV and JSON parser (pure; strict where it matters, lenient where Graph
//!   varies), its gauges and their encoding. A new kind is one new file and a line in
//!   [`reports::KINDS`].
//! - [`tenant`]: one tenant's reports, each with its cache and state machine (TTL, single
//!   flight, budget, Retry-After, backoff), sharing the tenant's token.
//! - [`status`]: a tenant's status series (up, refreshes, errors, durations, dates), kept and
//!   encoded by the tenant whenever they change: a few series per tenant and report.
//! - [`metrics`]: the exposition: every tenant's encoded lines stitched family by family
//!   (/metrics) or one tenant's (/probe), plus the exporter-wide histograms and process series.
//! - [`exporter`]: all tenants, and the scrape flow (refresh what is stale, within the deadline);
//!   reloads of the tenant list.
//! - [`exposition`]: the /metrics body, rebuilt only when a refresh changed it; gzip composed
//!   from a once-per-refresh deflate of the stable part.
//! - [`server`]: the HTTP server: landing page, /metrics, /probe, /sd, health, readiness,
//!   graceful shutdown.
//! - [`sd`]: /sd, Prometheus HTTP service discovery of this process's tenants.
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
//! Two flows, one way each. Scrape: Prometheus, [`server`], [`exporter`], each [`tenant`]'s
//! reports (all tenants for /metrics, one for /probe: "be fresh, but do not make me wait past my
//! deadline"), [`metrics`]. Refresh (one per
//! tenant and report at a time, in its own task): [`tenant`], [`credentials`], [`graph`] feeding
//! the kind's parser from [`reports`] as the body streams in, the report's cache.

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
pub mod reports;
pub mod sd;
pub mod server;
pub mod shard;
pub mod status;
pub mod tenant;
pub mod web_config;
