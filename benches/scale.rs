//! The scale benchmark: the release exporter against the fake Graph with 1, 100 and 1,000 tenants
//! (5 product types each, 50 ms per Graph call), next to a baseline hyper server that serves the
//! same bytes from memory. Prints a table; not part of the test suite's pass/fail.
//!
//!     ./scripts/bench            (installs wrk, then runs this and the criterion benches)
//!     cargo bench --bench scale  (this only; needs Debian's wrk)
//!
//! Environment: BENCH_TENANTS (default "1,100,1000"), BENCH_SECONDS per load run (default 5),
//! BENCH_IDLE_SECONDS for the CPU-at-rest check (default 60), BENCH_LEAK_SCRAPES (default
//! 1000000; 0 skips the leak check), BENCH_ROUNDS of exporter/baseline runs per case, of which
//! the median ratio is shown (default 5), BENCH_WINDOW_SECONDS of steady state at the shortest
//! TTL, counting report requests per tenant (default 600, Graph's throttling window; 0 skips it).

use std::convert::Infallible;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDate;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use office365_activations_exporter::fake_graph::{
    FakeGraph, FakeGraphOptions, FakeProduct, FakeTenant, ReportData, DEMO_PRODUCT_TYPES,
};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const LATENCY: Duration = Duration::from_millis(50);
const SECRET: &str = "bench-secret";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// Starts the fake with `n` tenants of 5 products each.
async fn fake(n: usize) -> FakeGraph {
    let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let mut options = FakeGraphOptions {
        latency: LATENCY,
        ..FakeGraphOptions::default()
    };
    for i in 0..n {
        let products = DEMO_PRODUCT_TYPES
            .iter()
            .enumerate()
            .map(|(p, name)| {
                FakeProduct::new(
                    *name,
                    1000 + (i * 7 + p) as u64,
                    800 + (i * 5 + p) as u64,
                    (i % 50) as u64,
                )
            })
            .collect();
        options.tenants.push(FakeTenant::new(
            tenant_id(i),
            format!("client-{i}"),
            SECRET,
            ReportData::Fixed {
                refresh_date: date,
                products,
            },
        ));
    }
    FakeGraph::start(options)
        .await
        .expect("the fake Graph starts")
}

/// The exporter process and its address.
struct Exporter {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

async fn exporter(fake: &FakeGraph, n: usize, extra: &[&str]) -> Exporter {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let mut config = format!(
        "graph_endpoint: {}\nauthority_host: {}\ntenants:\n",
        fake.graph_endpoint(),
        fake.authority_host()
    );
    for i in 0..n {
        config.push_str(&format!(
            "  - {{name: tenant-{i}, tenant_id: {}, client_id: client-{i}, client_secret_file: {}}}\n",
            tenant_id(i),
            secret.display()
        ));
    }
    let config_file = dir.path().join("config.yml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_office365-activations-exporter"))
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&config_file)
        .arg("--tls.ca-file")
        .arg(&ca)
        .args(extra)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("Listening") {
            address = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("address="))
                .map(|a| a.trim_matches('"').to_owned());
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Exporter {
        child,
        address: address.expect("the exporter listens"),
        _dir: dir,
    }
}

/// (VmRSS, VmHWM, voluntary + involuntary context switches) of a process, from /proc.
fn proc_status(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:") * 1024,
        field("VmHWM:") * 1024,
        context_switches(pid),
    )
}

