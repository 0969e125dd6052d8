//! The two request and response headers the exporter reads numbers from: Graph's and Entra ID's
//! `Retry-After` (seconds, fractional seconds, or an HTTP date) and Prometheus's
//! `X-Prometheus-Scrape-Timeout-Seconds`. Never a panic, and both stay within their caps.
#![no_main]

use std::time::Duration;

use hyper::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::error::parse_retry_after;
use office365_activations_exporter::server::scrape_budget;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(wait) = parse_retry_after(&text) {
        assert!(wait <= Duration::from_secs(86_400), "{text:?}: {wait:?}");
    }
    let default = Duration::from_secs(10);
    let value = HeaderValue::from_bytes(data).ok();
    let budget = scrape_budget(value.as_ref(), default);
    assert!(budget <= Duration::from_secs(3600), "{text:?}: {budget:?}");
    if value.is_none() {
        assert_eq!(budget, scrape_budget(None, default));
    }
});
