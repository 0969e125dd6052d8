//! End-to-end tests of the three report views (user counts, activation counts, user detail):
//! paths, CSV and JSON per report, paging, per-report throttle, canned answers, knobs and stats.

use super::*;

/// The path of `report` under `version`, as SDKs and the exporter send it.
fn path(version: &str, report: FakeReport) -> String {
    format!("/{version}/reports/{}", report.api_name())
}

/// The beta JSON path of `report`.
fn json_path(report: FakeReport) -> String {
    format!("{}?$format=application/json", path("beta", report))
}

/// The body of a download of `loc`, checked to be a CSV attachment named for `report`.
async fn download_csv(client: &Client, loc: &str, report: FakeReport) -> String {
    let resp = client.get(loc).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{report:?}");
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        resp.headers()["content-disposition"],
        format!("attachment; filename=\"{}\"", report.file_name()).as_str()
    );
    let body = resp.bytes().await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A JSON answer's body.
async fn json(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// Follows the user detail's JSON pages from `first` (a path on the Graph host); returns the
/// pages.
async fn all_pages(fake: &FakeGraph, client: &Client, token: &str, first: &str) -> Vec<Value> {
    let mut pages = vec![json(report(fake, client, token, first).await).await];
    while let Some(next) = pages.last().unwrap()["@odata.nextLink"].as_str() {
        assert!(
            next.starts_with(&format!(
                "{}/beta/reports/getOffice365ActivationsUserDetail?",
                fake.graph_endpoint()
            )),
            "{next}"
        );
        let resp = client.get(next).bearer_auth(token).send().await.unwrap();
        pages.push(json(resp).await);
        assert!(pages.len() < 1000, "nextLink loop");
    }
    pages
}

/// The UPNs of every page, in order.
fn upns(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .map(|u| u["userPrincipalName"].as_str().unwrap().to_string())
        .collect()
}

/// CSV data lines (after the header), without the BOM and line endings.
fn data_lines(csv: &str) -> Vec<&str> {
    csv.trim_end_matches("\r\n").split("\r\n").skip(1).collect()
}

#[tokio::test]
async fn every_report_answers_every_path_form() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    for report in FakeReport::ALL {
        let name = report.api_name();
        let forms = [
            format!("/v1.0/reports/{name}"),
            format!("/v1.0/reports/{name}()"),
            format!("/v1.0/reports/{name}%28%29"),
            format!("/beta/reports/{}", name.to_ascii_lowercase()),
            format!("/beta/reports/{}()", name.to_ascii_uppercase()),
            format!("/V1.0/Reports/{name}%28%29"),
        ];
        for form in &forms {
            let resp = report_request(&fake, &client, &token, form).await;
            assert_eq!(resp.status(), StatusCode::FOUND, "{form}");
            assert_eq!(resp.headers()["content-type"], "text/plain");
            assert!(
                location(&resp).starts_with(&format!("{}/data/download/", fake.download_origin()))
            );
        }
        let stats = fake.stats(TENANT);
        assert_eq!(stats.report(report).report_paths, forms, "{report:?}");
        assert_eq!(stats.report(report).report_requests, forms.len() as u64);
    }
    // The top-level fields are the user counts report's only.
    let stats = fake.stats(TENANT);
    assert_eq!(stats.report_requests, 6);
    assert_eq!(
        stats.report_paths,
        stats.report(FakeReport::UserCounts).report_paths
    );
    assert_eq!(stats.user_agents.len(), 6);
    assert_eq!(stats.reports.len(), 3);

    // Near misses are 404s that count nowhere.
    for bad in [
        "/v1.0/reports/getOffice365ActivationCounts()()",
        "/v1.0/reports/getOffice365ActivationUserDetail",
        "/v1.0/getOffice365ActivationCounts",
    ] {
        let (s, code, _) = graph_error(report_request(&fake, &client, &token, bad).await).await;
        assert_eq!(
            (s.as_u16(), code.as_str()),
            (404, "ResourceNotFound"),
            "{bad}"
        );
    }
    let stats = fake.stats(TENANT);
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).report_requests),
        [6, 6, 6]
    );
}

