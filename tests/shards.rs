//! `--shard.index` / `--shard.count` through the binary (issue 10): processes on the same
//! configuration file answer /sd with disjoint tenant sets whose union is the whole list; bad
//! shards exit 2 with one line; the environment variables; `--web.sd-address`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use office365_activations_exporter::fake_graph::FakeGraph;
use office365_activations_exporter::shard::Shard;
use tokio::process::{Child, Command};

const TENANTS: usize = 30;

/// The tenant names of the configuration file: a few that need quoting or percent-encoding
/// among plain ones.
fn names() -> Vec<String> {
    (0..TENANTS)
        .map(|i| match i {
            0 => "A&B Corp/€".to_owned(),
            1 => "Contoso Ltd.".to_owned(),
            i => format!("tenant-{i:02}"),
        })
        .collect()
}

/// A configuration file of [`TENANTS`] tenants in `dir`: of the global cloud (then nothing may
/// probe them: that would reach Microsoft), or of `fake`, whose CA it writes to `dir/ca.pem`.
fn write_config(dir: &Path, fake: Option<&FakeGraph>) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut yaml = String::new();
    if let Some(fake) = fake {
        std::fs::write(dir.join("ca.pem"), fake.ca_pem()).unwrap();
        yaml.push_str(&format!(
            "graph_endpoint: {}\nauthority_host: {}\n",
            fake.graph_endpoint(),
            fake.authority_host()
        ));
    }
    yaml.push_str("tenants:\n");
    for (i, name) in names().iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {}\n    tenant_id: {}\n    client_id: {}\n    client_secret_file: {}\n",
            serde_json::to_string(name).unwrap(),
            tenant_id(i),
            client_id(i),
            secret.display()
        ));
    }
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    config
}

/// Starts the binary on `config` with `args` (listening on a free loopback port unless they
/// say where) and exactly the shard variables of `env` (none of the test's own); returns it
/// (killed when dropped) and its address.
async fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(binary());
    if !args.contains(&"--web.listen-address") {
        command.args(["--web.listen-address", "127.0.0.1:0"]);
    }
    command
        .arg("--config.file")
        .arg(config)
        .args(args)
        .env_remove("OFFICE365_EXPORTER_SHARD_INDEX")
        .env_remove("OFFICE365_EXPORTER_SHARD_COUNT")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the exporter binary starts");
    let address = listening_address(&mut child).await;
    (child, address)
}

