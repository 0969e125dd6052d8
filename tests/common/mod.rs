//! The shared harness of the integration tests: the fake Graph and the exporter, both on real
//! loopback sockets in the test's own runtime, plus helpers to scrape and read metrics.
//!
//! Tests run on paused tokio time (`#[tokio::test(start_paused = true)]`) with auto-advance
//! frozen (see [`FrozenClock`]): time moves only when a test calls `tokio::time::advance`, so TTLs,
//! Retry-After and deadlines are exact, and real socket I/O never makes the clock jump.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use office365_activations_exporter::config::{ReportConfig, TenantConfig};
use office365_activations_exporter::credentials::client_secret::SecretSource;
use office365_activations_exporter::credentials::{CredentialConfig, Secret};
use office365_activations_exporter::exporter::Exporter;
pub use office365_activations_exporter::fake_graph::FrozenClock;
use office365_activations_exporter::fake_graph::{
    FakeGraph, FakeGraphOptions, FakeProduct, FakeTenant, ReportData,
};
use office365_activations_exporter::http_client;
pub use office365_activations_exporter::reports::{user_counts, ReportKind};
use office365_activations_exporter::server::{self, ServerOptions};
use reqwest::Url;
use tokio::sync::oneshot;

/// Tenant ids of the harness: `tenant_id(0)` is "contoso".
pub fn tenant_id(i: usize) -> String {
    format!("0000000{i}-aaaa-bbbb-cccc-dddddddddddd")
}
pub fn client_id(i: usize) -> String {
    format!("0000000{i}-1111-2222-3333-444444444444")
}
pub const SECRET: &str = "correct-horse-battery-staple";
pub const TTL: Duration = Duration::from_secs(3600);

pub fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

pub fn product(name: &str, assigned: u64, activated: u64, shared: u64) -> FakeProduct {
    FakeProduct {
        product_type: name.to_owned(),
        assigned,
        activated,
        shared_computer_activation: shared,
    }
}

pub fn default_products() -> Vec<FakeProduct> {
    vec![
        product("MICROSOFT 365 APPS FOR ENTERPRISE", 2679, 1710, 1024),
        product("PROJECT ONLINE DESKTOP CLIENT", 120, 88, 0),
    ]
}

/// Changes the tenants' configuration once the fake runs (it may call the fake's knobs too).
pub type Configure = Box<dyn FnOnce(&FakeGraph, &mut Vec<TenantConfig>) + Send>;

/// How the harness is set up.
pub struct Options {
    pub tenants: usize,
    pub ttl: Duration,
    pub max_report_size: u64,
    pub scrape_timeout: Duration,
    pub concurrency: usize,
    pub fake: FakeGraphOptions,
    /// Edits the tenant configurations (credentials, clouds...) before the exporter starts.
    pub configure: Option<Configure>,
    /// Resolve every cloud's real Entra ID and Graph host names to the fake.
    pub resolve_clouds: bool,
    /// `--http.proxy` of the exporter's client.
    pub proxy: Option<Url>,
    /// The reports every tenant runs (user counts alone unless a test says otherwise).
    pub reports: Vec<ReportKind>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tenants: 1,
            ttl: TTL,
            max_report_size: 8 << 20,
            scrape_timeout: Duration::from_secs(10),
            concurrency: 8,
            fake: FakeGraphOptions::default(),
            configure: None,
            resolve_clouds: false,
            proxy: None,
            reports: vec![&user_counts::KIND],
        }
    }
}

/// A running fake Graph and exporter.
pub struct Harness {
    pub fake: FakeGraph,
    pub exporter: Arc<Exporter>,
    pub base: String,
    pub client: reqwest::Client,
    _clock: FrozenClock,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    pub async fn with(mut options: Options) -> Harness {
        let clock = FrozenClock::new();
        let names = ["contoso", "fabrikam", "northwind", "tailspin"];
        for i in 0..options.tenants {
            options.fake.tenants.push(FakeTenant::new(
                tenant_id(i),
                client_id(i),
                SECRET,
                ReportData::Fixed {
                    refresh_date: date(),
                    products: default_products(),
                },
            ));
        }
        let fake = FakeGraph::start(options.fake)
            .await
            .expect("fake Graph starts");
        let mut configs: Vec<TenantConfig> = (0..options.tenants)
            .map(|i| TenantConfig {
                name: names[i].to_owned(),
                tenant_id: tenant_id(i),
                client_id: client_id(i),
                credential: CredentialConfig::ClientSecret(SecretSource::Value(Secret::new(
                    SECRET,
                ))),
                authority_host: Url::parse(&fake.authority_host()).unwrap(),
                graph_endpoint: Url::parse(&fake.graph_endpoint()).unwrap(),
                api_version: "v1.0".into(),
                report_format: Default::default(),
                scope: format!("{}/.default", fake.graph_endpoint()),
                cache_ttl: options.ttl,
                reports: options
                    .reports
                    .iter()
                    .map(|&kind| ReportConfig {
                        kind,
                        cache_ttl: options.ttl,
                        max_size: options.max_report_size,
                    })
                    .collect(),
            })
            .collect();
        if let Some(configure) = options.configure.take() {
            configure(&fake, &mut configs);
        }
        let resolve = if options.resolve_clouds {
            fake.cloud_resolve_overrides()
        } else {
            Vec::new()
        };
        let ca = fake.ca_pem();
        let http = http_client::build_with(&http_client::HttpOptions {
            extra_ca_pem: Some(ca.as_bytes()),
            proxy: options.proxy.as_ref(),
            resolve: &resolve,
        })
        .unwrap();
        Harness::around(
            clock,
            fake,
            http,
            &configs,
            options.concurrency,
            options.scrape_timeout,
        )
        .await
    }