/// Voluntary + involuntary context switches of every thread of a process: its wakeups.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The baseline server in its own process (this benchmark, run with `--serve-baseline PLAIN
/// GZIP`), like the exporter: same runtime, same process setup, only the handler differs.
struct Baseline {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

async fn baseline(body: &Bytes, gzip: &Bytes) -> Baseline {
    let dir = tempfile::tempdir().unwrap();
    let (plain_file, gzip_file) = (dir.path().join("plain"), dir.path().join("gzip"));
    std::fs::write(&plain_file, body).unwrap();
    std::fs::write(&gzip_file, gzip).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve-baseline")
        .args([&plain_file, &gzip_file])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the baseline starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let address = lines
        .next_line()
        .await
        .unwrap()
        .expect("the baseline listens");
    Baseline {
        child,
        address,
        _dir: dir,
    }
}

/// A minimal hyper server that serves `body` from memory: the baseline. Prints its address.
async fn serve_baseline(body: Bytes, gzip: Bytes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (body, gzip) = (body.clone(), gzip.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let wants_gzip = request
                        .headers()
                        .get("accept-encoding")
                        .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
                    let mut response = Response::new(Full::new(if wants_gzip {
                        gzip.clone()
                    } else {
                        body.clone()
                    }));
                    response
                        .headers_mut()
                        .insert("content-type", "text/plain; version=0.0.4".parse().unwrap());
                    if wants_gzip {
                        response
                            .headers_mut()
                            .insert("content-encoding", "gzip".parse().unwrap());
                    }
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// One wrk run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    /// Requests wrk gave up on after its timeout: not in the latency figures.
    timeouts: u64,
    /// Answers other than 2xx or 3xx.
    non_2xx: u64,
    /// CPU time the server spent per request (user + system), in microseconds: the cost of a
    /// scrape, steadier than the throughput on a machine the load generator shares.
    cpu_us: f64,
}

fn parse_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

async fn wrk(url: &str, connections: u32, seconds: u64, headers: &[&str]) -> Load {
    let threads = connections.min(2);
    let mut command = Command::new("wrk");
    command.args([
        "--latency",
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        // Longer than any scrape deadline here, so that a late answer is measured, not dropped.
        "--timeout",
        "10s",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .output()
        .await
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => load.requests_per_second = rate.parse().unwrap_or(0.0),
            ["50%", value] => load.p50_ms = parse_ms(value),
            ["99%", value] => load.p99_ms = parse_ms(value),
            ["Latency", _avg, _stdev, max, ..] => load.max_ms = parse_ms(max),
            [count, "requests", "in", ..] => load.requests = count.parse().unwrap_or(0),
            ["Socket", "errors:", .., "timeout", count] => {
                load.timeouts = count.parse().unwrap_or(0)
            }
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                load.non_2xx = count.parse().unwrap_or(0)
            }
            _ => {}
        }
    }
    assert!(
        load.requests > 0,
        "wrk produced no requests:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    load
}

/// `load` with the CPU time process `pid` spent serving it.
async fn measured(pid: u32, load: impl std::future::Future<Output = Load>) -> Load {
    let before = cpu_seconds(pid);
    let mut load = load.await;
    load.cpu_us = (cpu_seconds(pid) - before) * 1e6 / load.requests as f64;
    load
}

fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (Bytes, Duration) {
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let body = request.send().await.unwrap().bytes().await.unwrap();
    (body, started.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, plain, gzip] = args.as_slice() {
        if flag == "--serve-baseline" {
            let read = |path: &str| Bytes::from(std::fs::read(path).unwrap());
            serve_baseline(read(plain), read(gzip)).await;
            return;
        }
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs this binary without arguments; `cargo bench` passes
        // --bench. Minutes of load do not belong in a test run.
        println!("the scale benchmark runs under `cargo bench --bench scale` (./scripts/bench)");
        return;
    }
    let counts: Vec<usize> = std::env::var("BENCH_TENANTS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let idle_seconds: u64 = env_or("BENCH_IDLE_SECONDS", 60);
    let leak_scrapes: u64 = env_or("BENCH_LEAK_SCRAPES", 1_000_000);
    let rounds_per_case: usize = env_or("BENCH_ROUNDS", 5);

    let mut refresh_rows = Vec::new();
    let mut notes = Vec::new();
    println!("# office365-activations-exporter scale benchmark");
    println!();
    println!(
        "machine: {} cores, {}; fake Graph latency {} ms per call; load: wrk, {seconds} s per run",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_owned()))
            .map_or("? kB".into(), |kb| format!(
                "{} GiB RAM",
                kb.parse::<u64>().unwrap_or(0) / 1024 / 1024
            )),
        LATENCY.as_millis()
    );
    let mut load_rows = Vec::new();
    let mut memory_rows = Vec::new();
    for &n in &counts {
        let fake = fake(n).await;
        let mut exporter = exporter(&fake, n, &[]).await;
        let pid = exporter.child.id().unwrap();
        let metrics = format!("http://{}/metrics", exporter.address);
        let (body, refresh_wall) =
            get(&metrics, &[("X-Prometheus-Scrape-Timeout-Seconds", "600")]).await;
        let connections = fake.connections();
        let (mut tokens, mut reports, mut max_reports) = (0, 0, 0);
        for i in 0..n {
            let stats = fake.stats(&tenant_id(i));
            tokens += stats.token_requests;
            reports += stats.report_requests;
            max_reports = max_reports.max(stats.report_requests);
        }
        let (gzip, _) = get(&metrics, &[("Accept-Encoding", "gzip")]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (idle_rss, _, _) = proc_status(pid);
        refresh_rows.push(format!(
            "| {n} | {:.2} s | {}/{}/{} | {tokens} | {reports} | {max_reports} | {} | {} | {} |",
            refresh_wall.as_secs_f64(),
            connections.login,
            connections.graph,
            connections.download,
            mib(body.len() as u64),
            mib(gzip.len() as u64),
            mib(idle_rss)
        ));

        let base = baseline(&body, &gzip).await;
        let base_pid = base.child.id().unwrap();
        let base_url = format!("http://{}/metrics", base.address);
        let mut cases = vec![(1u32, "plain"), (64, "plain")];
        if n >= 1000 {
            cases.push((64, "gzip"));
        }
        for (connections, encoding) in cases {
            let headers: &[&str] = if encoding == "gzip" {
                &["Accept-Encoding: gzip"]
            } else {
                &[]
            };
            // Interleaved rounds, median by ratio: one run of each on a shared 2-core machine
            // swings by 20% either way.
            let mut rounds = Vec::new();
            for _ in 0..rounds_per_case {
                let ours = measured(pid, wrk(&metrics, connections, seconds, headers)).await;
                let theirs =
                    measured(base_pid, wrk(&base_url, connections, seconds, headers)).await;
                rounds.push((ours, theirs));
            }
            rounds.sort_by(|a, b| {
                let ratio = |r: &(Load, Load)| r.0.requests_per_second / r.1.requests_per_second;
                ratio(a).total_cmp(&ratio(b))
            });
            let (ours, theirs) = rounds[rounds.len() / 2];
            load_rows.push((n, connections, encoding, ours, theirs));
        }
        let (_, peak, _) = proc_status(pid);
        memory_rows.push((n, idle_rss, peak));

        if n == *counts.iter().max().unwrap() {
            // CPU at rest: no scrapes for a while.
            let (cpu_before, switches_before) = (cpu_seconds(pid), proc_status(pid).2);
            tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
            let (cpu_after, switches_after) = (cpu_seconds(pid), proc_status(pid).2);
            notes.push(format!(
                "## CPU at rest ({n} tenants, {idle_seconds} s without scrapes)\n\nCPU seconds used: {:.3}; context switches (wakeups): {}",
                cpu_after - cpu_before,
                switches_after - switches_before
            ));
        }
        if n == *counts.iter().min().unwrap() && leak_scrapes > 0 {
            notes.push(leak_check(&fake, n, leak_scrapes).await);
        }
        exporter.child.kill().await.ok();
        drop(base);
        fake.shutdown().await;
    }

    println!();
    println!("## Refresh cost (the first scrape refreshes every tenant; --refresh.concurrency 8)");
    println!();
    println!("| tenants | wall time | TLS connections login/graph/download | token requests | report requests | max report requests per tenant | body | gzip body | idle RSS after refresh |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &refresh_rows {
        println!("{row}");
    }
    println!();
    println!("## Cached scrapes: exporter vs baseline (a hyper server serving the same bytes from memory; median of {rounds_per_case} interleaved rounds)");
    println!();
    println!("| tenants | connections | encoding | exporter req/s | baseline req/s | ratio | exporter p50 / p99 | baseline p50 / p99 | CPU per request exporter / baseline |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (n, connections, encoding, ours, theirs) in &load_rows {
        println!(
            "| {n} | {connections} | {encoding} | {:.0} | {:.0} | **{:.2}** | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} / {:.1} µs |",
            ours.requests_per_second,
            theirs.requests_per_second,
            ours.requests_per_second / theirs.requests_per_second,
            ours.p50_ms,
            ours.p99_ms,
            theirs.p50_ms,
            theirs.p99_ms,
            ours.cpu_us,
            theirs.cpu_us
        );
    }
    for (n, connections, encoding, ours, theirs) in &load_rows {
        for (who, load) in [("exporter", ours), ("baseline", theirs)] {
            if load.timeouts + load.non_2xx > 0 {
                println!(
                    "\nWARNING: {n} tenants, {connections} connections, {encoding}: the {who} had {} timeouts and {} answers not 2xx",
                    load.timeouts, load.non_2xx
                );
            }
        }
    }
    println!();
    println!("## Memory");
    println!();
    println!("| tenants | idle RSS after the first refresh | peak RSS (VmHWM) after 64-connection load |");
    println!("|---|---|---|");
    for (n, idle, peak) in &memory_rows {
        println!("| {n} | {} | {} |", mib(*idle), mib(*peak));
    }
    for note in &notes {
        println!();
        println!("{note}");
    }

    // A refresh storm: every tenant stale at once (a fresh start), scraped meanwhile with a 2 s
    // deadline. Scrapes must keep answering from the cache within their deadline.
    let n = *counts.iter().max().unwrap();
    let fake = fake(n).await;
    let mut exporter = exporter(&fake, n, &[]).await;
    let metrics = format!("http://{}/metrics", exporter.address);
    let started = Instant::now();
    let storm = wrk(&metrics, 4, 20, &["X-Prometheus-Scrape-Timeout-Seconds: 2"]).await;
    let loaded = (0..n)
        .filter(|i| fake.stats(&tenant_id(*i)).download_requests > 0)
        .count();
    println!();
    println!("## Scrapes during a refresh storm ({n} tenants stale at once, 2 s scrape deadline, 4 connections, 20 s)");
    println!();
    println!(
        "{} scrapes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (deadline 2000 ms); {} timed out (wrk waits 10 s), {} not 2xx; tenants loaded by the end: {loaded}/{n} in {:.1} s; TLS connections to Graph: {}",
        storm.requests,
        storm.p50_ms,
        storm.p99_ms,
        storm.max_ms,
        storm.timeouts,
        storm.non_2xx,
        started.elapsed().as_secs_f64(),
        fake.connections().graph
    );
    exporter.child.kill().await.ok();
    fake.shutdown().await;

    // Steady state at the shortest TTL: scraped like Prometheus every 15 s for Graph's 10-minute
    // throttling window, how many report requests does each tenant make? Never above Graph's 14.
    let window: u64 = env_or("BENCH_WINDOW_SECONDS", 600);
    if window > 0 {
        steady_state(n, window).await;
    }

    // Scale-out: many tenants behind one process, per-tenant targets.
    let many: usize = env_or("BENCH_SCALE_OUT_TENANTS", 10_000);
    if many > 0 {
        scale_out(many, seconds).await;
    }
}

/// The 10,000-tenant figures: series per tenant, RSS before and after loading and under 64
/// concurrent scrapes, /metrics size and time, /probe against the baseline, the cold load time
/// against its bound; for the user counts report alone and for the default reports.
async fn scale_out(n: usize, seconds: u64) {
    const CONCURRENCY: usize = 64;
    println!();
    println!("## Scale-out: {n} tenants, 5 products each, fake Graph at {} ms per call, --refresh.concurrency {CONCURRENCY}", LATENCY.as_millis());
    println!();
    println!("| reports | series per tenant | RSS before any refresh (per tenant) | RSS loaded, idle | peak RSS, 64 scrapes | /metrics plain / gzip | /metrics time (plain, cached) | cold load / bound | CPU during the load: exporter / fake (bench) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut probe_rows = Vec::new();
    for reports in ["user_counts", "user_counts,activation_counts"] {
        let fake = fake(n).await;
        let concurrency = CONCURRENCY.to_string();
        let mut one = exporter(&fake, 1, &["--reports", reports]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss_one, _, _) = proc_status(one.child.id().unwrap());
        one.child.kill().await.ok();
        let mut exporter = exporter(
            &fake,
            n,
            &["--reports", reports, "--refresh.concurrency", &concurrency],
        )
        .await;
        let pid = exporter.child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss_before, _, _) = proc_status(pid);
        let metrics = format!("http://{}/metrics", exporter.address);
        let cpu_before = (cpu_seconds(pid), cpu_seconds(std::process::id()));
        let (_, cold) = get(&metrics, &[("X-Prometheus-Scrape-Timeout-Seconds", "3600")]).await;
        // What the load cost each side: above the 2 cores' share, CPU, not latency, bounds it.
        let cpu_exporter = cpu_seconds(pid) - cpu_before.0;
        let cpu_fake = cpu_seconds(std::process::id()) - cpu_before.1;
        // Token, report request, download: three calls of LATENCY per refresh of a report.
        let kinds = reports.split(',').count();
        let bound = LATENCY * 3 * (n * kinds) as u32 / CONCURRENCY as u32;
        let (plain, took) = get(&metrics, &[]).await;
        let (gzip, _) = get(&metrics, &[("Accept-Encoding", "gzip")]).await;
        let probe = format!("http://{}/probe?target=tenant-0", exporter.address);
        let (probe_body, _) = get(&probe, &[]).await;
        let series = String::from_utf8_lossy(&probe_body)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss_loaded, _, _) = proc_status(pid);
        let _ = wrk(&metrics, 64, seconds, &["Accept-Encoding: gzip"]).await;
        let (_, peak, _) = proc_status(pid);
        println!(
            "| {reports} | {series} | {} ({:.1} KiB) | {} | {} | {} / {} | {:.0} ms | {:.1} s / {:.1} s ({:+.0}%) | {cpu_exporter:.1} / {cpu_fake:.1} s |",
            mib(rss_before),
            rss_before.saturating_sub(rss_one) as f64 / 1024.0 / n as f64,
            mib(rss_loaded),
            mib(peak),
            mib(plain.len() as u64),
            mib(gzip.len() as u64),
            took.as_secs_f64() * 1000.0,
            cold.as_secs_f64(),
            bound.as_secs_f64(),
            (cold.as_secs_f64() / bound.as_secs_f64() - 1.0) * 100.0
        );
        if reports == "user_counts" {
            let base = baseline(&probe_body, &probe_body).await;
            let base_url = format!("http://{}/probe?target=tenant-0", base.address);
            let mut rounds = Vec::new();
            for _ in 0..5 {
                let ours = measured(pid, wrk(&probe, 64, seconds, &[])).await;
                let theirs =
                    measured(base.child.id().unwrap(), wrk(&base_url, 64, seconds, &[])).await;
                rounds.push((ours, theirs));
            }
            rounds.sort_by(|a, b| {
                let ratio = |r: &(Load, Load)| r.0.requests_per_second / r.1.requests_per_second;
                ratio(a).total_cmp(&ratio(b))
            });
            probe_rows.push(rounds[rounds.len() / 2]);
        }
        exporter.child.kill().await.ok();
        fake.shutdown().await;
    }
    println!();
    println!("/probe?target=tenant-0 ({n} tenants loaded, user counts), 64 connections, median of 5 interleaved rounds:");
    println!();
    println!(
        "| exporter req/s | baseline req/s | ratio | exporter p50 / p99 | baseline p50 / p99 | CPU per request exporter / baseline |"
    );
    println!("|---|---|---|---|---|---|");
    for (ours, theirs) in probe_rows {
        println!(
            "| {:.0} | {:.0} | **{:.2}** | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} / {:.1} µs |",
            ours.requests_per_second,
            theirs.requests_per_second,
            ours.requests_per_second / theirs.requests_per_second,
            ours.p50_ms,
            ours.p99_ms,
            theirs.p50_ms,
            theirs.p99_ms,
            ours.cpu_us,
            theirs.cpu_us
        );
    }
}

/// RSS of a fresh exporter after 10,000 scrapes and after `scrapes`.
async fn leak_check(fake: &FakeGraph, n: usize, scrapes: u64) -> String {
    let mut exporter = exporter(fake, n, &[]).await;
    let pid = exporter.child.id().unwrap();
    let metrics = format!("http://{}/metrics", exporter.address);
    // Exactly 10,000 first, over one keep-alive connection (wrk cannot stop at a count).
    let client = reqwest::Client::new();
    for _ in 0..10_000 {
        client
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let (rss_10k, _, _) = proc_status(pid);
    let started = Instant::now();
    let mut done = 10_000;
    while done < scrapes {
        done += wrk(&metrics, 8, 10, &[]).await.requests;
    }
    let (rss_end, _, _) = proc_status(pid);
    exporter.child.kill().await.ok();
    format!(
        "## Leak check ({n} tenant{}, a fresh exporter)\n\nRSS after 10,000 scrapes: {}; after {done} scrapes ({:.0} s more): {}; growth {:+.1}%",
        if n == 1 { "" } else { "s" },
        mib(rss_10k),
        started.elapsed().as_secs_f64(),
        mib(rss_end),
        (rss_end as f64 / rss_10k as f64 - 1.0) * 100.0
    )
}

/// `n` tenants at `--cache.ttl 1m`, scraped every 15 s for `window` seconds.
async fn steady_state(n: usize, window: u64) {
    let fake = fake(n).await;
    let mut exporter = exporter(&fake, n, &["--cache.ttl", "1m"]).await;
    let metrics = format!("http://{}/metrics", exporter.address);
    let started = Instant::now();
    let (mut scrapes, mut first, mut slowest) = (0, Duration::ZERO, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(window) {
        let (_, took) = get(&metrics, &[("X-Prometheus-Scrape-Timeout-Seconds", "10")]).await;
        if scrapes == 0 {
            first = took;
        } else {
            slowest = slowest.max(took);
        }
        scrapes += 1;
        tokio::time::sleep(Duration::from_secs(15).saturating_sub(took)).await;
    }
    let stats: Vec<_> = (0..n).map(|i| fake.stats(&tenant_id(i))).collect();
    let reports: Vec<u64> = stats.iter().map(|s| s.report_requests).collect();
    let tokens: u64 = stats.iter().map(|s| s.token_requests).sum();
    let throttled: u64 = stats.iter().map(|s| s.throttled_requests).sum();
    let connections = fake.connections();
    println!();
    println!("## Steady state ({n} tenants, --cache.ttl 1m, scraped every 15 s for {window} s)");
    println!();
    println!(
        "report requests per tenant: min {}, max {} (Graph allows 14 per 10 minutes); throttled: {throttled}; token requests: {tokens}; scrapes: {scrapes}, the first (every tenant loading) {:.0} ms, the slowest after it {:.0} ms; TLS connections login/graph/download: {}/{}/{}",
        reports.iter().min().unwrap_or(&0),
        reports.iter().max().unwrap_or(&0),
        first.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        connections.login,
        connections.graph,
        connections.download
    );
    exporter.child.kill().await.ok();
    fake.shutdown().await;
}
