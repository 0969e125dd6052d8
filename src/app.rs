//! Wiring: a validated [`Config`] becomes a running exporter (`serve`) or one refresh per tenant
//! (`check`). With `--demo`, the embedded fake Graph is started first and its tenants are used.

use std::future::Future;
use std::sync::Arc;

use reqwest::Url;
use tokio::net::TcpListener;

use crate::config::{Config, TenantConfig};
use crate::credentials::client_secret::SecretSource;
use crate::credentials::{CredentialConfig, Secret};
use crate::exporter::Exporter;
use crate::fake_graph::{FakeGraph, FakeGraphOptions, DEMO_TENANTS};
use crate::server::{self, Reloader, ServerOptions};

/// A fatal error before or while serving, shown as one line.
pub type AppError = String;

/// The exporter, plus the fake Graph that must live as long as it when running the demo.
struct Setup {
    exporter: Arc<Exporter>,
    _demo: Option<FakeGraph>,
}

async fn setup(config: &Config) -> Result<Setup, AppError> {
    let (tenants, ca_pem, demo) = if config.demo {
        let fake = FakeGraph::start(FakeGraphOptions::demo())
            .await
            .map_err(|e| format!("cannot start the demo's fake Microsoft Graph: {e}"))?;
        let tenants = demo_tenants(&fake, config)?;
        tracing::info!(
            graph = %fake.graph_endpoint(),
            authority = %fake.authority_host(),
            downloads = %fake.download_origin(),
            tenants = tenants.len(),
            "Demo mode: serving demo tenants from an embedded fake Microsoft Graph"
        );
        (tenants, Some(fake.ca_pem().into_bytes()), Some(fake))
    } else {
        (config.tenants.clone(), config.ca_pem.clone(), None)
    };
    if let Some(proxy) =
        crate::http_client::describe_proxy(config.proxy.as_ref(), &|k| std::env::var(k).ok())
    {
        tracing::info!(%proxy, "Outbound requests go through a proxy");
    }
    let http = crate::http_client::build_with(&crate::http_client::HttpOptions {
        extra_ca_pem: ca_pem.as_deref(),
        proxy: config.proxy.as_ref(),
        resolve: &[],
    })?;
    let exporter = Exporter::new(&tenants, http, config.refresh_concurrency)?;
    Ok(Setup {
        exporter: Arc::new(exporter),
        _demo: demo,
    })
}

fn demo_tenants(fake: &FakeGraph, config: &Config) -> Result<Vec<TenantConfig>, AppError> {
    let authority_host = Url::parse(&fake.authority_host()).map_err(|e| e.to_string())?;
    let graph_endpoint = Url::parse(&fake.graph_endpoint()).map_err(|e| e.to_string())?;
    Ok(DEMO_TENANTS
        .iter()
        .filter(|(name, ..)| config.shard.owns(name))
        .map(|(name, tenant_id, client_id, secret)| TenantConfig {
            name: (*name).to_owned(),
            tenant_id: (*tenant_id).to_owned(),
            client_id: (*client_id).to_owned(),
            credential: CredentialConfig::ClientSecret(SecretSource::Value(Secret::new(*secret))),
            authority_host: authority_host.clone(),
            scope: format!("{}/.default", graph_endpoint.as_str().trim_end_matches('/')),
            graph_endpoint: graph_endpoint.clone(),
            api_version: "v1.0".to_owned(),
            report_format: Default::default(),
            cache_ttl: config.demo_cache_ttl,
            reports: config.demo_reports.clone(),
        })
        .collect())
}

/// Gives the memory freed after reading a configuration back to the system. Parsing a file of
/// ten thousand tenants peaks at about 20 MB more than what it leaves (the YAML parser holds every
/// event of the document); glibc keeps such freed pages mapped, and the process's RSS would
/// keep that peak for its whole life.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Re-reads the configuration with `resolve` and applies its tenants to `exporter`; logs and
/// returns what changed. The demo's tenants are fixed.
fn reload(
    exporter: &Exporter,
    demo: bool,
    resolve: &(dyn Fn() -> Result<Config, String> + Send + Sync),
) -> Result<String, String> {
    if demo {
        return Err("the demo's tenants are fixed; nothing to reload".into());
    }
    let result = exporter.reload_from(|| resolve().map(|config| config.tenants));
    release_free_memory();
    match &result {
        Ok(summary) => tracing::info!(
            added = ?summary.added,
            changed = ?summary.changed,
            removed = ?summary.removed,
            kept = summary.kept,
            "Reloaded the configuration"
        ),
        Err(error) => tracing::error!(%error, "Reload failed; keeping the current configuration"),
    }
    result.map(|summary| format!("{summary:?}"))
}