/// GET /sd of `address`: the target groups, each `(name, labels)`, checking on the way that the
/// target is the tenant label.
async fn sd(address: &str) -> Vec<(String, serde_json::Value)> {
    let response = reqwest::get(format!("http://{address}/sd")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    body.as_array()
        .expect("an array of target groups")
        .iter()
        .map(|group| {
            let targets = group["targets"].as_array().unwrap();
            assert_eq!(targets.len(), 1, "{group}");
            let name = targets[0].as_str().unwrap().to_owned();
            assert_eq!(group["labels"]["__meta_office365_tenant"], name.as_str());
            (name, group["labels"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_answer_sd_with_disjoint_sets_covering_every_tenant() {
    let fake = start_fixed_fake(TENANTS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(&fake));
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let mut processes = Vec::new();
    for index in 0..3 {
        let (index_text, sd_address) = (
            index.to_string(),
            format!("exporter-{index}.exporter:10036"),
        );
        let args = [
            "--shard.count",
            "3",
            "--shard.index",
            &index_text,
            "--web.sd-address",
            &sd_address,
            "--tls.ca-file",
            ca,
        ];
        processes.push((index, start(&config, &args, &[]).await, sd_address));
    }
    let mut union = BTreeSet::new();
    let mut sizes = Vec::new();
    for (index, (_child, address), sd_address) in &processes {
        let groups = sd(address).await;
        let owned: BTreeSet<String> = groups.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(owned.len(), groups.len(), "no tenant twice");
        for (name, labels) in &groups {
            assert_eq!(labels["__meta_office365_exporter"], sd_address.as_str());
            assert_eq!(labels["__meta_office365_shard"], index.to_string().as_str());
            assert_eq!(
                labels["__meta_office365_cloud"], "custom",
                "the fake's endpoint"
            );
            assert!(union.insert(name.clone()), "{name} is in two shards");
        }
        // The library's owner for each name agrees with what the process serves.
        let shard = Shard::new(*index, 3).unwrap();
        let expected: BTreeSet<String> = names().into_iter().filter(|n| shard.owns(n)).collect();
        assert_eq!(owned, expected, "shard {index}");
        // Another shard's tenant is unknown here; an owned one is served, refreshed from the
        // fake by this process alone.
        for (i, name) in names().iter().enumerate() {
            let response = reqwest::Client::new()
                .get(format!("http://{address}/probe"))
                .query(&[("target", name)])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if owned.contains(name) {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(Metrics::parse(&body).up(name), Some(1.0), "{body}");
                let stats = fake.stats(&tenant_id(i));
                assert_eq!(
                    (stats.token_requests, stats.report_requests),
                    (1, 1),
                    "{name}"
                );
            } else {
                assert_eq!(status, 400, "{name}: {body}");
                assert!(
                    body.contains(&format!("(this is shard {index} of 3)")),
                    "{body}"
                );
            }
        }
        sizes.push(owned.len());
    }
    assert_eq!(
        union,
        names().into_iter().collect::<BTreeSet<_>>(),
        "the union is every tenant"
    );
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    // Each tenant was fetched by its own shard only, once.
    for i in 0..TENANTS {
        assert_eq!(
            fake.stats(&tenant_id(i)).report_requests,
            1,
            "{}",
            names()[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_environment_variables_work_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let by_flags = {
        let (_child, address) =
            start(&config, &["--shard.count", "3", "--shard.index", "2"], &[]).await;
        sd(&address).await
    };
    let (_child, address) = start(
        &config,
        &[],
        &[
            ("OFFICE365_EXPORTER_SHARD_INDEX", "2"),
            ("OFFICE365_EXPORTER_SHARD_COUNT", "3"),
        ],
    )
    .await;
    let by_env = sd(&address).await;
    // The same groups but for the exporter address (each process advertises its own port).
    let without_address =
        |groups: &[(String, serde_json::Value)]| -> Vec<(String, serde_json::Value)> {
            groups
                .iter()
                .map(|(name, labels)| {
                    let mut labels = labels.clone();
                    labels
                        .as_object_mut()
                        .unwrap()
                        .remove("__meta_office365_exporter");
                    (name.clone(), labels)
                })
                .collect()
        };
    assert_eq!(without_address(&by_env), without_address(&by_flags));
    assert_eq!(by_env[0].1["__meta_office365_shard"], "2");
    let names_of = |groups: &[(String, serde_json::Value)]| -> BTreeSet<String> {
        groups.iter().map(|(n, _)| n.clone()).collect()
    };
    // A flag overrides its variable.
    let (_child, address) = start(
        &config,
        &["--shard.index", "0"],
        &[
            ("OFFICE365_EXPORTER_SHARD_INDEX", "2"),
            ("OFFICE365_EXPORTER_SHARD_COUNT", "3"),
        ],
    )
    .await;
    let by_flag_over_env = sd(&address).await;
    let shard0 = Shard::new(0, 3).unwrap();
    assert_eq!(
        names_of(&by_flag_over_env),
        names().into_iter().filter(|n| shard0.owns(n)).collect()
    );
    // One shard (the default) owns everything.
    let (_child, address) = start(&config, &[], &[]).await;
    assert_eq!(names_of(&sd(&address).await).len(), TENANTS);
}

#[tokio::test]
async fn a_shard_index_not_below_the_count_or_a_count_of_zero_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let config = config.to_str().unwrap();
    let flags = |index: &'static str, count: &'static str| {
        (
            vec!["--shard.index", index, "--shard.count", count],
            Vec::<(&str, &str)>::new(),
        )
    };
    let env = |index: &'static str, count: &'static str| {
        (
            Vec::<&str>::new(),
            vec![
                ("OFFICE365_EXPORTER_SHARD_INDEX", index),
                ("OFFICE365_EXPORTER_SHARD_COUNT", count),
            ],
        )
    };
    for ((args, vars), says) in [
        (
            flags("3", "3"),
            "--shard.index 3 must be below --shard.count 3",
        ),
        (
            flags("7", "2"),
            "--shard.index 7 must be below --shard.count 2",
        ),
        (flags("0", "0"), "--shard.count must be at least 1"),
        (
            env("3", "3"),
            "--shard.index 3 must be below --shard.count 3",
        ),
        (env("0", "0"), "--shard.count must be at least 1"),
        (
            flags("1", "1"),
            "--shard.index 1 must be below --shard.count 1",
        ),
    ] {
        let mut all = vec!["--config.file", config];
        all.extend(args.iter().copied());
        let output = run_binary(&all, &vars).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(says), "{args:?} {vars:?}: {stderr}");
    }
    // Not a number at all: clap's usage error, also exit 2.
    let output = run_binary(&["--config.file", config, "--shard.index", "-1"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn a_bad_sd_address_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    for bad in ["exporter", "exporter:http", ":10036", "exporter:99999"] {
        let output = run_binary(
            &[
                "--config.file",
                config.to_str().unwrap(),
                "--web.sd-address",
                bad,
            ],
            &[],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(stderr.contains("--web.sd-address"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_advertises_the_listen_address_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_child, address) = start(&config, &["--web.listen-address", &listen], &[]).await;
    assert_eq!(address, listen);
    let groups = sd(&address).await;
    assert_eq!(groups.len(), TENANTS);
    for (_, labels) in &groups {
        assert_eq!(labels["__meta_office365_exporter"], listen.as_str());
        assert_eq!(labels["__meta_office365_shard"], "0");
        assert_eq!(labels["__meta_office365_cloud"], "global");
    }
    // A wildcard listen address advertises the machine's hostname.
    let port = free_port();
    let (_child, _) = start(&config, &["--web.listen-address", &format!(":{port}")], &[]).await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let groups = sd(&format!("127.0.0.1:{port}")).await;
    assert_eq!(
        groups[0].1["__meta_office365_exporter"],
        format!("{}:{port}", hostname.trim()).as_str()
    );
}

/// The default `--web.sd-address` is the listen address as configured, not as bound: with
/// port 0 it advertises port 0 (src/config/values.rs `advertised`; src/app.rs keeps it after binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_advertises_the_bound_port_when_listening_on_port_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let (_child, address) = start(&config, &[], &[]).await;
    let groups = sd(&address).await;
    assert_eq!(
        groups[0].1["__meta_office365_exporter"],
        address.as_str(),
        "a scraper cannot reach port 0"
    );
}
