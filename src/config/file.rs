//! The YAML file (`--config.file`): its keys and how its tenants are resolved.

use super::*;

/// The YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) tenants: Vec<FileTenant>,
    pub(super) cloud: Option<Cloud>,
    pub(super) graph_endpoint: Option<String>,
    pub(super) api_version: Option<String>,
    pub(super) graph_format: Option<ReportFormat>,
    pub(super) authority_host: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) auth_method: Option<AuthMethod>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) cache_ttl: Option<Duration>,
    pub(super) reports: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration_map")]
    pub(super) report_ttl: BTreeMap<String, Duration>,
}

/// One tenant in the YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTenant {
    pub(super) name: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) auth_method: Option<AuthMethod>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_certificate_path: Option<PathBuf>,
    pub(super) client_certificate_password_file: Option<PathBuf>,
    pub(super) client_certificate_send_chain: Option<bool>,
    pub(super) client_certificate_alg: Option<String>,
    pub(super) federated_token_file: Option<PathBuf>,
    pub(super) managed_identity_object_id: Option<String>,
    pub(super) managed_identity_resource_id: Option<String>,
    pub(super) cloud: Option<Cloud>,
    pub(super) graph_endpoint: Option<String>,
    pub(super) api_version: Option<String>,
    pub(super) graph_format: Option<ReportFormat>,
    pub(super) authority_host: Option<String>,
    pub(super) scope: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) cache_ttl: Option<Duration>,
    pub(super) reports: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration_map")]
    pub(super) report_ttl: BTreeMap<String, Duration>,
}

pub(super) fn de_duration_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Duration>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    map.into_iter()
        .map(|(name, text)| {
            parse_duration(&text)
                .map(|ttl| (name, ttl))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

pub(super) fn de_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

pub(super) fn tenants_from_file(
    path: &Path,
    flags: &Flags,
    flag_layers: &FlagLayers<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    cache_ttl: Duration,
) -> Result<Vec<TenantConfig>, ConfigError> {
    let flag_layer = flag_layers.endpoints;
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config.file: cannot read {shown}: {e}")))?;
    let file: FileConfig =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
    let at = |key: &str| format!("{shown}: {key}");
    let file_layer = Layer {
        cloud: file.cloud,
        graph_endpoint: named(&file.graph_endpoint, at("graph_endpoint")),
        authority_host: named(&file.authority_host, at("authority_host")),
        api_version: named(&file.api_version, at("api_version")),
        graph_format: file.graph_format.map(|f| (f, at("graph_format"))),
        scope: named(&file.scope, at("scope")),
    };
    endpoints(&[&file_layer, flag_layer])?;
    let top_ttl = match file.cache_ttl {
        Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
        None => cache_ttl,
    };
    let top_method = file.auth_method.or(flags.auth_method);
    let file_selection = selection(
        &file.reports,
        &file.report_ttl,
        &at("reports"),
        &at("report_ttl"),
    )?;
    let default_reports = crate::reports::default_kinds();
    if file.tenants.is_empty() {
        return err(format!("{shown}: tenants: the list is empty"));
    }
    let mut tenants: Vec<TenantConfig> = Vec::with_capacity(file.tenants.len());
    let mut not_owned = 0;
    let mut auth_lines = Vec::new();
    for (i, t) in file.tenants.into_iter().enumerate() {
        let at = |key: &str| format!("{shown}: tenants[{i}].{key}");
        // Another shard's tenant: its credentials are not even read.
        let label = t.name.as_deref().or(t.tenant_id.as_deref());
        if label.is_some_and(|name| !flag_layers.shard.owns(name.trim())) {
            not_owned += 1;
            continue;
        }
        // Error messages name file keys, not flags.
        let key_of = |key: &str| {
            let file_key = match key {
                "" => return format!("{shown}: tenants[{i}]: "),
                "--auth.client-secret-file" => "client_secret_file",
                "--auth.client-certificate-path" => "client_certificate_path",
                "--auth.client-certificate-password-file" => "client_certificate_password_file",
                "--auth.client-certificate-alg" => "client_certificate_alg",
                "--auth.federated-token-file" => "federated_token_file",
                "--auth.method" => "auth_method",
                "--auth.tenant-id" => "tenant_id",
                "--auth.client-id" => "client_id",
                other => other,
            };
            format!("{shown}: tenants[{i}].{file_key}")
        };
        for (value, key) in [(&t.tenant_id, "tenant_id"), (&t.client_id, "client_id")] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return err(format!("{}: must not be empty", at(key)));
            }
        }
        let tenant_layer = Layer {
            cloud: t.cloud,
            graph_endpoint: named(&t.graph_endpoint, at("graph_endpoint")),
            authority_host: named(&t.authority_host, at("authority_host")),
            api_version: named(&t.api_version, at("api_version")),
            graph_format: t.graph_format.map(|f| (f, at("graph_format"))),
            scope: named(&t.scope, at("scope")),
        };
        let Endpoints {
            graph_endpoint,
            authority_host,
            api_version,
            report_format,
            scope,
        } = endpoints(&[&tenant_layer, &file_layer, flag_layer])?;
        let cache_ttl = match t.cache_ttl {
            Some(ttl) => check_ttl(ttl, &at("cache_ttl"))?,
            None => top_ttl,
        };
        let tenant_selection =
            selection(&t.reports, &t.report_ttl, &at("reports"), &at("report_ttl"))?;
        let report_configs = reports::resolve(
            &[&tenant_selection, &file_selection, flag_layers.selection],
            &default_reports,
            cache_ttl,
            flag_layers.caps,
        );
        let auth = credential(AuthInput {
            at: &key_of,
            method: t.auth_method.or(top_method).unwrap_or(AuthMethod::Auto),
            tenant_id: t.tenant_id.clone(),
            client_id: t.client_id.clone(),
            secret_file: t.client_secret_file.clone(),
            secret_env: None,
            certificate_path: t.client_certificate_path.clone(),
            certificate_password_file: t.client_certificate_password_file.clone(),
            certificate_password_env: None,
            send_chain: t.client_certificate_send_chain.unwrap_or(false),
            algorithm: t.client_certificate_alg.clone(),
            federated_token_file: t.federated_token_file.clone(),
            mi_object_id: non_empty(&t.managed_identity_object_id),
            mi_resource_id: non_empty(&t.managed_identity_resource_id),
            imds_endpoint: &flags.imds_endpoint,
            identity_endpoint: env("IDENTITY_ENDPOINT"),
            identity_header: env("IDENTITY_HEADER"),
        })?;
        let name = match (t.name, auth.tenant_id.as_str()) {
            (Some(name), _) => name,
            (None, "") => {
                return err(format!(
                    "{}: required with a managed identity and no tenant_id",
                    at("name")
                ))
            }
            (None, tenant_id) => tenant_id.to_owned(),
        };
        if name.trim().is_empty() {
            return err(format!("{}: must not be empty", at("name")));
        }
        if let Some(other) = tenants.iter().position(|o| o.name == name) {
            return err(format!(
                "{}: {name:?} is already the name of tenants[{other}]; names are the `tenant` label and must differ",
                at("name")
            ));
        }
        auth_lines.push(auth_line(&name, &auth));
        tenants.push(TenantConfig {
            credential: auth.credential,
            authority_host,
            graph_endpoint,
            api_version,
            report_format,
            scope,
            cache_ttl,
            reports: report_configs,
            name,
            tenant_id: auth.tenant_id,
            client_id: auth.client_id,
        });
    }
    log_auth(&auth_lines);
    if not_owned > 0 {
        let shard = flag_layers.shard;
        tracing::info!(
            owned = tenants.len(),
            other_shards = not_owned,
            shard = shard.index,
            shards = shard.count,
            "This shard owns some of the configured tenants"
        );
    }
    Ok(tenants)
}

