//! End-to-end tests of the fake over real TLS connections, with reqwest as the client (trusting
//! only the fake's CA, redirects not followed so every hop is visible).

use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDate;
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::Value;

use super::*;

/// The activation counts and user detail reports, and what all three reports share.
mod reports;

const TENANT: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const CLIENT: &str = "cccccccc-0000-4000-8000-00000000000c";
const SECRET: &str = "s3cr3t~value";
const OTHER_TENANT: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const REPORT_PATH: &str = "/v1.0/reports/getOffice365ActivationsUserCounts";

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

fn products() -> Vec<FakeProduct> {
    vec![
        FakeProduct::new("MICROSOFT 365 APPS FOR ENTERPRISE", 2679, 1710, 1024),
        FakeProduct::new("PROJECT ONLINE DESKTOP CLIENT", 120, 88, 0),
    ]
}

fn tenant() -> FakeTenant {
    FakeTenant::new(
        TENANT,
        CLIENT,
        SECRET,
        ReportData::Fixed {
            refresh_date: date(),
            products: products(),
        },
    )
}

fn options() -> FakeGraphOptions {
    let mut other = FakeTenant::new(
        OTHER_TENANT,
        "dddddddd-0000-4000-8000-00000000000d",
        "other-secret",
        ReportData::Fixed {
            refresh_date: date(),
            products: vec![],
        },
    );
    other.reports_permission = false;
    FakeGraphOptions {
        tenants: vec![tenant(), other],
        ..FakeGraphOptions::default()
    }
}

async fn start(opts: FakeGraphOptions) -> (FakeGraph, Client) {
    let fake = FakeGraph::start(opts).await.expect("fake starts");
    let client = client_for(&fake);
    (fake, client)
}

fn client_for(fake: &FakeGraph) -> Client {
    Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("fake-graph-tests/1")
        .build()
        .unwrap()
}

async fn token_request(
    fake: &FakeGraph,
    client: &Client,
    tenant: &str,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let resp = client
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            fake.authority_host()
        ))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

fn good_form<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", CLIENT),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
        ("client_secret", SECRET),
    ]
}

async fn get_token(fake: &FakeGraph, client: &Client) -> String {
    let (status, _, json) = token_request(fake, client, TENANT, &good_form()).await;
    assert_eq!(status, 200, "{json}");
    json["access_token"].as_str().unwrap().to_string()
}

