//! The binary as a user runs it: bad configuration, the `check` subcommand against the fake Graph,
//! graceful shutdown, and logs that name the problem but never a secret.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use office365_activations_exporter::fake_graph::FakeGraph;
use tokio::process::Command;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    let secret = secret.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[], "--auth.tenant-id"),
        (&["--auth.tenant-id", "t"], &[], "--auth.client-id"),
        (
            &["--auth.tenant-id", "t", "--auth.client-id", "c"],
            &[],
            "AZURE_CLIENT_SECRET",
        ),
        (
            &[
                "--auth.tenant-id",
                "t",
                "--auth.client-id",
                "c",
                "--auth.client-secret-file",
                "/nonexistent/secret",
            ],
            &[],
            "/nonexistent/secret",
        ),
        (
            &[
                "--auth.tenant-id",
                "t",
                "--auth.client-id",
                "c",
                "--auth.client-secret-file",
                secret,
                "--cache.ttl",
                "30s",
            ],
            &[],
            "--cache.ttl",
        ),
        (
            &[
                "--auth.tenant-id",
                "t",
                "--auth.client-id",
                "c",
                "--auth.client-secret-file",
                secret,
                "--graph.endpoint",
                "not a url",
            ],
            &[],
            "--graph.endpoint",
        ),
        (
            &["--auth.client-id", "c"],
            &[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_SECRET", "s"),
                ("AZURE_AUTHORITY_HOST", "login"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
        (
            &["--config.file", "/nonexistent/config.yml"],
            &[],
            "/nonexistent/config.yml",
        ),
    ];
    for (args, env, expect) in cases {
        let output = run_binary(args, env).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    // clap's own errors (unknown flag, bad duration) also exit 2 without a panic.
    let output = run_binary(&["--cache.ttl", "soon"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--cache.ttl"));
}

#[tokio::test]
async fn help_lists_every_flag() {
    let output = run_binary(&["--help"], &[]).await;
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--web.listen-address",
        "--web.telemetry-path",
        "--graph.endpoint",
        "--graph.api-version",
        "--auth.authority-host",
        "--auth.tenant-id",
        "--auth.client-id",
        "--auth.client-secret-file",
        "--tls.ca-file",
        "--cache.ttl",
        "--config.file",
        "--log.level",
        "--log.format",
        "--demo",
        "--tenant.name",
        "AZURE_CLIENT_SECRET",
        "check",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains(":10036"));
}

struct FakeForBinary {
    fake: FakeGraph,
    _dir: tempfile::TempDir,
    ca: String,
    secret_file: String,
}

async fn fake_for_binary() -> FakeForBinary {
    let fake = start_fixed_fake(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    FakeForBinary {
        ca: ca.to_str().unwrap().to_owned(),
        secret_file: secret_file.to_str().unwrap().to_owned(),
        fake,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_metrics_and_succeeds() {
    let f = fake_for_binary().await;
    let (graph, authority) = (f.fake.graph_endpoint(), f.fake.authority_host());
    let tenant = tenant_id(0);
    let client = client_id(0);
    // Flags after the subcommand, the tenant and client ids from the environment.
    let output = run_binary(
        &[
            "check",
            "--graph.endpoint",
            &graph,
            "--auth.authority-host",
            &authority,
            "--tls.ca-file",
            &f.ca,
            "--auth.client-secret-file",
            &f.secret_file,
            "--tenant.name",
            "contoso",
        ],
        &[("AZURE_TENANT_ID", &tenant), ("AZURE_CLIENT_ID", &client)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    let m = Metrics::parse(&stdout);
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR ENTERPRISE"),
        Some(1710.0)
    );
    assert_eq!(m.up("contoso"), Some(1.0));
    assert!(!stderr(&output).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_aadsts_code_and_what_to_do_without_leaking_the_secret() {
    let f = fake_for_binary().await;
    f.fake.expire_client_secret(&tenant_id(0));
    let (graph, authority) = (f.fake.graph_endpoint(), f.fake.authority_host());
    let tenant = tenant_id(0);
    let client = client_id(0);
    let output = run_binary(
        &[
            "--graph.endpoint",
            &graph,
            "--auth.authority-host",
            &authority,
            "--tls.ca-file",
            &f.ca,
            "--auth.tenant-id",
            &tenant,
            "--auth.client-id",
            &client,
            "check",
        ],
        &[("AZURE_CLIENT_SECRET", SECRET)],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("AADSTS7000222"), "{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("correlation_id="), "{err}");
    assert!(
        !err.contains("correlation_id=-"),
        "the fake's correlation id is logged: {err}"
    );
    assert!(
        err.contains("level=warn")
            && err.contains("stage=token")
            && err.contains("reason=unauthorized"),
        "a logfmt line: {err}"
    );
    assert!(!err.contains(SECRET), "the secret leaked: {err}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_the_ca_fails_on_tls_with_a_clear_reason() {
    let f = fake_for_binary().await;
    let (graph, authority) = (f.fake.graph_endpoint(), f.fake.authority_host());
    let tenant = tenant_id(0);
    let client = client_id(0);
    let output = run_binary(
        &[
            "check",
            "--graph.endpoint",
            &graph,
            "--auth.authority-host",
            &authority,
            "--auth.tenant-id",
            &tenant,
            "--auth.client-id",
            &client,
            "--log.format",
            "json",
        ],
        &[("AZURE_CLIENT_SECRET", SECRET)],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let json_line = err
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"stage\""))
        .expect("a JSON log line with the stage");
    let parsed: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(parsed["stage"], "token");
    assert_eq!(parsed["reason"], "network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_and_stops_gracefully_on_sigterm() {
    let (child, address) = start_demo_exporter(&[]).await;
    let body = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = Metrics::parse(&body);
    assert_eq!(m.up("contoso"), Some(1.0), "{body}");
    assert_eq!(m.up("fabrikam"), Some(1.0), "{body}");
    assert_eq!(
        m.series("office365_activations_activated_users").len(),
        8,
        "5 + 3 demo products"
    );
    stops_cleanly_on(child, "TERM").await;
}

/// Sends `signal` and expects a clean exit (not death by the signal) within 30 s.
async fn stops_cleanly_on(mut child: tokio::process::Child, signal: &str) {
    send_signal(child.id().unwrap(), signal);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("exits after SIG{signal}"))
        .unwrap();
    assert!(
        status.success(),
        "a clean exit, not death by SIG{signal}: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_gracefully_too() {
    let (child, address) = start_demo_exporter(&[]).await;
    assert_eq!(
        reqwest::get(format!("http://{address}/-/healthy"))
            .await
            .unwrap()
            .status(),
        200
    );
    stops_cleanly_on(child, "INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_keeps_other_tenants() {
    reload_keeps_other_tenants(Reload::Sighup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_reloads_the_config_file_and_keeps_other_tenants() {
    reload_keeps_other_tenants(Reload::Post).await;
}

/// How a test asks the exporter to re-read its configuration file.
#[derive(Clone, Copy, PartialEq)]
enum Reload {
    Sighup,
    /// POST /-/reload, with --web.enable-lifecycle.
    Post,
}

async fn reload_keeps_other_tenants(how: Reload) {
    let fake = start_fixed_fake(2).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = dir.path().join("config.yml");
    let tenant = |name: &str, i: usize| {
        format!(
            "  - name: {name}\n    tenant_id: {}\n    client_id: {}\n    client_secret_file: {}\n",
            tenant_id(i),
            client_id(i),
            secret.display()
        )
    };
    let header = format!(
        "graph_endpoint: {}\nauthority_host: {}\ntenants:\n",
        fake.graph_endpoint(),
        fake.authority_host()
    );
    std::fs::write(&config, format!("{header}{}", tenant("contoso", 0))).unwrap();
    let mut child = Command::new(binary())
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--config.file",
            config.to_str().unwrap(),
            "--tls.ca-file",
            ca.to_str().unwrap(),
        ])
        .args((how == Reload::Post).then_some("--web.enable-lifecycle"))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address = listening_address(&mut child).await;
    let scrape = || async {
        Metrics::parse(
            &reqwest::get(format!("http://{address}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
    };
    assert_eq!(scrape().await.up("contoso"), Some(1.0));

    // A broken file is refused and changes nothing.
    std::fs::write(&config, "tenants: [").unwrap();
    let reload = || async {
        match how {
            Reload::Sighup => {
                send_signal(child.id().unwrap(), "HUP");
                None
            }
            Reload::Post => {
                let answer = reqwest::Client::new()
                    .post(format!("http://{address}/-/reload"))
                    .send()
                    .await
                    .unwrap();
                Some((answer.status().as_u16(), answer.text().await.unwrap()))
            }
        }
    };
    if let Some((status, text)) = reload().await {
        assert_eq!(status, 500, "{text}");
        assert!(text.contains("configuration unchanged"), "{text}");
        assert_eq!(scrape().await.up("contoso"), Some(1.0));
    }
    std::fs::write(
        &config,
        format!("{header}{}{}", tenant("contoso", 0), tenant("fabrikam", 1)),
    )
    .unwrap();
    if let Some((status, text)) = reload().await {
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("fabrikam"),
            "the answer says what changed: {text}"
        );
    }
    let mut m = scrape().await;
    for _ in 0..200 {
        if m.up("fabrikam").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = scrape().await;
    }
    assert_eq!(m.up("fabrikam"), Some(1.0), "{}", m.text);
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(
        fake.stats(&tenant_id(0)).report_requests,
        1,
        "contoso kept its cache across reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_never_show_the_secret() {
    let f = fake_for_binary().await;
    let (graph, authority) = (f.fake.graph_endpoint(), f.fake.authority_host());
    let (tenant, client) = (tenant_id(0), client_id(0));
    for expired in [false, true] {
        if expired {
            f.fake.expire_client_secret(&tenant_id(0));
        }
        let output = run_binary(
            &[
                "check",
                "--log.level",
                "debug",
                "--graph.endpoint",
                &graph,
                "--auth.authority-host",
                &authority,
                "--tls.ca-file",
                &f.ca,
                "--auth.tenant-id",
                &tenant,
                "--auth.client-id",
                &client,
            ],
            &[("AZURE_CLIENT_SECRET", SECRET)],
        )
        .await;
        let err = stderr(&output);
        assert!(
            err.contains("level=debug"),
            "debug lines were logged: {err}"
        );
        assert!(
            !err.contains(SECRET),
            "expired={expired}: the secret leaked at debug level: {err}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).contains(SECRET));
    }
}
