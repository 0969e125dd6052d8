//! Flags, environment variables and the YAML file, turned into a validated [`Config`].
//!
//! Every mistake is found here, at start, and reported as one [`ConfigError`] line that names the
//! flag, variable or file line that is wrong; nothing later has to cope with a half-valid config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use serde::Deserialize;

use crate::credentials::certificate::{AssertionAlgorithm, CertificateSource};
use crate::credentials::client_secret::SecretSource;
use crate::credentials::managed_identity::{
    ManagedIdentityConfig, ManagedIdentityEndpoint, ManagedIdentityId, DEFAULT_IMDS_ENDPOINT,
};
use crate::credentials::{CredentialConfig, Secret};
use crate::graph::ReportFormat;
use crate::shard::Shard;
use crate::web_config::WebConfig;

mod reports;
use reports::Selection;
pub use reports::{ReportConfig, SizeCaps};

/// The default port: outside Prometheus's full 9100-9999 exporter range.
pub const DEFAULT_PORT: u16 = 10036;
/// Graph allows 14 report downloads per 10 minutes per app and tenant; a shorter TTL would spend
/// that budget (shared with other apps and replicas) for data that changes once a day.
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// The cache TTL when none is given.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "office365-activations-exporter",
    version,
    about = "Prometheus exporter for Microsoft 365 Apps (Office) activations, read from Microsoft Graph's Office activations reports.",
    long_about = "Prometheus exporter for Microsoft 365 Apps (Office) activation counts.\n\n\
It serves /metrics (and /probe?target=<tenant>, /sd); a scrape that finds a tenant's cached report \
older than its TTL refreshes it from Microsoft Graph (getOffice365ActivationsUserCounts, \
getOffice365ActivationCounts and, with --reports, getOffice365ActivationsUserDetail; they need an \
Entra ID app with the Reports.Read.All application permission). Run with --demo to try it without credentials, \
against an embedded fake Graph.\n\n\
One tenant is described by the --auth.* flags (or AZURE_* variables, as Azure's SDKs read them); it \
authenticates with a client secret, a client certificate, workload identity or a managed identity \
(see --auth.method); several tenants by --config.file. --cloud selects a national cloud."
)]
pub struct Cli {
    /// What to do; without a command, serve /metrics.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings, shared by every command.
    #[command(flatten)]
    pub flags: Flags,
}

/// Subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Refresh every tenant once, print the metrics to stdout and exit: 0 if every tenant's report
    /// was fetched, 1 otherwise (with the reason). Use it to test an app registration.
    Check,
    /// Probe a running exporter's /-/healthy at --web.listen-address (over TLS when
    /// --web.config.file sets it up) and exit 0 if it answers: a container HEALTHCHECK that
    /// needs no shell.
    Healthcheck,
    /// Print the man page (roff) to stdout, rendered from these definitions; the packages
    /// install it as office365-activations-exporter.1.
    #[command(hide = true)]
    Man,
    /// Print the completion script for SHELL to stdout, rendered from these definitions.
    #[command(hide = true)]
    Completion {
        /// The shell: bash, zsh, fish (elvish and powershell too).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// key=value pairs, as Prometheus's own tools log.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each request to Graph.
    Debug,
    /// Start, stop, each refresh.
    Info,
    /// Failed refreshes and other trouble.
    Warn,
    /// Only errors.
    Error,
}

/// A Microsoft cloud: its Graph endpoint, Entra ID host and report API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// The global (commercial) cloud: graph.microsoft.com, login.microsoftonline.com.
    Global,
    /// US Government L4 (GCC High): graph.microsoft.us, login.microsoftonline.us.
    Usgov,
    /// US Government L5 (DoD): dod-graph.microsoft.us, login.microsoftonline.us.
    UsgovDod,
    /// China, operated by 21Vianet: microsoftgraph.chinacloudapi.cn, login.chinacloudapi.cn.
    China,
}

impl Cloud {
    /// Every cloud.
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China];

    /// The name `--cloud` and the config file take.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::UsgovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }

    /// The Graph endpoint.
    pub fn graph_endpoint(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::UsgovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The Entra ID host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The report's API version: national clouds have only the beta report.
    pub fn api_version(self) -> &'static str {
        match self {
            Cloud::Global => "v1.0",
            _ => "beta",
        }
    }
}

/// How a tenant authenticates; `auto` picks from what is configured (see [`Config::resolve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The first configured of: client secret, client certificate, workload identity, managed
    /// identity.
    Auto,
    /// AZURE_CLIENT_SECRET or --auth.client-secret-file.
    #[value(name = "client_secret")]
    ClientSecret,
    /// AZURE_CLIENT_CERTIFICATE_PATH or --auth.client-certificate-path.
    #[value(name = "client_certificate")]
    ClientCertificate,
    /// AZURE_FEDERATED_TOKEN_FILE or --auth.federated-token-file.
    #[value(name = "workload_identity")]
    WorkloadIdentity,
    /// IMDS, or App Service's IDENTITY_ENDPOINT and IDENTITY_HEADER.
    #[value(name = "managed_identity")]
    ManagedIdentity,
}

/// Every flag. All are `global`, so they work before or after a subcommand.
#[derive(Debug, Args)]
pub struct Flags {
    /// Address to serve /metrics on: host:port, or :port for every interface.
    #[arg(long = "web.listen-address", default_value = ":10036", global = true)]
    pub listen_address: String,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", global = true)]
    pub telemetry_path: String,

    /// How long a scrape may wait for a refresh when the scraper sends no
    /// X-Prometheus-Scrape-Timeout-Seconds header (Prometheus always sends it).
    #[arg(long = "web.scrape-timeout", default_value = "10s", value_parser = parse_duration, global = true)]
    pub scrape_timeout: Duration,

    /// Microsoft cloud: sets the Graph endpoint, the Entra ID host, the token scope and the API
    /// version together (flags given explicitly still override) [default: global].
    #[arg(long = "cloud", value_enum, global = true)]
    pub cloud: Option<Cloud>,

    /// Microsoft Graph base URL [default: the cloud's, https://graph.microsoft.com].
    #[arg(long = "graph.endpoint", global = true)]
    pub graph_endpoint: Option<String>,

    /// Graph API version [default: v1.0; beta in national clouds, which have only beta].
    #[arg(long = "graph.api-version", value_parser = ["v1.0", "beta"], global = true)]
    pub api_version: Option<String>,

    /// Report format: csv (302 to a download) or json (beta only: the body directly, its own
    /// larger throttling budget) [default: csv].
    #[arg(long = "graph.format", value_enum, global = true)]
    pub graph_format: Option<ReportFormat>,

    /// Largest report body accepted (e.g. 8MiB); a larger one is refused, not read.
    #[arg(long = "graph.max-report-size", default_value = "8MiB", value_parser = parse_size, global = true)]
    pub max_report_size: u64,