async fn report(fake: &FakeGraph, client: &Client, token: &str, path: &str) -> reqwest::Response {
    client
        .get(format!("{}{path}", fake.graph_endpoint()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn graph_error(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_string();
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"]["innerError"]["request-id"], request_id.as_str());
    assert!(v["error"]["innerError"]["date"].is_string());
    (
        status,
        v["error"]["code"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

fn assert_aadsts(status: StatusCode, json: &Value, want_status: u16, error: &str, code: u32) {
    assert_eq!(status.as_u16(), want_status, "{json}");
    assert_eq!(json["error"], error, "{json}");
    assert_eq!(json["error_codes"], serde_json::json!([code]), "{json}");
    let desc = json["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    let trace = json["trace_id"].as_str().unwrap();
    let correlation = json["correlation_id"].as_str().unwrap();
    assert!(
        desc.contains(&format!("\r\nTrace ID: {trace}\r\n")),
        "{desc}"
    );
    assert!(
        desc.contains(&format!("\r\nCorrelation ID: {correlation}\r\n")),
        "{desc}"
    );
    assert!(desc.contains("\r\nTimestamp: "), "{desc}");
    assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn token_success_has_the_entra_shape() {
    let (fake, client) = start(options()).await;
    let (status, headers, json) = token_request(&fake, &client, TENANT, &good_form()).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 3599);
    assert_eq!(json["ext_expires_in"], 3599);
    assert!(json["access_token"].as_str().unwrap().len() > 100);

    // The fake's own Graph host is an acceptable audience too, and tenant ids are case-blind.
    let own_scope = format!("{}/.default", fake.graph_endpoint());
    let mut form = good_form();
    form[1] = ("scope", &own_scope);
    let (status, _, json) = token_request(&fake, &client, &TENANT.to_uppercase(), &form).await;
    assert_eq!(status, 200, "{json}");
    let stats = fake.stats(TENANT);
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.token_request_times.len(), 2, "one time per request");
    assert!(stats.token_request_times[0] <= stats.token_request_times[1]);
}

#[tokio::test]
async fn token_refusals_use_the_real_aadsts_codes() {
    let (fake, client) = start(options()).await;
    let form = good_form();

    let (s, _, j) = token_request(
        &fake,
        &client,
        "00000000-dead-beef-0000-000000000000",
        &form,
    )
    .await;
    assert_aadsts(s, &j, 400, "invalid_request", 90002);

    let mut f = form.clone();
    f[0] = ("client_id", "99999999-0000-0000-0000-000000000000");
    let (s, _, j) = token_request(&fake, &client, TENANT, &f).await;
    assert_aadsts(s, &j, 400, "unauthorized_client", 700016);

    let mut f = form.clone();
    f[3] = ("client_secret", "wrong");
    let (s, _, j) = token_request(&fake, &client, TENANT, &f).await;
    assert_aadsts(s, &j, 401, "invalid_client", 7000215);

    // A scope of another cloud's Graph: that resource does not exist in this cloud.
    let mut f = form.clone();
    f[1] = ("scope", "https://graph.microsoft.us/.default");
    let (s, _, j) = token_request(&fake, &client, TENANT, &f).await;
    assert_aadsts(s, &j, 400, "invalid_resource", 500011);

    for bad_scope in [
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/Reports.Read.All",
        "",
    ] {
        let mut f = form.clone();
        f[1] = ("scope", bad_scope);
        let (s, _, j) = token_request(&fake, &client, TENANT, &f).await;
        assert_aadsts(s, &j, 400, "invalid_scope", 70011);
    }

    let mut f = form.clone();
    f[2] = ("grant_type", "password");
    let (s, _, j) = token_request(&fake, &client, TENANT, &f).await;
    assert_aadsts(s, &j, 400, "unsupported_grant_type", 70003);

    let (s, _, j) = token_request(&fake, &client, TENANT, &form[..3]).await;
    assert_aadsts(s, &j, 401, "invalid_client", 7000218);

    fake.expire_client_secret(TENANT);
    let (s, _, j) = token_request(&fake, &client, TENANT, &form).await;
    assert_aadsts(s, &j, 401, "invalid_client", 7000222);

    // Rotation: the new secret works, the old one is refused as wrong.
    fake.set_client_secret(TENANT, "rotated");
    let (s, _, j) = token_request(&fake, &client, TENANT, &form).await;
    assert_aadsts(s, &j, 401, "invalid_client", 7000215);
    let mut f = form.clone();
    f[3] = ("client_secret", "rotated");
    let (s, _, _) = token_request(&fake, &client, TENANT, &f).await;
    assert_eq!(s, 200);

    // Unknown tenants are not counted; everything to the known tenant is.
    assert_eq!(fake.stats(TENANT).token_requests, 11);
}

#[tokio::test]
async fn token_endpoint_survives_malformed_requests() {
    let (fake, client) = start(options()).await;
    let url = format!("{}/{TENANT}/oauth2/v2.0/token", fake.authority_host());
    let resp = client
        .post(&url)
        .body("%%%&&==&grant_type=%ZZ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(&url)
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(&url)
        .body(vec![b'a'; MAX_BODY_FOR_TEST])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(format!("{}/nowhere", fake.authority_host()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Still serving.
    get_token(&fake, &client).await;
}

const MAX_BODY_FOR_TEST: usize = 200 * 1024;

#[tokio::test]
async fn report_redirects_to_another_origin_with_a_query() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let resp = client
        .get(format!("{}{REPORT_PATH}()", fake.graph_endpoint()))
        .bearer_auth(&token)
        .header("client-request-id", "5e0f4a8e-0000-4000-8000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.headers()["client-request-id"],
        "5e0f4a8e-0000-4000-8000-000000000001"
    );
    assert!(uuid::Uuid::parse_str(resp.headers()["request-id"].to_str().unwrap()).is_ok());
    let loc = location(&resp);
    let url = reqwest::Url::parse(&loc).unwrap();
    assert!(loc.starts_with(&format!("{}/data/download/", fake.download_origin())));
    assert_eq!(url.host_str(), Some("localhost"));
    assert_ne!(
        url.origin(),
        reqwest::Url::parse(&fake.graph_endpoint())
            .unwrap()
            .origin()
    );
    let query = url.query().unwrap();
    assert!(query.contains("sig="), "{query}");
    assert!(query.contains("se="), "{query}");

    // Without `()`, and without a client-request-id.
    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(resp.headers().get("client-request-id").is_none());

    let stats = fake.stats(TENANT);
    assert_eq!(stats.report_requests, 2);
    assert_eq!(
        stats.report_paths,
        vec![format!("{REPORT_PATH}()"), REPORT_PATH.to_string()]
    );
    assert_eq!(
        stats.report_client_request_ids,
        vec![
            Some("5e0f4a8e-0000-4000-8000-000000000001".to_string()),
            None
        ]
    );
    assert_eq!(stats.user_agents, vec!["fake-graph-tests/1"; 2]);
}

#[tokio::test]
async fn download_serves_the_bom_crlf_csv_without_auth() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    let resp = client.get(&loc).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let body = resp.bytes().await.unwrap();
    let expected = "\u{FEFF}Report Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n\
                    2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,2679,1710,1024\r\n\
                    2026-11-25,PROJECT ONLINE DESKTOP CLIENT,120,88,0\r\n";
    assert_eq!(body, expected.as_bytes());
    assert!(body.starts_with(b"\xEF\xBB\xBF"));

    // The link can be fetched again while valid; a new product list shows up at once.
    fake.set_products(
        TENANT,
        date(),
        vec![FakeProduct::new("Visio Online Plan 2", 5, 4, 3)],
    );
    let body = client
        .get(&loc)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body.ends_with(b"\r\n2026-11-25,VISIO ONLINE PLAN 2,5,4,3\r\n"));

    let stats = fake.stats(TENANT);
    assert_eq!(stats.download_requests, 2);
    assert!(stats.download_authorization_headers.is_empty());
}

#[tokio::test]
async fn download_link_must_be_kept_byte_for_byte() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    let url = reqwest::Url::parse(&loc).unwrap();

    // Query dropped.
    let mut no_query = url.clone();
    no_query.set_query(None);
    let resp = client.get(no_query).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/xml");
    let body = resp.text().await.unwrap();
    assert!(body.starts_with("<?xml"), "{body}");
    assert!(body.contains("<Code>ResourceNotFound</Code>"), "{body}");

    // Query decoded once: the signature's %2B turned into '+', which means a space.
    if loc.contains("%2B") {
        let decoded = loc.replace("%2B", "+");
        let resp = client.get(&decoded).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{decoded}");
    }
    // Signature altered.
    let resp = client.get(format!("{loc}x")).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // Unknown link.
    let resp = client
        .get(format!(
            "{}/data/download/nope?sig=x",
            fake.download_origin()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Intact link still works.
    assert_eq!(client.get(&loc).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn authorization_reaching_the_download_host_is_recorded() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    let resp = client.get(&loc).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A mangled link with the token is still attributed, through the token.
    let resp = client
        .get(format!("{}/data/download/", fake.download_origin()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let stats = fake.stats(TENANT);
    assert_eq!(
        stats.download_authorization_headers,
        vec![format!("Bearer {token}"); 2]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_link_gives_403_blob_xml() {
    let _clock = FrozenClock::new();
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(client.get(&loc).send().await.unwrap().status(), 200);
    tokio::time::advance(Duration::from_secs(2)).await;
    let resp = client.get(&loc).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/xml");
    let body = resp.text().await.unwrap();
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>"), "{body}");
    assert!(body.ends_with("</Error>"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn throttle_answers_429_then_recovers() {
    let _clock = FrozenClock::new();
    let opts = FakeGraphOptions {
        throttle_limit: 3,
        throttle_window: Duration::from_secs(600),
        ..options()
    };
    let (fake, client) = start(opts).await;
    let token = get_token(&fake, &client).await;
    for _ in 0..3 {
        assert_eq!(
            report(&fake, &client, &token, REPORT_PATH).await.status(),
            302
        );
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert!(retry_after >= 565, "{retry_after}"); // first slot frees 600 s after the first request
    let (_, code, message) = graph_error(resp).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("TooManyRequests", "Please retry again later.")
    );

    tokio::time::advance(Duration::from_secs(retry_after)).await;
    assert_eq!(
        report(&fake, &client, &token, REPORT_PATH).await.status(),
        302
    );
    assert_eq!(
        report(&fake, &client, &token, REPORT_PATH).await.status(),
        429
    );

    let stats = fake.stats(TENANT);
    assert_eq!(stats.report_requests, 6);
    assert_eq!(stats.throttled_requests, 2);
}

#[tokio::test]
async fn canned_answers_are_fifo_and_override_everything() {
    let (fake, client) = start(options()).await;
    fake.push_token_response(
        TENANT,
        Canned::aadsts_error(
            400,
            "invalid_request",
            90033,
            "A transient error has occurred.",
        ),
    );
    let (s, _, j) = token_request(&fake, &client, TENANT, &good_form()).await;
    assert_aadsts(s, &j, 400, "invalid_request", 90033);
    let token = get_token(&fake, &client).await;

    fake.push_report_response(
        TENANT,
        Canned::graph_error(503, "ServiceUnavailable", "busy").retry_after("1.5"),
    );
    fake.push_report_response(TENANT, Canned::body(500, "text/html", "<html>oops</html>"));
    fake.push_report_response(TENANT, Canned::redirect("https://evil.invalid/steal?x=1"));

    let resp = client
        .get(format!("{}{REPORT_PATH}", fake.graph_endpoint()))
        .bearer_auth(&token)
        .header("client-request-id", "echo-me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1.5");
    assert_eq!(resp.headers()["client-request-id"], "echo-me");
    let (_, code, _) = graph_error(resp).await;
    assert_eq!(code, "ServiceUnavailable");

    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("request-id").is_some());
    assert_eq!(resp.text().await.unwrap(), "<html>oops</html>");

    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), "https://evil.invalid/steal?x=1");

    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with(&fake.download_origin()));

    fake.push_download_response(TENANT, Canned::body(200, "text/html", "<html>login</html>"));
    assert_eq!(
        client.get(&loc).send().await.unwrap().text().await.unwrap(),
        "<html>login</html>"
    );
    assert_eq!(client.get(&loc).send().await.unwrap().status(), 200);

    let stats = fake.stats(TENANT);
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.report_requests, 4);
    assert_eq!(stats.download_requests, 2);
    assert_eq!(stats.throttled_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn canned_delay_uses_tokio_time() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    fake.push_report_response(
        TENANT,
        Canned::graph_error(504, "GatewayTimeout", "slow").delayed(Duration::from_secs(120)),
    );
    let started = tokio::time::Instant::now();
    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() >= Duration::from_secs(120));
}

#[tokio::test]
async fn graph_refuses_bad_tokens_and_permissions() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;

    let resp = client
        .get(format!("{}{REPORT_PATH}", fake.graph_endpoint()))
        .send()
        .await
        .unwrap();
    let (s, code, msg) = graph_error(resp).await;
    assert_eq!(
        (s.as_u16(), code.as_str(), msg.as_str()),
        (401, "InvalidAuthenticationToken", "Access token is empty.")
    );

    let resp = report(&fake, &client, "not-a-token", REPORT_PATH).await;
    let (s, code, msg) = graph_error(resp).await;
    assert_eq!(
        (s.as_u16(), code.as_str(), msg.as_str()),
        (
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid."
        )
    );

    fake.revoke_tokens(TENANT);
    let resp = report(&fake, &client, &token, REPORT_PATH).await;
    let (s, code, msg) = graph_error(resp).await;
    assert_eq!(
        (s.as_u16(), code.as_str(), msg.as_str()),
        (
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid."
        )
    );
    let fresh = get_token(&fake, &client).await;
    assert_eq!(
        report(&fake, &client, &fresh, REPORT_PATH).await.status(),
        302
    );

    // A tenant whose app lacks Reports.Read.All still gets a token, then S2SUnauthorized.
    let (s, _, j) = token_request(
        &fake,
        &client,
        OTHER_TENANT,
        &[
            ("client_id", "dddddddd-0000-4000-8000-00000000000d"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            ("client_secret", "other-secret"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let resp = report(
        &fake,
        &client,
        j["access_token"].as_str().unwrap(),
        REPORT_PATH,
    )
    .await;
    let (s, code, msg) = graph_error(resp).await;
    assert_eq!(
        (s.as_u16(), code.as_str(), msg.as_str()),
        (401, "S2SUnauthorized", "Invalid scope claims/roles.")
    );

    let resp = report(
        &fake,
        &client,
        &fresh,
        "/v1.0/reports/getOffice365ActiveUserCounts(period='D7')",
    )
    .await;
    let (s, _, _) = graph_error(resp).await;
    assert_eq!(s, 404);
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_with_tokio_time() {
    let _clock = FrozenClock::new();
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    tokio::time::advance(Duration::from_secs(3598)).await;
    assert_eq!(
        report(&fake, &client, &token, REPORT_PATH).await.status(),
        302
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let (s, code, _) = graph_error(report(&fake, &client, &token, REPORT_PATH).await).await;
    assert_eq!(
        (s.as_u16(), code.as_str()),
        (401, "InvalidAuthenticationToken")
    );
}

#[tokio::test]
async fn json_format_only_on_beta() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let resp = report(
        &fake,
        &client,
        &token,
        &format!("{REPORT_PATH}?$format=application/json"),
    )
    .await;
    let (s, code, _) = graph_error(resp).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "BadRequest"));

    let resp = report(
        &fake,
        &client,
        &token,
        "/beta/reports/getOffice365ActivationsUserCounts()?%24format=application%2Fjson",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let rows = v["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["reportRefreshDate"], "2026-11-25");
    assert_eq!(rows[0]["productType"], "Microsoft 365 Apps for enterprise");
    assert_eq!(rows[0]["assigned"], 2679);
    assert_eq!(rows[0]["activated"], 1710);
    assert_eq!(rows[0]["sharedComputerActivation"], 1024);
    assert_eq!(rows[1]["productType"], "Project Online Desktop Client");

    // The CSV form still works on beta.
    let resp = report(
        &fake,
        &client,
        &token,
        "/beta/reports/getOffice365ActivationsUserCounts",
    )
    .await;
    assert_eq!(resp.status(), 302);
}

#[tokio::test]
async fn report_body_override_and_header_only_csv() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    fake.set_report_body(TENANT, Some(Bytes::from_static(b"<html>not a csv</html>")));
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    let resp = client.get(&loc).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "<html>not a csv</html>");

    fake.set_report_body(TENANT, None);
    fake.set_products(TENANT, date(), vec![]);
    let body = client
        .get(&loc)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        body,
        "\u{FEFF}Report Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n".as_bytes()
    );
}

#[tokio::test]
async fn download_delay_sends_headers_before_the_body() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let loc = location(&report(&fake, &client, &token, REPORT_PATH).await);
    // A first download opens the connection, so the timed one measures only the delay.
    assert_eq!(client.get(&loc).send().await.unwrap().status(), 200);
    let delay = Duration::from_secs(2);
    fake.set_download_delay(TENANT, delay);
    let started = std::time::Instant::now();
    let resp = client.get(&loc).send().await.unwrap();
    let headers_after = started.elapsed();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let body_after = started.elapsed();
    assert!(headers_after < delay, "headers took {headers_after:?}");
    assert!(body_after >= delay, "body took {body_after:?}");
    assert!(body.starts_with(b"\xEF\xBB\xBF"));
}

#[tokio::test]
async fn http2_is_negotiated() {
    let (fake, client) = start(options()).await;
    let resp = client
        .post(format!(
            "{}/{TENANT}/oauth2/v2.0/token",
            fake.authority_host()
        ))
        .form(&good_form())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let http1 = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .build()
        .unwrap();
    let resp = http1
        .post(format!(
            "{}/{TENANT}/oauth2/v2.0/token",
            fake.authority_host()
        ))
        .form(&good_form())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn untrusting_clients_are_refused() {
    let (fake, _) = start(options()).await;
    let stranger = Client::builder().build().unwrap();
    assert!(stranger.get(fake.graph_endpoint()).send().await.is_err());
}

#[tokio::test]
async fn demo_tenants_serve_their_products() {
    let (fake, client) = start(FakeGraphOptions::demo()).await;
    for (i, &(name, tenant_id, client_id, secret)) in DEMO_TENANTS.iter().enumerate() {
        let (s, _, j) = token_request(
            &fake,
            &client,
            tenant_id,
            &[
                ("client_id", client_id),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
                ("client_secret", secret),
            ],
        )
        .await;
        assert_eq!(s, 200, "{name}: {j}");
        let token = j["access_token"].as_str().unwrap();
        let loc = location(&report(&fake, &client, token, REPORT_PATH).await);
        let body = client.get(&loc).send().await.unwrap().text().await.unwrap();
        let rows = body.trim_end().split("\r\n").count() - 1;
        assert_eq!(rows, [5, 3][i], "{name}: {body}");
    }
    assert_eq!(FakeGraphOptions::demo().throttle_limit, 14);
}

#[tokio::test]
async fn shutdown_and_drop_close_the_listeners() {
    let (fake, client) = start(options()).await;
    let graph = fake.graph_endpoint();
    get_token(&fake, &client).await;
    fake.shutdown().await;
    let fresh = Client::builder().build().unwrap();
    assert!(fresh.get(&graph).send().await.is_err());

    let (fake, _) = start(options()).await;
    let login = fake.authority_host();
    drop(fake);
    tokio::task::yield_now().await;
    let addr = login.trim_start_matches("https://").to_string();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after drop");
}

#[tokio::test]
async fn duplicate_tenants_are_rejected() {
    let opts = FakeGraphOptions {
        tenants: vec![tenant(), tenant()],
        ..FakeGraphOptions::default()
    };
    let err = FakeGraph::start(opts).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
#[should_panic(expected = "unknown tenant id")]
async fn knobs_panic_on_unknown_tenants() {
    let (fake, _) = start(options()).await;
    fake.push_report_response("typo", Canned::body(500, "text/plain", "x"));
}

#[tokio::test]
async fn download_host_also_answers_on_ipv6_loopback() {
    if tokio::net::TcpListener::bind("[::1]:0").await.is_err() {
        return; // no IPv6 loopback here: the fake then serves 127.0.0.1 only, by design
    }
    let (fake, client) = start(options()).await;
    let port = reqwest::Url::parse(&fake.download_origin())
        .unwrap()
        .port()
        .unwrap();
    let resp = client
        .get(format!("https://[::1]:{port}/data/download/unknown?sig=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn garbage_on_the_wire_gets_a_400_not_a_panic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (fake, client) = start(options()).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = fake.ca_pem();
    let der = ca
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    roots
        .add(rustls::pki_types::CertificateDer::from(decode_base64(&der)))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    for host in [
        fake.authority_host(),
        fake.graph_endpoint(),
        fake.download_origin(),
    ] {
        let addr = host
            .trim_start_matches("https://")
            .replace("localhost", "127.0.0.1");
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /\x01\x02 HTTP/1.1\r\nHost: \xff\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{host}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Odd but well-formed HTTP: a non-UTF-8 Authorization header.
    let resp = client
        .get(format!("{}{REPORT_PATH}", fake.graph_endpoint()))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    get_token(&fake, &client).await;
}

/// Minimal standard base64 decoder for the test's PEM parsing.
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
