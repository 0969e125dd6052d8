//! How a tenant authenticates: the credential picked from flags, environment and file.

use super::*;

/// Everything that may describe one tenant's credential, with the names to use in errors.
pub(super) struct AuthInput<'a> {
    /// What "the tenant" is called in errors (`""` for the single tenant, `file: tenants[i].`).
    pub(super) at: &'a dyn Fn(&str) -> String,
    pub(super) method: AuthMethod,
    pub(super) tenant_id: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) secret_env: Option<String>,
    pub(super) certificate_path: Option<PathBuf>,
    pub(super) certificate_password_file: Option<PathBuf>,
    pub(super) certificate_password_env: Option<String>,
    pub(super) send_chain: bool,
    pub(super) algorithm: Option<String>,
    pub(super) federated_token_file: Option<PathBuf>,
    pub(super) mi_object_id: Option<String>,
    pub(super) mi_resource_id: Option<String>,
    pub(super) imds_endpoint: &'a str,
    pub(super) identity_endpoint: Option<String>,
    pub(super) identity_header: Option<String>,
}

/// The credential, the tenant id and the client id, validated; and why the method was chosen.
pub(super) struct Auth {
    pub(super) credential: CredentialConfig,
    pub(super) tenant_id: String,
    pub(super) client_id: String,
    pub(super) reason: &'static str,
}

