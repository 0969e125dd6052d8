//! `--web.config.file`: TLS, basic auth and response headers for the exporter's own HTTP server,
//! in the format of the Prometheus exporter-toolkit (the file node_exporter and
//! blackbox_exporter read), so one file serves every exporter on a host.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/exporter/tls.crt     # re-read when it changes (cert-manager rotates it)
//!   key_file: /etc/exporter/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: /etc/exporter/clients-ca.crt
//!   min_version: TLS12                   # TLS12 or TLS13 (rustls has no TLS 1.0/1.1)
//!   cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 suites rustls offers
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...               # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    headers: Option<BTreeMap<String, String>>,
    http2: Option<bool>,
}

/// The loaded web configuration.
#[derive(Default)]
pub struct WebConfig {
    /// The TLS server configuration, when TLS is on.
    pub tls: Option<Arc<ServerConfig>>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Basic auth, when users are configured.
    pub auth: Option<Arc<BasicAuth>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers.len())
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map_or(0, |a| a.users.len()),
            )
            .finish()
    }
}

/// Headers the exporter-toolkit lets a user set; anything else could break the protocol.
const ALLOWED_HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The 1-based line of the first occurrence of `key:` in the file, for error messages.
fn line_of(text: &str, key: &str) -> String {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().starts_with(&needle))
        .map_or_else(String::new, |i| format!("line {}: ", i + 1))
}

impl WebConfig {
    /// Reads and validates the file; errors name the file, the line and the key.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--web.config.file: cannot read {shown}: {e}"))?;
        Self::from_text(&text, &shown.to_string())
    }

    /// Validates the text of a web config file; `shown` names the file in errors. The TLS
    /// certificate, key and CA files it names are read (relative paths from the working
    /// directory). What the fuzz target `web_config` drives.
    #[doc(hidden)]
    pub fn from_text(text: &str, shown: &str) -> Result<WebConfig, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("{shown}: {e}"))?
        };
        let fail = |key: &str, what: String| {
            format!(
                "{shown}: {}{key}: {what}",
                line_of(text, key.rsplit('.').next().unwrap_or(key))
            )
        };

        let mut headers = Vec::new();
        let http = file.http_server_config.unwrap_or_default();
        if http.http2 == Some(true) {
            // Accepted for compatibility: the server speaks HTTP/1.1, which Prometheus uses.
        }
        for (name, value) in http.headers.unwrap_or_default() {
            let Some(allowed) = ALLOWED_HEADERS
                .iter()
                .find(|h| h.eq_ignore_ascii_case(&name))
            else {
                return Err(fail(
                    "http_server_config.headers",
                    format!(
                        "{name:?} cannot be set; allowed: {}",
                        ALLOWED_HEADERS.join(", ")
                    ),
                ));
            };
            let value = HeaderValue::from_str(&value).map_err(|_| {
                fail(
                    "http_server_config.headers",
                    format!("{name}: not a valid header value"),
                )
            })?;
            headers.push((HeaderName::from_static(static_lower(allowed)), value));
        }

        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if user.contains(':') {
                        return Err(fail(
                            "basic_auth_users",
                            format!("user name {user:?} must not contain ':'"),
                        ));
                    }
                    if !looks_like_bcrypt(hash) {
                        return Err(fail("basic_auth_users", format!("{user}: not a bcrypt hash (expected $2a$, $2b$ or $2y$ and 53 more characters)")));
                    }
                }
                Some(Arc::new(BasicAuth::new(users.into_iter().collect())))
            }
            _ => None,
        };

        let tls = match file.tls_server_config {
            None => None,
            Some(tls) => Some(Arc::new(tls_config(tls, &fail)?)),
        };
        Ok(WebConfig { tls, headers, auth })
    }
}

fn static_lower(name: &'static str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Frame-Options" => "x-frame-options",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn looks_like_bcrypt(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
}