/// Checks a `--config.file` text as far as it can be checked without reading any other file
/// (secret, certificate and token files are left alone): the YAML and its keys, the cloud
/// settings, TTLs, report names, and tenant names. Returns the number of tenants. What the fuzz
/// target `config_file` drives; [`Config::resolve`] applies the same rules and more.
#[doc(hidden)]
pub fn check_file_text(text: &str) -> Result<usize, ConfigError> {
    let file: FileConfig =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError(format!("config: {e}")))?;
    let file_layer = Layer {
        cloud: file.cloud,
        graph_endpoint: named(&file.graph_endpoint, "graph_endpoint"),
        authority_host: named(&file.authority_host, "authority_host"),
        api_version: named(&file.api_version, "api_version"),
        graph_format: file.graph_format.map(|f| (f, "graph_format".to_owned())),
        scope: named(&file.scope, "scope"),
    };
    endpoints(&[&file_layer])?;
    if let Some(ttl) = file.cache_ttl {
        check_ttl(ttl, "cache_ttl")?;
    }
    selection(&file.reports, &file.report_ttl, "reports", "report_ttl")?;
    if file.tenants.is_empty() {
        return err("tenants: the list is empty");
    }
    let mut names: Vec<String> = Vec::with_capacity(file.tenants.len());
    for t in &file.tenants {
        let tenant_layer = Layer {
            cloud: t.cloud,
            graph_endpoint: named(&t.graph_endpoint, "graph_endpoint"),
            authority_host: named(&t.authority_host, "authority_host"),
            api_version: named(&t.api_version, "api_version"),
            graph_format: t.graph_format.map(|f| (f, "graph_format".to_owned())),
            scope: named(&t.scope, "scope"),
        };
        endpoints(&[&tenant_layer, &file_layer])?;
        if let Some(ttl) = t.cache_ttl {
            check_ttl(ttl, "cache_ttl")?;
        }
        selection(&t.reports, &t.report_ttl, "reports", "report_ttl")?;
        let name = t.name.clone().or_else(|| t.tenant_id.clone());
        match name {
            Some(name) if !name.trim().is_empty() => {
                if names.contains(&name) {
                    return err(format!("tenants: {name:?} appears twice"));
                }
                names.push(name);
            }
            Some(_) => return err("tenants: a name must not be empty"),
            None => {}
        }
    }
    Ok(file.tenants.len())
}

/// A config file level's `reports` and `report_ttl`.
pub(super) fn selection(
    names: &Option<Vec<String>>,
    ttls: &BTreeMap<String, Duration>,
    reports_key: &str,
    ttl_key: &str,
) -> Result<Selection, ConfigError> {
    Ok(Selection {
        reports: match names {
            Some(names) => Some(reports::parse_list(names, reports_key)?),
            None => None,
        },
        ttls: reports::check_ttl_map(ttls, ttl_key)?,
    })
}
