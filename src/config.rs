//! Flags, environment variables and the YAML file, turned into a validated [`Config`].
//!
//! Every mistake is found here, at start, and reported as one [`ConfigError`] line that names the
//! flag, variable or file line that is wrong; nothing later has to cope with a half-valid config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use serde::Deserialize;

use crate::credentials::client_secret::SecretSource;
use crate::credentials::Secret;
use crate::web_config::WebConfig;

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
    about = "Prometheus exporter for Microsoft 365 Apps (Office) activation counts, read from Microsoft Graph's getOffice365ActivationsUserCounts report.",
    long_about = "Prometheus exporter for Microsoft 365 Apps (Office) activation counts.\n\n\
It serves /metrics; a scrape that finds a tenant's cached report older than --cache.ttl refreshes it \
from Microsoft Graph (GET /v1.0/reports/getOffice365ActivationsUserCounts, which needs an Entra ID app \
with the Reports.Read.All application permission). Run with --demo to try it without credentials, \
against an embedded fake Graph.\n\n\
One tenant is described by the --auth.* flags (or AZURE_* variables, as Azure's SDKs read them) and \
AZURE_CLIENT_SECRET or --auth.client-secret-file; several tenants by --config.file."
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

    /// Microsoft Graph base URL.
    #[arg(
        long = "graph.endpoint",
        default_value = "https://graph.microsoft.com",
        global = true
    )]
    pub graph_endpoint: String,

    /// Graph API version.
    #[arg(long = "graph.api-version", default_value = "v1.0", value_parser = ["v1.0", "beta"], global = true)]
    pub api_version: String,

    /// Largest report body accepted (e.g. 8MiB); a larger one is refused, not read.
    #[arg(long = "graph.max-report-size", default_value = "8MiB", value_parser = parse_size, global = true)]
    pub max_report_size: u64,

    /// Entra ID (login) host.
    #[arg(
        long = "auth.authority-host",
        env = "AZURE_AUTHORITY_HOST",
        default_value = "https://login.microsoftonline.com",
        global = true
    )]
    pub authority_host: String,

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

    /// Serve two demo tenants from an embedded fake Microsoft Graph: no credentials needed.
    #[arg(long = "demo", global = true)]
    pub demo: bool,
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
    /// Largest report body accepted.
    pub max_report_size: u64,
    /// How many refreshes may run at once.
    pub refresh_concurrency: usize,
    /// POST /-/reload is enabled.
    pub enable_lifecycle: bool,
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
}

/// One tenant, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantConfig {
    /// The `tenant` label value.
    pub name: String,
    /// Directory (tenant) id or a verified domain.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Where the client secret comes from.
    pub secret: SecretSource,
    /// Entra ID host.
    pub authority_host: Url,
    /// Graph base URL.
    pub graph_endpoint: Url,
    /// `v1.0` or `beta`.
    pub api_version: String,
    /// How long a report is served before a scrape refreshes it.
    pub cache_ttl: Duration,
}

/// The YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tenants: Vec<FileTenant>,
    graph_endpoint: Option<String>,
    api_version: Option<String>,
    authority_host: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    cache_ttl: Option<Duration>,
}

/// One tenant in the YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant {
    name: Option<String>,
    tenant_id: String,
    client_id: String,
    client_secret_file: PathBuf,
    graph_endpoint: Option<String>,
    api_version: Option<String>,
    authority_host: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    cache_ttl: Option<Duration>,
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

impl Config {
    /// Resolves the command line; `env` reads environment variables (the process's own in
    /// production, a map in tests). Files named by flags are read here.
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
        let cache_ttl = flags
            .cache_ttl
            .map(|ttl| check_ttl(ttl, "--cache.ttl"))
            .transpose()?;
        let mut config = Config {
            listen_address: listen_address(&flags.listen_address)?,
            telemetry_path,
            scrape_timeout: flags.scrape_timeout,
            ca_pem,
            max_report_size: flags.max_report_size,
            refresh_concurrency: flags.refresh_concurrency.into(),
            enable_lifecycle: flags.enable_lifecycle,
            web: std::sync::Arc::new(match &flags.web_config_file {
                Some(path) => WebConfig::load(path).map_err(ConfigError)?,
                None => WebConfig::default(),
            }),
            health_without_auth: flags.health_without_auth,
            tenants: Vec::new(),
            demo: flags.demo,
            demo_cache_ttl: cache_ttl.unwrap_or(MIN_CACHE_TTL),
        };
        let cache_ttl = cache_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        let graph_endpoint = parse_url(&flags.graph_endpoint, "--graph.endpoint")?;
        let authority_host = parse_url(
            &flags.authority_host,
            "--auth.authority-host (AZURE_AUTHORITY_HOST)",
        )?;
        let api_version = check_api_version(&flags.api_version, "--graph.api-version")?;

