//! Scale-out end to end (issue 10 §5): three exporter shards (the binary) over the 300 tenants of
//! one fake Graph, and two real Prometheus servers (Debian's package) that discover the tenants
//! through each shard's /sd, scrape them one by one on /probe with the README's relabelling, and
//! split them between themselves with `hashmod` on `__param_target`.
//!
//! Shown: every tenant's series is in exactly one Prometheus, each tenant's reports are fetched
//! by exactly one exporter, once within the TTL; killing one shard takes down its tenants' targets
//! and leaves every other target up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use office365_activations_exporter::fake_graph::FakeReport;
use office365_activations_exporter::shard::owner;
use tokio::process::{Child, Command};

const TENANTS: usize = 300;
const SHARDS: u32 = 3;
const JOB: &str = "office365-activations";

/// Tenant `i`'s name: the first needs percent-encoding (`+` for its space, as Prometheus
/// encodes `__param_target`).
fn name(i: usize) -> String {
    match i {
        0 => "A&B Corp/€".to_owned(),
        i => format!("tenant-{i:03}"),
    }
}

/// The configuration file every shard reads: all tenants of `fake`.
fn write_config(dir: &Path, graph_endpoint: &str, authority_host: &str) -> std::path::PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut yaml =
        format!("graph_endpoint: {graph_endpoint}\nauthority_host: {authority_host}\ntenants:\n");
    for i in 0..TENANTS {
        yaml.push_str(&format!(
            "  - name: {}\n    tenant_id: {}\n    client_id: {}\n    client_secret_file: {}\n",
            serde_json::to_string(&name(i)).unwrap(),
            tenant_id(i),
            client_id(i),
            secret.display()
        ));
    }
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    config
}

/// Starts shard `index` on `config`, listening (and so advertising on /sd) on `port`, its log
/// in `dir/shard-<index>.log`; returns once it answers /-/healthy.
async fn start_shard(dir: &Path, config: &Path, ca: &Path, index: u32, port: u16) -> Child {
    let log = std::fs::File::create(dir.join(format!("shard-{index}.log"))).unwrap();
    let mut child = Command::new(binary())
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .arg("--config.file")
        .arg(config)
        .arg("--tls.ca-file")
        .arg(ca)
        .args(["--shard.count", &SHARDS.to_string()])
        .args(["--shard.index", &index.to_string()])
        .args(["--cache.ttl", "1h"])
        .env_remove("OFFICE365_EXPORTER_SHARD_INDEX")
        .env_remove("OFFICE365_EXPORTER_SHARD_COUNT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/-/healthy")).await {
            assert_eq!(answer.status(), 200);
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shard {index} exited ({status}): {}", shard_log(dir, index));
        }
        assert!(Instant::now() < deadline, "shard {index} never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log of shard `index`.
fn shard_log(dir: &Path, index: u32) -> String {
    std::fs::read_to_string(dir.join(format!("shard-{index}.log"))).unwrap_or_default()
}

/// The prometheus.yml of Prometheus server `server` of 2: the README's scrape config with one
/// http_sd url per shard, the shard as a label, and the hashmod split.
fn prometheus_config(server: u32, ports: &[u16]) -> String {
    let urls: String = ports
        .iter()
        .map(|port| format!("      - url: http://127.0.0.1:{port}/sd\n"))
        .collect();
    format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: {JOB}
    metrics_path: /probe
    http_sd_configs:
{urls}    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - source_labels: [__meta_office365_exporter]
        target_label: __address__
      - source_labels: [__meta_office365_shard]
        target_label: shard
      - source_labels: [__param_target]
        modulus: 2
        target_label: __tmp_hash
        action: hashmod
      - source_labels: [__tmp_hash]
        regex: '{server}'
        action: keep
"
    )
}