/// `report` under another name, so the per-report test reads clearly.
async fn report_request(
    fake: &FakeGraph,
    client: &Client,
    token: &str,
    path: &str,
) -> reqwest::Response {
    report(fake, client, token, path).await
}

#[tokio::test]
async fn each_download_serves_its_reports_csv() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let mut bodies = Vec::new();
    for report in FakeReport::ALL {
        let loc = location(&report_request(&fake, &client, &token, &path("v1.0", report)).await);
        let csv = download_csv(&client, &loc, report).await;
        let text = csv.strip_prefix('\u{FEFF}').expect("BOM");
        assert!(text.starts_with(&format!("{}\r\n", report.csv_header())));
        assert!(text.ends_with("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
        bodies.push(csv);
    }
    assert_eq!(
        data_lines(&bodies[0]),
        [
            "2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,2679,1710,1024",
            "2026-11-25,PROJECT ONLINE DESKTOP CLIENT,120,88,0"
        ]
    );
    assert_eq!(
        data_lines(&bodies[1]),
        [
            "2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,2565,213,427,570,17",
            "2026-11-25,PROJECT ONLINE DESKTOP CLIENT,132,11,22,29,0"
        ]
    );
    // The derived user detail: 300 listed users, 420 rows (see `derived_users`).
    let lines = data_lines(&bodies[2]);
    assert_eq!(lines.len(), 420);
    assert_eq!(
        lines[0],
        "2026-11-25,user0000@fake.example,User 0000,MICROSOFT 365 APPS FOR ENTERPRISE,2026-11-25,1,0,0,0,0,True"
    );
    let stats = fake.stats(TENANT);
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).download_requests),
        [1, 1, 1]
    );
    assert_eq!(stats.download_requests, 1, "top level: user counts only");
}

#[tokio::test]
async fn json_of_each_report_is_beta_only() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    for report in FakeReport::ALL {
        let v1 = format!("{}?$format=application/json", path("v1.0", report));
        let (s, code, _) = graph_error(report_request(&fake, &client, &token, &v1).await).await;
        assert_eq!(
            (s.as_u16(), code.as_str()),
            (400, "BadRequest"),
            "{report:?}"
        );
        let v = json(report_request(&fake, &client, &token, &json_path(report)).await).await;
        assert_eq!(
            v["@odata.context"],
            format!(
                "{}/beta/$metadata#Collection(microsoft.graph.{}{})",
                fake.graph_endpoint(),
                report.api_name()[3..4].to_ascii_lowercase(),
                &report.api_name()[4..]
            )
            .as_str()
        );
        // 300 derived users make two pages of the user detail; the others have one.
        let paged = report == FakeReport::UserDetail;
        assert_eq!(v.get("@odata.nextLink").is_some(), paged, "{report:?}");
    }
    let v = json(
        report_request(
            &fake,
            &client,
            &token,
            "/beta/reports/getOffice365ActivationCounts()?%24format=application%2Fjson",
        )
        .await,
    )
    .await;
    assert_eq!(
        v["value"][0],
        serde_json::json!({
            "reportRefreshDate": "2026-11-25",
            "productType": "Microsoft 365 Apps for enterprise",
            "windows": 2565, "mac": 213, "android": 427, "ios": 570, "windows10Mobile": 17
        })
    );
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    let v = json(report_request(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await)
        .await;
    let user = &v["value"][3];
    assert_eq!(user["userPrincipalName"], "user0003@fake.example");
    assert_eq!(user["reportRefreshDate"], "2026-11-25");
    assert_eq!(
        user["userActivationCounts"][0],
        serde_json::json!({
            "productType": "Microsoft 365 Apps for enterprise",
            "lastActivatedDate": "2026-10-17",
            "windows": 3, "mac": 1, "windows10Mobile": 0, "ios": 0, "android": 1,
            "activatedOnSharedComputer": true
        })
    );
    assert_eq!(
        user["userActivationCounts"][1]["productType"],
        "Project Online Desktop Client"
    );
    assert!(v["value"][250]["userActivationCounts"][0]["lastActivatedDate"].is_null());
}