        if flags.demo {
            if flags.config_file.is_some() || flags.tenant_id.is_some() {
                return err("--demo runs its own demo tenants: drop --config.file and --auth.tenant-id (AZURE_TENANT_ID)");
            }
            return Ok(config);
        }

        if let Some(path) = &flags.config_file {
            config.tenants = tenants_from_file(
                path,
                &graph_endpoint,
                &authority_host,
                &api_version,
                cache_ttl,
            )?;
            return Ok(config);
        }

        let Some(tenant_id) = flags.tenant_id.clone().filter(|t| !t.trim().is_empty()) else {
            return err("no tenant: set --auth.tenant-id (or AZURE_TENANT_ID), or --config.file for several tenants, or --demo to try the exporter");
        };
        let Some(client_id) = flags.client_id.clone().filter(|c| !c.trim().is_empty()) else {
            return err("no client id: set --auth.client-id (or AZURE_CLIENT_ID) to the app registration's Application (client) ID");
        };
        let secret = match (&flags.client_secret_file, env("AZURE_CLIENT_SECRET")) {
            (Some(path), _) => check_secret_file(path, "--auth.client-secret-file")?,
            (None, Some(secret)) if !secret.trim().is_empty() => {
                SecretSource::Value(Secret::new(secret.trim()))
            }
            (None, _) => {
                return err(
                    "no client secret: set AZURE_CLIENT_SECRET or --auth.client-secret-file",
                )
            }
        };
        config.tenants.push(TenantConfig {
            name: flags
                .tenant_name
                .clone()
                .unwrap_or_else(|| tenant_id.clone()),
            tenant_id,
            client_id,
            secret,
            authority_host,
            graph_endpoint,
            api_version,
            cache_ttl,
        });
        Ok(config)
    }
}

fn tenants_from_file(
    path: &Path,
    graph_endpoint: &Url,
    authority_host: &Url,
    api_version: &str,
    cache_ttl: Duration,
) -> Result<Vec<TenantConfig>, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config.file: cannot read {shown}: {e}")))?;
    let file: FileConfig =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
    let at = |key: &str| format!("{shown}: {key}");
    let top_graph = match &file.graph_endpoint {
        Some(v) => parse_url(v, &at("graph_endpoint"))?,
        None => graph_endpoint.clone(),
    };
    let top_authority = match &file.authority_host {
        Some(v) => parse_url(v, &at("authority_host"))?,
        None => authority_host.clone(),
    };
    let top_version = match &file.api_version {
        Some(v) => check_api_version(v, &at("api_version"))?,
        None => api_version.to_owned(),
    };
    let top_ttl = match file.cache_ttl {
        Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
        None => cache_ttl,
    };
    if file.tenants.is_empty() {
        return err(format!("{shown}: tenants: the list is empty"));
    }
    let mut tenants: Vec<TenantConfig> = Vec::with_capacity(file.tenants.len());
    for (i, t) in file.tenants.into_iter().enumerate() {
        let at = |key: &str| format!("{shown}: tenants[{i}].{key}");
        if t.tenant_id.trim().is_empty() {
            return err(format!("{}: must not be empty", at("tenant_id")));
        }
        if t.client_id.trim().is_empty() {
            return err(format!("{}: must not be empty", at("client_id")));
        }
        let name = t.name.unwrap_or_else(|| t.tenant_id.clone());
        if name.trim().is_empty() {
            return err(format!("{}: must not be empty", at("name")));
        }
        if let Some(other) = tenants.iter().position(|o| o.name == name) {
            return err(format!(
                "{}: {name:?} is already the name of tenants[{other}]; names are the `tenant` label and must differ",
                at("name")
            ));
        }
        let cache_ttl = match t.cache_ttl {
            Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
            None => top_ttl,
        };
        tenants.push(TenantConfig {
            secret: check_secret_file(&t.client_secret_file, &at("client_secret_file"))?,
            authority_host: match &t.authority_host {
                Some(v) => parse_url(v, &at("authority_host"))?,
                None => top_authority.clone(),
            },
            graph_endpoint: match &t.graph_endpoint {
                Some(v) => parse_url(v, &at("graph_endpoint"))?,
                None => top_graph.clone(),
            },
            api_version: match &t.api_version {
                Some(v) => check_api_version(v, &at("api_version"))?,
                None => top_version.clone(),
            },
            cache_ttl,
            name,
            tenant_id: t.tenant_id,
            client_id: t.client_id,
        });
    }
    Ok(tenants)
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
}