/// Binds the listen address and serves until `shutdown` completes. `resolve` re-reads the
/// configuration for SIGHUP and POST /-/reload.
pub async fn serve(
    mut config: Config,
    resolve: impl Fn() -> Result<Config, String> + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let setup = setup(&config).await?;
    // Each tenant keeps its own copy; with ten thousand tenants this one is megabytes.
    config.tenants = Vec::new();
    release_free_memory();
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(|e| {
            format!(
                "--web.listen-address: cannot listen on {}: {e}",
                config.listen_address
            )
        })?;
    let resolve: Arc<dyn Fn() -> Result<Config, String> + Send + Sync> = Arc::new(resolve);
    let reloader: Reloader = {
        let exporter = Arc::clone(&setup.exporter);
        let resolve = Arc::clone(&resolve);
        let demo = config.demo;
        Arc::new(move || reload(&exporter, demo, resolve.as_ref()))
    };
    #[cfg(unix)]
    let hangups = reload_on_sighup(Arc::clone(&reloader))?;
    // Last, once every signal handler is installed: tests and operators act on this line.
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        version = crate::metrics::VERSION,
        address = %address,
        telemetry_path = %config.telemetry_path,
        tenants = setup.exporter.tenants().len(),
        "Listening"
    );
    let options = ServerOptions {
        telemetry_path: config.telemetry_path.clone(),
        default_scrape_timeout: config.scrape_timeout,
        reloader: config.enable_lifecycle.then_some(reloader),
        web: Arc::clone(&config.web),
        health_without_auth: config.health_without_auth,
        // Listening on port 0, /sd advertises the port the system picked.
        sd_address: match config.sd_address.strip_suffix(":0") {
            Some(host) => format!("{host}:{}", address.port()),
            None => config.sd_address.clone(),
        },
        shard: config.shard,
    };
    let limits = server::Limits {
        max_connections: config.max_connections,
        ..server::Limits::default()
    };
    server::run_with(listener, setup.exporter, options, limits, shutdown).await;
    #[cfg(unix)]
    hangups.abort();
    tracing::info!("Stopped");
    Ok(())
}

/// Refreshes every enabled report of every tenant once and returns the metrics text; fails with
/// the reason of each report that failed, naming the tenant and the report.
pub async fn check(config: Config) -> Result<String, AppError> {
    let setup = setup(&config).await?;
    let mut failures = Vec::new();
    for tenant in setup.exporter.tenants().iter() {
        for (kind, outcome) in tenant.refresh().await {
            if let Err(error) = outcome {
                failures.push(format!(
                    "tenant {} report {}: {error}",
                    tenant.name(),
                    kind.name
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&setup.exporter.snapshot().plain()).into_owned();
    if failures.is_empty() {
        Ok(text)
    } else {
        Err(failures.join("\n"))
    }
}

/// Probes a running exporter's /-/healthy, as a container HEALTHCHECK: needs only the listen
/// address and the web config, not the tenants.
pub async fn healthcheck(flags: &crate::config::Flags) -> Result<(), AppError> {
    let web = match &flags.web_config_file {
        Some(path) => crate::web_config::WebConfig::load(path)?,
        None => crate::web_config::WebConfig::default(),
    };
    let address = flags.listen_address.trim();
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("--web.listen-address: {address:?} must be host:port or :port"))?;
    let host = match host.trim_matches(['[', ']']) {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        other if other.contains(':') => format!("[{other}]"),
        other => other.to_owned(),
    };
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}/-/healthy");
    // A local liveness probe: the certificate names the service, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let status = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", e.without_url()))?
        .status();
    // With basic auth on and /-/healthy not exempt, a 401 still proves the server is serving.
    if status.is_success() || (status == 401 && web.auth.is_some()) {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// Installs the SIGHUP handler now and spawns the task that calls `reloader` on each SIGHUP.
/// Must be called inside the runtime, before the "Listening" line (SIGHUP's default action ends
/// the process).
#[cfg(unix)]
pub fn reload_on_sighup(reloader: Reloader) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("Received SIGHUP");
            let _ = reloader();
        }
    }))
}

/// Installs the SIGTERM and Ctrl-C (SIGINT) handlers now and returns a future that completes on
/// the first of them. Must be called inside the runtime, before the "Listening" line: a handler
/// installed only when the future is first polled would leave a window after that line in which
/// the signal's default action kills the process instead of stopping it cleanly.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, AppError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| format!("cannot listen for Ctrl-C: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("Received Ctrl-C"),
                _ = term.recv() => tracing::info!("Received SIGTERM"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("Received Ctrl-C"),
                Err(error) => {
                    tracing::error!(%error, "Cannot listen for Ctrl-C");
                    std::future::pending::<()>().await
                }
            }
        })
    }
}
