//! The client-credentials grant with a certificate: a JWT assertion signed with the
//! certificate's RSA key, as Entra ID specifies for certificate credentials.
//!
//! The assertion's header names the certificate by thumbprint: `alg` RS256 with `x5t` (SHA-1,
//! base64url), or PS256 with `x5t#S256` (SHA-256); with `send_chain`, `x5c` carries the chain
//! (needed for subject name + issuer authentication). Its claims are `aud` = the token URL,
//! `iss` = `sub` = the client id, a fresh `jti`, `nbf` = `iat` = now and `exp` = now + 10 minutes.
//!
//! Crates: signing uses `ring` (already in the tree as rustls's crypto provider, audited, and
//! it signs both RSASSA-PKCS1-v1_5 and PSS with SHA-256); PEM sections are read by
//! `rustls-pki-types` (also already in the tree); certificates are parsed by `x509-parser`
//! (rusticata's, widely used and maintained) for the validity dates and the public key; PKCS#12
//! files are opened by `p12-keystore` 0.2, pure Rust on RustCrypto, which reads both the modern
//! PBES2/AES-256 files (OpenSSL 3, recent Windows) and the legacy 3DES/RC2 ones (Key Vault,
//! older Windows). None of them pulls in OpenSSL, native-tls or aws-lc-rs.
//!
//! The file is read again at every token request (about once an hour): a replaced certificate is
//! used from the next token on, without a restart. If the new file cannot be used (half written,
//! wrong password), the last good certificate is kept and a warning logged.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::Url;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use super::client_secret::SecretSource;
use super::{entra, AccessToken, BoxFuture, Credential, ExpiryObserver, Secret};
use crate::error::{Error, Stage};
use crate::http_client::HttpClient;

/// How long an assertion is valid; Microsoft's libraries use the same 10 minutes.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);
/// A certificate this close to its notAfter is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
/// A warning about an expiring certificate is repeated at most this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(86_400);

/// The assertion's signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, header `x5t` (SHA-1 thumbprint): what every Entra ID
    /// deployment accepts.
    #[default]
    Rs256,
    /// RSASSA-PSS with SHA-256, header `x5t#S256` (SHA-256 thumbprint): what recent MSAL sends.
    Ps256,
}

impl AssertionAlgorithm {
    /// Parses `RS256` or `PS256` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "RS256" => Some(AssertionAlgorithm::Rs256),
            "PS256" => Some(AssertionAlgorithm::Ps256),
            _ => None,
        }
    }

    /// The JWT `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::Rs256 => "RS256",
            AssertionAlgorithm::Ps256 => "PS256",
        }
    }
}

/// Where the certificate comes from and how the assertion is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSource {
    /// A PEM file (certificate and private key, any order, chain certificates allowed) or a
    /// PKCS#12 (.pfx/.p12) file.
    pub path: PathBuf,
    /// The PKCS#12 password (env `AZURE_CLIENT_CERTIFICATE_PASSWORD` or a password file).
    pub password: Option<SecretSource>,
    /// Send the certificate chain in the `x5c` header (subject name + issuer authentication).
    pub send_chain: bool,
    /// RS256 with `x5t`, or PS256 with `x5t#S256`.
    pub algorithm: AssertionAlgorithm,
}

impl CertificateSource {
    /// Reads and validates the certificate and key now.
    pub fn load(&self) -> Result<LoadedCertificate, String> {
        let (bytes, password) = self.read()?;
        parse(&bytes, password.as_ref().map(Secret::expose))
    }

    fn read(&self) -> Result<(Vec<u8>, Option<Secret>), String> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let password = match &self.password {
            Some(source) => Some(
                source
                    .read()
                    .map_err(|e| format!("cannot read the certificate password: {e}"))?,
            ),
            None => None,
        };
        Ok((bytes, password))
    }
}

/// A certificate with its private key, checked to belong together.
pub struct LoadedCertificate {
    /// The RSA private key.
    key: RsaKeyPair,
    /// DER of the certificate, then of the rest of the chain as found in the file.
    chain: Vec<Vec<u8>>,
    /// SHA-1 of the certificate's DER: the thumbprint Entra ID shows.
    sha1: [u8; 20],
    /// SHA-256 of the certificate's DER.
    sha256: [u8; 32],
    /// The certificate's notBefore.
    pub not_before: SystemTime,
    /// The certificate's notAfter: when Entra ID stops accepting it.
    pub not_after: SystemTime,
    /// The certificate's subject, for logs.
    pub subject: String,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("thumbprint", &self.thumbprint())
            .field("subject", &self.subject)
            .field("not_after", &rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unix(t: i64) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    }
}

