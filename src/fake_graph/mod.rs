//! A fake Microsoft Graph (and Microsoft Entra ID) that behaves on the wire like the real one,
//! for the exporter's `--demo` mode and for the integration tests.
//!
//! [`FakeGraph::start`] runs three HTTPS servers on loopback, each a different origin, because
//! the real service spreads one report fetch over three hosts:
//!
//! 1. the **login host** ([`FakeGraph::authority_host`], like `login.microsoftonline.com`):
//!    `POST /{tenant}/oauth2/v2.0/token` with client credentials, answering with Entra ID's real
//!    error codes (AADSTS90002, 700016, 7000215, 7000222, 70011, 70003, ...) and body shape;
//! 2. the **Graph host** ([`FakeGraph::graph_endpoint`], like `graph.microsoft.com`): the three
//!    views of the Office activations report ([`FakeReport`]),
//!    `GET /v1.0/reports/getOffice365ActivationsUserCounts`, `.../getOffice365ActivationCounts`
//!    and `.../getOffice365ActivationsUserDetail` (any case, also with `()` or `%28%29`, and under
//!    `/beta/`), checking the bearer token and permissions, throttling like Graph (14 requests per
//!    10 minutes per app, tenant and report), answering beta `$format=application/json` directly
//!    (the user detail in pages of [`FakeGraphOptions::json_page_size`] users chained by an
//!    absolute `@odata.nextLink`) and the CSV with `302 Found` to a pre-authenticated link on...
//! 3. the **download host** ([`FakeGraph::download_origin`], like `reports.office.com`, named
//!    `localhost` so that it is a different host name, not just a different port), which serves
//!    the report's CSV (UTF-8 BOM, CRLF) to whoever holds a fresh link, and records any
//!    `Authorization` header that reaches it: the bearer token must never be sent there.
//!
//! The servers present a certificate signed by a CA generated at start ([`FakeGraph::ca_pem`]),
//! so only a client that trusts that CA accepts them. All timing (token and link expiry, throttle
//! windows, delays) uses tokio's clock, so tests running on paused time control it.
//!
//! It also checks what a client authenticates with as Entra ID does ([`identity`]): client
//! secrets, certificate assertions against the certificates registered on the app
//! ([`FakeTenant::certificates`]), and federated tokens (workload identity) against the app's
//! federated credentials and a fake OIDC issuer ([`FakeGraph::mint_federated_token`]). The login
//! and Graph hosts answer to the national clouds' host names too (their certificate names them;
//! [`FakeGraph::cloud_resolve_overrides`] points a client's DNS at them): each cloud's Entra ID
//! issues tokens only for its own Graph, and the national Graphs have only the beta report. Two
//! plain HTTP listeners play IMDS and the App Service identity endpoint ([`msi`]).
//!
//! Tests script unusual answers per tenant and report with [`Canned`] (first in, first out,
//! overriding the normal behaviour) and the other knobs of [`FakeGraph`], and inspect what the
//! exporter did with [`FakeGraph::stats`]. A tenant's activation counts and user detail are set
//! with [`FakeGraph::set_activation_counts`] and [`FakeGraph::set_users`], else derived from its
//! user counts ([`derived_activation_counts`], [`derived_users`]). [`FakeGraphOptions::demo`]
//! gives the `--demo` setup: two tenants ([`DEMO_TENANTS`]) whose numbers drift slowly with
//! wall-clock time ([`demo_products`], [`demo_activation_counts`], [`demo_users`]).

mod clock;
mod demo;
pub mod identity;
pub mod msi;
mod reports;
mod scenario;
mod server;
mod tls;
mod util;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDate;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use clock::FrozenClock;
pub use demo::{
    demo_activation_counts, demo_products, demo_users, DEMO_PRODUCT_TYPES, DEMO_SEEDS, DEMO_TENANTS,
};
pub use identity::{AssertionSeen, FakeCloud, FakeFederatedCredential, TOKEN_EXCHANGE_AUDIENCE};
pub use msi::{FakeManagedIdentity, FakeMsiStats};
pub use reports::{
    derived_activation_counts, derived_users, FakePlatformCounts, FakeReport, FakeReportStats,
    FakeUser, FakeUserProduct, DERIVED_USERS_CAP,
};
pub use scenario::Canned;