    /// A harness around a fake the test started itself and tenant configurations it built
    /// (any number of tenants, names, credentials and reports): the soak test's setup.
    pub async fn serve(
        fake: FakeGraph,
        configs: &[TenantConfig],
        concurrency: usize,
        scrape_timeout: Duration,
    ) -> Harness {
        let clock = FrozenClock::new();
        let ca = fake.ca_pem();
        let http = http_client::build_with(&http_client::HttpOptions {
            extra_ca_pem: Some(ca.as_bytes()),
            proxy: None,
            resolve: &[],
        })
        .unwrap();
        Harness::around(clock, fake, http, configs, concurrency, scrape_timeout).await
    }

    /// The exporter over `configs` with the outbound client `http`, served on a loopback port.
    async fn around(
        clock: FrozenClock,
        fake: FakeGraph,
        http: http_client::HttpClient,
        configs: &[TenantConfig],
        concurrency: usize,
        scrape_timeout: Duration,
    ) -> Harness {
        let exporter = Arc::new(Exporter::new(configs, http, concurrency).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::run(
            listener,
            Arc::clone(&exporter),
            ServerOptions {
                telemetry_path: "/metrics".into(),
                default_scrape_timeout: scrape_timeout,
                reloader: None,
                web: Default::default(),
                health_without_auth: false,
                sd_address: "exporter.example:10036".into(),
                shard: Default::default(),
            },
            async {
                let _ = stopped.await;
            },
        ));
        Harness {
            fake,
            exporter,
            base,
            client: reqwest::Client::new(),
            _clock: clock,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// GET a path of the exporter.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the exporter answers")
    }

    /// Scrapes /metrics and parses it.
    pub async fn scrape(&self) -> Metrics {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        Metrics::parse(&response.text().await.unwrap())
    }

    /// Scrapes with an X-Prometheus-Scrape-Timeout-Seconds header.
    pub async fn scrape_with_timeout(&self, seconds: &str) -> Metrics {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .header("X-Prometheus-Scrape-Timeout-Seconds", seconds)
            .send()
            .await
            .unwrap();
        Metrics::parse(&response.text().await.unwrap())
    }

    /// Starts a scrape in the background (with an X-Prometheus-Scrape-Timeout-Seconds header
    /// when given), so the test can move the clock while it waits; yields the body.
    pub fn spawn_scrape(&self, timeout: Option<&str>) -> tokio::task::JoinHandle<String> {
        let mut request = self.client.get(format!("{}/metrics", self.base));
        if let Some(seconds) = timeout {
            request = request.header("X-Prometheus-Scrape-Timeout-Seconds", seconds);
        }
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    }

    pub fn stats(&self, i: usize) -> office365_activations_exporter::fake_graph::FakeStats {
        self.fake.stats(&tenant_id(i))
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

/// Sends `signal` (`TERM`, `INT`, `HUP`) to process `pid` with `kill`; delivered when it returns.
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Yields to the runtime until `condition` holds. The bound is wall-clock time (the tokio clock
/// is frozen) and generous, so a loaded machine only makes it slower; it turns a hang into a
/// failure that says what was awaited.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Gives the runtime plenty of turns, and real time, to finish whatever I/O is in flight on
/// loopback: used before asserting that something did *not* happen yet, so a slow machine can
/// only make such an assertion weaker, never wrong. At least 2,000 turns and 50 ms.
pub async fn settle() {
    let started = std::time::Instant::now();
    let mut turns = 0;
    while turns < 2_000 || started.elapsed() < Duration::from_millis(50) {
        tokio::task::yield_now().await;
        turns += 1;
    }
}

/// A parsed exposition: sample (name + sorted labels) to value, and the raw text.
#[derive(Debug)]
pub struct Metrics {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], parse_labels(&series[i + 1..series.len() - 1])),
                None => (series, Vec::new()),
            };
            let mut labels = labels;
            labels.sort();
            let key = key(
                name,
                &labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            );
            samples.insert(key, value.parse().expect("numeric value"));
        }
        Metrics {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels = labels.to_vec();
        labels.sort();
        self.samples.get(&key(name, &labels)).copied()
    }

