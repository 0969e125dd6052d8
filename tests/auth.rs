//! Every credential type end to end against the fake Graph, which verifies what it receives like
//! Entra ID: client certificate (PEM and PKCS#12, RS256 and PS256, with and without x5c),
//! workload identity, managed identity (IMDS and App Service); rotation of the federated token
//! file and of the certificate while running; and the refusals (expired assertion, wrong
//! audience, unknown thumbprint) with their AADSTS codes in the error.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use office365_activations_exporter::config::TenantConfig;
use office365_activations_exporter::credentials::certificate::{
    self, AssertionAlgorithm, CertificateSource,
};
use office365_activations_exporter::credentials::managed_identity::{
    retry_delay, ManagedIdentityConfig, ManagedIdentityEndpoint, ManagedIdentityId,
};
use office365_activations_exporter::credentials::{entra, CredentialConfig, Secret};
use office365_activations_exporter::fake_graph::{
    Canned, FakeFederatedCredential, FakeGraphOptions, FakeManagedIdentity, TOKEN_EXCHANGE_AUDIENCE,
};
use reqwest::Url;

const EXPIRY: &str = "office365_activations_credential_expiry_timestamp_seconds";
const SUBJECT: &str = "system:serviceaccount:monitoring:office365-exporter";

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as f64
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn certificate_source(path: PathBuf) -> CertificateSource {
    CertificateSource {
        path,
        password: None,
        send_chain: false,
        algorithm: AssertionAlgorithm::Rs256,
    }
}

/// A harness whose tenant 0 authenticates with `credential`, after `setup` ran on the fake.
async fn harness_with(
    credential: CredentialConfig,
    setup: impl FnOnce(&office365_activations_exporter::fake_graph::FakeGraph) + Send + 'static,
) -> Harness {
    Harness::with(Options {
        configure: Some(Box::new(move |fake, configs: &mut Vec<TenantConfig>| {
            setup(fake);
            configs[0].credential = credential;
        })),
        ..Options::default()
    })
    .await
}

fn assert_served(m: &Metrics) {
    assert_eq!(m.up("contoso"), Some(1.0), "{}", m.text);
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(1710.0)
    );
}