    /// Entra ID (login) host [default: the cloud's, https://login.microsoftonline.com].
    #[arg(
        long = "auth.authority-host",
        env = "AZURE_AUTHORITY_HOST",
        global = true
    )]
    pub authority_host: Option<String>,

    /// Authentication method; auto takes the first configured of client secret, client
    /// certificate, workload identity, managed identity (App Service's IDENTITY_ENDPOINT, or a
    /// --auth.managed-identity-* flag) [default: auto].
    #[arg(long = "auth.method", value_enum, global = true)]
    pub auth_method: Option<AuthMethod>,

    /// Token scope [default: the Graph endpoint followed by /.default].
    #[arg(long = "auth.scope", global = true)]
    pub scope: Option<String>,

    /// Directory (tenant) id of the single tenant.
    #[arg(long = "auth.tenant-id", env = "AZURE_TENANT_ID", global = true)]
    pub tenant_id: Option<String>,

    /// Application (client) id of the app registration.
    #[arg(long = "auth.client-id", env = "AZURE_CLIENT_ID", global = true)]
    pub client_id: Option<String>,

    /// File holding the client secret (read again at each token request, so it can rotate).
    /// Alternatively set AZURE_CLIENT_SECRET; never pass a secret as a flag.
    #[arg(long = "auth.client-secret-file", global = true)]
    pub client_secret_file: Option<PathBuf>,

    /// Client certificate: a PEM file (certificate and RSA private key) or a PKCS#12 (.pfx)
    /// file, read again at each token request. Also env AZURE_CLIENT_CERTIFICATE_PATH; the
    /// PKCS#12 password comes from AZURE_CLIENT_CERTIFICATE_PASSWORD or
    /// --auth.client-certificate-password-file.
    #[arg(long = "auth.client-certificate-path", global = true)]
    pub client_certificate_path: Option<PathBuf>,

    /// File holding the PKCS#12 password (never a plain flag).
    #[arg(long = "auth.client-certificate-password-file", global = true)]
    pub client_certificate_password_file: Option<PathBuf>,

    /// Send the certificate chain (x5c) with the assertion, for subject name + issuer
    /// authentication. Also env AZURE_CLIENT_SEND_CERTIFICATE_CHAIN=true.
    #[arg(long = "auth.client-certificate-send-chain", global = true)]
    pub client_certificate_send_chain: bool,

    /// Signature of the certificate assertion: RS256 (header x5t) or PS256 (header x5t#S256).
    #[arg(long = "auth.client-certificate-alg", default_value = "RS256", value_parser = ["RS256", "PS256", "rs256", "ps256"], global = true)]
    pub client_certificate_alg: String,

    /// Workload identity: the federated (Kubernetes service account) token file, read again
    /// at each token request. Also env AZURE_FEDERATED_TOKEN_FILE.
    #[arg(long = "auth.federated-token-file", global = true)]
    pub federated_token_file: Option<PathBuf>,

    /// Managed identity: a user-assigned identity's object (principal) id. A client id is given
    /// with --auth.client-id (AZURE_CLIENT_ID); without either, the system-assigned identity.
    #[arg(long = "auth.managed-identity-object-id", global = true)]
    pub managed_identity_object_id: Option<String>,

    /// Managed identity: a user-assigned identity's Azure resource id.
    #[arg(long = "auth.managed-identity-resource-id", global = true)]
    pub managed_identity_resource_id: Option<String>,

    /// Managed identity: the IMDS base URL (App Service is found from IDENTITY_ENDPOINT).
    #[arg(
        long = "auth.imds-endpoint",
        env = "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        default_value = DEFAULT_IMDS_ENDPOINT,
        global = true
    )]
    pub imds_endpoint: String,

    /// HTTP(S) proxy for all outbound requests to Entra ID and Graph, e.g.
    /// http://user:password@proxy:3128 [default: HTTPS_PROXY / HTTP_PROXY, minus NO_PROXY].
    #[arg(long = "http.proxy", global = true)]
    pub http_proxy: Option<String>,

    /// The `tenant` label value of the single tenant [default: the tenant id].
    #[arg(long = "tenant.name", global = true)]
    pub tenant_name: Option<String>,

    /// Extra PEM CA certificate(s) trusted for all outbound HTTPS (a TLS-inspecting proxy's CA).
    #[arg(long = "tls.ca-file", global = true)]
    pub ca_file: Option<PathBuf>,

    /// How long a fetched report is served before a scrape refreshes it (e.g. 90s, 30m, 1h);
    /// at least 1m [default: 1h; 1m with --demo].
    #[arg(long = "cache.ttl", value_parser = parse_duration, global = true)]
    pub cache_ttl: Option<Duration>,

    /// Which reports to fetch, comma-separated: user_counts, activation_counts, user_detail
    /// [default: user_counts,activation_counts; all three with --demo].
    #[arg(long = "reports", value_delimiter = ',', global = true)]
    pub reports: Vec<String>,

    /// A report's own TTL, as report=duration (e.g. user_detail=6h); repeatable or
    /// comma-separated [default: --cache.ttl].
    #[arg(long = "report.ttl", global = true)]
    pub report_ttl: Vec<String>,

    /// Largest user detail report accepted (it is streamed, never held whole).
    #[arg(long = "graph.max-user-detail-size", default_value = "1GiB", value_parser = parse_size, global = true)]
    pub max_user_detail_size: u64,

    /// YAML file describing several tenants (see README); replaces the single-tenant flags.
    #[arg(long = "config.file", global = true)]
    pub config_file: Option<PathBuf>,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub log_format: LogFormat,

    /// How many tenants may refresh at once (each refresh makes about three requests).
    #[arg(long = "refresh.concurrency", default_value = "8", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub refresh_concurrency: u16,

    /// Web configuration file (exporter-toolkit format: TLS, basic auth, headers).
    #[arg(long = "web.config.file", global = true)]
    pub web_config_file: Option<PathBuf>,

    /// Let /-/healthy answer without basic auth, for probes that cannot send credentials.
    #[arg(long = "web.health-without-auth", global = true)]
    pub health_without_auth: bool,

    /// Enable POST /-/reload, which re-reads --config.file like SIGHUP does.
    #[arg(long = "web.enable-lifecycle", global = true)]
    pub enable_lifecycle: bool,

    /// Most connections served at once; more are answered 503 and closed. Fixed limits besides
    /// (README: Limits): a request head must arrive whole within 10s, a client that reads
    /// nothing of its answer for 30s or sends no request for 5m is disconnected, and request
    /// heads over 32KiB or bodies over 4KiB are refused.
    #[arg(long = "web.max-connections", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_connections: u32,

    /// Serve two demo tenants from an embedded fake Microsoft Graph: no credentials needed.
    #[arg(long = "demo", global = true)]
    pub demo: bool,

    /// This process's 0-based shard: it owns only the tenants whose name hashes to it (every
    /// replica reads the same tenant list).
    #[arg(
        long = "shard.index",
        env = "OFFICE365_EXPORTER_SHARD_INDEX",
        default_value = "0",
        global = true
    )]
    pub shard_index: u32,

    /// How many shards share the tenant list.
    #[arg(
        long = "shard.count",
        env = "OFFICE365_EXPORTER_SHARD_COUNT",
        default_value = "1",
        global = true
    )]
    pub shard_count: u32,

    /// The host:port /sd advertises for this process [default: the listen address, with the
    /// hostname for a wildcard address].
    #[arg(long = "web.sd-address", global = true)]
    pub sd_address: Option<String>,
}

/// A configuration mistake, reported as one line at start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// Everything the exporter needs to run, validated.
#[derive(Debug)]
pub struct Config {
    /// The socket address string to bind (`:port` already expanded).
    pub listen_address: String,
    /// Where /metrics is served.
    pub telemetry_path: String,
    /// Scrape deadline when the scraper does not send one.
    pub scrape_timeout: Duration,
    /// Extra trusted CA certificates (PEM), for every outbound connection.
    pub ca_pem: Option<Vec<u8>>,
    /// `--http.proxy`; `None` means the environment's proxies (HTTPS_PROXY, NO_PROXY...).
    pub proxy: Option<Url>,
    /// Largest report body accepted (user counts, activation counts).
    pub max_report_size: u64,
    /// How many refreshes may run at once.
    pub refresh_concurrency: usize,
    /// POST /-/reload is enabled.
    pub enable_lifecycle: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// TLS, basic auth and headers of the exporter's own server.
    pub web: std::sync::Arc<WebConfig>,
    /// /-/healthy answers without basic auth.
    pub health_without_auth: bool,
    /// The tenants; empty with `demo`, whose tenants exist only once the fake Graph runs.
    pub tenants: Vec<TenantConfig>,
    /// Run against the embedded fake Graph.
    pub demo: bool,
    /// The cache TTL the demo tenants use.
    pub demo_cache_ttl: Duration,
    /// The reports the demo tenants run.
    pub demo_reports: Vec<ReportConfig>,
    /// Which tenants this process owns.
    pub shard: Shard,
    /// The host:port /sd advertises.
    pub sd_address: String,
}

