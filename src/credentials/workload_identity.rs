//! Workload identity federation: the client assertion is a token issued by someone Entra ID
//! trusts through a federated credential of the app, typically the Kubernetes service account
//! token that the Azure Workload Identity webhook projects into the pod (env
//! `AZURE_FEDERATED_TOKEN_FILE`, with `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
//! `AZURE_AUTHORITY_HOST`).
//!
//! The kubelet rotates the projected token (it lives about an hour), so the file is read again at
//! every token request, never cached.

use std::path::PathBuf;

use reqwest::Url;

use super::{entra, AccessToken, BoxFuture, Credential};
use crate::error::{Error, Stage};
use crate::http_client::HttpClient;

/// The largest federated token accepted (service account tokens are about 1 KiB).
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Reads the federated token file: trimmed, non-empty, and of a sane size.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_TOKEN_FILE {
        return Err(format!(
            "{} is {} bytes: not a federated token",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token.to_owned())
}

/// A workload identity credential for one tenant.
pub struct WorkloadIdentity {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    token_url: Url,
    /// The application (client) id whose federated credential trusts the token's issuer.
    client_id: String,
    /// `{graph endpoint}/.default`.
    scope: String,
    /// The projected token, read at every token request.
    token_file: PathBuf,
}

impl WorkloadIdentity {
    /// A credential reading its assertion from `token_file`.
    pub fn new(token_url: Url, client_id: &str, scope: &str, token_file: PathBuf) -> Self {
        WorkloadIdentity {
            token_url,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            token_file,
        }
    }
}

impl Credential for WorkloadIdentity {
    fn method(&self) -> &'static str {
        "workload_identity"
    }

    fn request_token<'a>(
        &'a self,
        http: &'a HttpClient,
    ) -> BoxFuture<'a, Result<AccessToken, Error>> {
        Box::pin(async move {
            let assertion =
                read_token_file(&self.token_file).map_err(|e| Error::InvalidResponse {
                    stage: Stage::Token,
                    detail: format!("federated token file (AZURE_FEDERATED_TOKEN_FILE): {e}"),
                })?;
            entra::request_token_with_assertion(
                http,
                &self.token_url,
                &self.client_id,
                &self.scope,
                &assertion,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "eyJ.a.b\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "eyJ.a.b");
        std::fs::write(&path, " \n").unwrap();
        assert!(read_token_file(&path).unwrap_err().contains("empty"));
        std::fs::write(&path, vec![b'a'; 70_000]).unwrap();
        assert!(read_token_file(&path).is_err());
        assert!(read_token_file(&dir.path().join("nope")).is_err());
    }
}
