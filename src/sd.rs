//! `GET /sd`: Prometheus HTTP service discovery (`http_sd_configs`) of this process's tenants.
//!
//! One target group per tenant this process owns (this shard's), whose target is the tenant name
//! and whose labels are `__meta_` labels (a user relabels on them; they never clash with the
//! `tenant` label of the scraped series): the tenant, its cloud, the exporter address to scrape
//! (`--web.sd-address`) and the shard. With `metrics_path: /probe` and the relabelling in the
//! README, each tenant becomes its own target: one failed scrape blanks one tenant, and
//! Prometheus servers can split the tenants with `hashmod` on `__param_target`.

use serde::Serialize;

use crate::config::Cloud;
use crate::shard::Shard;
use crate::tenant::Tenant;

/// One target group.
#[derive(Serialize)]
struct Group<'a> {
    /// The tenant name (becomes `__address__`, then `__param_target`).
    targets: [&'a str; 1],
    /// What a user relabels on.
    labels: Labels<'a>,
}

/// The labels of a target group.
#[derive(Serialize)]
struct Labels<'a> {
    /// The tenant name.
    #[serde(rename = "__meta_office365_tenant")]
    tenant: &'a str,
    /// `global`, `usgov`, `usgov-dod`, `china`, or `custom` for another Graph endpoint.
    #[serde(rename = "__meta_office365_cloud")]
    cloud: &'static str,
    /// The exporter's host:port, for `__address__`.
    #[serde(rename = "__meta_office365_exporter")]
    exporter: &'a str,
    /// The shard index of the process that owns the tenant.
    #[serde(rename = "__meta_office365_shard")]
    shard: String,
}

/// The cloud a Graph endpoint belongs to.
pub fn cloud_of(endpoint: &reqwest::Url) -> &'static str {
    Cloud::ALL
        .iter()
        .find(|cloud| {
            reqwest::Url::parse(cloud.graph_endpoint())
                .is_ok_and(|known| known.host_str() == endpoint.host_str())
        })
        .map_or("custom", |cloud| cloud.name())
}

/// The /sd body for `tenants`, advertising `address`.
pub fn render(tenants: &[std::sync::Arc<Tenant>], address: &str, shard: Shard) -> String {
    let groups: Vec<Group<'_>> = tenants
        .iter()
        .map(|t| Group {
            targets: [t.name()],
            labels: Labels {
                tenant: t.name(),
                cloud: cloud_of(&t.config().graph_endpoint),
                exporter: address,
                shard: shard.index.to_string(),
            },
        })
        .collect();
    serde_json::to_string(&groups).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_are_named_by_their_graph_host() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(cloud_of(&url("https://graph.microsoft.com")), "global");
        assert_eq!(cloud_of(&url("https://graph.microsoft.us/")), "usgov");
        assert_eq!(
            cloud_of(&url("https://dod-graph.microsoft.us")),
            "usgov-dod"
        );
        assert_eq!(
            cloud_of(&url("https://microsoftgraph.chinacloudapi.cn")),
            "china"
        );
        assert_eq!(cloud_of(&url("https://127.0.0.1:8443")), "custom");
    }
}