/// One tenant, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantConfig {
    /// The `tenant` label value.
    pub name: String,
    /// Directory (tenant) id or a verified domain (may be empty with a managed identity, whose
    /// token is always of its own tenant).
    pub tenant_id: String,
    /// Application (client) id (with a managed identity: a user-assigned identity's client id,
    /// or empty).
    pub client_id: String,
    /// How the tenant authenticates.
    pub credential: CredentialConfig,
    /// Entra ID host.
    pub authority_host: Url,
    /// Graph base URL.
    pub graph_endpoint: Url,
    /// `v1.0` or `beta`.
    pub api_version: String,
    /// CSV (redirect and download) or JSON (beta).
    pub report_format: ReportFormat,
    /// The token scope: `{graph_endpoint}/.default` unless overridden.
    pub scope: String,
    /// How long a report is served before a scrape refreshes it, unless the report has its own.
    pub cache_ttl: Duration,
    /// The reports it runs, each with its TTL and size cap.
    pub reports: Vec<ReportConfig>,
}

impl TenantConfig {
    /// The same tenant, credentials and endpoints, whatever the reports and TTLs: a reload
    /// between the two may keep the reports both have.
    pub fn same_but_reports(&self, other: &TenantConfig) -> bool {
        let mut other = other.clone();
        other.reports = self.reports.clone();
        other.cache_ttl = self.cache_ttl;
        *self == other
    }
}

/// The YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tenants: Vec<FileTenant>,
    cloud: Option<Cloud>,
    graph_endpoint: Option<String>,
    api_version: Option<String>,
    graph_format: Option<ReportFormat>,
    authority_host: Option<String>,
    scope: Option<String>,
    auth_method: Option<AuthMethod>,
    #[serde(default, deserialize_with = "de_duration")]
    cache_ttl: Option<Duration>,
    reports: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration_map")]
    report_ttl: BTreeMap<String, Duration>,
}

/// One tenant in the YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant {
    name: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    auth_method: Option<AuthMethod>,
    client_secret_file: Option<PathBuf>,
    client_certificate_path: Option<PathBuf>,
    client_certificate_password_file: Option<PathBuf>,
    client_certificate_send_chain: Option<bool>,
    client_certificate_alg: Option<String>,
    federated_token_file: Option<PathBuf>,
    managed_identity_object_id: Option<String>,
    managed_identity_resource_id: Option<String>,
    cloud: Option<Cloud>,
    graph_endpoint: Option<String>,
    api_version: Option<String>,
    graph_format: Option<ReportFormat>,
    authority_host: Option<String>,
    scope: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    cache_ttl: Option<Duration>,
    reports: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration_map")]
    report_ttl: BTreeMap<String, Duration>,
}