use scenario::{Endpoint, State, TenantState};
use server::{Config, Host, Shared};

/// How a [`FakeGraph`] is set up: its tenants and the service limits it enforces.
#[derive(Clone, Debug)]
pub struct FakeGraphOptions {
    /// The tenants the fake knows; any other tenant id is answered as Entra ID answers an
    /// unknown tenant (AADSTS90002).
    pub tenants: Vec<FakeTenant>,
    /// How many report requests Graph accepts per `throttle_window` per (tenant, client id,
    /// report) before answering 429 (the real CSV limit is 14 per 10 minutes, counted per report
    /// API). The beta JSON form has its own budget of `throttle_limit * 100 / 14` (rounded up),
    /// as the real JSON limit is 100; every page of a paged JSON report draws from it.
    pub throttle_limit: u32,
    /// The sliding window `throttle_limit` applies to (real: 10 minutes).
    pub throttle_window: Duration,
    /// How long a download link stays valid (real: "a few minutes"; default 5 minutes).
    pub link_ttl: Duration,
    /// Lifetime of issued access tokens, also reported as `expires_in` (real: 3599 s).
    pub token_lifetime: Duration,
    /// Added before every answer of every host, to model a real network round trip (the
    /// benchmark uses 50 ms); zero by default.
    pub latency: Duration,
    /// The managed identities the fake IMDS and App Service endpoints know.
    pub managed_identities: Vec<FakeManagedIdentity>,
    /// Users per page of the user detail's beta JSON (real: about 200); a client's `$top`
    /// overrides it per request. Zero counts as one.
    pub json_page_size: usize,
}

/// TLS connections accepted so far, per host: shows whether a client pools its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeConnections {
    /// Connections to the login (Entra ID) host.
    pub login: u64,
    /// Connections to the Graph host.
    pub graph: u64,
    /// Connections to the download host.
    pub download: u64,
}

impl Default for FakeGraphOptions {
    /// No tenants, and the real service's limits.
    fn default() -> Self {
        FakeGraphOptions {
            tenants: Vec::new(),
            throttle_limit: 14,
            throttle_window: Duration::from_secs(600),
            link_ttl: Duration::from_secs(300),
            token_lifetime: Duration::from_secs(3599),
            latency: Duration::ZERO,
            managed_identities: Vec::new(),
            json_page_size: 200,
        }
    }
}

impl FakeGraphOptions {
    /// The `--demo` setup: the tenants of [`DEMO_TENANTS`] with [`ReportData::Demo`] data seeded
    /// by [`DEMO_SEEDS`], and the real service's limits (including the throttle of 14).
    pub fn demo() -> Self {
        let tenants = DEMO_TENANTS
            .iter()
            .zip(DEMO_SEEDS)
            .map(|(&(_name, tenant_id, client_id, secret), &seed)| {
                FakeTenant::new(tenant_id, client_id, secret, ReportData::Demo { seed })
            })
            .collect();
        FakeGraphOptions {
            tenants,
            ..FakeGraphOptions::default()
        }
    }
}

/// One Microsoft 365 tenant with one registered application (client credentials).
#[derive(Clone, Debug)]
pub struct FakeTenant {
    /// The directory (tenant) id, as it appears in the token URL path.
    pub tenant_id: String,
    /// The application (client) id registered in this tenant.
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: String,
    /// Whether the application has been granted Reports.Read.All; `false` makes Graph answer
    /// 401 `S2SUnauthorized` "Invalid scope claims/roles." (a token is still issued, as for real).
    pub reports_permission: bool,
    /// Certificates (PEM or DER) uploaded to the application: client assertions must be signed
    /// by one of them and name it by thumbprint.
    pub certificates: Vec<Vec<u8>>,
    /// The application's federated credentials (workload identity).
    pub federated_credentials: Vec<FakeFederatedCredential>,
    /// What the report contains.
    pub data: ReportData,
}