#[tokio::test]
async fn user_detail_json_is_paged_by_next_links() {
    // Default page size: 200 users, so 300 users make 2 pages.
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let pages = all_pages(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await;
    assert_eq!(
        pages
            .iter()
            .map(|p| p["value"].as_array().unwrap().len())
            .collect::<Vec<_>>(),
        [200, 100]
    );

    // A page size of 7: 43 pages, every user exactly once and in order, each page a request.
    let (fake, client) = start(FakeGraphOptions {
        json_page_size: 7,
        ..options()
    })
    .await;
    let token = get_token(&fake, &client).await;
    let pages = all_pages(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await;
    assert_eq!(pages.len(), 300usize.div_ceil(7));
    assert!(pages[..pages.len() - 1]
        .iter()
        .all(|p| p["@odata.nextLink"].is_string() && p["value"].as_array().unwrap().len() == 7));
    let expected: Vec<String> = (0..300)
        .map(|j| format!("user{j:04}@fake.example"))
        .collect();
    assert_eq!(upns(&pages), expected);
    let stats = fake.stats(TENANT);
    let detail = stats.report(FakeReport::UserDetail);
    assert_eq!(detail.report_requests, pages.len() as u64);
    assert!(
        detail.report_paths[1].contains("$skiptoken="),
        "{:?}",
        detail.report_paths
    );
    assert_eq!(stats.report_requests, 0, "user counts untouched");

    // `$top` sets the page size, and the next links keep it.
    let first = format!("{}&$top=120", json_path(FakeReport::UserDetail));
    let pages = all_pages(&fake, &client, &token, &first).await;
    assert_eq!(pages.len(), 3);
    assert!(pages[0]["@odata.nextLink"]
        .as_str()
        .unwrap()
        .contains("&$top=120&"));
    assert_eq!(upns(&pages), expected);

    // Malformed paging options are refused (and cost no budget).
    for bad in ["$skiptoken=garbage", "$top=0", "$top=many", "$skipToken="] {
        let p = format!("{}&{bad}", json_path(FakeReport::UserDetail));
        let (s, code, _) = graph_error(report_request(&fake, &client, &token, &p).await).await;
        assert_eq!((s.as_u16(), code.as_str()), (400, "BadRequest"), "{bad}");
    }
    // The same options on a CSV request or another report are ignored.
    let p = format!("{}?$top=0", path("v1.0", FakeReport::UserDetail));
    assert_eq!(
        report_request(&fake, &client, &token, &p).await.status(),
        302
    );
    let p = format!("{}&$top=0", json_path(FakeReport::ActivationCounts));
    assert_eq!(
        report_request(&fake, &client, &token, &p).await.status(),
        200
    );

    // An empty user list is one empty page.
    fake.set_users(TENANT, vec![]);
    let pages = all_pages(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["value"], serde_json::json!([]));
}

#[tokio::test(start_paused = true)]
async fn throttle_counts_each_report_and_format_separately() {
    let _clock = FrozenClock::new();
    let opts = FakeGraphOptions {
        throttle_limit: 2, // JSON: ceil(2 * 100 / 14) = 15
        json_page_size: 10,
        ..options()
    };
    let (fake, client) = start(opts).await;
    let token = get_token(&fake, &client).await;
    for report in FakeReport::ALL {
        for _ in 0..2 {
            let resp = report_request(&fake, &client, &token, &path("v1.0", report)).await;
            assert_eq!(resp.status(), 302, "{report:?}");
        }
        let resp = report_request(&fake, &client, &token, &path("beta", report)).await;
        assert_eq!(resp.status(), 429, "{report:?}");
        assert!(resp.headers().get("retry-after").is_some());
    }
    // JSON has its own budget per report; each page of the user detail draws from it.
    let mut next = Some(format!(
        "{}{}",
        fake.graph_endpoint(),
        json_path(FakeReport::UserDetail)
    ));
    let mut served = 0;
    while let Some(url) = next.take() {
        let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
        if resp.status() == 429 {
            break;
        }
        served += 1;
        next = json(resp).await["@odata.nextLink"]
            .as_str()
            .map(str::to_string);
    }
    assert_eq!(served, 15);
    let resp = report_request(
        &fake,
        &client,
        &token,
        &json_path(FakeReport::ActivationCounts),
    )
    .await;
    assert_eq!(
        resp.status(),
        200,
        "another report's JSON budget is untouched"
    );

    let stats = fake.stats(TENANT);
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).throttled_requests),
        [1, 1, 2]
    );
    assert_eq!(stats.throttled_requests, 1, "top level: user counts only");

    // The window slides per report too.
    tokio::time::advance(Duration::from_secs(600)).await;
    for report in FakeReport::ALL {
        let resp = report_request(&fake, &client, &token, &path("v1.0", report)).await;
        assert_eq!(resp.status(), 302, "{report:?}");
    }
}