fn de_duration_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Duration>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    map.into_iter()
        .map(|(name, text)| {
            parse_duration(&text)
                .map(|ttl| (name, ttl))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses a human duration: `90s`, `30m`, `1h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 90s, 30m or 1h: {e}"))
}

/// Parses a size: bytes, or with a KiB/MiB/GiB (or KB/MB/GB) suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 8MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "kb" | "k" => 1 << 10,
        "mib" | "mb" | "m" => 1 << 20,
        "gib" | "gb" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!("{text:?} is not a usable size")),
        Some(n) => Ok(n),
    }
}

fn parse_url(value: &str, what: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError(format!("{what}: {value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return err(format!("{what}: {value:?} must be an https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return err(format!(
            "{what}: {value:?} must not have a query or fragment"
        ));
    }
    Ok(url)
}

fn check_ttl(ttl: Duration, what: &str) -> Result<Duration, ConfigError> {
    if ttl < MIN_CACHE_TTL {
        return err(format!(
            "{what}: {} is under the 1m minimum: Graph allows only 14 report downloads per 10 minutes per app and tenant",
            humantime::format_duration(ttl)
        ));
    }
    Ok(ttl)
}

fn check_api_version(version: &str, what: &str) -> Result<String, ConfigError> {
    match version {
        "v1.0" | "beta" => Ok(version.to_owned()),
        other => err(format!("{what}: {other:?} must be v1.0 or beta")),
    }
}

/// Checks that a secret file can be read now, so a typo fails at start and not at first scrape.
fn check_secret_file(path: &Path, what: &str) -> Result<SecretSource, ConfigError> {
    let source = SecretSource::File(path.to_owned());
    source
        .read()
        .map_err(|e| ConfigError(format!("{what}: cannot read {}: {e}", path.display())))?;
    Ok(source)
}

/// Checks a `--web.sd-address`: host:port.
fn sd_address(value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => err(format!("--web.sd-address: {value:?} must be host:port")),
    }
}

/// The address /sd advertises by default: the listen address, with the machine's hostname in
/// place of a wildcard host (which no scraper can connect to).
fn advertised(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, ""));
    match host.trim_matches(['[', ']']) {
        "0.0.0.0" | "::" | "" => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{hostname}:{port}")
        }
        _ => listen.to_owned(),
    }
}

/// Expands Prometheus's `:port` shorthand to every IPv4 interface.
fn listen_address(value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_owned(),
    };
    match full.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(full),
        _ => err(format!(
            "--web.listen-address: {value:?} must be host:port or :port"
        )),
    }
}

/// A value and the flag or file key it came from (for error messages).
type Named = Option<(String, String)>;

fn named(value: &Option<String>, name: impl Into<String>) -> Named {
    value.as_ref().map(|v| (v.clone(), name.into()))
}

/// The cloud settings given at one level (flags, file, tenant). At resolution the most specific
/// level that says anything about a setting wins, and within a level an explicit key beats the
/// level's `cloud`.
#[derive(Debug, Default)]
struct Layer {
    cloud: Option<Cloud>,
    graph_endpoint: Named,
    authority_host: Named,
    api_version: Named,
    graph_format: Option<(ReportFormat, String)>,
    scope: Named,
}

/// Where a tenant's report and tokens come from.
#[derive(Debug)]
struct Endpoints {
    graph_endpoint: Url,
    authority_host: Url,
    api_version: String,
    report_format: ReportFormat,
    scope: String,
}

/// Resolves the cloud settings over `layers`, most specific first.
fn endpoints(layers: &[&Layer]) -> Result<Endpoints, ConfigError> {
    fn pick(
        layers: &[&Layer],
        key: fn(&Layer) -> &Named,
        preset: fn(Cloud) -> &'static str,
    ) -> (String, String) {
        for layer in layers {
            if let Some(given) = key(layer) {
                return given.clone();
            }
            if let Some(cloud) = layer.cloud {
                return (preset(cloud).to_owned(), format!("--cloud {cloud:?}"));
            }
        }
        (preset(Cloud::Global).to_owned(), "the default".to_owned())
    }
    let (graph, graph_name) = pick(layers, |l| &l.graph_endpoint, Cloud::graph_endpoint);
    let graph_endpoint = parse_url(&graph, &graph_name)?;
    let (authority, authority_name) = pick(layers, |l| &l.authority_host, Cloud::authority_host);
    let authority_host = parse_url(&authority, &authority_name)?;
    let (version, version_name) = pick(layers, |l| &l.api_version, Cloud::api_version);
    let api_version = check_api_version(&version, &version_name)?;
    let (report_format, format_name) = layers
        .iter()
        .find_map(|l| l.graph_format.clone())
        .unwrap_or((ReportFormat::Csv, String::new()));
    if report_format == ReportFormat::Json && api_version != "beta" {
        return err(format!(
            "{format_name}: the JSON report exists only on beta: set the API version to beta (national clouds default to it)"
        ));
    }
    let scope = match layers.iter().find_map(|l| l.scope.clone()) {
        Some((scope, name)) => {
            let scope = scope.trim().to_owned();
            if !scope.ends_with("/.default") || scope.len() <= "/.default".len() {
                return err(format!(
                    "{name}: {scope:?} must be a resource followed by /.default (the client credentials flow only takes .default scopes)"
                ));
            }
            scope
        }
        None => format!("{}/.default", graph_endpoint.as_str().trim_end_matches('/')),
    };
    let national = [
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    ];
    if api_version == "v1.0"
        && graph_endpoint
            .host_str()
            .is_some_and(|h| national.contains(&h))
    {
        tracing::warn!(graph_endpoint = %graph_endpoint, "National clouds only have the beta report; v1.0 answers 400 there");
    }
    Ok(Endpoints {
        graph_endpoint,
        authority_host,
        api_version,
        report_format,
        scope,
    })
}

/// Everything that may describe one tenant's credential, with the names to use in errors.
struct AuthInput<'a> {
    /// What "the tenant" is called in errors (`""` for the single tenant, `file: tenants[i].`).
    at: &'a dyn Fn(&str) -> String,
    method: AuthMethod,
    tenant_id: Option<String>,
    client_id: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    certificate_path: Option<PathBuf>,
    certificate_password_file: Option<PathBuf>,
    certificate_password_env: Option<String>,
    send_chain: bool,
    algorithm: Option<String>,
    federated_token_file: Option<PathBuf>,
    mi_object_id: Option<String>,
    mi_resource_id: Option<String>,
    imds_endpoint: &'a str,
    identity_endpoint: Option<String>,
    identity_header: Option<String>,
}

/// The credential, the tenant id and the client id, validated; and why the method was chosen.
struct Auth {
    credential: CredentialConfig,
    tenant_id: String,
    client_id: String,
    reason: &'static str,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Picks and validates a credential: an explicit method, or the first configured of client
/// secret, client certificate, workload identity and managed identity (Azure's SDKs' order).
fn credential(input: AuthInput<'_>) -> Result<Auth, ConfigError> {
    let at = input.at;
    let secret_env = non_empty(&input.secret_env);
    let has_secret = input.secret_file.is_some() || secret_env.is_some();
    let app_service = match (
        non_empty(&input.identity_endpoint),
        non_empty(&input.identity_header),
    ) {
        (Some(endpoint), Some(header)) => Some((endpoint, header)),
        _ => None,
    };
    let has_mi =
        app_service.is_some() || input.mi_object_id.is_some() || input.mi_resource_id.is_some();
    let (method, reason) = match input.method {
        AuthMethod::Auto if has_secret => (AuthMethod::ClientSecret, "auto: a client secret is configured"),
        AuthMethod::Auto if input.certificate_path.is_some() => (AuthMethod::ClientCertificate, "auto: a client certificate is configured"),
        AuthMethod::Auto if input.federated_token_file.is_some() => (AuthMethod::WorkloadIdentity, "auto: a federated token file is configured"),
        AuthMethod::Auto if has_mi => (AuthMethod::ManagedIdentity, "auto: a managed identity is configured"),
        AuthMethod::Auto if non_empty(&input.tenant_id).is_none() => {
            return err(if at("").is_empty() {
                "no tenant: set --auth.tenant-id (or AZURE_TENANT_ID), or --config.file for several tenants, or --demo to try the exporter".to_owned()
            } else {
                format!("{}: required", at("--auth.tenant-id"))
            });
        }
        AuthMethod::Auto if non_empty(&input.client_id).is_none() => {
            return err(format!("no client id: set {} (or AZURE_CLIENT_ID) to the app registration's Application (client) ID", at("--auth.client-id")));
        }
        AuthMethod::Auto => {
            return err(format!(
                "{}no credential: set AZURE_CLIENT_SECRET or {}, or {} (AZURE_CLIENT_CERTIFICATE_PATH), or {} (AZURE_FEDERATED_TOKEN_FILE), or {} managed_identity on Azure",
                at(""),
                at("--auth.client-secret-file"),
                at("--auth.client-certificate-path"),
                at("--auth.federated-token-file"),
                at("--auth.method"),
            ))
        }
        forced => (forced, "forced by the auth method setting"),
    };
    let tenant_id = non_empty(&input.tenant_id);
    let client_id = non_empty(&input.client_id);
    let need_app = |tenant_id: Option<String>, client_id: Option<String>| {
        let Some(tenant_id) = tenant_id else {
            return err(format!(
                "{}: no tenant id: set {} (or AZURE_TENANT_ID)",
                at("--auth.method"),
                at("--auth.tenant-id")
            ));
        };
        let Some(client_id) = client_id else {
            return err(format!("no client id: set {} (or AZURE_CLIENT_ID) to the app registration's Application (client) ID", at("--auth.client-id")));
        };
        Ok((tenant_id, client_id))
    };
    let credential = match method {
        AuthMethod::ClientSecret => {
            let source = match (&input.secret_file, secret_env) {
                (Some(path), _) => check_secret_file(path, &at("--auth.client-secret-file"))?,
                (None, Some(secret)) => SecretSource::Value(Secret::new(secret)),
                (None, None) => {
                    return err(format!(
                        "no client secret: set AZURE_CLIENT_SECRET or {}",
                        at("--auth.client-secret-file")
                    ))
                }
            };
            CredentialConfig::ClientSecret(source)
        }
        AuthMethod::ClientCertificate => {
            let name = at("--auth.client-certificate-path");
            let Some(path) = input.certificate_path.clone() else {
                return err(format!(
                    "no client certificate: set {name} (or AZURE_CLIENT_CERTIFICATE_PATH)"
                ));
            };
            let password = match (
                &input.certificate_password_file,
                non_empty(&input.certificate_password_env),
            ) {
                (Some(file), _) => Some(check_secret_file(
                    file,
                    &at("--auth.client-certificate-password-file"),
                )?),
                (None, Some(password)) => Some(SecretSource::Value(Secret::new(password))),
                (None, None) => None,
            };
            let algorithm = match &input.algorithm {
                Some(text) => AssertionAlgorithm::parse(text).ok_or_else(|| {
                    ConfigError(format!(
                        "{}: {text:?} must be RS256 or PS256",
                        at("--auth.client-certificate-alg")
                    ))
                })?,
                None => AssertionAlgorithm::Rs256,
            };
            let source = CertificateSource {
                path,
                password,
                send_chain: input.send_chain,
                algorithm,
            };
            source
                .load()
                .map_err(|e| ConfigError(format!("{name}: {}: {e}", source.path.display())))?;
            CredentialConfig::ClientCertificate(source)
        }
        AuthMethod::WorkloadIdentity => {
            let name = at("--auth.federated-token-file");
            let Some(token_file) = input.federated_token_file.clone() else {
                return err(format!(
                    "no federated token file: set {name} (or AZURE_FEDERATED_TOKEN_FILE)"
                ));
            };
            crate::credentials::workload_identity::read_token_file(&token_file)
                .map_err(|e| ConfigError(format!("{name}: {e}")))?;
            CredentialConfig::WorkloadIdentity { token_file }
        }
        AuthMethod::ManagedIdentity | AuthMethod::Auto => {
            let ids = [
                client_id.clone().map(ManagedIdentityId::ClientId),
                input.mi_object_id.clone().map(ManagedIdentityId::ObjectId),
                input
                    .mi_resource_id
                    .clone()
                    .map(ManagedIdentityId::ResourceId),
            ];
            let mut given = ids.into_iter().flatten();
            let id = given.next();
            if given.next().is_some() {
                return err(format!(
                    "{}: name a user-assigned identity by one of client id, object id or resource id, not several",
                    at("--auth.method")
                ));
            }
            let endpoint = match app_service {
                Some((endpoint, header)) => ManagedIdentityEndpoint::AppService {
                    endpoint: parse_url(&endpoint, "IDENTITY_ENDPOINT")?,
                    header: Secret::new(header),
                },
                None => ManagedIdentityEndpoint::Imds(parse_url(
                    input.imds_endpoint,
                    "--auth.imds-endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
                )?),
            };
            return Ok(Auth {
                credential: CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                    id,
                    endpoint,
                }),
                tenant_id: tenant_id.unwrap_or_default(),
                client_id: client_id.unwrap_or_default(),
                reason,
            });
        }
    };
    let (tenant_id, client_id) = need_app(tenant_id, client_id)?;
    Ok(Auth {
        credential,
        tenant_id,
        client_id,
        reason,
    })
}

/// Parses `--http.proxy` without ever echoing its password.
fn parse_proxy(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| {
        ConfigError(format!(
            "--http.proxy: not a URL ({e}); expected http://[user:password@]host:port"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return err("--http.proxy: expected http://[user:password@]host:port or https://...");
    }
    Ok(url)
}

/// What the "Authentication method" line says of a tenant.
struct AuthLine {
    tenant: String,
    method: &'static str,
    source: String,
    chosen: String,
}

fn auth_line(name: &str, auth: &Auth) -> AuthLine {
    AuthLine {
        tenant: name.to_owned(),
        method: auth.credential.method(),
        source: auth.credential.describe().to_string(),
        chosen: auth.reason.to_string(),
    }
}

/// Logs each tenant's authentication method, once the whole configuration is valid (a mistake
/// in a later tenant is then the only line).
fn log_auth(lines: &[AuthLine]) {
    for line in lines {
        tracing::info!(
            tenant = %line.tenant,
            method = line.method,
            source = %line.source,
            chosen = %line.chosen,
            "Authentication method"
        );
    }
}

impl Config {
    /// Resolves the command line; `env` reads environment variables (the process's own in
    /// production, a map in tests). Files named by flags are read here.
    ///
    /// The authentication method of a tenant is `--auth.method` (config key `auth_method`) when
    /// given; otherwise the first configured of, in this order (Azure's SDKs' order): a client
    /// secret (AZURE_CLIENT_SECRET, `--auth.client-secret-file`), a client certificate
    /// (AZURE_CLIENT_CERTIFICATE_PATH, `--auth.client-certificate-path`), a federated token
    /// (AZURE_FEDERATED_TOKEN_FILE, `--auth.federated-token-file`), a managed identity (App
    /// Service's IDENTITY_ENDPOINT and IDENTITY_HEADER, or a `--auth.managed-identity-*` flag).
    /// On an Azure VM nothing in the environment says so: use `--auth.method managed_identity`.
    pub fn resolve(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let telemetry_path = flags.telemetry_path.clone();
        if !telemetry_path.starts_with('/')
            || telemetry_path == "/"
            || telemetry_path.starts_with("/-/")
        {
            return err(format!(
                "--web.telemetry-path: {telemetry_path:?} must start with / and not clash with / or /-/"
            ));
        }
        if flags.scrape_timeout.is_zero() {
            return err("--web.scrape-timeout must be more than 0s");
        }
        let ca_pem = match &flags.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError(format!(
                        "--tls.ca-file: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                crate::http_client::build(Some(&pem))
                    .map_err(|e| ConfigError(format!("--tls.ca-file {}: {e}", path.display())))?;
                Some(pem)
            }
            None => None,
        };
        let proxy = flags.http_proxy.as_deref().map(parse_proxy).transpose()?;
        let shard = Shard::new(flags.shard_index, flags.shard_count).map_err(ConfigError)?;
        let listen = listen_address(&flags.listen_address)?;
        let sd_address = match &flags.sd_address {
            Some(address) => sd_address(address)?,
            None => advertised(&listen),
        };
        let cache_ttl = flags
            .cache_ttl
            .map(|ttl| check_ttl(ttl, "--cache.ttl"))
            .transpose()?;
        let mut config = Config {
            listen_address: listen,
            telemetry_path,
            scrape_timeout: flags.scrape_timeout,
            ca_pem,
            proxy,
            max_report_size: flags.max_report_size,
            refresh_concurrency: flags.refresh_concurrency.into(),
            enable_lifecycle: flags.enable_lifecycle,
            max_connections: flags.max_connections as usize,
            web: std::sync::Arc::new(match &flags.web_config_file {
                Some(path) => WebConfig::load(path).map_err(ConfigError)?,
                None => WebConfig::default(),
            }),
            health_without_auth: flags.health_without_auth,
            tenants: Vec::new(),
            demo: flags.demo,
            demo_cache_ttl: cache_ttl.unwrap_or(MIN_CACHE_TTL),
            demo_reports: Vec::new(),
            shard,
            sd_address,
        };
        let caps = SizeCaps {
            report: flags.max_report_size,
            user_detail: flags.max_user_detail_size,
        };
        let flag_selection = Selection {
            reports: match flags.reports.is_empty() {
                true => None,
                false => Some(reports::parse_list(&flags.reports, "--reports")?),
            },
            ttls: reports::parse_ttl_flags(&flags.report_ttl, "--report.ttl")?,
        };
        config.demo_reports = reports::resolve(
            &[&flag_selection],
            crate::reports::KINDS,
            config.demo_cache_ttl,
            caps,
        );
        let cache_ttl = cache_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        let default_reports = crate::reports::default_kinds();
        let flag_layer = Layer {
            cloud: flags.cloud,
            graph_endpoint: named(&flags.graph_endpoint, "--graph.endpoint"),
            authority_host: named(
                &flags.authority_host,
                "--auth.authority-host (AZURE_AUTHORITY_HOST)",
            ),
            api_version: named(&flags.api_version, "--graph.api-version"),
            graph_format: flags.graph_format.map(|f| (f, "--graph.format".to_owned())),
            scope: named(&flags.scope, "--auth.scope"),
        };
        let flag_endpoints = endpoints(&[&flag_layer])?;

        if flags.demo {
            if flags.config_file.is_some() || flags.tenant_id.is_some() {
                return err("--demo runs its own demo tenants: drop --config.file and --auth.tenant-id (AZURE_TENANT_ID)");
            }
            return Ok(config);
        }

        if let Some(path) = &flags.config_file {
            let layers = FlagLayers {
                endpoints: &flag_layer,
                selection: &flag_selection,
                caps,
                shard,
            };
            config.tenants = tenants_from_file(path, flags, &layers, env, cache_ttl)?;
            return Ok(config);
        }

        let single = |key: &str| key.to_owned();
        let auth = credential(AuthInput {
            at: &single,
            method: flags.auth_method.unwrap_or(AuthMethod::Auto),
            tenant_id: flags.tenant_id.clone(),
            client_id: flags.client_id.clone(),
            secret_file: flags.client_secret_file.clone(),
            secret_env: env("AZURE_CLIENT_SECRET"),
            certificate_path: flags
                .client_certificate_path
                .clone()
                .or_else(|| non_empty(&env("AZURE_CLIENT_CERTIFICATE_PATH")).map(PathBuf::from)),
            certificate_password_file: flags.client_certificate_password_file.clone(),
            certificate_password_env: env("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            send_chain: flags.client_certificate_send_chain
                || env("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| matches!(v.trim(), "1" | "true" | "True" | "TRUE")),
            algorithm: Some(flags.client_certificate_alg.clone()),
            federated_token_file: flags
                .federated_token_file
                .clone()
                .or_else(|| non_empty(&env("AZURE_FEDERATED_TOKEN_FILE")).map(PathBuf::from)),
            mi_object_id: non_empty(&flags.managed_identity_object_id),
            mi_resource_id: non_empty(&flags.managed_identity_resource_id),
            imds_endpoint: &flags.imds_endpoint,
            identity_endpoint: env("IDENTITY_ENDPOINT"),
            identity_header: env("IDENTITY_HEADER"),
        })?;
        let name = match (&flags.tenant_name, auth.tenant_id.as_str()) {
            (Some(name), _) if !name.trim().is_empty() => name.clone(),
            (_, "") => {
                return err("no tenant name: with a managed identity and no --auth.tenant-id, set --tenant.name (the `tenant` label)")
            }
            (_, tenant_id) => tenant_id.to_owned(),
        };
        if !shard.owns(&name) {
            tracing::info!(tenant = %name, shard = shard.index, shards = shard.count, "The tenant belongs to another shard");
            return Ok(config);
        }
        log_auth(&[auth_line(&name, &auth)]);
        let Endpoints {
            graph_endpoint,
            authority_host,
            api_version,
            report_format,
            scope,
        } = flag_endpoints;
        config.tenants.push(TenantConfig {
            name,
            tenant_id: auth.tenant_id,
            client_id: auth.client_id,
            credential: auth.credential,
            authority_host,
            graph_endpoint,
            api_version,
            report_format,
            scope,
            cache_ttl,
            reports: reports::resolve(&[&flag_selection], &default_reports, cache_ttl, caps),
        });
        Ok(config)
    }
}

/// What the flags give the config file's tenants as defaults.
struct FlagLayers<'a> {
    /// Cloud settings.
    endpoints: &'a Layer,
    /// Reports and their TTLs.
    selection: &'a Selection,
    /// Size caps.
    caps: SizeCaps,
    /// Which tenants this process owns.
    shard: Shard,
}

fn tenants_from_file(
    path: &Path,
    flags: &Flags,
    flag_layers: &FlagLayers<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    cache_ttl: Duration,
) -> Result<Vec<TenantConfig>, ConfigError> {
    let flag_layer = flag_layers.endpoints;
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config.file: cannot read {shown}: {e}")))?;
    let file: FileConfig =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
    let at = |key: &str| format!("{shown}: {key}");
    let file_layer = Layer {
        cloud: file.cloud,
        graph_endpoint: named(&file.graph_endpoint, at("graph_endpoint")),
        authority_host: named(&file.authority_host, at("authority_host")),
        api_version: named(&file.api_version, at("api_version")),
        graph_format: file.graph_format.map(|f| (f, at("graph_format"))),
        scope: named(&file.scope, at("scope")),
    };
    endpoints(&[&file_layer, flag_layer])?;
    let top_ttl = match file.cache_ttl {
        Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
        None => cache_ttl,
    };
    let top_method = file.auth_method.or(flags.auth_method);
    let file_selection = selection(
        &file.reports,
        &file.report_ttl,
        &at("reports"),
        &at("report_ttl"),
    )?;
    let default_reports = crate::reports::default_kinds();
    if file.tenants.is_empty() {
        return err(format!("{shown}: tenants: the list is empty"));
    }
    let mut tenants: Vec<TenantConfig> = Vec::with_capacity(file.tenants.len());
    let mut not_owned = 0;
    let mut auth_lines = Vec::new();
    for (i, t) in file.tenants.into_iter().enumerate() {
        let at = |key: &str| format!("{shown}: tenants[{i}].{key}");
        // Another shard's tenant: its credentials are not even read.
        let label = t.name.as_deref().or(t.tenant_id.as_deref());
        if label.is_some_and(|name| !flag_layers.shard.owns(name.trim())) {
            not_owned += 1;
            continue;
        }
        // Error messages name file keys, not flags.
        let key_of = |key: &str| {
            let file_key = match key {
                "" => return format!("{shown}: tenants[{i}]: "),
                "--auth.client-secret-file" => "client_secret_file",
                "--auth.client-certificate-path" => "client_certificate_path",
                "--auth.client-certificate-password-file" => "client_certificate_password_file",
                "--auth.client-certificate-alg" => "client_certificate_alg",
                "--auth.federated-token-file" => "federated_token_file",
                "--auth.method" => "auth_method",
                "--auth.tenant-id" => "tenant_id",
                "--auth.client-id" => "client_id",
                other => other,
            };
            format!("{shown}: tenants[{i}].{file_key}")
        };
        for (value, key) in [(&t.tenant_id, "tenant_id"), (&t.client_id, "client_id")] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return err(format!("{}: must not be empty", at(key)));
            }
        }
        let tenant_layer = Layer {
            cloud: t.cloud,
            graph_endpoint: named(&t.graph_endpoint, at("graph_endpoint")),
            authority_host: named(&t.authority_host, at("authority_host")),
            api_version: named(&t.api_version, at("api_version")),
            graph_format: t.graph_format.map(|f| (f, at("graph_format"))),
            scope: named(&t.scope, at("scope")),
        };
        let Endpoints {
            graph_endpoint,
            authority_host,
            api_version,
            report_format,
            scope,
        } = endpoints(&[&tenant_layer, &file_layer, flag_layer])?;
        let cache_ttl = match t.cache_ttl {
            Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
            None => top_ttl,
        };
        let tenant_selection =
            selection(&t.reports, &t.report_ttl, &at("reports"), &at("report_ttl"))?;
        let report_configs = reports::resolve(
            &[&tenant_selection, &file_selection, flag_layers.selection],
            &default_reports,
            cache_ttl,
            flag_layers.caps,
        );
        let auth = credential(AuthInput {
            at: &key_of,
            method: t.auth_method.or(top_method).unwrap_or(AuthMethod::Auto),
            tenant_id: t.tenant_id.clone(),
            client_id: t.client_id.clone(),
            secret_file: t.client_secret_file.clone(),
            secret_env: None,
            certificate_path: t.client_certificate_path.clone(),
            certificate_password_file: t.client_certificate_password_file.clone(),
            certificate_password_env: None,
            send_chain: t.client_certificate_send_chain.unwrap_or(false),
            algorithm: t.client_certificate_alg.clone(),
            federated_token_file: t.federated_token_file.clone(),
            mi_object_id: non_empty(&t.managed_identity_object_id),
            mi_resource_id: non_empty(&t.managed_identity_resource_id),
            imds_endpoint: &flags.imds_endpoint,
            identity_endpoint: env("IDENTITY_ENDPOINT"),
            identity_header: env("IDENTITY_HEADER"),
        })?;
        let name = match (t.name, auth.tenant_id.as_str()) {
            (Some(name), _) => name,
            (None, "") => {
                return err(format!(
                    "{}: required with a managed identity and no tenant_id",
                    at("name")
                ))
            }
            (None, tenant_id) => tenant_id.to_owned(),
        };
        if name.trim().is_empty() {
            return err(format!("{}: must not be empty", at("name")));
        }
        if let Some(other) = tenants.iter().position(|o| o.name == name) {
            return err(format!(
                "{}: {name:?} is already the name of tenants[{other}]; names are the `tenant` label and must differ",
                at("name")
            ));
        }
        auth_lines.push(auth_line(&name, &auth));
        tenants.push(TenantConfig {
            credential: auth.credential,
            authority_host,
            graph_endpoint,
            api_version,
            report_format,
            scope,
            cache_ttl,
            reports: report_configs,
            name,
            tenant_id: auth.tenant_id,
            client_id: auth.client_id,
        });
    }
    log_auth(&auth_lines);
    if not_owned > 0 {
        let shard = flag_layers.shard;
        tracing::info!(
            owned = tenants.len(),
            other_shards = not_owned,
            shard = shard.index,
            shards = shard.count,
            "This shard owns some of the configured tenants"
        );
    }
    Ok(tenants)
}

/// Checks a `--config.file` text as far as it can be checked without reading any other file
/// (secret, certificate and token files are left alone): the YAML and its keys, the cloud
/// settings, TTLs, report names, and tenant names. Returns the number of tenants. What the fuzz
/// target `config_file` drives; [`Config::resolve`] applies the same rules and more.
#[doc(hidden)]
pub fn check_file_text(text: &str) -> Result<usize, ConfigError> {
    let file: FileConfig =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError(format!("config: {e}")))?;
    let file_layer = Layer {
        cloud: file.cloud,
        graph_endpoint: named(&file.graph_endpoint, "graph_endpoint"),
        authority_host: named(&file.authority_host, "authority_host"),
        api_version: named(&file.api_version, "api_version"),
        graph_format: file.graph_format.map(|f| (f, "graph_format".to_owned())),
        scope: named(&file.scope, "scope"),
    };
    endpoints(&[&file_layer])?;
    if let Some(ttl) = file.cache_ttl {
        check_ttl(ttl, "cache_ttl")?;
    }
    selection(&file.reports, &file.report_ttl, "reports", "report_ttl")?;
    if file.tenants.is_empty() {
        return err("tenants: the list is empty");
    }
    let mut names: Vec<String> = Vec::with_capacity(file.tenants.len());
    for t in &file.tenants {
        let tenant_layer = Layer {
            cloud: t.cloud,
            graph_endpoint: named(&t.graph_endpoint, "graph_endpoint"),
            authority_host: named(&t.authority_host, "authority_host"),
            api_version: named(&t.api_version, "api_version"),
            graph_format: t.graph_format.map(|f| (f, "graph_format".to_owned())),
            scope: named(&t.scope, "scope"),
        };
        endpoints(&[&tenant_layer, &file_layer])?;
        if let Some(ttl) = t.cache_ttl {
            check_ttl(ttl, "cache_ttl")?;
        }
        selection(&t.reports, &t.report_ttl, "reports", "report_ttl")?;
        let name = t.name.clone().or_else(|| t.tenant_id.clone());
        match name {
            Some(name) if !name.trim().is_empty() => {
                if names.contains(&name) {
                    return err(format!("tenants: {name:?} appears twice"));
                }
                names.push(name);
            }
            Some(_) => return err("tenants: a name must not be empty"),
            None => {}
        }
    }
    Ok(file.tenants.len())
}

/// A config file level's `reports` and `report_ttl`.
fn selection(
    names: &Option<Vec<String>>,
    ttls: &BTreeMap<String, Duration>,
    reports_key: &str,
    ttl_key: &str,
) -> Result<Selection, ConfigError> {
    Ok(Selection {
        reports: match names {
            Some(names) => Some(reports::parse_list(names, reports_key)?),
            None => None,
        },
        ttls: reports::check_ttl_map(ttls, ttl_key)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            std::iter::once("office365-activations-exporter").chain(args.iter().copied()),
        )
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = parse(args).expect("arguments parse");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&cli.flags, &|key| {
            env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn single_tenant_from_flags_and_env_secret() {
        let config = resolve(
            &["--auth.tenant-id", "t1", "--auth.client-id", "c1"],
            &[("AZURE_CLIENT_SECRET", "s3cret")],
        )
        .unwrap();
        assert_eq!(config.listen_address, "0.0.0.0:10036");
        assert_eq!(config.telemetry_path, "/metrics");
        let tenant = &config.tenants[0];
        assert_eq!(
            (tenant.name.as_str(), tenant.tenant_id.as_str()),
            ("t1", "t1")
        );
        assert_eq!(tenant.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(tenant.api_version, "v1.0");
        assert_eq!(
            tenant.graph_endpoint.as_str(),
            "https://graph.microsoft.com/"
        );
        assert_eq!(
            tenant.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "the secret must not show in Debug"
        );
    }

    #[test]
    fn flags_work_after_the_check_subcommand() {
        let cli = parse(&["check", "--auth.tenant-id", "t1", "--cache.ttl", "90s"]).unwrap();
        assert_eq!(cli.command, Some(Command::Check));
        assert_eq!(cli.flags.tenant_id.as_deref(), Some("t1"));
        assert_eq!(cli.flags.cache_ttl, Some(Duration::from_secs(90)));
    }

    #[test]
    fn a_secret_is_never_a_flag() {
        assert!(parse(&["--auth.client-secret", "x"]).is_err());
    }

    #[test]
    fn missing_tenant_client_or_secret_is_named() {
        let e = resolve(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("--auth.tenant-id"), "{e}");
        let e = resolve(&["--auth.tenant-id", "t"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--auth.client-id"), "{e}");
        let e = resolve(&["--auth.tenant-id", "t", "--auth.client-id", "c"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AZURE_CLIENT_SECRET"), "{e}");
    }

    #[test]
    fn ttl_under_a_minute_is_refused() {
        let e = resolve(&["--demo", "--cache.ttl", "59s"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cache.ttl") && e.contains("1m"), "{e}");
        assert!(parse(&["--cache.ttl", "soon"]).is_err());
        assert_eq!(
            resolve(&["--demo", "--cache.ttl", "1m"], &[])
                .unwrap()
                .demo_cache_ttl,
            MIN_CACHE_TTL
        );
    }

    #[test]
    fn bad_urls_and_addresses_are_refused() {
        let e = resolve(&["--demo", "--graph.endpoint", "graph.microsoft.com"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--graph.endpoint"), "{e}");
        let e = resolve(&["--demo", "--auth.authority-host", "ftp://x"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--auth.authority-host"), "{e}");
        let e = resolve(&["--demo", "--web.listen-address", "10036"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--web.listen-address"), "{e}");
        assert_eq!(
            resolve(&["--demo", "--web.listen-address", "127.0.0.1:0"], &[])
                .unwrap()
                .listen_address,
            "127.0.0.1:0"
        );
    }

    #[test]
    fn unreadable_secret_file_is_refused_at_start() {
        let e = resolve(
            &[
                "--auth.tenant-id",
                "t",
                "--auth.client-id",
                "c",
                "--auth.client-secret-file",
                "/nonexistent/secret",
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--auth.client-secret-file") && e.contains("/nonexistent/secret"),
            "{e}"
        );
    }

    #[test]
    fn config_file_with_several_tenants_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s\n").unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            format!(
                "cache_ttl: 30m\napi_version: beta\ntenants:\n  - name: contoso\n    tenant_id: t1\n    client_id: c1\n    client_secret_file: {0}\n  - tenant_id: t2\n    client_id: c2\n    client_secret_file: {0}\n    cache_ttl: 2h\n    graph_endpoint: https://graph.microsoft.us\n",
                secret.display()
            ),
        )
        .unwrap();
        let config = resolve(&["--config.file", file.to_str().unwrap()], &[]).unwrap();
        let [a, b] = &config.tenants[..] else {
            panic!("two tenants")
        };
        assert_eq!(
            (a.name.as_str(), a.cache_ttl, a.api_version.as_str()),
            ("contoso", Duration::from_secs(1800), "beta")
        );
        assert_eq!(
            (b.name.as_str(), b.cache_ttl),
            ("t2", Duration::from_secs(7200))
        );
        assert_eq!(b.graph_endpoint.as_str(), "https://graph.microsoft.us/");
        assert_eq!(a.graph_endpoint.as_str(), "https://graph.microsoft.com/");
    }

    #[test]
    fn config_file_errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yml");
        let check = |yaml: &str, expect: &str| {
            std::fs::write(&file, yaml).unwrap();
            let e = resolve(&["--config.file", file.to_str().unwrap()], &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{yaml:?}: {e}");
        };
        check(
            "tenants:\n  - tenant_id: t\n    clientid: c\n",
            "unknown field `clientid`",
        );
        check(
            "tenants:\n  - tenant_id: t\n    client_id: c\n    client_secret_file: /nope\n",
            "tenants[0].client_secret_file",
        );
        check("tenants: []\n", "empty");
        check("cache_ttl: 10s\ntenants: []\n", "cache_ttl");
        check("tenants:\n  - tenant_id: t\n    client_id: c\n    client_secret_file: /nope\n    cache_ttl: 5s\n", "tenants[0].cache_ttl");
        check("tenants: [", "line");
    }

    #[test]
    fn the_fuzzers_file_check_applies_the_file_rules_without_reading_files() {
        let readme = "cache_ttl: 1h\nreports: [user_counts]\nreport_ttl: {user_detail: 6h}\ntenants:\n  - name: a\n    tenant_id: t\n    client_id: c\n    client_secret_file: /nonexistent/secret\n  - tenant_id: u\n    cloud: usgov\n";
        assert_eq!(check_file_text(readme).unwrap(), 2);
        for bad in [
            "tenants: []\n",
            "tenants:\n  - name: a\n  - name: a\n",
            "cache_ttl: 30s\ntenants:\n  - name: a\n",
            "tenants:\n  - name: a\n    graph_endpoint: ftp://x\n",
            "tenants:\n  - name: a\n    reports: [nope]\n",
            "tenant: []\n",
        ] {
            assert!(check_file_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_tenant_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            format!("tenants:\n  - {{name: a, tenant_id: t1, client_id: c, client_secret_file: {0}}}\n  - {{name: a, tenant_id: t2, client_id: c, client_secret_file: {0}}}\n", secret.display()),
        )
        .unwrap();
        let e = resolve(&["--config.file", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[1].name"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8 parsecs").is_err());
    }

    fn key_and_cert(dir: &Path) -> PathBuf {
        let key = include_str!("../tests/fixtures/rsa-a.pem");
        let key_pair =
            rcgen::KeyPair::from_pem_and_sign_algo(key, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["t.test".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, format!("{}{key}", cert.pem())).unwrap();
        path
    }

    #[test]
    fn auto_picks_secret_then_certificate_then_workload_then_managed_identity() {
        let dir = tempfile::tempdir().unwrap();
        let cert = key_and_cert(dir.path());
        let token = dir.path().join("token");
        std::fs::write(&token, "eyJ.x.y").unwrap();
        let (cert, token) = (cert.to_str().unwrap(), token.to_str().unwrap());
        let app = ["--auth.tenant-id", "t", "--auth.client-id", "c"];
        let method = |extra: &[&str], env: &[(&str, &str)]| {
            let args: Vec<&str> = app.iter().chain(extra).copied().collect();
            resolve(&args, env).unwrap().tenants[0].credential.method()
        };
        let all = [
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", cert),
            ("AZURE_FEDERATED_TOKEN_FILE", token),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/MSI/token/"),
            ("IDENTITY_HEADER", "h"),
        ];
        assert_eq!(method(&[], &all), "client_secret");
        assert_eq!(method(&[], &all[1..]), "client_certificate");
        assert_eq!(method(&[], &all[2..]), "workload_identity");
        assert_eq!(method(&[], &all[3..]), "managed_identity");
        // Flags count as much as the variables.
        assert_eq!(
            method(&["--auth.client-certificate-path", cert], &[]),
            "client_certificate"
        );
        assert_eq!(
            method(&["--auth.federated-token-file", token], &[]),
            "workload_identity"
        );
        // --auth.method forces one, even when another is configured too.
        assert_eq!(
            method(&["--auth.method", "workload_identity"], &all),
            "workload_identity"
        );
        let mi = resolve(
            &["--auth.method", "managed_identity", "--tenant.name", "vm"],
            &[],
        )
        .unwrap();
        match &mi.tenants[0].credential {
            CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                id: None,
                endpoint: ManagedIdentityEndpoint::Imds(url),
            }) => assert_eq!(url.as_str(), "http://169.254.169.254/"),
            other => panic!("{other:?}"),
        }
        let user = resolve(
            &[
                "--auth.method",
                "managed_identity",
                "--auth.managed-identity-object-id",
                "o",
                "--tenant.name",
                "vm",
            ],
            &[],
        )
        .unwrap();
        assert!(matches!(
            &user.tenants[0].credential,
            CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                id: Some(ManagedIdentityId::ObjectId(o)),
                ..
            }) if o == "o"
        ));
        assert!(!format!("{user:?}{:?}", resolve(&app, &all).unwrap()).contains("\"h\""));
    }

    #[test]
    fn credential_mistakes_are_named_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let app = ["--auth.tenant-id", "t", "--auth.client-id", "c"];
        let fails = |extra: &[&str], env: &[(&str, &str)], expect: &str| {
            let args: Vec<&str> = app.iter().chain(extra).copied().collect();
            let e = resolve(&args, env).unwrap_err().to_string();
            assert!(e.contains(expect), "{extra:?}: {e}");
        };
        fails(
            &["--auth.method", "client_certificate"],
            &[],
            "AZURE_CLIENT_CERTIFICATE_PATH",
        );
        fails(
            &["--auth.client-certificate-path", "/nope.pem"],
            &[],
            "/nope.pem",
        );
        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, include_str!("../tests/fixtures/rsa-a.pem")).unwrap();
        fails(
            &["--auth.client-certificate-path", key_only.to_str().unwrap()],
            &[],
            "CERTIFICATE",
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        fails(
            &["--auth.federated-token-file", empty.to_str().unwrap()],
            &[],
            "empty",
        );
        fails(
            &["--auth.method", "workload_identity"],
            &[],
            "AZURE_FEDERATED_TOKEN_FILE",
        );
        fails(
            &[
                "--auth.method",
                "managed_identity",
                "--auth.managed-identity-object-id",
                "o",
            ],
            &[],
            "not several",
        );
        let e = resolve(&["--auth.method", "managed_identity"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tenant.name"), "{e}");
        let e = resolve(
            &["--auth.tenant-id", "t", "--auth.method", "client_secret"],
            &[("AZURE_CLIENT_SECRET", "s")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--auth.client-id"), "{e}");
        let e = resolve(&["--demo", "--http.proxy", "ftp://u:hunter2@proxy"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http.proxy") && !e.contains("hunter2"), "{e}");
        let ok = resolve(&["--demo", "--http.proxy", "http://u:p@proxy:3128"], &[]).unwrap();
        assert_eq!(ok.proxy.unwrap().port(), Some(3128));
    }

    #[test]
    fn clouds_set_endpoints_scope_and_version_and_explicit_settings_win() {
        let app = ["--auth.tenant-id", "t", "--auth.client-id", "c"];
        let tenant = |extra: &[&str]| {
            let args: Vec<&str> = app.iter().chain(extra).copied().collect();
            resolve(&args, &[("AZURE_CLIENT_SECRET", "s")])
                .unwrap()
                .tenants
                .remove(0)
        };
        let china = tenant(&["--cloud", "china"]);
        assert_eq!(
            china.graph_endpoint.as_str(),
            "https://microsoftgraph.chinacloudapi.cn/"
        );
        assert_eq!(
            china.authority_host.as_str(),
            "https://login.chinacloudapi.cn/"
        );
        assert_eq!(
            china.scope,
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        assert_eq!(china.api_version, "beta");
        let dod = tenant(&["--cloud", "usgov-dod", "--graph.api-version", "v1.0"]);
        assert_eq!(
            dod.graph_endpoint.as_str(),
            "https://dod-graph.microsoft.us/"
        );
        assert_eq!(
            dod.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(
            dod.api_version, "v1.0",
            "an explicit flag overrides the preset"
        );
        let custom = tenant(&[
            "--cloud",
            "usgov",
            "--graph.endpoint",
            "https://graph.example",
            "--auth.scope",
            "https://graph.microsoft.us/.default",
        ]);
        assert_eq!(custom.graph_endpoint.as_str(), "https://graph.example/");
        assert_eq!(custom.scope, "https://graph.microsoft.us/.default");
        assert_eq!(
            custom.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        let global = tenant(&[]);
        assert_eq!(global.scope, "https://graph.microsoft.com/.default");
        assert_eq!(global.report_format, ReportFormat::Csv);
        let e = resolve(&["--demo", "--graph.format", "json"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--graph.format") && e.contains("beta"), "{e}");
        let e = resolve(
            &["--demo", "--auth.scope", "https://graph.microsoft.com"],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/.default"), "{e}");
        assert_eq!(
            tenant(&["--cloud", "usgov", "--graph.format", "json"]).report_format,
            ReportFormat::Json
        );
    }

    #[test]
    fn config_file_tenants_pick_their_own_cloud_and_credential() {
        let dir = tempfile::tempdir().unwrap();
        let cert = key_and_cert(dir.path());
        let token = dir.path().join("token");
        std::fs::write(&token, "eyJ.x.y").unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            format!(
                "cloud: usgov\ngraph_format: json\ntenants:\n  - name: gov\n    tenant_id: t1\n    client_id: c1\n    client_certificate_path: {}\n    client_certificate_alg: PS256\n    client_certificate_send_chain: true\n  - name: cn\n    cloud: china\n    tenant_id: t2\n    client_id: c2\n    federated_token_file: {}\n  - name: vm\n    auth_method: managed_identity\n    managed_identity_resource_id: /subscriptions/s\n  - name: com\n    cloud: global\n    graph_format: csv\n    tenant_id: t4\n    client_id: c4\n    auth_method: workload_identity\n    federated_token_file: {}\n",
                cert.display(),
                token.display(),
                token.display()
            ),
        )
        .unwrap();
        let config = resolve(&["--config.file", file.to_str().unwrap()], &[]).unwrap();
        let [gov, cn, vm, com] = &config.tenants[..] else {
            panic!("four tenants")
        };
        assert_eq!(gov.graph_endpoint.as_str(), "https://graph.microsoft.us/");
        assert_eq!(
            (gov.api_version.as_str(), gov.report_format),
            ("beta", ReportFormat::Json)
        );
        match &gov.credential {
            CredentialConfig::ClientCertificate(c) => {
                assert_eq!(c.algorithm, AssertionAlgorithm::Ps256);
                assert!(c.send_chain);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cn.authority_host.as_str(),
            "https://login.chinacloudapi.cn/"
        );
        assert_eq!(cn.credential.method(), "workload_identity");
        assert_eq!(vm.tenant_id, "");
        assert!(matches!(
            &vm.credential,
            CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                id: Some(ManagedIdentityId::ResourceId(_)),
                ..
            })
        ));
        assert_eq!(vm.scope, "https://graph.microsoft.us/.default");
        assert_eq!(com.api_version, "v1.0");
        assert_eq!(com.report_format, ReportFormat::Csv);
        std::fs::write(
            &file,
            "tenants:\n  - tenant_id: t\n    client_id: c\n    client_certificate_path: /nope.pem\n",
        )
        .unwrap();
        let e = resolve(&["--config.file", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[0].client_certificate_path"), "{e}");
        std::fs::write(&file, "tenants:\n  - auth_method: managed_identity\n").unwrap();
        let e = resolve(&["--config.file", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[0].name"), "{e}");
    }
}
