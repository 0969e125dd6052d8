//! The HTTP surface: landing page, health, readiness, methods, unknown paths, and the exposition
//! checked by the real `promtool check metrics`.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn landing_page_links_metrics_and_lists_tenants() {
    let h = Harness::with(Options {
        tenants: 2,
        ..Options::default()
    })
    .await;
    let page = h.get("/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("<a href=\"/metrics\">"), "{html}");
    assert!(html.contains(env!("CARGO_PKG_VERSION")));
    assert!(html.contains("contoso") && html.contains("fabrikam"));
    assert!(html.contains("waiting for the first scrape"));
    h.fake.expire_client_secret(&tenant_id(1));
    h.scrape().await;
    let html = h.get("/").await.text().await.unwrap();
    assert!(
        html.contains("AADSTS7000222"),
        "the page says what broke: {html}"
    );
    assert!(!html.contains(SECRET), "never the secret");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn only_get_and_head_are_allowed() {
    let h = Harness::start().await;
    let post = h
        .client
        .post(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let head = h
        .client
        .head(format!("{}/-/healthy", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.text().await.unwrap(), "", "HEAD has no body");
    assert_eq!(h.get("/nope").await.status(), 404);
    assert_eq!(h.get("/metrics/extra").await.status(), 404);
    assert_eq!(h.stats(0).report_requests, 0, "none of these touched Graph");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn promtool_check_metrics_reports_nothing() {
    let h = Harness::with(Options {
        tenants: 2,
        ..Options::default()
    })
    .await;
    h.fake.expire_client_secret(&tenant_id(1)); // an error counter in the output too
    let m = h.scrape().await;
    assert!(m.errors("fabrikam", "token", "unauthorized") == 1.0);
    let (ok, said) = promtool_metrics_check(&m.text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n---\n{}",
        m.text
    );
    h.stop().await;
}

#[test]
fn promtool_does_catch_bad_exposition() {
    // The check above can fail: promtool complains about a counter without _total.
    let (ok, said) =
        promtool_metrics_check("# HELP x_seconds X.\n# TYPE x_seconds counter\nx_seconds 1\n");
    assert!(!ok || !said.trim().is_empty(), "{said}");
}

#[tokio::test(start_paused = true)]
async fn reload_endpoint_is_off_unless_enabled() {
    let h = Harness::start().await;
    let response = h
        .client
        .post(format!("{}/-/reload", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("--web.enable-lifecycle"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_every_tenant() {
    let h = Harness::with(Options {
        tenants: 2,
        ..Options::default()
    })
    .await;
    h.fake.expire_client_secret(&tenant_id(1));
    let m = h.scrape().await;
    assert_eq!((m.up("contoso"), m.up("fabrikam")), (Some(1.0), Some(0.0)));
    assert_eq!(
        h.get("/-/ready").await.status(),
        503,
        "fabrikam never loaded"
    );
    h.fake.set_client_secret(&tenant_id(1), SECRET);
    tokio::time::advance(Duration::from_secs(40)).await; // past the first backoff
    h.scrape().await;
    assert_eq!(h.get("/-/ready").await.status(), 200);
    h.stop().await;
}