/// The active targets of `prometheus` now: instance to shard label (empty before discovery).
async fn active_targets(prometheus: &Prometheus) -> BTreeMap<String, String> {
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/targets", prometheus.base))
        .query(&[("state", "active")])
        .send()
        .await;
    // Not listening yet, or not answering yet: nothing discovered.
    let Ok(answer) = answer else {
        return BTreeMap::new();
    };
    let body: serde_json::Value =
        serde_json::from_str(&answer.text().await.unwrap_or_default()).unwrap_or_default();
    body["data"]["activeTargets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|t| {
                    (
                        t["labels"]["instance"].as_str().unwrap_or("").to_owned(),
                        t["labels"]["shard"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The values of label `label` in a query result.
fn label_values(result: &serde_json::Value, label: &str) -> Vec<String> {
    result
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"][label].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prometheus_servers_split_three_shards_of_300_tenants() {
    let started = Instant::now();
    let fake = start_fixed_fake(TENANTS).await;
    let dir = tempfile::tempdir().unwrap();
    let _logs = ShardLogsOnFailure(dir.path().to_owned());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let config = write_config(dir.path(), &fake.graph_endpoint(), &fake.authority_host());
    let ports = free_ports(SHARDS as usize);
    let mut shards = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        shards.push(start_shard(dir.path(), &config, &ca, index as u32, *port).await);
    }
    let all: BTreeSet<String> = (0..TENANTS).map(name).collect();
    let shard_of = |tenant: &str| owner(tenant, SHARDS).to_string();

    let servers: Vec<Prometheus> = (0..2)
        .map(|s| {
            let server_dir = dir.path().join(format!("prometheus-{s}"));
            std::fs::create_dir(&server_dir).unwrap();
            start_prometheus(&server_dir, &prometheus_config(s, &ports))
        })
        .collect();

    // Discovery and the split: each server keeps its half of the targets, together all of them,
    // each once, labelled with its shard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let targets = [
            active_targets(&servers[0]).await,
            active_targets(&servers[1]).await,
        ];
        if targets[0].len() + targets[1].len() == TENANTS {
            break targets;
        }
        assert!(
            Instant::now() < deadline,
            "discovered {} + {} targets; logs:\n{}\n{}",
            targets[0].len(),
            targets[1].len(),
            std::fs::read_to_string(&servers[0].log).unwrap_or_default(),
            std::fs::read_to_string(&servers[1].log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let halves: Vec<BTreeSet<String>> = targets
        .iter()
        .map(|t| t.keys().cloned().collect())
        .collect();
    assert!(halves[0].is_disjoint(&halves[1]));
    assert_eq!(&halves[0] | &halves[1], all);
    assert!(!halves[0].is_empty() && !halves[1].is_empty());
    for (instance, shard) in targets.iter().flatten() {
        assert_eq!(shard, &shard_of(instance), "{instance}");
    }

    // Every tenant's series in exactly one Prometheus: the one scraping its target.
    let query =
        "office365_activations_assigned_users{product_type=\"MICROSOFT 365 APPS FOR ENTERPRISE\"}";
    let mut seen = Vec::new();
    for (server, half) in servers.iter().zip(&halves) {
        let result = server
            .query_until(query, |r| {
                r.as_array().is_some_and(|a| a.len() == half.len())
                    && label_values(r, "tenant")
                        .into_iter()
                        .collect::<BTreeSet<_>>()
                        == *half
            })
            .await;
        for sample in result.as_array().unwrap() {
            let metric = &sample["metric"];
            let tenant = metric["tenant"].as_str().unwrap();
            assert_eq!(metric["instance"], tenant, "{metric}");
            assert_eq!(metric["shard"], shard_of(tenant).as_str(), "{metric}");
            assert_eq!(metric["job"], JOB);
            assert!(metric.get("exported_tenant").is_none(), "{metric}");
            assert_eq!(sample["value"][1], "2679", "{metric}");
        }
        seen.push(
            label_values(&result, "tenant")
                .into_iter()
                .collect::<BTreeSet<_>>(),
        );
        // Both reports of each of its tenants up.
        server
            .query_until("count(office365_activations_up == 1)", |r| {
                r[0]["value"][1] == (2 * half.len()).to_string().as_str()
            })
            .await;
    }
    assert!(seen[0].is_disjoint(&seen[1]), "a tenant in both servers");
    assert_eq!(&seen[0] | &seen[1], all, "every tenant in one of them");

    // Each tenant's reports were fetched by one exporter, once (TTL 1h), with one token.
    let fetched_once = |when: &str| {
        for i in 0..TENANTS {
            let stats = fake.stats(&tenant_id(i));
            for report in [FakeReport::UserCounts, FakeReport::ActivationCounts] {
                assert_eq!(
                    stats.report(report).report_requests,
                    1,
                    "{} {report:?} {when}",
                    name(i)
                );
            }
        }
    };
    fetched_once("once loaded");

    // Kill one shard: its tenants' targets go down, every other target stays up.
    const KILLED: &str = "1";
    shards[1].kill().await.unwrap();
    let killed_at = Instant::now();
    for (server, half) in servers.iter().zip(&halves) {
        let result = server
            .query_until(&format!("up{{job=\"{JOB}\"}}"), |r| {
                r.as_array().is_some_and(|a| {
                    a.len() == half.len()
                        && a.iter().all(|s| {
                            let down = s["metric"]["shard"] == KILLED;
                            s["value"][1] == if down { "0" } else { "1" }
                        })
                })
            })
            .await;
        let instances: BTreeSet<String> = label_values(&result, "instance").into_iter().collect();
        assert_eq!(&instances, half);
        // Since the kill, no other target was ever down.
        let others = half.iter().filter(|t| shard_of(t) != KILLED).count();
        let window = killed_at.elapsed().as_millis();
        let result = server
            .query_until(
                &format!("min_over_time(up{{job=\"{JOB}\",shard!=\"{KILLED}\"}}[{window}ms])"),
                |r| r.as_array().is_some_and(|a| a.len() == others),
            )
            .await;
        for sample in result.as_array().unwrap() {
            if sample["value"][1] != "1" {
                let instance = sample["metric"]["instance"].as_str().unwrap_or("");
                let history = server
                    .query_until(&format!("up{{instance={instance:?}}}[60s]"), |_| true)
                    .await;
                panic!(
                    "{instance} was down after the kill ({:?} ago): {history}",
                    killed_at.elapsed()
                );
            }
        }
        // The killed shard's tenants' series went stale; the others' are still there.
        server
            .query_until(query, |r| {
                r.as_array().is_some_and(|a| a.len() == others)
                    && label_values(r, "shard").iter().all(|s| s != KILLED)
            })
            .await;
    }
    fetched_once("after the kill: no other shard took its tenants");
    eprintln!(
        "two_prometheus_servers_split_three_shards_of_300_tenants: {:?}",
        started.elapsed()
    );
}

/// Prints the end of each shard's log when the test fails (Prometheus's log is in the failure
/// message of `query_until` already).
struct ShardLogsOnFailure(std::path::PathBuf);

impl Drop for ShardLogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for index in 0..SHARDS {
                let log = shard_log(&self.0, index);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("--- the end of shard {index}'s log:\n{tail}");
            }
        }
    }
}
