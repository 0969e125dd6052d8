//! The command line: every flag, with the environment variables clap reads for them.

use super::*;

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
