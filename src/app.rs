//! Wiring: a validated [`Config`] becomes a running exporter (`serve`) or one refresh per tenant
//! (`check`). With `--demo`, the embedded fake Graph is started first and its tenants are used.

use std::future::Future;
use std::sync::Arc;

use reqwest::Url;
use tokio::net::TcpListener;

use crate::config::{Config, TenantConfig};
use crate::credentials::client_secret::SecretSource;
use crate::credentials::Secret;
use crate::exporter::Exporter;
use crate::fake_graph::{FakeGraph, FakeGraphOptions, DEMO_TENANTS};
use crate::server::{self, ServerOptions};

/// A fatal error before or while serving, shown as one line.
pub type AppError = String;

/// The tenants to serve and the CA to trust, plus the fake Graph that must live as long as they
/// do when running the demo.
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
    let http = crate::http_client::build(ca_pem.as_deref())?;
    let exporter = Exporter::new(&tenants, http, config.max_report_size)?;
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
        .map(|(name, tenant_id, client_id, secret)| TenantConfig {
            name: (*name).to_owned(),
            tenant_id: (*tenant_id).to_owned(),
            client_id: (*client_id).to_owned(),
            secret: SecretSource::Value(Secret::new(*secret)),
            authority_host: authority_host.clone(),
            graph_endpoint: graph_endpoint.clone(),
            api_version: "v1.0".to_owned(),
            cache_ttl: config.demo_cache_ttl,
        })
        .collect())
}

/// Binds the listen address and serves until `shutdown` completes.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let setup = setup(&config).await?;
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(|e| {
            format!(
                "--web.listen-address: cannot listen on {}: {e}",
                config.listen_address
            )
        })?;
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
    };
    server::run(listener, setup.exporter, options, shutdown).await;
    tracing::info!("Stopped");
    Ok(())
}

/// Refreshes every tenant once and returns the metrics text; fails with every tenant's reason
/// when any refresh failed.
pub async fn check(config: Config) -> Result<String, AppError> {
    let setup = setup(&config).await?;
    let mut failures = Vec::new();
    for tenant in setup.exporter.tenants() {
        if let Err(error) = tenant.refresh().await {
            failures.push(format!("tenant {}: {error}", tenant.name()));
        }
    }
    let text = String::from_utf8_lossy(&setup.exporter.render()).into_owned();
    if failures.is_empty() {
        Ok(text)
    } else {
        Err(failures.join("\n"))
    }
}

/// Waits for SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Received Ctrl-C"),
        () = term => tracing::info!("Received SIGTERM"),
    }
}
