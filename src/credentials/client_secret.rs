//! The client-credentials grant with a client secret.

use std::path::PathBuf;

use reqwest::Url;

use super::entra;
use super::{AccessToken, BoxFuture, Credential, Secret};
use crate::error::{Error, Stage};
use crate::http_client::HttpClient;

pub use super::entra::token_url;

/// Where the secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Given at start (env `AZURE_CLIENT_SECRET`).
    Value(Secret),
    /// A file, read again at every token request so that a rotated secret is picked up.
    File(PathBuf),
}

impl SecretSource {
    /// The current secret; file contents are trimmed of surrounding white space (editors add a
    /// final newline).
    pub fn read(&self) -> std::io::Result<Secret> {
        match self {
            SecretSource::Value(secret) => Ok(secret.clone()),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path)?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is empty",
                    ));
                }
                Ok(Secret::new(value))
            }
        }
    }
}

/// An app registration's client id and secret, for one tenant.
pub struct ClientSecret {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    token_url: Url,
    /// The application (client) id.
    client_id: String,
    /// `{graph endpoint}/.default`: tokens do not cross clouds.
    scope: String,
    /// Where the secret comes from.
    secret: SecretSource,
}

impl ClientSecret {
    /// A credential for `tenant_id` at `authority_host`, asking for tokens for `scope`.
    pub fn new(
        authority_host: &Url,
        tenant_id: &str,
        client_id: &str,
        scope: &str,
        secret: SecretSource,
    ) -> Result<Self, String> {
        let token_url = token_url(authority_host, tenant_id)?;
        Ok(ClientSecret {
            token_url,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            secret,
        })
    }
}

impl Credential for ClientSecret {
    fn method(&self) -> &'static str {
        "client_secret"
    }

    fn request_token<'a>(
        &'a self,
        http: &'a HttpClient,
    ) -> BoxFuture<'a, Result<AccessToken, Error>> {
        Box::pin(async move {
            let secret = self.secret.read().map_err(|e| Error::InvalidResponse {
                stage: Stage::Token,
                detail: format!("cannot read the client secret file: {e}"),
            })?;
            let form = [
                ("client_id", self.client_id.as_str()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
                ("client_secret", secret.expose()),
            ];
            entra::request_token(http, &self.token_url, &form).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let source = SecretSource::Value(Secret::new("hunter2"));
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn secret_file_is_trimmed_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").unwrap();
        let source = SecretSource::File(path.clone());
        assert_eq!(source.read().unwrap().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(source.read().unwrap().expose(), "second");
        std::fs::write(&path, "\n").unwrap();
        assert!(source.read().is_err());
    }
}