#[tokio::test]
async fn canned_answers_are_queued_per_report() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    fake.push_report_response_for(
        FakeReport::ActivationCounts,
        TENANT,
        Canned::graph_error(503, "ServiceUnavailable", "busy").retry_after("7"),
    );
    fake.push_report_response(TENANT, Canned::body(500, "text/html", "<html>uc</html>"));
    let uc = path("v1.0", FakeReport::UserCounts);
    let ac = path("v1.0", FakeReport::ActivationCounts);
    let ud = path("v1.0", FakeReport::UserDetail);
    assert_eq!(
        report_request(&fake, &client, &token, &ud).await.status(),
        302
    );
    assert_eq!(
        report_request(&fake, &client, &token, &uc).await.status(),
        500
    );
    let resp = report_request(&fake, &client, &token, &ac).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        report_request(&fake, &client, &token, &ac).await.status(),
        302
    );
    assert_eq!(
        report_request(&fake, &client, &token, &uc).await.status(),
        302
    );

    // Downloads: each report's queue serves only its links.
    fake.push_download_response_for(
        FakeReport::UserDetail,
        TENANT,
        Canned::body(200, "text/html", "<html>sign in</html>"),
    );
    let uc_link = location(&report_request(&fake, &client, &token, &uc).await);
    let ud_link = location(&report_request(&fake, &client, &token, &ud).await);
    let body = download_csv(&client, &uc_link, FakeReport::UserCounts).await;
    assert!(body.starts_with('\u{FEFF}'));
    let resp = client.get(&ud_link).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "<html>sign in</html>");
    download_csv(&client, &ud_link, FakeReport::UserDetail).await;

    // Scripted user detail pages: a page whose nextLink points at itself, twice, then a
    // truncated page, then the real first page.
    let first = format!(
        "{}{}",
        fake.graph_endpoint(),
        json_path(FakeReport::UserDetail)
    );
    let looping = format!(
        r#"{{"value":[{{"userPrincipalName":"loop@x.example","userActivationCounts":[]}}],"@odata.nextLink":"{first}"}}"#
    );
    fake.push_report_response_for(
        FakeReport::UserDetail,
        TENANT,
        Canned::json(looping.clone()),
    );
    fake.push_report_response_for(FakeReport::UserDetail, TENANT, Canned::json(looping));
    fake.push_report_response_for(
        FakeReport::UserDetail,
        TENANT,
        Canned::json(r#"{"value":[{"userPr"#),
    );
    let mut url = first.clone();
    for _ in 0..2 {
        let v = json(client.get(&url).bearer_auth(&token).send().await.unwrap()).await;
        assert_eq!(v["value"][0]["userPrincipalName"], "loop@x.example");
        url = v["@odata.nextLink"].as_str().unwrap().to_string();
        assert_eq!(url, first);
    }
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());
    let v = json(client.get(&url).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(v["value"][0]["userPrincipalName"], "user0000@fake.example");

    let stats = fake.stats(TENANT);
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).report_requests),
        [3, 2, 6]
    );
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).download_requests),
        [1, 0, 2]
    );
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).throttled_requests),
        [0; 3]
    );
}