/// A time as RFC 3339, for logs.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Reads a certificate and its RSA private key from PEM or PKCS#12 bytes.
pub fn parse(bytes: &[u8], password: Option<&str>) -> Result<LoadedCertificate, String> {
    let looks_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    let (key, certs) = if looks_pem {
        parse_pem(bytes)?
    } else {
        parse_pkcs12(bytes, password.unwrap_or(""))?
    };
    let public = ring::signature::KeyPair::public_key(&key).as_ref().to_vec();
    let mut leaf = None;
    let mut others = Vec::new();
    for der in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("a certificate in the file cannot be parsed: {e}"))?;
        let matches = cert.public_key().subject_public_key.data.as_ref() == public.as_slice();
        let facts = (
            unix(cert.validity().not_before.timestamp()),
            unix(cert.validity().not_after.timestamp()),
            cert.subject().to_string(),
        );
        if matches && leaf.is_none() {
            leaf = Some((der, facts));
        } else {
            others.push(der);
        }
    }
    let Some((leaf_der, (not_before, not_after, subject))) = leaf else {
        return Err(
            "no certificate in the file matches its private key (the key must be the certificate's own)"
                .into(),
        );
    };
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &leaf_der);
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &leaf_der);
    let mut chain = vec![leaf_der];
    chain.extend(others);
    Ok(LoadedCertificate {
        key,
        chain,
        sha1: sha1.as_ref().try_into().expect("SHA-1 is 20 bytes"),
        sha256: sha256.as_ref().try_into().expect("SHA-256 is 32 bytes"),
        not_before,
        not_after,
        subject,
    })
}

fn rsa_key(der: &PrivateKeyDer<'_>) -> Result<RsaKeyPair, String> {
    let result = match der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => {
            return Err("the private key is an EC key: Entra ID certificate credentials need an RSA key (2048 bits or more)".into())
        }
        _ => return Err("unsupported private key type".into()),
    };
    result.map_err(|e| format!("the private key is not a usable RSA key (2048 to 8192 bits): {e}"))
}

fn parse_pem(bytes: &[u8]) -> Result<(RsaKeyPair, Vec<Vec<u8>>), String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the PEM file is malformed: {e}"))?;
    if certs.is_empty() {
        return Err("the PEM file has no CERTIFICATE section".into());
    }
    if bytes.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
        return Err("the PEM private key is encrypted: decrypt it (openssl pkey -in key.pem -out plain.pem) and protect the file instead, or use a PKCS#12 file with AZURE_CLIENT_CERTIFICATE_PASSWORD".into());
    }
    let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "the PEM file has no PRIVATE KEY or RSA PRIVATE KEY section".to_owned()
        }
        e => format!("the PEM private key is malformed: {e}"),
    })?;
    Ok((rsa_key(&key)?, certs))
}

fn parse_pkcs12(bytes: &[u8], password: &str) -> Result<(RsaKeyPair, Vec<Vec<u8>>), String> {
    let store = p12_keystore::KeyStore::from_pkcs12(bytes, password).map_err(|e| {
        format!("not a PEM file, and not a PKCS#12 file that opens with the given password ({e})")
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("the PKCS#12 file has no private key with its certificate")?;
    let key = PrivateKeyDer::Pkcs8(chain.key().to_vec().into());
    let certs = chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
    Ok((rsa_key(&key)?, certs))
}

impl LoadedCertificate {
    /// The SHA-1 thumbprint in upper-case hex, as the Entra ID portal shows it.
    pub fn thumbprint(&self) -> String {
        hex_upper(&self.sha1)
    }

    /// The `x5t` header value: base64url of the SHA-1 thumbprint.
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.sha1)
    }

    /// The `x5t#S256` header value: base64url of the SHA-256 thumbprint.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.sha256)
    }

    /// DER of the certificate.
    pub fn der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// A signed client assertion for `client_id` at the token endpoint `audience`, valid from
    /// `now` for [`ASSERTION_LIFETIME`].
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        algorithm: AssertionAlgorithm,
        send_chain: bool,
        now: SystemTime,
    ) -> Result<String, String> {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), algorithm.as_str().into());
        header.insert("typ".into(), "JWT".into());
        match algorithm {
            AssertionAlgorithm::Rs256 => header.insert("x5t".into(), self.x5t().into()),
            AssertionAlgorithm::Ps256 => header.insert("x5t#S256".into(), self.x5t_s256().into()),
        };
        if send_chain {
            let chain: Vec<serde_json::Value> = self
                .chain
                .iter()
                .map(|c| STANDARD.encode(c).into())
                .collect();
            header.insert("x5c".into(), chain.into());
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let padding: &'static dyn ring::signature::RsaEncoding = match algorithm {
            AssertionAlgorithm::Rs256 => &RSA_PKCS1_SHA256,
            AssertionAlgorithm::Ps256 => &RSA_PSS_SHA256,
        };
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                padding,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// What the credential last loaded, and when it last warned about it.
struct Current {
    /// The file's bytes and the password it was opened with, to tell whether it changed.
    bytes: Vec<u8>,
    password: Option<Secret>,
    /// The parsed certificate.
    certificate: Arc<LoadedCertificate>,
    /// When the expiry warning was last logged.
    warned: Option<Instant>,
}