#[tokio::test(start_paused = true)]
async fn client_certificate_pem_rs256_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, cert_der) = certificate(KEY_A, 365);
    // Key first, certificate second: the order in the file does not matter.
    let path = write(dir.path(), "exporter.pem", format!("{KEY_A}{cert_pem}"));
    let loaded = certificate::parse(&std::fs::read(&path).unwrap(), None).unwrap();
    let h = harness_with(
        CredentialConfig::ClientCertificate(certificate_source(path)),
        move |fake| fake.register_certificate(&tenant_id(0), &cert_der),
    )
    .await;
    let m = h.scrape().await;
    assert_served(&m);
    let stats = h.stats(0);
    assert_eq!(stats.token_methods, ["client_certificate"]);
    let seen = &stats.client_assertions[0];
    assert_eq!(seen.alg, "RS256");
    assert_eq!(seen.x5t.as_deref(), Some(loaded.x5t().as_str()));
    assert_eq!((seen.x5t_s256.as_deref(), seen.x5c_len), (None, 0));
    assert_eq!(
        seen.aud.as_deref(),
        Some(
            format!(
                "{}/{}/oauth2/v2.0/token",
                h.fake.authority_host(),
                tenant_id(0)
            )
            .as_str()
        )
    );
    assert_eq!(seen.lifetime_secs, Some(600));
    // The gauge is the certificate's notAfter, and the exposition stays valid.
    assert_eq!(
        m.get(EXPIRY, &[("tenant", "contoso")]),
        Some(unix(loaded.not_after))
    );
    assert!(m.text.contains(&format!("# HELP {EXPIRY} ")));
    let (ok, said) = promtool_metrics_check(&m.text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{}", m.text);
    assert!(!m.text.contains("PRIVATE KEY"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn client_certificate_pkcs12_ps256_with_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_der) = certificate(KEY_B, 365);
    let path = write(
        dir.path(),
        "exporter.pfx",
        pkcs12(&cert_der, KEY_B, "pfx-password", false),
    );
    let password = write(dir.path(), "password", "pfx-password\n");
    let loaded = certificate::parse(&std::fs::read(&path).unwrap(), Some("pfx-password")).unwrap();
    let source = CertificateSource {
        path,
        password: Some(
            office365_activations_exporter::credentials::client_secret::SecretSource::File(
                password,
            ),
        ),
        send_chain: true,
        algorithm: AssertionAlgorithm::Ps256,
    };
    let h = harness_with(CredentialConfig::ClientCertificate(source), move |fake| {
        fake.register_certificate(&tenant_id(0), &cert_der)
    })
    .await;
    assert_served(&h.scrape().await);
    let seen = h.stats(0).client_assertions.remove(0);
    assert_eq!(seen.alg, "PS256");
    assert_eq!(seen.x5t_s256.as_deref(), Some(loaded.x5t_s256().as_str()));
    assert_eq!((seen.x5t, seen.x5c_len), (None, 1));
    h.stop().await;
}

#[test]
fn pkcs12_legacy_3des_pkcs1_pem_and_bad_files() {
    let (cert_pem, cert_der) = certificate(KEY_A, 30);
    let legacy = pkcs12(&cert_der, KEY_A, "pw", true);
    let a = certificate::parse(&legacy, Some("pw")).unwrap();
    let pkcs1 = certificate::parse(format!("{cert_pem}{KEY_A_PKCS1}").as_bytes(), None).unwrap();
    assert_eq!(a.thumbprint(), pkcs1.thumbprint());
    assert_eq!(a.thumbprint().len(), 40);
    let e = certificate::parse(&legacy, Some("wrong")).unwrap_err();
    assert!(e.contains("PKCS#12"), "{e}");
    let e = certificate::parse(format!("{cert_pem}{KEY_B}").as_bytes(), None).unwrap_err();
    assert!(e.contains("matches its private key"), "{e}");
    let e = certificate::parse(cert_pem.as_bytes(), None).unwrap_err();
    assert!(e.contains("PRIVATE KEY"), "{e}");
    let e = certificate::parse(KEY_A.as_bytes(), None).unwrap_err();
    assert!(e.contains("CERTIFICATE"), "{e}");
    assert!(!format!("{a:?}").contains("PRIVATE"), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn certificate_rotation_is_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pem_a, der_a) = certificate(KEY_A, 20); // within 30 days: warned about
    let (pem_b, der_b) = certificate(KEY_B, 400);
    let path = write(dir.path(), "exporter.pem", format!("{pem_a}{KEY_A}"));
    let a = certificate::parse(&std::fs::read(&path).unwrap(), None).unwrap();
    let file = path.clone();
    let h = harness_with(
        CredentialConfig::ClientCertificate(certificate_source(path)),
        move |fake| fake.register_certificate(&tenant_id(0), &der_a),
    )
    .await;
    let m = h.scrape().await;
    assert_served(&m);
    assert_eq!(
        m.get(EXPIRY, &[("tenant", "contoso")]),
        Some(unix(a.not_after))
    );

    // The operator uploads B, replaces the file, and removes A from the app; the next token
    // request (forced here by revoking the tokens) signs with B.
    h.fake.remove_certificates(&tenant_id(0));
    h.fake.register_certificate(&tenant_id(0), &der_b);
    std::fs::write(&file, format!("{KEY_B}{pem_b}")).unwrap();
    let b = certificate::parse(&std::fs::read(&file).unwrap(), None).unwrap();
    h.fake.revoke_tokens(&tenant_id(0));
    tokio::time::advance(TTL).await;
    let m = h.scrape().await;
    assert_served(&m);
    let stats = h.stats(0);
    assert_eq!(
        stats.token_methods,
        ["client_certificate", "client_certificate"]
    );
    assert_eq!(
        stats.client_assertions[1].x5t.as_deref(),
        Some(b.x5t().as_str())
    );
    assert_eq!(
        m.get(EXPIRY, &[("tenant", "contoso")]),
        Some(unix(b.not_after))
    );

    // A broken file keeps B in use.
    std::fs::write(&file, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    h.fake.revoke_tokens(&tenant_id(0));
    tokio::time::advance(TTL).await;
    assert_served(&h.scrape().await);
    assert_eq!(
        h.stats(0).client_assertions[2].x5t.as_deref(),
        Some(b.x5t().as_str())
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unknown_thumbprint_is_refused_with_aadsts700027() {
    let dir = tempfile::tempdir().unwrap();
    let (pem_c, _) = certificate(KEY_C, 365);
    let (_, der_a) = certificate(KEY_A, 365);
    let path = write(dir.path(), "c.pem", format!("{pem_c}{KEY_C}"));
    let h = harness_with(
        CredentialConfig::ClientCertificate(certificate_source(path)),
        move |fake| fake.register_certificate(&tenant_id(0), &der_a),
    )
    .await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(m.errors("contoso", "token", "unauthorized"), 1.0);
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS700027"), "{error}");
    assert!(error.contains("upload this certificate"), "{error}");
    assert!(error.contains("correlation_id="), "{error}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn expired_assertion_is_refused_with_aadsts700024() {
    let dir = tempfile::tempdir().unwrap();
    let (pem_a, der_a) = certificate(KEY_A, 365);
    let path = write(dir.path(), "a.pem", format!("{pem_a}{KEY_A}"));
    let h = harness_with(
        CredentialConfig::ClientCertificate(certificate_source(path)),
        move |fake| {
            fake.register_certificate(&tenant_id(0), &der_a);
            // Entra ID's clock is an hour ahead: the 10-minute assertion is long expired.
            fake.set_clock_offset(Duration::from_secs(3600));
        },
    )
    .await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS700024"), "{error}");
    assert!(error.contains("clock"), "{error}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn wrong_audience_is_refused_with_aadsts50013() {
    let _clock = FrozenClock::new();
    let fake = office365_activations_exporter::fake_graph::FakeGraph::start(FakeGraphOptions {
        tenants: vec![office365_activations_exporter::fake_graph::FakeTenant::new(
            tenant_id(0),
            client_id(0),
            SECRET,
            office365_activations_exporter::fake_graph::ReportData::Fixed {
                refresh_date: date(),
                products: default_products(),
            },
        )],
        ..FakeGraphOptions::default()
    })
    .await
    .unwrap();
    let (pem_a, der_a) = certificate(KEY_A, 365);
    fake.register_certificate(&tenant_id(0), &der_a);
    let loaded = certificate::parse(format!("{pem_a}{KEY_A}").as_bytes(), None).unwrap();
    let http =
        office365_activations_exporter::http_client::build(Some(fake.ca_pem().as_bytes())).unwrap();
    let token_url =
        entra::token_url(&Url::parse(&fake.authority_host()).unwrap(), &tenant_id(0)).unwrap();
    let scope = format!("{}/.default", fake.graph_endpoint());
    let post = |assertion: String| {
        let (http, token_url, scope) = (http.clone(), token_url.clone(), scope.clone());
        async move {
            let form = [
                ("client_id", client_id(0)),
                ("scope", scope),
                ("grant_type", "client_credentials".to_owned()),
                ("client_assertion_type", entra::JWT_BEARER.to_owned()),
                ("client_assertion", assertion),
            ];
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            entra::request_token(&http, &token_url, &form).await
        }
    };
    let now = SystemTime::now();
    // The right audience is accepted, so the refusal below is about the audience alone.
    let good = loaded
        .assertion(
            &client_id(0),
            token_url.as_str(),
            AssertionAlgorithm::Rs256,
            false,
            now,
        )
        .unwrap();
    assert!(post(good).await.is_ok());
    let other = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    let bad = loaded
        .assertion(&client_id(0), other, AssertionAlgorithm::Rs256, false, now)
        .unwrap();
    let error = post(bad).await.unwrap_err().to_string();
    assert!(error.contains("AADSTS50013"), "{error}");
    assert!(error.contains("audience"), "{error}");
    // And an assertion for another client id.
    let other_client = loaded
        .assertion(
            "someone-else",
            token_url.as_str(),
            AssertionAlgorithm::Rs256,
            false,
            now,
        )
        .unwrap();
    let error = post(other_client).await.unwrap_err().to_string();
    assert!(error.contains("AADSTS700021"), "{error}");
    fake.shutdown().await;
}

fn trusted(
    fake: &office365_activations_exporter::fake_graph::FakeGraph,
) -> FakeFederatedCredential {
    FakeFederatedCredential {
        issuer: fake.federation_issuer(),
        subject: SUBJECT.to_owned(),
        audience: TOKEN_EXCHANGE_AUDIENCE.to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn workload_identity_end_to_end_and_token_file_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    let file = token_file.clone();
    let h = harness_with(
        CredentialConfig::WorkloadIdentity {
            token_file: token_file.clone(),
        },
        move |fake| {
            fake.add_federated_credential(&tenant_id(0), trusted(fake));
            let token = fake.mint_federated_token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, TTL);
            std::fs::write(&file, token).unwrap();
        },
    )
    .await;
    assert_served(&h.scrape().await);
    assert_eq!(h.stats(0).token_methods, ["workload_identity"]);

    // The kubelet rotates the projected token; the next token request reads the new one.
    let rotated = h
        .fake
        .mint_federated_token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, TTL);
    std::fs::write(&token_file, format!("{rotated}\n")).unwrap();
    h.fake.revoke_tokens(&tenant_id(0));
    tokio::time::advance(TTL).await;
    assert_served(&h.scrape().await);
    let seen = h.stats(0).client_assertions;
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].jti, seen[1].jti,
        "the second token request sent the new file"
    );

    // A token for another service account is refused with the federated-credential code.
    let stranger = h.fake.mint_federated_token(
        "system:serviceaccount:default:other",
        TOKEN_EXCHANGE_AUDIENCE,
        TTL,
    );
    std::fs::write(&token_file, stranger).unwrap();
    h.fake.revoke_tokens(&tenant_id(0));
    tokio::time::advance(TTL).await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS700213"), "{error}");
    assert!(error.contains("federated credential"), "{error}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn workload_identity_wrong_audience_and_expired_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let file = token_file.clone();
    let h = harness_with(
        CredentialConfig::WorkloadIdentity {
            token_file: token_file.clone(),
        },
        move |fake| {
            fake.add_federated_credential(&tenant_id(0), trusted(fake));
            let token = fake.mint_federated_token(SUBJECT, "api://SomethingElse", TTL);
            std::fs::write(&file, token).unwrap();
        },
    )
    .await;
    h.scrape().await;
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS700212"), "{error}");

    let expired =
        h.fake
            .mint_federated_token(SUBJECT, TOKEN_EXCHANGE_AUDIENCE, Duration::from_secs(60));
    std::fs::write(&token_file, expired).unwrap();
    h.fake.set_clock_offset(Duration::from_secs(3600));
    tokio::time::advance(TTL).await;
    h.scrape().await;
    let error = last_error(&h, 0);
    assert!(error.contains("AADSTS700024"), "{error}");
    h.stop().await;
}

fn identity(system: bool) -> FakeManagedIdentity {
    FakeManagedIdentity {
        tenant_id: tenant_id(0),
        client_id: "11111111-0000-0000-0000-00000000c11d".into(),
        object_id: "22222222-0000-0000-0000-0000000000b1".into(),
        resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/exporter".into(),
        system_assigned: system,
    }
}

async fn managed_identity_harness(
    id: Option<ManagedIdentityId>,
    app_service: bool,
    system: bool,
) -> Harness {
    Harness::with(Options {
        fake: FakeGraphOptions {
            managed_identities: vec![identity(system)],
            // Longer than the cache TTL, so a token outlives a refresh.
            token_lifetime: Duration::from_secs(7200),
            ..FakeGraphOptions::default()
        },
        configure: Some(Box::new(move |fake, configs: &mut Vec<TenantConfig>| {
            let endpoint = if app_service {
                ManagedIdentityEndpoint::AppService {
                    endpoint: Url::parse(&fake.app_service_endpoint()).unwrap(),
                    header: Secret::new(fake.app_service_header()),
                }
            } else {
                ManagedIdentityEndpoint::Imds(Url::parse(&fake.imds_endpoint()).unwrap())
            };
            configs[0].credential =
                CredentialConfig::ManagedIdentity(ManagedIdentityConfig { id, endpoint });
        })),
        ..Options::default()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn managed_identity_imds_system_assigned() {
    let h = managed_identity_harness(None, false, true).await;
    assert_served(&h.scrape().await);
    assert_eq!(h.stats(0).token_methods, ["managed_identity"]);
    let msi = h.fake.msi_stats();
    assert_eq!(msi.imds_requests, 1);
    assert!(
        msi.queries[0].contains("api-version=2018-02-01"),
        "{:?}",
        msi.queries
    );
    // One token per lifetime: a second refresh reuses it.
    tokio::time::advance(TTL).await;
    assert_served(&h.scrape().await);
    assert_eq!(h.fake.msi_stats().imds_requests, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn managed_identity_imds_user_assigned_by_each_kind_of_id() {
    let user = identity(false);
    for id in [
        ManagedIdentityId::ClientId(user.client_id.clone()),
        ManagedIdentityId::ObjectId(user.object_id.clone()),
        ManagedIdentityId::ResourceId(user.resource_id.clone()),
    ] {
        let h = managed_identity_harness(Some(id.clone()), false, false).await;
        assert_served(&h.scrape().await);
        assert_eq!(h.stats(0).token_methods, ["managed_identity"], "{id:?}");
        h.stop().await;
    }
    // The system-assigned identity does not exist here: IMDS says so, and so does the error.
    let h = managed_identity_harness(None, false, false).await;
    let m = h.scrape().await;
    assert_eq!(m.up("contoso"), Some(0.0));
    let error = last_error(&h, 0);
    assert!(error.contains("Identity not found"), "{error}");
    assert!(error.contains("assigned to this VM"), "{error}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn managed_identity_app_service() {
    let user = identity(false);
    let h = managed_identity_harness(
        Some(ManagedIdentityId::ClientId(user.client_id)),
        true,
        false,
    )
    .await;
    assert_served(&h.scrape().await);
    let msi = h.fake.msi_stats();
    assert_eq!((msi.app_service_requests, msi.imds_requests), (1, 0));
    assert!(msi.queries[0].contains("api-version=2019-08-01"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn imds_warming_up_is_retried_with_backoff_on_tokio_time() {
    let h = managed_identity_harness(None, false, true).await;
    let retryable = [
        Canned::body(404, "text/plain", "Not Found"),
        Canned::body(410, "text/plain", "Gone"),
        Canned::body(429, "application/json", "{}").retry_after("10"),
        Canned::body(503, "text/plain", "Service Unavailable"),
    ];
    for c in retryable {
        h.fake.push_imds_response(c);
    }
    let scrape = h.spawn_scrape(Some("600"));
    for attempt in 1..=4u32 {
        let fake = &h.fake;
        until("an IMDS request", || {
            fake.msi_stats().imds_requests == u64::from(attempt)
        })
        .await;
        settle().await;
        assert_eq!(h.stats(0).token_requests, 0, "no token before the wait");
        // The third answer's Retry-After (10 s) is longer than the third backoff (4 s).
        let wait = if attempt == 3 {
            retry_delay(attempt).max(Duration::from_secs(10))
        } else {
            retry_delay(attempt)
        };
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            h.fake.msi_stats().imds_requests,
            u64::from(attempt),
            "retried before the backoff passed"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let m = Metrics::parse(&scrape.await.unwrap());
    assert_served(&m);
    assert_eq!(h.fake.msi_stats().imds_requests, 5);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_long_imds_retry_after_ends_the_refresh_instead_of_holding_its_slot() {
    let h = managed_identity_harness(None, false, true).await;
    h.fake
        .push_imds_response(Canned::body(429, "application/json", "{}").retry_after("3600"));
    // The scrape gets its answer without the clock moving: the refresh did not sleep an hour.
    let scrape = h.spawn_scrape(Some("600"));
    let fake = &h.fake;
    until("the IMDS request", || fake.msi_stats().imds_requests == 1).await;
    // The clock is frozen: if the refresh slept on Retry-After (holding its slot), this never holds.
    until(
        "the scrape's answer without the clock moving (the refresh must not sleep an hour)",
        || scrape.is_finished(),
    )
    .await;
    let m = Metrics::parse(&scrape.await.unwrap());
    assert_eq!(m.up("contoso"), Some(0.0));
    assert_eq!(h.fake.msi_stats().imds_requests, 1);
    // The tenant honours the hour itself: nothing before it, a token after it.
    tokio::time::advance(Duration::from_secs(3599)).await;
    h.scrape().await;
    assert_eq!(
        h.fake.msi_stats().imds_requests,
        1,
        "asked again before Retry-After"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_served(&h.scrape().await);
    assert_eq!(h.fake.msi_stats().imds_requests, 2);
    h.stop().await;
}

/// The warning an operator acts on before auth breaks: a certificate within 30 days of its
/// notAfter is logged (with the days left), and one with a year left is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_expiry_is_warned_about_in_the_log() {
    let fake = start_fixed_fake(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", fake.ca_pem());
    for (days, warned) in [(10, true), (365, false)] {
        let (cert_pem, cert_der) = certificate(KEY_A, days);
        fake.register_certificate(&tenant_id(0), &cert_der);
        let pem = write(
            dir.path(),
            &format!("exporter-{days}.pem"),
            format!("{cert_pem}{KEY_A}"),
        );
        let output = tokio::process::Command::new(binary())
            .args(["check", "--auth.method", "client_certificate"])
            .arg("--auth.client-certificate-path")
            .arg(&pem)
            .args([
                "--graph.endpoint",
                &fake.graph_endpoint(),
                "--auth.authority-host",
                &fake.authority_host(),
            ])
            .arg("--tls.ca-file")
            .arg(&ca)
            .args([
                "--auth.tenant-id",
                &tenant_id(0),
                "--auth.client-id",
                &client_id(0),
                "--tenant.name",
                "contoso",
            ])
            .env_clear()
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{days} days: {err}");
        let line = err.lines().find(|l| l.contains("expires within 30 days"));
        assert_eq!(line.is_some(), warned, "{days} days left:\n{err}");
        if let Some(line) = line {
            assert!(
                line.contains("level=warn") && line.contains("tenant=contoso"),
                "{line}"
            );
            assert!(
                line.contains("days_left=9") || line.contains("days_left=10"),
                "{line}"
            );
            assert!(!line.contains("PRIVATE KEY"));
        }
    }
}