#[tokio::test(start_paused = true)]
async fn stats_record_request_times_per_report() {
    let _clock = FrozenClock::new();
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    let t0 = tokio::time::Instant::now();
    for (i, report) in FakeReport::ALL.into_iter().enumerate() {
        tokio::time::advance(Duration::from_secs(10)).await;
        report_request(&fake, &client, &token, &path("v1.0", report)).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let p = format!("{}&client=x", json_path(report));
        let resp = client
            .get(format!("{}{p}", fake.graph_endpoint()))
            .bearer_auth(&token)
            .header("client-request-id", format!("id-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let stats = fake.stats(TENANT);
    for (i, report) in FakeReport::ALL.into_iter().enumerate() {
        let r = stats.report(report);
        let offsets: Vec<u64> = r
            .request_times
            .iter()
            .map(|t| t.duration_since(t0).as_secs())
            .collect();
        let base = 15 * i as u64;
        assert_eq!(offsets, [base + 10, base + 15], "{report:?}");
        assert_eq!(r.client_request_ids, [None, Some(format!("id-{i}"))]);
        assert_eq!(r.report_paths.len(), 2);
    }
    assert_eq!(
        stats.report_client_request_ids,
        [None, Some("id-0".to_string())]
    );
}

#[tokio::test]
async fn authorization_headers_are_collected_from_every_reports_downloads() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    for report in FakeReport::ALL {
        let loc = location(&report_request(&fake, &client, &token, &path("v1.0", report)).await);
        let resp = client.get(&loc).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // A path that is no link, after a user detail download on the same connection, counts for
    // the user detail.
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
        vec![format!("Bearer {token}"); 4]
    );
    assert_eq!(
        FakeReport::ALL.map(|r| stats.report(r).download_requests),
        [1, 1, 2]
    );
}

#[tokio::test]
async fn body_and_data_knobs_are_per_report() {
    let (fake, client) = start(options()).await;
    let token = get_token(&fake, &client).await;
    fake.set_report_body_for(
        FakeReport::ActivationCounts,
        TENANT,
        Some(Bytes::from_static(b"<html>no</html>")),
    );
    fake.set_report_body(TENANT, Some(Bytes::from_static(b"uc")));
    let mut links = Vec::new();
    for report in FakeReport::ALL {
        links.push(location(
            &report_request(&fake, &client, &token, &path("v1.0", report)).await,
        ));
    }
    assert_eq!(
        download_csv(&client, &links[0], FakeReport::UserCounts).await,
        "uc"
    );
    assert_eq!(
        download_csv(&client, &links[1], FakeReport::ActivationCounts).await,
        "<html>no</html>"
    );
    assert!(download_csv(&client, &links[2], FakeReport::UserDetail)
        .await
        .starts_with('\u{FEFF}'));
    fake.set_report_body_for(FakeReport::ActivationCounts, TENANT, None);
    fake.set_report_body(TENANT, None);

    let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    fake.set_activation_counts(
        TENANT,
        vec![FakePlatformCounts::new(
            "VISIO ONLINE PLAN 2",
            9,
            8,
            7,
            6,
            5,
        )],
    );
    fake.set_users(
        TENANT,
        vec![
            FakeUser::new("ann@x.example", "Ann, Lee")
                .with_product(
                    FakeUserProduct::new("MICROSOFT 365 APPS FOR ENTERPRISE")
                        .activated_on(date)
                        .devices(4, 1, 0, 2, 1)
                        .shared_computer(true),
                )
                .with_product(FakeUserProduct::new("VISIO ONLINE PLAN 2")),
            FakeUser::new("bob@x.example", "Bob"),
        ],
    );
    // Explicit lists outlive a change of products.
    fake.set_products(TENANT, date, vec![]);
    assert_eq!(
        data_lines(&download_csv(&client, &links[1], FakeReport::ActivationCounts).await),
        ["2026-11-25,VISIO ONLINE PLAN 2,9,8,7,6,5"]
    );
    assert_eq!(
        data_lines(&download_csv(&client, &links[2], FakeReport::UserDetail).await),
        [
            "2026-11-25,ann@x.example,\"Ann, Lee\",MICROSOFT 365 APPS FOR ENTERPRISE,2026-11-25,4,1,0,2,1,True",
            "2026-11-25,ann@x.example,\"Ann, Lee\",VISIO ONLINE PLAN 2,,0,0,0,0,0,False",
        ]
    );
    let v = json(report_request(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await)
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    assert_eq!(v["value"][1]["userActivationCounts"], serde_json::json!([]));
    assert!(data_lines(&download_csv(&client, &links[0], FakeReport::UserCounts).await).is_empty());
}

#[tokio::test]
async fn national_clouds_serve_every_report_on_beta_only() {
    let (fake, _) = start(FakeGraphOptions {
        json_page_size: 100,
        ..options()
    })
    .await;
    let mut builder = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none());
    for (host, address) in fake.cloud_resolve_overrides() {
        builder = builder.resolve(&host, address);
    }
    let client = builder.build().unwrap();
    let resp = client
        .post(format!(
            "https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token"
        ))
        .form(&[
            ("client_id", CLIENT),
            ("scope", "https://graph.microsoft.us/.default"),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let token = v["access_token"].as_str().unwrap().to_string();
    let get = |p: String| {
        client
            .get(format!("https://graph.microsoft.us{p}"))
            .bearer_auth(&token)
            .send()
    };
    for report in FakeReport::ALL {
        let (s, code, message) = graph_error(get(path("v1.0", report)).await.unwrap()).await;
        assert_eq!((s.as_u16(), code.as_str()), (400, "BadRequest"));
        assert_eq!(
            message,
            format!(
                "Resource not found for the segment '{}'.",
                report.api_name()
            )
        );
        assert_eq!(get(path("beta", report)).await.unwrap().status(), 302);
    }
    // The next link names the host the client used.
    let v = json(get(json_path(FakeReport::UserDetail)).await.unwrap()).await;
    let next = v["@odata.nextLink"].as_str().unwrap().to_string();
    assert!(
        next.starts_with(
            "https://graph.microsoft.us/beta/reports/getOffice365ActivationsUserDetail?"
        ),
        "{next}"
    );
    let v = json(client.get(&next).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(v["value"][0]["userPrincipalName"], "user0100@fake.example");
}

#[tokio::test]
async fn demo_tenants_serve_every_report() {
    let (fake, client) = start(FakeGraphOptions::demo()).await;
    let (_, tenant_id, client_id, secret) = DEMO_TENANTS[0];
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
    assert_eq!(s, 200);
    let token = j["access_token"].as_str().unwrap().to_string();
    let loc = location(
        &report_request(
            &fake,
            &client,
            &token,
            &path("v1.0", FakeReport::ActivationCounts),
        )
        .await,
    );
    let csv = download_csv(&client, &loc, FakeReport::ActivationCounts).await;
    assert_eq!(data_lines(&csv).len(), 5);

    let loc = location(
        &report_request(
            &fake,
            &client,
            &token,
            &path("v1.0", FakeReport::UserDetail),
        )
        .await,
    );
    let started = std::time::Instant::now();
    let csv = download_csv(&client, &loc, FakeReport::UserDetail).await;
    let elapsed = started.elapsed();
    let rows = data_lines(&csv);
    let users: std::collections::HashSet<&str> =
        rows.iter().map(|l| l.split(',').nth(1).unwrap()).collect();
    assert!((2_000..=6_000).contains(&users.len()), "{}", users.len());
    // The last six fields have no commas: windows, mac, w10m, ios, android, shared (reversed).
    let at_limit = rows
        .iter()
        .filter(|l| {
            let tail: Vec<u64> = l
                .rsplit(',')
                .skip(1)
                .take(5)
                .map(|f| f.parse().unwrap())
                .collect();
            tail[3] + tail[4] >= 5
        })
        .count();
    assert!(at_limit > 0, "someone at the install limit");
    assert!(
        elapsed < Duration::from_secs(5),
        "{elapsed:?} for {} rows",
        rows.len()
    );

    let pages = all_pages(&fake, &client, &token, &json_path(FakeReport::UserDetail)).await;
    let listed = upns(&pages);
    let unique: std::collections::HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "every user once");
    assert_eq!(pages.len(), listed.len().div_ceil(200));
    assert!(listed[42].ends_with("@contoso.example"), "{}", listed[42]);
    let stats = fake.stats(tenant_id);
    assert_eq!(
        stats.report(FakeReport::UserDetail).report_requests,
        1 + pages.len() as u64
    );
}
