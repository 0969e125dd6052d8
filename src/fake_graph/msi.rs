//! The fake managed identity endpoints, plain HTTP on loopback like the real ones are local:
//!
//! - IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with
//!   `Metadata: true`, user-assigned identities by `client_id`, `object_id` or `msi_res_id`;
//! - App Service: `GET /MSI/token/?api-version=2019-08-01&resource=...` with
//!   `X-IDENTITY-HEADER`, user-assigned identities by `client_id`, `principal_id` or `mi_res_id`.
//!
//! Answers have the real shapes, numbers as strings: IMDS
//! `{"access_token":..,"client_id":..,"expires_in":"3599","expires_on":"1700000000","ext_expires_in":"3599","not_before":"..","resource":..,"token_type":"Bearer"}`,
//! App Service `{"access_token":..,"expires_on":"1700000000","resource":..,"token_type":"Bearer","client_id":..}`.
//! Refusals are IMDS's `{"error":"invalid_request","error_description":"Identity not found"}` and
//! friends. Canned answers (FIFO) script IMDS warming up (404, 410), throttling (429) and 5xx.
//! The tokens issued are ordinary tokens of the identity's tenant, so Graph accepts them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::identity::FakeCloud;
use super::scenario::Canned;
use super::server::{build_response, FakeBody, Shared};
use super::util::{form_get, parse_form};

/// A managed identity the fake's IMDS and App Service endpoints know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeManagedIdentity {
    /// The tenant (one of the fake's) the identity lives in; its tokens are of this tenant.
    pub tenant_id: String,
    /// The identity's client id.
    pub client_id: String,
    /// Its object (principal) id.
    pub object_id: String,
    /// Its Azure resource id.
    pub resource_id: String,
    /// Whether it is the host's system-assigned identity (asked for without any id).
    pub system_assigned: bool,
}

/// What the managed identity endpoints saw (a snapshot, from [`super::FakeGraph::msi_stats`]).
#[derive(Clone, Debug, Default)]
pub struct FakeMsiStats {
    /// Requests to IMDS (answered in any way).
    pub imds_requests: u64,
    /// Requests to the App Service endpoint (answered in any way).
    pub app_service_requests: u64,
    /// The query string of each request, in order (both endpoints).
    pub queries: Vec<String>,
}

/// The managed identity part of the fake's state.
#[derive(Debug, Default)]
pub(crate) struct MsiState {
    /// The identities.
    pub(crate) identities: Vec<FakeManagedIdentity>,
    /// Scripted IMDS answers.
    pub(crate) imds_canned: VecDeque<Canned>,
    /// Scripted App Service answers.
    pub(crate) app_service_canned: VecDeque<Canned>,
    /// What was seen.
    pub(crate) stats: FakeMsiStats,
}

/// Which endpoint a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MsiKind {
    /// Azure IMDS.
    Imds,
    /// App Service / Functions.
    AppService,
}

/// Accepts plain HTTP connections forever.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, kind: MsiKind) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, kind, req)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn json_response(status: u16, body: serde_json::Value) -> Response<FakeBody> {
    build_response(
        status,
        &[(
            "Content-Type".to_string(),
            "application/json; charset=utf-8".to_string(),
        )],
        Bytes::from(body.to_string()),
    )
}

fn refuse(error: &str, description: &str) -> Response<FakeBody> {
    json_response(
        400,
        json!({"error": error, "error_description": description}),
    )
}

fn handle(shared: &Shared, kind: MsiKind, req: Request<Incoming>) -> Response<FakeBody> {
    let query_text = req.uri().query().unwrap_or("").to_string();
    let query = parse_form(&query_text);
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    drop(req);
    let now = Instant::now();
    let mut state = shared.lock();
    match kind {
        MsiKind::Imds => state.msi.stats.imds_requests += 1,
        MsiKind::AppService => state.msi.stats.app_service_requests += 1,
    }
    state.msi.stats.queries.push(query_text);
    let canned = match kind {
        MsiKind::Imds => state.msi.imds_canned.pop_front(),
        MsiKind::AppService => state.msi.app_service_canned.pop_front(),
    };
    if let Some(c) = canned {
        return build_response(c.status, &c.headers, c.body);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (api_version, by_object, by_resource) = match kind {
        MsiKind::Imds => {
            if path != "/metadata/identity/oauth2/token" {
                return build_response(404, &[], Bytes::from_static(b"Not Found"));
            }
            if header("metadata") != Some("true") {
                return refuse("invalid_request", "Required metadata header not specified");
            }
            ("2018-02-01", "object_id", "msi_res_id")
        }
        MsiKind::AppService => {
            // The real endpoint's answer to a wrong header is undocumented; a 400 like IMDS's.
            if header("x-identity-header") != Some(shared.config.app_service_secret.as_str()) {
                return refuse(
                    "invalid_request",
                    "The X-IDENTITY-HEADER header is missing or invalid",
                );
            }
            ("2019-08-01", "principal_id", "mi_res_id")
        }
    };
    if form_get(&query, "api-version") != Some(api_version) {
        return refuse(
            "invalid_request",
            &format!("Required query variable 'api-version' is missing or not {api_version}"),
        );
    }
    let Some(resource) = form_get(&query, "resource").filter(|r| !r.is_empty()) else {
        return refuse(
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let wanted = |identity: &FakeManagedIdentity| match (
        form_get(&query, "client_id"),
        form_get(&query, by_object),
        form_get(&query, by_resource),
    ) {
        (Some(id), None, None) => identity.client_id.eq_ignore_ascii_case(id),
        (None, Some(id), None) => identity.object_id.eq_ignore_ascii_case(id),
        (None, None, Some(id)) => identity.resource_id.eq_ignore_ascii_case(id),
        (None, None, None) => identity.system_assigned,
        _ => false,
    };
    let Some(identity) = state.msi.identities.iter().find(|i| wanted(i)).cloned() else {
        return refuse("invalid_request", "Identity not found");
    };
    let trimmed = resource.trim_end_matches('/');
    let cloud = if trimmed.eq_ignore_ascii_case(&shared.config.graph_endpoint) {
        Some(FakeCloud::Global)
    } else {
        FakeCloud::ALL
            .into_iter()
            .find(|c| trimmed.eq_ignore_ascii_case(&format!("https://{}", c.graph_host())))
    };
    let Some(cloud) = cloud else {
        return refuse(
            "invalid_resource",
            &format!("AADSTS500011: The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", identity.tenant_id),
        );
    };
    let Some(tenant) = state.tenants.get_mut(&identity.tenant_id) else {
        return refuse("invalid_request", "Identity not found");
    };
    tenant.stats.token_requests += 1;
    tenant.stats.token_request_times.push(now);
    tenant.stats.token_methods.push("managed_identity".into());
    let lifetime = shared.config.token_lifetime;
    let token = state.issue_token(&identity.tenant_id, &identity.client_id, now, lifetime);
    if let Some(issued) = state.tokens.get_mut(&token) {
        issued.cloud = cloud;
    }
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expires_on = (unix_now + lifetime.as_secs()).to_string();
    let secs = lifetime.as_secs().to_string();
    match kind {
        MsiKind::Imds => json_response(
            200,
            json!({
                "access_token": token,
                "client_id": identity.client_id,
                "expires_in": secs,
                "expires_on": expires_on,
                "ext_expires_in": secs,
                "not_before": unix_now.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }),
        ),
        MsiKind::AppService => json_response(
            200,
            json!({
                "access_token": token,
                "expires_on": expires_on,
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            }),
        ),
    }
}
