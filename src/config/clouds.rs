//! National clouds and the endpoint settings (Graph, Entra ID, API version, format, scope),
//! resolved over flags, file and tenant, the most specific level first.

use super::*;

/// A Microsoft cloud: its Graph endpoint, Entra ID host and report API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// The global (commercial) cloud: graph.microsoft.com, login.microsoftonline.com.
    Global,
    /// US Government L4 (GCC High): graph.microsoft.us, login.microsoftonline.us.
    Usgov,
    /// US Government L5 (DoD): dod-graph.microsoft.us, login.microsoftonline.us.
    UsgovDod,
    /// China, operated by 21Vianet: microsoftgraph.chinacloudapi.cn, login.chinacloudapi.cn.
    China,
}

impl Cloud {
    /// Every cloud.
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China];

    /// The name `--cloud` and the config file take.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::UsgovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }

    /// The Graph endpoint.
    pub fn graph_endpoint(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::UsgovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The Entra ID host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The report's API version: national clouds have only the beta report.
    pub fn api_version(self) -> &'static str {
        match self {
            Cloud::Global => "v1.0",
            _ => "beta",
        }
    }
}

/// A value and the flag or file key it came from (for error messages).
pub(super) type Named = Option<(String, String)>;

pub(super) fn named(value: &Option<String>, name: impl Into<String>) -> Named {
    value.as_ref().map(|v| (v.clone(), name.into()))
}

/// The cloud settings given at one level (flags, file, tenant). At resolution the most specific
/// level that says anything about a setting wins, and within a level an explicit key beats the
/// level's `cloud`.
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) cloud: Option<Cloud>,
    pub(super) graph_endpoint: Named,
    pub(super) authority_host: Named,
    pub(super) api_version: Named,
    pub(super) graph_format: Option<(ReportFormat, String)>,
    pub(super) scope: Named,
}

/// Where a tenant's report and tokens come from.
#[derive(Debug)]
pub(super) struct Endpoints {
    pub(super) graph_endpoint: Url,
    pub(super) authority_host: Url,
    pub(super) api_version: String,
    pub(super) report_format: ReportFormat,
    pub(super) scope: String,
}

/// Resolves the cloud settings over `layers`, most specific first.
pub(super) fn endpoints(layers: &[&Layer]) -> Result<Endpoints, ConfigError> {
    fn pick(
        layers: &[&Layer],
        key: fn(&Layer) -> &Named,
        preset: fn(Cloud) -> &'static str,
    ) -> (String, String) {
        for layer in layers {
            if let Some(given) = key(layer) {
                return given.clone();
            }
            if let Some(cloud) = layer.cloud {
                return (preset(cloud).to_owned(), format!("--cloud {cloud:?}"));
            }
        }
        (preset(Cloud::Global).to_owned(), "the default".to_owned())
    }
    let (graph, graph_name) = pick(layers, |l| &l.graph_endpoint, Cloud::graph_endpoint);
    let graph_endpoint = parse_url(&graph, &graph_name)?;
    let (authority, authority_name) = pick(layers, |l| &l.authority_host, Cloud::authority_host);
    let authority_host = parse_url(&authority, &authority_name)?;
    let (version, version_name) = pick(layers, |l| &l.api_version, Cloud::api_version);
    let api_version = check_api_version(&version, &version_name)?;
    let (report_format, format_name) = layers
        .iter()
        .find_map(|l| l.graph_format.clone())
        .unwrap_or((ReportFormat::Csv, String::new()));
    if report_format == ReportFormat::Json && api_version != "beta" {
        return err(format!(
            "{format_name}: the JSON report exists only on beta: set the API version to beta (national clouds default to it)"
        ));
    }
    let scope = match layers.iter().find_map(|l| l.scope.clone()) {
        Some((scope, name)) => {
            let scope = scope.trim().to_owned();
            if !scope.ends_with("/.default") || scope.len() <= "/.default".len() {
                return err(format!(
                    "{name}: {scope:?} must be a resource followed by /.default (the client credentials flow only takes .default scopes)"
                ));
            }
            scope
        }
        None => format!("{}/.default", graph_endpoint.as_str().trim_end_matches('/')),
    };
    let national = [
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    ];
    if api_version == "v1.0"
        && graph_endpoint
            .host_str()
            .is_some_and(|h| national.contains(&h))
    {
        tracing::warn!(graph_endpoint = %graph_endpoint, "National clouds only have the beta report; v1.0 answers 400 there");
    }
    Ok(Endpoints {
        graph_endpoint,
        authority_host,
        api_version,
        report_format,
        scope,
    })
}