    /// Every sample of a metric name.
    pub fn series(&self, name: &str) -> Vec<(&String, &f64)> {
        let prefix = format!("{name}{{");
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) || k.as_str() == name)
            .collect()
    }

    /// `up` of the tenant's user counts report.
    pub fn up(&self, tenant: &str) -> Option<f64> {
        self.report_up(tenant, "user_counts")
    }

    /// `up` of one report of the tenant.
    pub fn report_up(&self, tenant: &str, report: &str) -> Option<f64> {
        self.get(
            "office365_activations_up",
            &[("tenant", tenant), ("report", report)],
        )
    }

    pub fn activated(&self, tenant: &str, product: &str) -> Option<f64> {
        self.get(
            "office365_activations_activated_users",
            &[("tenant", tenant), ("product_type", product)],
        )
    }

    pub fn assigned(&self, tenant: &str, product: &str) -> Option<f64> {
        self.get(
            "office365_activations_assigned_users",
            &[("tenant", tenant), ("product_type", product)],
        )
    }

    pub fn errors(&self, tenant: &str, stage: &str, reason: &str) -> f64 {
        self.error_series(tenant, stage, reason).unwrap_or(0.0)
    }

    /// The `fetch_errors_total` sample of `tenant`'s user counts report, `stage` and `reason`;
    /// `None` when the series is not exported at all (unlike [`Metrics::errors`], which reads
    /// absent as 0).
    pub fn error_series(&self, tenant: &str, stage: &str, reason: &str) -> Option<f64> {
        self.report_error_series(tenant, "user_counts", stage, reason)
    }

    /// The `fetch_errors_total` sample of one report of the tenant.
    pub fn report_error_series(
        &self,
        tenant: &str,
        report: &str,
        stage: &str,
        reason: &str,
    ) -> Option<f64> {
        self.get(
            "office365_activations_fetch_errors_total",
            &[
                ("tenant", tenant),
                ("report", report),
                ("stage", stage),
                ("reason", reason),
            ],
        )
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// The path of the exporter binary built by cargo for integration tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_office365-activations-exporter")
}

/// Fails with an install hint when a Debian tool is missing.
pub fn require_tool(tool: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let path = format!("{dir}/{tool}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{tool} is not installed: run `apt-get install prometheus` (the README's test command does)");
}

/// Reads the exporter's stderr until its "Listening" log line and returns the address.
pub async fn listening_address(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("Listening") {
                let address = line
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("address="))
                    .expect("address= in the line");
                return address.trim_matches('"').to_owned();
            }
        }
        panic!("the exporter exited before listening");
    };
    let address = tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .expect("the exporter starts listening");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    address
}

/// Throw-away RSA keys of the tests (see tests/fixtures/README.md).
pub const KEY_A: &str = include_str!("../fixtures/rsa-a.pem");
pub const KEY_A_PKCS1: &str = include_str!("../fixtures/rsa-a.pkcs1.pem");
pub const KEY_B: &str = include_str!("../fixtures/rsa-b.pem");
pub const KEY_C: &str = include_str!("../fixtures/rsa-c.pem");

/// A self-signed certificate for `key_pem` (PKCS#8 or PKCS#1 RSA), valid from yesterday until
/// `days` from now: (PEM, DER).
pub fn certificate(key_pem: &str, days: i64) -> (String, Vec<u8>) {
    use chrono::Datelike;
    let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .expect("an RSA key");
    let mut params =
        rcgen::CertificateParams::new(vec!["office365-exporter.test".to_owned()]).unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "office365-activations-exporter test",
    );
    let day = |offset: i64| {
        let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset);
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = day(-1);
    params.not_after = day(days);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec())
}