impl FakeTenant {
    /// A tenant whose application has the reports permission.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        data: ReportData,
    ) -> Self {
        FakeTenant {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            reports_permission: true,
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
            data,
        }
    }

    /// Registers a certificate (PEM or DER) on the application.
    pub fn with_certificate(mut self, pem_or_der: impl Into<Vec<u8>>) -> Self {
        self.certificates.push(pem_or_der.into());
        self
    }

    /// Adds a federated credential to the application.
    pub fn with_federated_credential(mut self, credential: FakeFederatedCredential) -> Self {
        self.federated_credentials.push(credential);
        self
    }
}

/// Where a tenant's report numbers come from.
///
/// The user counts come from here directly. The activation counts and the user detail are what a
/// test set with [`FakeGraph::set_activation_counts`] and [`FakeGraph::set_users`]; without
/// that, a fixed tenant derives them from its products ([`derived_activation_counts`],
/// [`derived_users`]) and a demo tenant computes them ([`demo_activation_counts`],
/// [`demo_users`]). Every report carries the refresh date given here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportData {
    /// Exactly these numbers, until changed with [`FakeGraph::set_products`].
    Fixed {
        /// The report's "Report Refresh Date" (the same on every row).
        refresh_date: NaiveDate,
        /// One row per product type; an empty list gives a header-only CSV, as for a tenant
        /// without such licences.
        products: Vec<FakeProduct>,
    },
    /// Numbers computed by [`demo_products`] from the seed and the wall-clock time at download.
    Demo {
        /// Picks the product set, the tenant's size and the phases of its drift.
        seed: u64,
    },
}

/// One row of the report: a product type and its licence counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakeProduct {
    /// The product type. The CSV writes it in upper case (as the real one does); the beta JSON
    /// uses Graph's mixed-case spelling for known products.
    pub product_type: String,
    /// Users with the licence assigned.
    pub assigned: u64,
    /// Users who activated it on at least one device.
    pub activated: u64,
    /// Users with shared computer activation.
    pub shared_computer_activation: u64,
}

impl FakeProduct {
    /// A row with the given counts.
    pub fn new(
        product_type: impl Into<String>,
        assigned: u64,
        activated: u64,
        shared_computer_activation: u64,
    ) -> Self {
        FakeProduct {
            product_type: product_type.into(),
            assigned,
            activated,
            shared_computer_activation,
        }
    }
}

/// What the fake saw for one tenant, as returned by [`FakeGraph::stats`] (a snapshot).
///
/// The report fields at the top level (`report_requests`, `download_requests`,
/// `throttled_requests`, `report_client_request_ids`, `report_paths`, `user_agents`,
/// `report_http_versions`) are about the user counts report only, as before the other reports
/// existed; [`FakeStats::reports`] has every report, user counts included.
/// `download_authorization_headers` collects from the downloads of every report.
///
/// Requests are attributed to a tenant by the URL path on the login host, by the bearer token on
/// the Graph host, and on the download host by the link or, for a path that is no link (mangled,
/// or a relative redirect the client followed), by the bearer token that came along, else the
/// tenant of the previous download on the same connection, else of the latest download. Requests
/// that cannot be attributed are not counted anywhere.
#[derive(Clone, Debug, Default)]
pub struct FakeStats {
    /// Requests to the token endpoint of this tenant (answered in any way).
    pub token_requests: u64,
    /// When each of them arrived (tokio time), in order: shows whether a client waits out a
    /// Retry-After of the token endpoint.
    pub token_request_times: Vec<Instant>,
    /// Requests to the report endpoint with a token of this tenant (answered in any way).
    pub report_requests: u64,
    /// Requests to the download host for a link of this tenant (answered in any way).
    pub download_requests: u64,
    /// Report requests answered 429 by the built-in throttle (not counting canned 429s).
    pub throttled_requests: u64,
    /// Every `Authorization` header value that reached the download host, for a download of any
    /// report; the exporter must never send one there, so tests assert this stays empty.
    pub download_authorization_headers: Vec<String>,
    /// The `client-request-id` header of each report request, in order (`None` when absent).
    pub report_client_request_ids: Vec<Option<String>>,
    /// Path and query of each report request, in order, e.g.
    /// `/v1.0/reports/getOffice365ActivationsUserCounts()`.
    pub report_paths: Vec<String>,
    /// The `User-Agent` of each report request, in order (empty when absent).
    pub user_agents: Vec<String>,
    /// The HTTP version of each report request, in order: `HTTP/2.0` or `HTTP/1.1` (the hosts
    /// offer both by ALPN, like Graph).
    pub report_http_versions: Vec<String>,
    /// How each token was obtained, in order: `client_secret`, `client_certificate`,
    /// `workload_identity` or `managed_identity`.
    pub token_methods: Vec<String>,
    /// Every client assertion received (certificate or federated), accepted or not.
    pub client_assertions: Vec<AssertionSeen>,
    /// Per report (every one of [`FakeReport::ALL`] is present): requests, downloads, throttled
    /// requests, paths and times.
    pub reports: HashMap<FakeReport, FakeReportStats>,
}

