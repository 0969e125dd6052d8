//! Flags, environment variables and the YAML file, turned into a validated [`Config`].
//!
//! - `flags`: the command line (clap), with the environment variables it reads;
//! - `file`: the YAML file and its tenants;
//! - `clouds`: national clouds and endpoint settings, resolved over flags, file and tenant;
//! - `auth`: which credential a tenant uses;
//! - `reports`: which reports run, with their TTLs and size caps;
//! - `values`: single values (durations, sizes, URLs, addresses);
//! - here: [`Config`], [`TenantConfig`] and [`Config::resolve`], which puts them together.
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

mod auth;
mod clouds;
mod file;
mod flags;
mod reports;
#[cfg(test)]
mod tests;
mod values;

use auth::*;
use clouds::*;
use file::*;
use reports::Selection;
use values::*;

pub use clouds::Cloud;
pub use file::check_file_text;
pub use flags::{AuthMethod, Cli, Command, Flags, LogFormat, LogLevel};
pub use reports::{ReportConfig, SizeCaps};
pub use values::{parse_duration, parse_size};

/// The default port: outside Prometheus's full 9100-9999 exporter range.
pub const DEFAULT_PORT: u16 = 10036;
/// Graph allows 14 report downloads per 10 minutes per app and tenant; a shorter TTL would spend
/// that budget (shared with other apps and replicas) for data that changes once a day.
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// The cache TTL when none is given.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

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
