//! Micro-benchmarks of the per-refresh work (CSV parsing, encoding a report's gauges) and the
//! rendering of the stable part of /metrics (every tenant's cached lines and the self-metrics),
//! done when a refresh starts or ends, never per scrape.
//! Run with `cargo bench`; figures go to BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use office365_activations_exporter::metrics::{Metrics, TenantParts};
use office365_activations_exporter::reports::user_counts::{encode, parse_csv, KIND};
use office365_activations_exporter::reports::Encoded;
use office365_activations_exporter::status::Status;
use office365_activations_exporter::tenant::CachedReport;

const PRODUCTS: &[&str] = &[
    "MICROSOFT 365 APPS FOR ENTERPRISE",
    "MICROSOFT 365 APPS FOR BUSINESS",
    "PROJECT ONLINE DESKTOP CLIENT",
    "VISIO ONLINE PLAN 2",
    "MICROSOFT EXCEL ADVANCED ANALYTICS",
];

fn csv(rows: usize) -> Vec<u8> {
    let mut body = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n".to_vec();
    for i in 0..rows {
        let name = PRODUCTS[i % PRODUCTS.len()];
        body.extend_from_slice(
            format!("2026-11-25,{name} {i},{},{},{}\r\n", 2679 + i, 1710 + i, i).as_bytes(),
        );
    }
    body
}

fn benches(c: &mut Criterion) {
    let five = csv(5);
    let mut group = c.benchmark_group("parse_csv");
    group.throughput(Throughput::Bytes(five.len() as u64));
    group.bench_function("5 products", |b| {
        b.iter(|| parse_csv(black_box(&five)).unwrap())
    });
    let many = csv(1000);
    group.throughput(Throughput::Bytes(many.len() as u64));
    group.bench_function("1000 products", |b| {
        b.iter(|| parse_csv(black_box(&many)).unwrap())
    });
    group.finish();

    let report = parse_csv(&five).unwrap();
    c.bench_function("encode_report/5 products", |b| {
        b.iter(|| encode(black_box("contoso"), black_box(&report)))
    });

    let metrics = Metrics::new("1h");
    for tenants in [1usize, 1000] {
        let parts: Vec<_> = (0..tenants)
            .map(|i| {
                let name = format!("tenant-{i}");
                let cached = std::sync::Arc::new(CachedReport {
                    kind: &KIND,
                    encoded: Encoded {
                        refresh_date: report.refresh_date,
                        rows: report.products.len() as u64,
                        families: encode(&name, &report),
                    },
                    fetched: std::time::SystemTime::now(),
                });
                let status = Status::new(&name, &[&KIND], Default::default());
                TenantParts {
                    reports: vec![cached],
                    status: status.lines(),
                }
            })
            .collect();
        c.bench_function(&format!("render/{tenants} tenants"), |b| {
            b.iter(|| metrics.render_cached(&parts))
        });
    }
}

criterion_group!(parse_encode, benches);
criterion_main!(parse_encode);