impl FakeStats {
    /// The statistics of `report` (empty ones if nothing was recorded).
    pub fn report(&self, report: FakeReport) -> &FakeReportStats {
        self.reports
            .get(&report)
            .unwrap_or(&reports::NO_REPORT_STATS)
    }
}

/// A running fake: three HTTPS listeners and their shared state. Dropping it stops the
/// listeners (their tasks are aborted); [`FakeGraph::shutdown`] does the same and waits.
pub struct FakeGraph {
    /// State and configuration shared with the server tasks.
    shared: Arc<Shared>,
    /// PEM of the CA that signed the servers' certificate.
    ca_pem: String,
    /// The servers' TLS configuration, lent to test servers that clients trust like the fake.
    server_tls: Arc<rustls::ServerConfig>,
    /// Accept loops of the listeners; aborting one also aborts its connections.
    tasks: Vec<JoinHandle<()>>,
    /// Where the login and Graph hosts listen.
    addresses: Addresses,
}

/// Socket addresses of the login and Graph listeners.
#[derive(Clone, Copy, Debug)]
struct Addresses {
    login: std::net::SocketAddr,
    graph: std::net::SocketAddr,
}

impl std::fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGraph")
            .field("authority_host", &self.shared.config.authority_host)
            .field("graph_endpoint", &self.shared.config.graph_endpoint)
            .field("download_origin", &self.shared.config.download_origin)
            .finish_non_exhaustive()
    }
}