/// A certificate credential for one tenant.
pub struct ClientCertificate {
    /// The tenant's name, for log lines.
    tenant: String,
    /// `{authority}/{tenant}/oauth2/v2.0/token`, also the assertion's audience.
    token_url: Url,
    /// The application (client) id.
    client_id: String,
    /// `{graph endpoint}/.default`.
    scope: String,
    /// Where the certificate comes from.
    source: CertificateSource,
    /// Told the notAfter of each certificate loaded (the expiry gauge).
    observer: Option<ExpiryObserver>,
    /// The certificate in use.
    current: Mutex<Current>,
}

impl ClientCertificate {
    /// Loads the certificate now (an unusable file is an error at start) and logs which one it is.
    pub fn new(
        tenant: &str,
        token_url: Url,
        client_id: &str,
        scope: &str,
        source: CertificateSource,
        observer: Option<ExpiryObserver>,
    ) -> Result<Self, String> {
        let (bytes, password) = source.read()?;
        let certificate = parse(&bytes, password.as_ref().map(Secret::expose))
            .map_err(|e| format!("client certificate {}: {e}", source.path.display()))?;
        let credential = ClientCertificate {
            tenant: tenant.to_owned(),
            token_url,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            source,
            observer,
            current: Mutex::new(Current {
                bytes,
                password,
                certificate: Arc::new(certificate),
                warned: None,
            }),
        };
        let certificate = credential.certificate();
        tracing::info!(
            tenant = %credential.tenant,
            thumbprint = %certificate.thumbprint(),
            subject = %certificate.subject,
            not_after = %rfc3339(certificate.not_after),
            algorithm = credential.source.algorithm.as_str(),
            send_chain = credential.source.send_chain,
            "Client certificate loaded"
        );
        credential.observe();
        Ok(credential)
    }

    /// The certificate in use.
    fn certificate(&self) -> Arc<LoadedCertificate> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current.certificate)
    }

    /// Re-reads the file; a changed, usable file replaces the certificate in use.
    fn reload(&self) {
        let read = self.source.read();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, password) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(tenant = %self.tenant, %error, thumbprint = %current.certificate.thumbprint(), "Cannot read the client certificate; keeping the one in use");
                return;
            }
        };
        if bytes == current.bytes && password == current.password {
            return;
        }
        match parse(&bytes, password.as_ref().map(Secret::expose)) {
            Ok(certificate) => {
                tracing::info!(
                    tenant = %self.tenant,
                    previous = %current.certificate.thumbprint(),
                    thumbprint = %certificate.thumbprint(),
                    subject = %certificate.subject,
                    not_after = %rfc3339(certificate.not_after),
                    "Client certificate file changed; using the new certificate"
                );
                *current = Current {
                    bytes,
                    password,
                    certificate: Arc::new(certificate),
                    warned: None,
                };
            }
            Err(error) => {
                // Remember the bad bytes so the warning is logged once per change, not per token.
                current.bytes = bytes;
                current.password = password;
                tracing::warn!(
                    tenant = %self.tenant,
                    path = %self.source.path.display(),
                    %error,
                    thumbprint = %current.certificate.thumbprint(),
                    "The client certificate file changed but cannot be used; keeping the previous certificate"
                );
            }
        }
    }

    /// Reports the notAfter to the gauge, and warns when it is near.
    fn observe(&self) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let certificate = Arc::clone(&current.certificate);
        if let Some(observer) = &self.observer {
            observer(certificate.not_after);
        }
        let left = certificate
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let due = current
            .warned
            .is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if left < EXPIRY_WARNING && due {
            current.warned = Some(Instant::now());
            let days_left = left.as_secs() / 86_400;
            if left.is_zero() {
                tracing::error!(tenant = %self.tenant, thumbprint = %certificate.thumbprint(), not_after = %rfc3339(certificate.not_after), "The client certificate has expired: Entra ID refuses it; upload a new certificate to the app registration and replace the file");
            } else {
                tracing::warn!(tenant = %self.tenant, thumbprint = %certificate.thumbprint(), not_after = %rfc3339(certificate.not_after), days_left, "The client certificate expires within 30 days: upload a new certificate to the app registration and replace the file (picked up without a restart)");
            }
        }
    }
}

impl Credential for ClientCertificate {
    fn method(&self) -> &'static str {
        "client_certificate"
    }

    fn request_token<'a>(
        &'a self,
        http: &'a HttpClient,
    ) -> BoxFuture<'a, Result<AccessToken, Error>> {
        Box::pin(async move {
            self.reload();
            self.observe();
            let certificate = self.certificate();
            let assertion = certificate
                .assertion(
                    &self.client_id,
                    self.token_url.as_str(),
                    self.source.algorithm,
                    self.source.send_chain,
                    SystemTime::now(),
                )
                .map_err(|detail| Error::InvalidResponse {
                    stage: Stage::Token,
                    detail,
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
