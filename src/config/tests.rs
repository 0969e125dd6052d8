//! The configuration's tests: flags, environment, file and clouds together.

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
    let key = include_str!("../../tests/fixtures/rsa-a.pem");
    let key_pair = rcgen::KeyPair::from_pem_and_sign_algo(key, &rcgen::PKCS_RSA_SHA256).unwrap();
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
    std::fs::write(&key_only, include_str!("../../tests/fixtures/rsa-a.pem")).unwrap();
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