impl FakeGraph {
    /// Generates the CA and certificate, binds the three listeners on loopback (port 0) and
    /// starts serving. Must be called within a tokio runtime. Fails on duplicate tenant ids.
    pub async fn start(opts: FakeGraphOptions) -> io::Result<FakeGraph> {
        let mut tenants = HashMap::new();
        for t in opts.tenants {
            let id = t.tenant_id.clone();
            let state =
                TenantState::new(t).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            if tenants.insert(id.clone(), state).is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fake graph: tenant id {id:?} configured twice"),
                ));
            }
        }

        let tls = tls::generate()?;
        let login = tls::bind_v4().await?;
        let graph = tls::bind_v4().await?;
        let (download_v4, download_v6) = tls::bind_dual().await?;
        let imds = tls::bind_v4().await?;
        let app_service = tls::bind_v4().await?;
        let issuer = identity::Issuer::generate().map_err(io::Error::other)?;

        let config = Config {
            authority_host: format!("https://127.0.0.1:{}", login.local_addr()?.port()),
            graph_endpoint: format!("https://127.0.0.1:{}", graph.local_addr()?.port()),
            download_origin: format!("https://localhost:{}", download_v4.local_addr()?.port()),
            throttle_limit: opts.throttle_limit,
            json_throttle_limit: json_limit(opts.throttle_limit),
            throttle_window: opts.throttle_window,
            json_page_size: opts.json_page_size.max(1),
            link_ttl: opts.link_ttl,
            token_lifetime: opts.token_lifetime,
            latency: opts.latency,
            app_service_secret: util::random_id(24),
            imds_endpoint: format!("http://127.0.0.1:{}", imds.local_addr()?.port()),
            app_service_endpoint: format!(
                "http://127.0.0.1:{}/MSI/token/",
                app_service.local_addr()?.port()
            ),
        };
        let addresses = Addresses {
            login: login.local_addr()?,
            graph: graph.local_addr()?,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                tenants,
                msi: msi::MsiState {
                    identities: opts.managed_identities,
                    ..msi::MsiState::default()
                },
                ..State::default()
            }),
            connections: Default::default(),
            issuer,
        });

        let acceptor = TlsAcceptor::from(Arc::clone(&tls.server_config));
        let mut tasks = vec![
            tokio::spawn(server::serve(
                login,
                acceptor.clone(),
                shared.clone(),
                Host::Login,
            )),
            tokio::spawn(server::serve(
                graph,
                acceptor.clone(),
                shared.clone(),
                Host::Graph,
            )),
            tokio::spawn(server::serve(
                download_v4,
                acceptor.clone(),
                shared.clone(),
                Host::Download,
            )),
        ];
        tasks.push(tokio::spawn(msi::serve(
            imds,
            shared.clone(),
            msi::MsiKind::Imds,
        )));
        tasks.push(tokio::spawn(msi::serve(
            app_service,
            shared.clone(),
            msi::MsiKind::AppService,
        )));
        if let Some(v6) = download_v6 {
            tasks.push(tokio::spawn(server::serve(
                v6,
                acceptor,
                shared.clone(),
                Host::Download,
            )));
        }
        tracing::debug!(
            authority_host = %shared.config.authority_host,
            graph_endpoint = %shared.config.graph_endpoint,
            download_origin = %shared.config.download_origin,
            "fake graph started"
        );
        Ok(FakeGraph {
            shared,
            ca_pem: tls.ca_pem,
            server_tls: tls.server_config,
            tasks,
            addresses,
        })
    }

    /// The Entra ID host to get tokens from, `https://127.0.0.1:<port>` (no trailing slash).
    pub fn authority_host(&self) -> String {
        self.shared.config.authority_host.clone()
    }

    /// The Graph host, `https://127.0.0.1:<port>` (no trailing slash, no version). Token
    /// requests may ask for `<graph_endpoint>/.default` or `https://graph.microsoft.com/.default`.
    pub fn graph_endpoint(&self) -> String {
        self.shared.config.graph_endpoint.clone()
    }

    /// The download host that report links point to, `https://localhost:<port>`: a different
    /// host name from the other two, so a client that forwards the bearer token across hosts is
    /// caught.
    pub fn download_origin(&self) -> String {
        self.shared.config.download_origin.clone()
    }

    /// PEM of the CA that signed the servers' certificate (SANs `127.0.0.1`, `::1`, `localhost`);
    /// a client must add it as a trusted root to talk to the fake.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The TLS configuration of the fake's servers (a certificate for `127.0.0.1`, `::1` and
    /// `localhost` signed by [`FakeGraph::ca_pem`]), for a test server that a client trusting
    /// that CA must accept too: an https:// proxy, say.
    pub fn server_tls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server_tls)
    }

    /// Locks the shared state (a poisoned lock is still usable: the state stays consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Runs `f` on the state of `tenant_id`, panicking with the known ids if there is no such
    /// tenant (the knobs are test helpers; a typo should fail loudly).
    fn with_tenant<R>(
        &self,
        what: &str,
        tenant_id: &str,
        f: impl FnOnce(&mut TenantState) -> R,
    ) -> R {
        self.with_state(what, tenant_id, |state| {
            state.tenants.get_mut(tenant_id).map(f)
        })
    }

    /// Runs `f` on the whole state; `f` returns `None` when `tenant_id` is unknown, which panics
    /// (after the lock is released) with the known tenant ids.
    fn with_state<R>(
        &self,
        what: &str,
        tenant_id: &str,
        f: impl FnOnce(&mut State) -> Option<R>,
    ) -> R {
        let mut state = self.lock();
        if let Some(r) = f(&mut state) {
            return r;
        }
        let mut known: Vec<String> = state.tenants.keys().cloned().collect();
        drop(state);
        known.sort();
        panic!("FakeGraph::{what}: unknown tenant id {tenant_id:?} (known: {known:?})");
    }

    /// Queues `c` as the answer to a coming token request for `tenant_id` (FIFO).
    pub fn push_token_response(&self, tenant_id: &str, c: Canned) {
        self.push(Endpoint::Token, "push_token_response", tenant_id, c);
    }

    /// Queues `c` as the answer to a coming user counts report request presenting a token of
    /// `tenant_id` (FIFO): [`FakeGraph::push_report_response_for`] with
    /// [`FakeReport::UserCounts`].
    pub fn push_report_response(&self, tenant_id: &str, c: Canned) {
        self.push(
            Endpoint::Report(FakeReport::UserCounts),
            "push_report_response",
            tenant_id,
            c,
        );
    }

    /// Queues `c` as the answer to a coming request for `report` presenting a token of
    /// `tenant_id` (FIFO, one queue per report), CSV or JSON, any page. It is served whatever the
    /// token's state (expired, revoked) and bypasses the throttle.
    pub fn push_report_response_for(&self, report: FakeReport, tenant_id: &str, c: Canned) {
        self.push(
            Endpoint::Report(report),
            "push_report_response_for",
            tenant_id,
            c,
        );
    }

    /// Queues `c` as the answer to a coming download of a user counts link of `tenant_id`
    /// (FIFO): [`FakeGraph::push_download_response_for`] with [`FakeReport::UserCounts`].
    pub fn push_download_response(&self, tenant_id: &str, c: Canned) {
        self.push(
            Endpoint::Download(FakeReport::UserCounts),
            "push_download_response",
            tenant_id,
            c,
        );
    }

    /// Queues `c` as the answer to a coming download of a link to `report` of `tenant_id` (FIFO,
    /// one queue per report), whatever the link's state (expired, bad signature). A download
    /// that is no link is taken for the report of the previous download on its connection.
    pub fn push_download_response_for(&self, report: FakeReport, tenant_id: &str, c: Canned) {
        self.push(
            Endpoint::Download(report),
            "push_download_response_for",
            tenant_id,
            c,
        );
    }

    /// Shared body of the `push_*_response` knobs.
    fn push(&self, endpoint: Endpoint, what: &str, tenant_id: &str, c: Canned) {
        self.with_tenant(what, tenant_id, |t| {
            t.canned.entry(endpoint).or_default().push_back(c);
        });
    }

    /// `Some(bytes)`: downloads of this tenant's user counts report serve exactly these bytes
    /// (malformed or odd CSV, HTML, oversized bodies); `None`: back to the generated CSV.
    pub fn set_report_body(&self, tenant_id: &str, body: Option<Bytes>) {
        self.set_body(FakeReport::UserCounts, "set_report_body", tenant_id, body);
    }

    /// `Some(bytes)`: downloads of this tenant's `report` serve exactly these bytes; `None`:
    /// back to the generated CSV. (The JSON form is scripted with
    /// [`FakeGraph::push_report_response_for`].)
    pub fn set_report_body_for(&self, report: FakeReport, tenant_id: &str, body: Option<Bytes>) {
        self.set_body(report, "set_report_body_for", tenant_id, body);
    }

    /// Shared body of the `set_report_body*` knobs.
    fn set_body(&self, report: FakeReport, what: &str, tenant_id: &str, body: Option<Bytes>) {
        self.with_tenant(what, tenant_id, |t| match body {
            Some(body) => {
                t.body_override.insert(report, body);
            }
            None => {
                t.body_override.remove(&report);
            }
        });
    }

    /// Replaces the tenant's activation counts report with these rows (an empty list gives a
    /// header-only CSV), instead of the ones derived from its products or the demo's. The refresh
    /// date stays the tenant's.
    pub fn set_activation_counts(&self, tenant_id: &str, rows: Vec<FakePlatformCounts>) {
        self.with_tenant("set_activation_counts", tenant_id, |t| {
            t.activation_counts = Some(Arc::new(rows))
        });
    }

    /// Replaces the tenant's user detail report with these users, in this order (an empty list
    /// gives a header-only CSV and an empty JSON `value`), instead of the ones derived from its
    /// products or the demo's. The refresh date stays the tenant's.
    pub fn set_users(&self, tenant_id: &str, users: Vec<FakeUser>) {
        self.with_tenant("set_users", tenant_id, |t| t.users = Some(Arc::new(users)));
    }

    /// Replaces the tenant's user counts with fixed numbers (also turning a demo tenant fixed);
    /// activation counts and users set explicitly stay, derived ones follow the new products.
    pub fn set_products(
        &self,
        tenant_id: &str,
        refresh_date: NaiveDate,
        products: Vec<FakeProduct>,
    ) {
        self.with_tenant("set_products", tenant_id, |t| {
            t.data = ReportData::Fixed {
                refresh_date,
                products,
            };
        });
    }

    /// Every download answer of this tenant sends its headers at once and its body after `d`
    /// (tokio time), to exercise the exporter's timeouts on a slow body.
    pub fn set_download_delay(&self, tenant_id: &str, d: Duration) {
        self.with_tenant("set_download_delay", tenant_id, |t| t.download_delay = d);
    }

    /// Rotates the client secret: the old one is refused from now on (AADSTS7000215), the new
    /// one is valid and not expired. Tokens already issued stay valid, as for real.
    pub fn set_client_secret(&self, tenant_id: &str, secret: &str) {
        self.with_tenant("set_client_secret", tenant_id, |t| {
            t.client_secret = secret.to_string();
            t.secret_expired = false;
        });
    }

    /// Marks the current client secret as expired: token requests presenting it get 401
    /// `invalid_client` AADSTS7000222. Tokens already issued stay valid until they expire.
    pub fn expire_client_secret(&self, tenant_id: &str) {
        self.with_tenant("expire_client_secret", tenant_id, |t| {
            t.secret_expired = true
        });
    }

    /// Invalidates every token issued so far for this tenant: Graph answers them 401
    /// `InvalidAuthenticationToken`. New tokens can be obtained as usual.
    pub fn revoke_tokens(&self, tenant_id: &str) {
        self.with_state("revoke_tokens", tenant_id, |state| {
            state.tenants.get(tenant_id)?;
            for token in state.tokens.values_mut() {
                if token.tenant_id == tenant_id {
                    token.revoked = true;
                }
            }
            Some(())
        });
    }

    /// TLS connections accepted so far, per host.
    pub fn connections(&self) -> FakeConnections {
        let count =
            |i: usize| self.shared.connections[i].load(std::sync::atomic::Ordering::Relaxed);
        FakeConnections {
            login: count(0),
            graph: count(1),
            download: count(2),
        }
    }

    /// The fake IMDS base URL, `http://127.0.0.1:<port>` (for `--auth.imds-endpoint`).
    pub fn imds_endpoint(&self) -> String {
        self.shared.config.imds_endpoint.clone()
    }

    /// The fake App Service identity endpoint (for `IDENTITY_ENDPOINT`).
    pub fn app_service_endpoint(&self) -> String {
        self.shared.config.app_service_endpoint.clone()
    }

    /// The header value the App Service endpoint expects (for `IDENTITY_HEADER`).
    pub fn app_service_header(&self) -> String {
        self.shared.config.app_service_secret.clone()
    }

    /// Queues `c` as the answer to a coming IMDS request (FIFO).
    pub fn push_imds_response(&self, c: Canned) {
        self.lock().msi.imds_canned.push_back(c);
    }

    /// Queues `c` as the answer to a coming App Service identity request (FIFO).
    pub fn push_app_service_response(&self, c: Canned) {
        self.lock().msi.app_service_canned.push_back(c);
    }

    /// What the managed identity endpoints saw.
    pub fn msi_stats(&self) -> FakeMsiStats {
        self.lock().msi.stats.clone()
    }

    /// The issuer URL of the federated tokens the fake mints (the `issuer` of a
    /// [`FakeFederatedCredential`] that should trust them).
    pub fn federation_issuer(&self) -> String {
        self.shared.issuer.url.clone()
    }

    /// A federated token as a Kubernetes cluster projects it for a service account: ES256,
    /// `iss` = [`FakeGraph::federation_issuer`], `sub` = `subject`, `aud` = `[audience]`, valid
    /// from now (the login host's clock) for `lifetime`.
    pub fn mint_federated_token(
        &self,
        subject: &str,
        audience: &str,
        lifetime: Duration,
    ) -> String {
        let now = std::time::SystemTime::now() + self.lock().clock_offset;
        self.shared.issuer.mint(subject, audience, now, lifetime)
    }

    /// Moves the login host's clock `offset` ahead of the real one: client assertions and
    /// federated tokens are judged against it (an assertion made now looks expired with an offset
    /// beyond its lifetime plus 5 minutes of skew).
    pub fn set_clock_offset(&self, offset: Duration) {
        self.lock().clock_offset = offset;
    }

    /// Registers one more certificate (PEM or DER) on the tenant's application, as an
    /// administrator uploading a new certificate does.
    pub fn register_certificate(&self, tenant_id: &str, pem_or_der: &[u8]) {
        let certificate = identity::RegisteredCertificate::parse(pem_or_der)
            .unwrap_or_else(|e| panic!("FakeGraph::register_certificate: {e}"));
        self.with_tenant("register_certificate", tenant_id, |t| {
            t.certificates.push(certificate)
        });
    }

    /// Adds a federated credential to the tenant's application.
    pub fn add_federated_credential(&self, tenant_id: &str, credential: FakeFederatedCredential) {
        self.with_tenant("add_federated_credential", tenant_id, |t| {
            t.federated.push(credential)
        });
    }

    /// Removes every certificate registered on the tenant's application.
    pub fn remove_certificates(&self, tenant_id: &str) {
        self.with_tenant("remove_certificates", tenant_id, |t| t.certificates.clear());
    }

    /// DNS overrides that send the real host names of every cloud's Entra ID and Graph to this
    /// fake (its certificate names them), for `reqwest::ClientBuilder::resolve`. The download
    /// host stays `localhost`.
    pub fn cloud_resolve_overrides(&self) -> Vec<(String, std::net::SocketAddr)> {
        let mut out = Vec::new();
        for cloud in FakeCloud::ALL {
            for (host, address) in [
                (cloud.login_host(), self.addresses.login),
                (cloud.graph_host(), self.addresses.graph),
            ] {
                if !out.iter().any(|(h, _)| h == host) {
                    out.push((host.to_string(), address));
                }
            }
        }
        out
    }

    /// A snapshot of what the fake saw for this tenant so far.
    pub fn stats(&self, tenant_id: &str) -> FakeStats {
        self.with_tenant("stats", tenant_id, |t| t.stats.clone())
    }

    /// Stops all listeners and their connections, and waits until they are gone.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for FakeGraph {
    /// Aborts the listener tasks (and with them every open connection).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The JSON (beta) budget for a given CSV budget: 100/14 of it, rounded up, as the real limits
/// are 100 and 14.
fn json_limit(csv_limit: u32) -> u32 {
    let scaled = (u64::from(csv_limit) * 100).div_ceil(14);
    u32::try_from(scaled).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