pub(super) fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Picks and validates a credential: an explicit method, or the first configured of client
/// secret, client certificate, workload identity and managed identity (Azure's SDKs' order).
pub(super) fn credential(input: AuthInput<'_>) -> Result<Auth, ConfigError> {
    let at = input.at;
    let secret_env = non_empty(&input.secret_env);
    let has_secret = input.secret_file.is_some() || secret_env.is_some();
    let app_service = match (
        non_empty(&input.identity_endpoint),
        non_empty(&input.identity_header),
    ) {
        (Some(endpoint), Some(header)) => Some((endpoint, header)),
        _ => None,
    };
    let has_mi =
        app_service.is_some() || input.mi_object_id.is_some() || input.mi_resource_id.is_some();
    let (method, reason) = match input.method {
        AuthMethod::Auto if has_secret => (AuthMethod::ClientSecret, "auto: a client secret is configured"),
        AuthMethod::Auto if input.certificate_path.is_some() => (AuthMethod::ClientCertificate, "auto: a client certificate is configured"),
        AuthMethod::Auto if input.federated_token_file.is_some() => (AuthMethod::WorkloadIdentity, "auto: a federated token file is configured"),
        AuthMethod::Auto if has_mi => (AuthMethod::ManagedIdentity, "auto: a managed identity is configured"),
        AuthMethod::Auto if non_empty(&input.tenant_id).is_none() => {
            return err(if at("").is_empty() {
                "no tenant: set --auth.tenant-id (or AZURE_TENANT_ID), or --config.file for several tenants, or --demo to try the exporter".to_owned()
            } else {
                format!("{}: required", at("--auth.tenant-id"))
            });
        }
        AuthMethod::Auto if non_empty(&input.client_id).is_none() => {
            return err(format!("no client id: set {} (or AZURE_CLIENT_ID) to the app registration's Application (client) ID", at("--auth.client-id")));
        }
        AuthMethod::Auto => {
            return err(format!(
                "{}no credential: set AZURE_CLIENT_SECRET or {}, or {} (AZURE_CLIENT_CERTIFICATE_PATH), or {} (AZURE_FEDERATED_TOKEN_FILE), or {} managed_identity on Azure",
                at(""),
                at("--auth.client-secret-file"),
                at("--auth.client-certificate-path"),
                at("--auth.federated-token-file"),
                at("--auth.method"),
            ))
        }
        forced => (forced, "forced by the auth method setting"),
    };
    let tenant_id = non_empty(&input.tenant_id);
    let client_id = non_empty(&input.client_id);
    let need_app = |tenant_id: Option<String>, client_id: Option<String>| {
        let Some(tenant_id) = tenant_id else {
            return err(format!(
                "{}: no tenant id: set {} (or AZURE_TENANT_ID)",
                at("--auth.method"),
                at("--auth.tenant-id")
            ));
        };
        let Some(client_id) = client_id else {
            return err(format!("no client id: set {} (or AZURE_CLIENT_ID) to the app registration's Application (client) ID", at("--auth.client-id")));
        };
        Ok((tenant_id, client_id))
    };
    let credential = match method {
        AuthMethod::ClientSecret => {
            let source = match (&input.secret_file, secret_env) {
                (Some(path), _) => check_secret_file(path, &at("--auth.client-secret-file"))?,
                (None, Some(secret)) => SecretSource::Value(Secret::new(secret)),
                (None, None) => {
                    return err(format!(
                        "no client secret: set AZURE_CLIENT_SECRET or {}",
                        at("--auth.client-secret-file")
                    ))
                }
            };
            CredentialConfig::ClientSecret(source)
        }
        AuthMethod::ClientCertificate => {
            let name = at("--auth.client-certificate-path");
            let Some(path) = input.certificate_path.clone() else {
                return err(format!(
                    "no client certificate: set {name} (or AZURE_CLIENT_CERTIFICATE_PATH)"
                ));
            };
            let password = match (
                &input.certificate_password_file,
                non_empty(&input.certificate_password_env),
            ) {
                (Some(file), _) => Some(check_secret_file(
                    file,
                    &at("--auth.client-certificate-password-file"),
                )?),
                (None, Some(password)) => Some(SecretSource::Value(Secret::new(password))),
                (None, None) => None,
            };
            let algorithm = match &input.algorithm {
                Some(text) => AssertionAlgorithm::parse(text).ok_or_else(|| {
                    ConfigError(format!(
                        "{}: {text:?} must be RS256 or PS256",
                        at("--auth.client-certificate-alg")
                    ))
                })?,
                None => AssertionAlgorithm::Rs256,
            };
            let source = CertificateSource {
                path,
                password,
                send_chain: input.send_chain,
                algorithm,
            };
            source
                .load()
                .map_err(|e| ConfigError(format!("{name}: {}: {e}", source.path.display())))?;
            CredentialConfig::ClientCertificate(source)
        }
        AuthMethod::WorkloadIdentity => {
            let name = at("--auth.federated-token-file");
            let Some(token_file) = input.federated_token_file.clone() else {
                return err(format!(
                    "no federated token file: set {name} (or AZURE_FEDERATED_TOKEN_FILE)"
                ));
            };
            crate::credentials::workload_identity::read_token_file(&token_file)
                .map_err(|e| ConfigError(format!("{name}: {e}")))?;
            CredentialConfig::WorkloadIdentity { token_file }
        }
        AuthMethod::ManagedIdentity | AuthMethod::Auto => {
            let ids = [
                client_id.clone().map(ManagedIdentityId::ClientId),
                input.mi_object_id.clone().map(ManagedIdentityId::ObjectId),
                input
                    .mi_resource_id
                    .clone()
                    .map(ManagedIdentityId::ResourceId),
            ];
            let mut given = ids.into_iter().flatten();
            let id = given.next();
            if given.next().is_some() {
                return err(format!(
                    "{}: name a user-assigned identity by one of client id, object id or resource id, not several",
                    at("--auth.method")
                ));
            }
            let endpoint = match app_service {
                Some((endpoint, header)) => ManagedIdentityEndpoint::AppService {
                    endpoint: parse_url(&endpoint, "IDENTITY_ENDPOINT")?,
                    header: Secret::new(header),
                },
                None => ManagedIdentityEndpoint::Imds(parse_url(
                    input.imds_endpoint,
                    "--auth.imds-endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
                )?),
            };
            return Ok(Auth {
                credential: CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                    id,
                    endpoint,
                }),
                tenant_id: tenant_id.unwrap_or_default(),
                client_id: client_id.unwrap_or_default(),
                reason,
            });
        }
    };
    let (tenant_id, client_id) = need_app(tenant_id, client_id)?;
    Ok(Auth {
        credential,
        tenant_id,
        client_id,
        reason,
    })
}

/// What the "Authentication method" line says of a tenant.
pub(super) struct AuthLine {
    pub(super) tenant: String,
    pub(super) method: &'static str,
    pub(super) source: String,
    pub(super) chosen: String,
}

pub(super) fn auth_line(name: &str, auth: &Auth) -> AuthLine {
    AuthLine {
        tenant: name.to_owned(),
        method: auth.credential.method(),
        source: auth.credential.describe().to_string(),
        chosen: auth.reason.to_string(),
    }
}

/// Logs each tenant's authentication method, once the whole configuration is valid (a mistake
/// in a later tenant is then the only line).
pub(super) fn log_auth(lines: &[AuthLine]) {
    for line in lines {
        tracing::info!(
            tenant = %line.tenant,
            method = line.method,
            source = %line.source,
            chosen = %line.chosen,
            "Authentication method"
        );
    }
}
