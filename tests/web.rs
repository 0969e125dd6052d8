//! `--web.config.file`: TLS, client certificates, basic auth and headers on the exporter's own
//! server, checked with real clients (reqwest, curl) and a real Prometheus scraping over TLS
//! with basic auth; certificate rotation; the healthcheck subcommand.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use tokio::process::{Child, Command};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me";

struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        cert,
        key,
    }
}

/// A leaf certificate and key signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, client: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".to_string().try_into().unwrap()),
    ];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(web_config: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["--web.config.file", web_config.to_str().unwrap()];
    args.extend_from_slice(extra);
    start_demo_exporter(&args).await
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

async fn healthcheck(args: &[&str]) -> Output {
    let command = Command::new(binary())
        .arg("healthcheck")
        .args(args)
        .output();
    tokio::time::timeout(Duration::from_secs(30), command)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_basic_auth_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, false);
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let key_file = write(dir.path(), "tls.key", &key);
    let ca_file = write(dir.path(), "ca.crt", &ca.pem);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  {USER}: {hash}\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let (_exporter, address) = start(&web, &[]).await;
    let base = format!("https://{address}");
    let http = client(&ca.pem);

    let anonymous = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    assert_eq!(
        anonymous.headers()["strict-transport-security"],
        "max-age=31536000",
        "headers on every answer"
    );
    let wrong = http
        .get(format!("{base}/metrics"))
        .basic_auth(USER, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = http
        .get(format!("{base}/metrics"))
        .basic_auth("mallory", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        http.get(format!("{base}/-/healthy"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "health needs auth unless opted out"
    );
    let good = http
        .get(format!("{base}/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let m = Metrics::parse(&good.text().await.unwrap());
    assert_eq!(m.up("contoso"), Some(1.0));

    // With the cache warm (the scrape after the first load notes when the next refresh is
    // due), scrapes take the cached path: still behind auth, still with the configured headers.
    for _ in 0..2 {
        let cached = http
            .get(format!("{base}/metrics"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), 200);
        assert_eq!(
            cached.headers()["strict-transport-security"],
            "max-age=31536000"
        );
    }
    let anonymous = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "a warm cache is no way around auth"
    );

    // Plain HTTP to the TLS port gets nothing useful.
    let plain = reqwest::get(format!("http://{address}/metrics")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));

    // curl, a different TLS stack, with the CA and credentials.
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca_file.to_str().unwrap(),
            "-u",
            &format!("{USER}:{PASSWORD}"),
            &format!("{base}/metrics"),
        ])
        .output()
        .expect("curl is installed");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );

    // The healthcheck subcommand speaks TLS and treats an auth-protected 401 as alive.
    let web_arg = web.to_str().unwrap();
    let ok = healthcheck(&[
        "--web.listen-address",
        &address,
        "--web.config.file",
        web_arg,
    ])
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let down = healthcheck(&[
        "--web.listen-address",
        "127.0.0.1:1",
        "--web.config.file",
        web_arg,
    ])
    .await;
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("127.0.0.1:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_without_tls_or_auth_are_on_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    );
    let (_exporter, address) = start(&web, &[]).await;
    // The first scrape loads the reports; the later ones are answered from the cache.
    for scrape in 0..3 {
        let answer = reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.headers()["x-content-type-options"],
            "nosniff",
            "scrape {scrape}"
        );
        assert_eq!(
            answer.headers()["vary"],
            "Accept-Encoding",
            "scrape {scrape}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_can_be_exempt_from_auth() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  {USER}: {hash}\n"),
    );
    let (_exporter, address) = start(&web, &["--web.health-without-auth"]).await;
    assert_eq!(
        reqwest::get(format!("http://{address}/-/healthy"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        reqwest::get(format!("http://{address}/"))
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server CA");
    let client_ca = ca("client CA");
    let (cert, key) = leaf(&server_ca, false);
    let (client_cert, client_key) = leaf(&client_ca, true);
    let rogue_ca = ca("rogue CA");
    let (rogue_cert, rogue_key) = leaf(&rogue_ca, true);
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            write(dir.path(), "tls.crt", &cert).display(),
            write(dir.path(), "tls.key", &key).display(),
            write(dir.path(), "clients.crt", &client_ca.pem).display()
        ),
    );
    let (_exporter, address) = start(&web, &[]).await;
    let url = format!("https://{address}/-/healthy");
    let with_identity = |cert: &str, key: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    assert!(
        client(&server_ca.pem).get(&url).send().await.is_err(),
        "no client certificate: refused"
    );
    assert!(
        with_identity(&rogue_cert, &rogue_key)
            .get(&url)
            .send()
            .await
            .is_err(),
        "unknown issuer: refused"
    );
    let ok = with_identity(&client_cert, &client_key)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = ca("old CA");
    let new_ca = ca("new CA");
    let (cert, key) = leaf(&old_ca, false);
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let key_file = write(dir.path(), "tls.key", &key);
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let (_exporter, address) = start(&web, &[]).await;
    let url = format!("https://{address}/-/healthy");
    assert_eq!(
        client(&old_ca.pem).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(client(&new_ca.pem).get(&url).send().await.is_err());

    let (cert, key) = leaf(&new_ca, false);
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    // Make the change visible to a coarse-grained clock as well.
    let later = SystemTime::now() + Duration::from_secs(5);
    for path in [&cert_file, &key_file] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    assert_eq!(
        client(&new_ca.pem).get(&url).send().await.unwrap().status(),
        200,
        "new connections get the new certificate"
    );
    assert!(client(&old_ca.pem).get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_web_config_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
    );
    let output = Command::new(binary())
        .args(["--demo", "--web.config.file", web.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 2") && err.contains("/nonexistent.crt"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, false);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
            write(dir.path(), "tls.crt", &cert).display(),
            write(dir.path(), "tls.key", &key).display()
        ),
    );
    let ca_file = write(dir.path(), "ca.crt", &ca.pem);
    let password_file = write(dir.path(), "password", PASSWORD);
    let (_exporter, address) = start(&web, &[]).await;
    let prometheus = start_prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: office365-activations\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: {USER}\n      password_file: {}\n    static_configs:\n      - targets: ['{address}']\n",
            ca_file.display(),
            password_file.display()
        ),
    );
    prometheus
        .query_until("count(office365_activations_activated_users)", |r| {
            r[0]["value"][1] == "8"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_and_cipher_suites_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, false);
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let key_file = write(dir.path(), "tls.key", &key);
    let ca_file = write(dir.path(), "ca.crt", &ca.pem);
    let curl = |address: &str, extra: &[&str]| {
        let output = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                ca_file.to_str().unwrap(),
            ])
            .args(extra)
            .arg(format!("https://{address}/-/healthy"))
            .output()
            .expect("curl is installed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let tls13 = write(
        dir.path(),
        "tls13.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS13\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let (_exporter, address) = start(&tls13, &[]).await;
    assert_eq!(curl(&address, &[]), "200");
    assert_ne!(
        curl(&address, &["--tls-max", "1.2"]),
        "200",
        "a TLS 1.2 client is refused"
    );

    // The certificate is ECDSA (rcgen's default): only the ECDSA suite listed is offered in TLS 1.2.
    let suites = write(
        dir.path(),
        "suites.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let (_exporter2, address) = start(&suites, &[]).await;
    assert_eq!(
        curl(&address, &["--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]),
        "200"
    );
    assert_ne!(
        curl(&address, &["--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]),
        "200",
        "an unlisted suite is refused"
    );
}
