//! The large user detail benchmark: the release exporter refreshes a 300,000-user
//! `getOffice365ActivationsUserDetail` CSV (tens of MB) from the fake Graph, and the peak RSS
//! during the refresh is compared with the RSS before it (target: at most 32 MiB more: the report
//! is streamed into its counts, never held). Prints a table; not part of the test suite.
//!
//!     cargo bench --bench user_detail
//!
//! Environment: BENCH_USERS (default 300000).

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDate;
use office365_activations_exporter::fake_graph::{
    FakeGraph, FakeGraphOptions, FakeProduct, FakeReport, FakeTenant, ReportData,
};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

const TENANT_ID: &str = "00000000-0000-4000-8000-0000000000aa";
const CLIENT_ID: &str = "client-detail";
const SECRET: &str = "bench-secret";

/// A user detail CSV as Graph writes it (BOM, CRLF), `users` users, a third of them with a
/// second product; numbers vary so every aggregate bucket is used.
fn user_detail_csv(users: usize) -> Bytes {
    let mut out = String::with_capacity(users * 140);
    out.push('\u{FEFF}');
    out.push_str("Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer\r\n");
    let refresh = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    for i in 0..users {
        let products: &[&str] = if i % 3 == 0 {
            &["MICROSOFT 365 APPS FOR ENTERPRISE", "VISIO ONLINE PLAN 2"]
        } else {
            &["MICROSOFT 365 APPS FOR ENTERPRISE"]
        };
        for (p, product) in products.iter().enumerate() {
            let last = match (i + p) % 11 {
                0 => String::new(),
                n => (refresh - chrono::Days::new((n * n * 3) as u64)).to_string(),
            };
            out.push_str(&format!(
                "2026-11-25,{:032x}@contoso.example,{:032x},{product},{last},{},{},0,{},{},{}\r\n",
                i,
                i * 7,
                i % 4,
                (i / 4) % 3,
                i % 2,
                (i / 2) % 2,
                if i % 17 == 0 { "True" } else { "False" }
            ));
        }
    }
    Bytes::from(out)
}

/// (VmRSS, VmHWM) of a process, from /proc.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("the user detail benchmark runs under `cargo bench --bench user_detail`");
        return;
    }
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let body = user_detail_csv(users);
    let fake = FakeGraph::start(FakeGraphOptions {
        tenants: vec![FakeTenant::new(
            TENANT_ID,
            CLIENT_ID,
            SECRET,
            ReportData::Fixed {
                refresh_date: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
                products: vec![FakeProduct::new(
                    "MICROSOFT 365 APPS FOR ENTERPRISE",
                    1,
                    1,
                    0,
                )],
            },
        )],
        ..FakeGraphOptions::default()
    })
    .await
    .expect("the fake Graph starts");
    fake.set_report_body_for(FakeReport::UserDetail, TENANT_ID, Some(body.clone()));

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_office365-activations-exporter"))
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--reports",
            "user_detail",
        ])
        .args(["--graph.endpoint", &fake.graph_endpoint()])
        .args(["--auth.authority-host", &fake.authority_host()])
        .args(["--auth.tenant-id", TENANT_ID, "--auth.client-id", CLIENT_ID])
        .arg("--tls.ca-file")
        .arg(&ca)
        .env("AZURE_CLIENT_SECRET", SECRET)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter starts");
    let pid = child.id().unwrap();
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
    let base = format!("http://{}", address.expect("the exporter listens"));
    let client = reqwest::Client::new();
    // A scrape before the refresh: the process has served once and settled.
    let _ = client.get(format!("{base}/-/healthy")).send().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, hwm_before) = rss(pid);

    let started = Instant::now();
    let metrics = client
        .get(format!("{base}/metrics"))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "120")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let took = started.elapsed();
    let (after, peak) = rss(pid);
    let listed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("office365_activations_detail_users{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let up = metrics.lines().any(|l| {
        l.starts_with("office365_activations_up{report=\"user_detail\"") && l.ends_with(" 1")
    });

    println!(
        "# user detail refresh: {users} users, {} rows",
        listed as u64
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| CSV body | {} |", mib(body.len() as u64));
    println!(
        "| refresh (scrape that waited for it) | {:.2} s |",
        took.as_secs_f64()
    );
    println!("| RSS before | {} |", mib(before));
    println!(
        "| peak RSS (VmHWM) before / after the refresh | {} / {} |",
        mib(hwm_before),
        mib(peak)
    );
    println!("| RSS after | {} |", mib(after));
    println!(
        "| peak during the refresh over RSS before (target <= 32 MiB) | {} |",
        mib(peak.saturating_sub(before))
    );
    println!("| report up | {up} |");
    assert!(up, "the refresh did not succeed:\n{metrics}");
}