fn tls_config(tls: TlsFile, fail: &dyn Fn(&str, String) -> String) -> Result<ServerConfig, String> {
    let (Some(cert_file), Some(key_file)) = (tls.cert_file, tls.key_file) else {
        return Err(fail(
            "tls_server_config",
            "cert_file and key_file are both required".into(),
        ));
    };
    let resolver = ReloadingCert::new(cert_file, key_file)
        .map_err(|e| fail("tls_server_config.cert_file", e))?;

    let provider = rustls::crypto::ring::default_provider();
    let mut provider = provider;
    if let Some(names) = &tls.cipher_suites {
        let mut suites = Vec::new();
        for name in names {
            let suite = provider
                .cipher_suites
                .iter()
                .find(|s| go_suite_name(s.suite()).is_some_and(|n| n.contains(&name.as_str())))
                .ok_or_else(|| {
                    fail(
                        "tls_server_config.cipher_suites",
                        format!("{name} is not a TLS 1.2 suite rustls offers"),
                    )
                })?;
            suites.push(*suite);
        }
        // TLS 1.3 suites are not configurable in Go either; keep them.
        suites.extend(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied(),
        );
        provider.cipher_suites = suites;
    }
    if let Some(curves) = &tls.curve_preferences {
        let mut groups = Vec::new();
        for curve in curves {
            let name = match curve.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                other => {
                    return Err(fail(
                        "tls_server_config.curve_preferences",
                        format!("{other} is not one of X25519, CurveP256, CurveP384"),
                    ))
                }
            };
            let group = provider
                .kx_groups
                .iter()
                .find(|g| g.name() == name)
                .copied()
                .ok_or_else(|| {
                    fail(
                        "tls_server_config.curve_preferences",
                        format!("{curve} is not available"),
                    )
                })?;
            groups.push(group);
        }
        provider.kx_groups = groups;
    }
    let version = |v: &Option<String>, key: &str, default| match v.as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(other) => Err(fail(
            key,
            format!("{other} is not supported (TLS12 or TLS13; rustls has no TLS 1.0 or 1.1)"),
        )),
    };
    let min = version(&tls.min_version, "tls_server_config.min_version", 12)?;
    let max = version(&tls.max_version, "tls_server_config.max_version", 13)?;
    if min > max {
        return Err(fail(
            "tls_server_config.min_version",
            "is above max_version".into(),
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| fail("tls_server_config", e.to_string()))?;

    let client_auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match client_auth {
        "NoClientCert" | "" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca_file = tls.client_ca_file.as_ref().ok_or_else(|| {
                fail(
                    "tls_server_config.client_auth_type",
                    format!("{client_auth} needs client_ca_file"),
                )
            })?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| {
                fail(
                    "tls_server_config.client_ca_file",
                    format!("{}: {e}", ca_file.display()),
                )
            })? {
                let cert = cert.map_err(|e| {
                    fail(
                        "tls_server_config.client_ca_file",
                        format!("{}: {e}", ca_file.display()),
                    )
                })?;
                roots
                    .add(cert)
                    .map_err(|e| fail("tls_server_config.client_ca_file", e.to_string()))?;
            }
            let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            if client_auth == "VerifyClientCertIfGiven" {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| fail("tls_server_config.client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(fail("tls_server_config.client_auth_type", format!("{client_auth} (accepting unverified client certificates) is not supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven")));
        }
        other => {
            return Err(fail(
                "tls_server_config.client_auth_type",
                format!("unknown value {other:?}"),
            ))
        }
    };
    if tls.client_ca_file.is_some() && client_auth == "NoClientCert" {
        return Err(fail(
            "tls_server_config.client_ca_file",
            "is set but client_auth_type does not verify client certificates".into(),
        ));
    }
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's names for the TLS 1.2 suites rustls (ring) offers.
fn go_suite_name(suite: rustls::CipherSuite) -> Option<&'static [&'static str]> {
    use rustls::CipherSuite as S;
    Some(match suite {
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => &["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => &["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => &["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => &[
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ],
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => &[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        ],
        _ => return None,
    })
}

/// The server certificate, re-read when its files change (checked at each handshake, which
/// costs two `stat` calls).
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(certs, key);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not match {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, String> {
        let key = load_certified_key(&cert_file, &key_file)?;
        Ok(ReloadingCert {
            current: Mutex::new((mtime(&cert_file), mtime(&key_file), key)),
            cert_file,
            key_file,
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = (mtime(&self.cert_file), mtime(&self.key_file));
        if stamps != (current.0, current.1) {
            match load_certified_key(&self.cert_file, &self.key_file) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.cert_file.display(), "Reloaded the TLS certificate");
                    *current = (stamps.0, stamps.1, key);
                }
                // Half-written during a rotation, most likely: keep serving the old one and
                // try again at the next handshake.
                Err(error) => {
                    tracing::warn!(%error, "Cannot reload the TLS certificate; keeping the previous one")
                }
            }
        }
        Some(Arc::clone(&current.2))
    }
}

/// Users and their bcrypt hashes, with a cache of successful checks so a scrape does not pay a
/// bcrypt cost (tens of milliseconds) every time.
pub struct BasicAuth {
    /// User name to bcrypt hash.
    users: HashMap<String, String>,
    /// SHA-256 of (user, password, hash) for every pair that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// A hash to verify against for unknown users, so they take as long as known ones.
    decoy: OnceLock<String>,
}

/// The cache holds at most this many verified pairs.
const CACHE_LIMIT: usize = 1024;

impl BasicAuth {
    fn new(users: HashMap<String, String>) -> Self {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            decoy: OnceLock::new(),
        }
    }

    /// Whether an `Authorization` header holds valid credentials. May run bcrypt: call from a
    /// blocking-tolerant context (see [`BasicAuth::check_blocking`]).
    pub fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (
                self.decoy
                    .get_or_init(|| bcrypt::hash("decoy", 10).unwrap_or_default())
                    .clone(),
                false,
            ),
        };
        let mut digest = Sha256::new();
        for part in [
            user.as_bytes(),
            b"\0",
            password.as_bytes(),
            b"\0",
            hash.as_bytes(),
        ] {
            digest.update(part);
        }
        let key: [u8; 32] = digest.finalize().into();
        if known
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        {
            return true;
        }
        // bcrypt compares in constant time.
        let ok = bcrypt::verify(&password, &hash).unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }

    /// [`BasicAuth::check`] off the async threads (bcrypt takes tens of milliseconds).
    pub async fn check_blocking(self: &Arc<Self>, authorization: Option<HeaderValue>) -> bool {
        let auth = Arc::clone(self);
        tokio::task::spawn_blocking(move || auth.check(authorization.as_ref()))
            .await
            .unwrap_or(false)
    }
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<WebConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, yaml).unwrap();
        WebConfig::load(&path)
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let config = load("").unwrap();
        assert!(config.tls.is_none() && config.auth.is_none() && config.headers.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = load("basic_auth_users:\n  alice: plaintext\n")
            .err()
            .unwrap();
        assert!(
            e.contains("line 1") && e.contains("basic_auth_users") && e.contains("alice"),
            "{e}"
        );
        let e = load("tls_server_config:\n  cert_file: /nope.crt\n  key_file: /nope.key\n")
            .err()
            .unwrap();
        assert!(e.contains("line 2") && e.contains("/nope.crt"), "{e}");
        let e = load("tls_server_config:\n  certfile: x\n").err().unwrap();
        assert!(
            e.contains("unknown field `certfile`") && e.contains("line 2"),
            "{e}"
        );
        let e = load("http_server_config:\n  headers:\n    Content-Type: text/html\n")
            .err()
            .unwrap();
        assert!(e.contains("Content-Type"), "{e}");
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let config = load(&format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
        let auth = config.auth.unwrap();
        let header = |user: &str, pass: &str| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            HeaderValue::from_str(&format!("Basic {token}")).unwrap()
        };
        assert!(auth.check(Some(&header("prometheus", "s3cret"))));
        assert_eq!(auth.verified.lock().unwrap().len(), 1, "cached");
        assert!(auth.check(Some(&header("prometheus", "s3cret"))));
        assert!(!auth.check(Some(&header("prometheus", "wrong"))));
        assert!(!auth.check(Some(&header("nobody", "s3cret"))));
        assert!(!auth.check(None));
        assert!(!auth.check(Some(&HeaderValue::from_static("Bearer x"))));
        assert_eq!(
            auth.verified.lock().unwrap().len(),
            1,
            "failures are not cached"
        );
    }
}
