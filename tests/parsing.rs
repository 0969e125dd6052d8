//! Every CSV oddity Graph is known to produce, end to end: the fake serves the body, the exporter
//! downloads, parses and exposes it.

mod common;

use std::io::Write;

use common::*;
use office365_activations_exporter::fake_graph::Canned;

async fn exposed(body: &[u8]) -> Metrics {
    let h = Harness::start().await;
    h.fake
        .set_report_body(&tenant_id(0), Some(body.to_vec().into()));
    let m = h.scrape().await;
    h.stop().await;
    m
}

const SHARED: &str = "office365_activations_shared_computer_activated_users";

#[tokio::test(start_paused = true)]
async fn bom_and_crlf() {
    let m = exposed(b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n2026-11-25,VISIO ONLINE PLAN 2,10,9,8\r\n").await;
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(m.assigned("contoso", "VISIO ONLINE PLAN 2"), Some(10.0));
    assert_eq!(m.activated("contoso", "VISIO ONLINE PLAN 2"), Some(9.0));
    assert_eq!(
        m.get(
            SHARED,
            &[
                ("tenant", "contoso"),
                ("product_type", "VISIO ONLINE PLAN 2")
            ]
        ),
        Some(8.0)
    );
}

#[tokio::test(start_paused = true)]
async fn lf_quoted_fields_reordered_and_unknown_columns() {
    let m = exposed(b"Product Type,Some Future Column,Activated,Report Refresh Date,Assigned,Shared Computer Activation\n\"MICROSOFT 365 APPS FOR BUSINESS\",\"a, b\",\"40\",2026-11-25,50,0\n").await;
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(
        m.assigned("contoso", "MICROSOFT 365 APPS FOR BUSINESS"),
        Some(50.0)
    );
    assert_eq!(
        m.activated("contoso", "MICROSOFT 365 APPS FOR BUSINESS"),
        Some(40.0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_shared_computer_column_that_gauge_is_absent() {
    let m = exposed(b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated\r\n2026-11-25,Office 365 ProPlus,3,2\r\n").await;
    assert_eq!(m.up("contoso"), Some(1.0));
    assert_eq!(m.activated("contoso", "Office 365 ProPlus"), Some(2.0));
    assert!(m.series(SHARED).is_empty(), "{}", m.text);
    assert!(
        !m.text.contains(SHARED),
        "no HELP for an empty family either"
    );
}

#[tokio::test(start_paused = true)]
async fn header_only_report_means_up_and_no_product_gauges() {
    let m = exposed(b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n").await;
    assert_eq!(m.up("contoso"), Some(1.0));
    assert!(m.series("office365_activations_assigned_users").is_empty());
    assert!(m.series("office365_activations_activated_users").is_empty());
    assert!(m
        .series("office365_activations_report_refresh_timestamp_seconds")
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_gzip_encoded_download_is_decoded() {
    let csv = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n2026-11-25,PROJECT ONLINE DESKTOP CLIENT,120,88,0\r\n";
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(csv).unwrap();
    let mut canned = Canned::body(200, "application/octet-stream", encoder.finish().unwrap());
    canned
        .headers
        .push(("Content-Encoding".into(), "gzip".into()));
    let h = Harness::start().await;
    h.fake.push_download_response(&tenant_id(0), canned);
    let m = h.scrape().await;
    assert_eq!(
        m.activated("contoso", "PROJECT ONLINE DESKTOP CLIENT"),
        Some(88.0)
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn product_names_with_quotes_and_backslashes_are_escaped() {
    let m = exposed(b"Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,\"OFFICE \"\"X\"\" \\ PRO\",3,2\n").await;
    assert_eq!(m.activated("contoso", "OFFICE \"X\" \\ PRO"), Some(2.0));
    assert!(
        m.text.contains(r#"product_type="OFFICE \"X\" \\ PRO""#),
        "{}",
        m.text
    );
}