/// A PKCS#12 file with the certificate and its key; `legacy` picks 3DES (Key Vault, older
/// Windows) instead of AES-256 (OpenSSL 3).
pub fn pkcs12(cert_der: &[u8], key_pem: &str, password: &str, legacy: bool) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let chain = p12_keystore::PrivateKeyChain::new(
        key.secret_pkcs8_der(),
        [1u8, 2, 3, 4],
        [p12_keystore::Certificate::from_der(cert_der).unwrap()],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "exporter",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    let algorithm = if legacy {
        p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc
    } else {
        p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256
    };
    store
        .writer(password)
        .encryption_algorithm(algorithm)
        .write()
        .unwrap()
}

/// Runs `promtool check metrics` on `text`: (success, what it said).
pub fn promtool_metrics_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// The latest refresh error of tenant `i`'s first report, as the landing page shows it.
pub fn last_error(h: &Harness, i: usize) -> String {
    h.exporter.tenants()[i].status()[0]
        .last_error
        .clone()
        .unwrap_or_default()
}

/// Starts the exporter binary in demo mode on a free loopback port, with `extra` flags; returns
/// the process (killed when dropped) and its address.
pub async fn start_demo_exporter(extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(binary())
        .args(["--demo", "--web.listen-address", "127.0.0.1:0"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter binary starts");
    let address = listening_address(&mut child).await;
    (child, address)
}

/// A real Prometheus (Debian's package), killed when dropped.
pub struct Prometheus {
    /// The process.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its log file, for failure messages.
    pub log: std::path::PathBuf,
}

/// Starts Prometheus with `config` as its prometheus.yml, its data in `dir/data` (which may hold
/// backfilled blocks already) and its log in `dir/prometheus.log`, on a free loopback port.
pub fn start_prometheus(dir: &std::path::Path, config: &str) -> Prometheus {
    let prometheus = require_tool("prometheus");
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let log = dir.join("prometheus.log");
    // Prometheus cannot report a port 0 choice back: take a free port and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(
            std::fs::File::create(&log).unwrap(),
        ))
        .stderr(std::process::Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

impl Prometheus {
    /// Runs an instant query until `accept` likes its result (Prometheus scrapes on its own
    /// schedule, so this waits for it; the bound only turns a hang into a failure).
    pub async fn query_until(
        &self,
        query: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let client = reqwest::Client::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..240 {
            if let Ok(response) = client
                .get(format!("{}/api/v1/query", self.base))
                .query(&[("query", query)])
                .send()
                .await
            {
                if let Ok(body) = serde_json::from_str::<serde_json::Value>(
                    &response.text().await.unwrap_or_default(),
                ) {
                    if body["status"] == "success" && accept(&body["data"]["result"]) {
                        return body["data"]["result"].clone();
                    }
                    last = body;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!(
            "Prometheus never answered {query} as expected; last answer: {last}\nits log:\n{log}"
        );
    }
}

/// Runs the exporter binary to completion with exactly `env` as its environment (bounded, so a
/// hang fails instead of blocking CI).
pub async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the binary finishes")
        .expect("the binary runs")
}

/// A fake Graph, in real time, whose first `tenants` harness tenants (ids `tenant_id(i)`,
/// `client_id(i)`, secret `SECRET`) serve `default_products()`: for tests that run the binary.
pub async fn start_fixed_fake(tenants: usize) -> FakeGraph {
    let mut options = FakeGraphOptions::default();
    for i in 0..tenants {
        options.tenants.push(FakeTenant::new(
            tenant_id(i),
            client_id(i),
            SECRET,
            ReportData::Fixed {
                refresh_date: date(),
                products: default_products(),
            },
        ));
    }
    FakeGraph::start(options)
        .await
        .expect("the fake Graph starts")
}

impl Harness {
    /// GET `/probe?target=<target>`, the target percent-encoded by the client.
    pub async fn probe(&self, target: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/probe", self.base))
            .query(&[("target", target)])
            .send()
            .await
            .expect("the exporter answers")
    }

    /// Starts a GET of `path` (query included, sent as written) in the background, so the test
    /// can move the clock while it waits; yields the status and the body.
    pub fn spawn_get(&self, path: &str) -> tokio::task::JoinHandle<(u16, String)> {
        let request = self.client.get(format!("{}{path}", self.base));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        })
    }
}

/// A free loopback port, for a process that cannot report a port 0 choice back (or must
/// advertise its port before it binds): taken and released, so another process may in theory
/// take it meanwhile.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports (see [`free_port`]): all held until all are chosen, so the
/// system cannot hand out one twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

/// Removes from `command` what `cargo test` sets for this crate (build.rs's O365_EXPORTER_* facts
/// of the test build included): build scripts (ring's, ours) watch some of these variables, and a
/// release build run from a test would bake in the test build's facts or rebuild what a plain
/// release build built.
#[allow(dead_code)]
pub fn without_cargo_test_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "O365_EXPORTER_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}
