//! What the fake Entra ID checks in a client assertion, like the real one: certificate
//! assertions against the certificates registered on the app, federated (workload identity)
//! tokens against the app's federated credentials and the issuer's key; and the national clouds,
//! told apart by the host name a request was sent to.
//!
//! The AADSTS codes are Entra ID's own (see its error reference,
//! `https://login.microsoftonline.com/error?code=N`):
//!
//! | code | meaning | when the fake sends it |
//! |---|---|---|
//! | 50027 | JWT token is invalid or malformed | the assertion is not three base64url JSON parts |
//! | 700021 | client assertion application identifier doesn't match 'client_id' | `iss` or `sub` is not the client id |
//! | 50013 | assertion audience claim does not match the required value | `aud` is not this token URL |
//! | 700024 | client assertion is not within its valid time range | `exp` passed or `nbf` ahead (5 minutes of skew allowed) |
//! | 700027 | client assertion failed signature validation | unknown thumbprint, bad signature, expired certificate, unsupported `alg` |
//! | 700211 | no matching federated identity record for the assertion issuer | federated token from an issuer the app does not trust |
//! | 700212 | ... for the assertion audience | federated token whose `aud` the credential does not list |
//! | 700213 | ... for the assertion subject | federated token for another service account |
//! | 500011 | the resource principal was not found in the tenant | a scope of another cloud |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use serde_json::Value;

/// Clock skew Entra ID tolerates on `nbf` and `exp`.
pub(crate) const SKEW: Duration = Duration::from_secs(300);
/// The audience Azure's federated credentials use for Kubernetes tokens.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A Microsoft cloud as the fake tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakeCloud {
    /// graph.microsoft.com (and the fake's own 127.0.0.1 addresses).
    Global,
    /// graph.microsoft.us.
    UsGov,
    /// dod-graph.microsoft.us.
    UsGovDod,
    /// microsoftgraph.chinacloudapi.cn.
    China,
}

impl FakeCloud {
    /// Every cloud.
    pub const ALL: [FakeCloud; 4] = [
        FakeCloud::Global,
        FakeCloud::UsGov,
        FakeCloud::UsGovDod,
        FakeCloud::China,
    ];

    /// The cloud's Graph host name.
    pub fn graph_host(self) -> &'static str {
        match self {
            FakeCloud::Global => "graph.microsoft.com",
            FakeCloud::UsGov => "graph.microsoft.us",
            FakeCloud::UsGovDod => "dod-graph.microsoft.us",
            FakeCloud::China => "microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The cloud's Entra ID host name.
    pub fn login_host(self) -> &'static str {
        match self {
            FakeCloud::Global => "login.microsoftonline.com",
            FakeCloud::UsGov | FakeCloud::UsGovDod => "login.microsoftonline.us",
            FakeCloud::China => "login.chinacloudapi.cn",
        }
    }

    /// The cloud a Graph host name belongs to (anything unknown is the global cloud).
    pub(crate) fn of_graph_host(host: &str) -> FakeCloud {
        FakeCloud::ALL
            .into_iter()
            .find(|c| c.graph_host().eq_ignore_ascii_case(host))
            .unwrap_or(FakeCloud::Global)
    }

    /// The clouds whose tokens a login host issues.
    pub(crate) fn of_login_host(host: &str) -> Vec<FakeCloud> {
        let found: Vec<FakeCloud> = FakeCloud::ALL
            .into_iter()
            .filter(|c| c.login_host().eq_ignore_ascii_case(host))
            .collect();
        if found.is_empty() {
            vec![FakeCloud::Global]
        } else {
            found
        }
    }
}

/// The host name of a request (from the URI for HTTP/2, the Host header for HTTP/1.1), without
/// port.
pub(crate) fn request_host<B>(req: &hyper::Request<B>) -> String {
    authority_host_only(&request_authority(req))
}

/// The authority of a request (host and port as sent).
pub(crate) fn request_authority<B>(req: &hyper::Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn authority_host_only(authority: &str) -> String {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    authority
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A certificate registered on an app ("Certificates & secrets > Certificates").
#[derive(Clone, Debug)]
pub(crate) struct RegisteredCertificate {
    /// SHA-1 of the DER.
    pub(crate) sha1: Vec<u8>,
    /// SHA-256 of the DER.
    pub(crate) sha256: Vec<u8>,
    /// The RSA public key (PKCS#1 RSAPublicKey DER).
    pub(crate) public_key: Vec<u8>,
    /// notAfter.
    pub(crate) not_after: SystemTime,
}

impl RegisteredCertificate {
    /// Parses a PEM or DER certificate.
    pub(crate) fn parse(pem_or_der: &[u8]) -> Result<Self, String> {
        let der = if pem_or_der.starts_with(b"-----") {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(pem_or_der)
                .map_err(|e| format!("fake graph: not a PEM certificate: {e}"))?
                .as_ref()
                .to_vec()
        } else {
            pem_or_der.to_vec()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("fake graph: not a certificate: {e}"))?;
        let not_after = cert.validity().not_after.timestamp();
        Ok(RegisteredCertificate {
            sha1: ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der)
                .as_ref()
                .to_vec(),
            sha256: ring::digest::digest(&ring::digest::SHA256, &der)
                .as_ref()
                .to_vec(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            not_after: UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
        })
    }
}

/// A federated credential on an app: which issuer, subject and audience it trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeFederatedCredential {
    /// The token issuer (the cluster's OIDC issuer URL); [`super::FakeGraph::federation_issuer`]
    /// for tokens minted by the fake.
    pub issuer: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// Usually [`TOKEN_EXCHANGE_AUDIENCE`].
    pub audience: String,
}

/// The fake's OIDC issuer (what a Kubernetes cluster's service account issuer is): signs
/// federated tokens with an ES256 key generated at start.
pub(crate) struct Issuer {
    /// `https://oidc.fake.invalid/<random>/`.
    pub(crate) url: String,
    key: EcdsaKeyPair,
    /// Public key (uncompressed point) for verification.
    public: Vec<u8>,
    /// Key id.
    kid: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("url", &self.url).finish()
    }
}

impl Issuer {
    pub(crate) fn generate() -> Result<Issuer, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "fake graph: cannot generate the issuer key".to_string())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "fake graph: cannot load the issuer key".to_string())?;
        let public = key.public_key().as_ref().to_vec();
        Ok(Issuer {
            url: format!("https://oidc.fake.invalid/{}/", super::util::random_id(12)),
            kid: super::util::random_id(16),
            key,
            public,
        })
    }

    /// A service account token as Kubernetes projects it: ES256, `iss` = this issuer.
    pub(crate) fn mint(
        &self,
        subject: &str,
        audience: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> String {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = serde_json::json!({
            "aud": [audience],
            "exp": now + lifetime.as_secs(),
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": subject,
            "kubernetes.io": {"namespace": subject.split(':').nth(2).unwrap_or(""), "serviceaccount": {"name": subject.split(':').nth(3).unwrap_or("")}},
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A refusal: HTTP status, OAuth error, AADSTS code, description.
pub(crate) type Refusal = (u16, &'static str, u32, String);

/// The parts of a JWT.
pub(crate) struct Jwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    /// `header.claims`, as signed.
    signing_input: String,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWT.
pub(crate) fn parse_jwt(token: &str) -> Result<Jwt, Refusal> {
    let malformed = || {
        (
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.".to_string(),
        )
    };
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(malformed());
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok();
    let header: Value = decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(malformed)?;
    let claims: Value = decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(malformed)?;
    let signature = decode(s).ok_or_else(malformed)?;
    if !header.is_object() || !claims.is_object() {
        return Err(malformed());
    }
    Ok(Jwt {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature,
    })
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn time_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%m/%d/%Y %H:%M:%S").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Checks `nbf` and `exp` of `claims` against `now`, with [`SKEW`].
fn check_time(claims: &Value, now: SystemTime) -> Result<(), Refusal> {
    let now = unix(now);
    let exp = claims["exp"].as_i64();
    let nbf = claims["nbf"].as_i64().or(claims["iat"].as_i64());
    let skew = SKEW.as_secs() as i64;
    let valid = match (nbf, exp) {
        (Some(nbf), Some(exp)) => nbf - skew <= now && now <= exp + skew,
        _ => false,
    };
    if valid {
        return Ok(());
    }
    Err((
        401,
        "invalid_client",
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            time_text(now),
            nbf.map_or("-".to_string(), time_text),
            exp.map_or("-".to_string(), time_text)
        ),
    ))
}

/// What the fake noted about an accepted or refused client assertion (for the tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssertionSeen {
    /// `alg` of the header.
    pub alg: String,
    /// `x5t`, if present.
    pub x5t: Option<String>,
    /// `x5t#S256`, if present.
    pub x5t_s256: Option<String>,
    /// Number of certificates in `x5c`.
    pub x5c_len: usize,
    /// `jti`.
    pub jti: Option<String>,
    /// `aud`.
    pub aud: Option<String>,
    /// `exp - nbf`, in seconds.
    pub lifetime_secs: Option<i64>,
}

impl AssertionSeen {
    pub(crate) fn of(jwt: &Jwt) -> AssertionSeen {
        let s = |v: &Value| v.as_str().map(str::to_string);
        AssertionSeen {
            alg: s(&jwt.header["alg"]).unwrap_or_default(),
            x5t: s(&jwt.header["x5t"]),
            x5t_s256: s(&jwt.header["x5t#S256"]),
            x5c_len: jwt.header["x5c"].as_array().map_or(0, Vec::len),
            jti: s(&jwt.claims["jti"]),
            aud: s(&jwt.claims["aud"]),
            lifetime_secs: match (jwt.claims["exp"].as_i64(), jwt.claims["nbf"].as_i64()) {
                (Some(exp), Some(nbf)) => Some(exp - nbf),
                _ => None,
            },
        }
    }
}

/// Verifies a certificate assertion for `client_id` at `audience` against `certificates`.
pub(crate) fn verify_certificate_assertion(
    jwt: &Jwt,
    client_id: &str,
    audience: &str,
    certificates: &[RegisteredCertificate],
    now: SystemTime,
) -> Result<(), Refusal> {
    let claim = |name: &str| jwt.claims[name].as_str().unwrap_or("").to_string();
    if !claim("iss").eq_ignore_ascii_case(client_id)
        || !claim("sub").eq_ignore_ascii_case(client_id)
    {
        return Err((
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .".to_string(),
        ));
    }
    let aud = claim("aud");
    if !aud.eq_ignore_ascii_case(audience) {
        return Err((
            401,
            "invalid_client",
            50013,
            format!("Assertion audience claim does not match the required value. The audience in the assertion was '{aud}' and the expected audience is '{audience}' or one of the Application Uris of this application with App ID '{client_id}'."),
        ));
    }
    check_time(&jwt.claims, now)?;
    let thumbprint = |name: &str| {
        jwt.header[name]
            .as_str()
            .and_then(|t| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')).ok())
    };
    let (by_sha1, by_sha256) = (thumbprint("x5t"), thumbprint("x5t#S256"));
    let shown = by_sha1
        .as_ref()
        .or(by_sha256.as_ref())
        .map(|t| t.iter().map(|b| format!("{b:02X}")).collect::<String>())
        .unwrap_or_default();
    let registered = certificates.iter().find(|c| {
        by_sha1.as_deref() == Some(c.sha1.as_slice())
            || by_sha256.as_deref() == Some(c.sha256.as_slice())
    });
    let Some(registered) = registered else {
        return Err((
            401,
            "invalid_client",
            700027,
            format!("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{shown}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'. Review the documentation at https://learn.microsoft.com/graph/deployments to determine the corresponding service endpoint and https://learn.microsoft.com/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/{client_id}']"),
        ));
    };
    if registered.not_after < now {
        return Err((
            401,
            "invalid_client",
            700027,
            format!("Client assertion failed signature validation. [Reason - The key used is expired., Thumbprint of key used by client: '{shown}']"),
        ));
    }
    let algorithm: &dyn ring::signature::VerificationAlgorithm =
        match jwt.header["alg"].as_str().unwrap_or("") {
            "RS256" => &RSA_PKCS1_2048_8192_SHA256,
            "PS256" => &RSA_PSS_2048_8192_SHA256,
            other => {
                return Err((
                    401,
                    "invalid_client",
                    700027,
                    format!("Client assertion failed signature validation. [Reason - The algorithm '{other}' is not supported.]"),
                ))
            }
        };
    UnparsedPublicKey::new(algorithm, &registered.public_key)
        .verify(jwt.signing_input.as_bytes(), &jwt.signature)
        .map_err(|_| {
            (
                401,
                "invalid_client",
                700027,
                format!("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{shown}']"),
            )
        })
}

/// Verifies a federated token against the app's federated credentials and the fake's issuer.
pub(crate) fn verify_federated_token(
    jwt: &Jwt,
    credentials: &[FakeFederatedCredential],
    issuer: &Issuer,
    now: SystemTime,
) -> Result<(), Refusal> {
    let iss = jwt.claims["iss"].as_str().unwrap_or("").to_string();
    let sub = jwt.claims["sub"].as_str().unwrap_or("").to_string();
    let audiences: Vec<String> = match &jwt.claims["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let of_issuer: Vec<&FakeFederatedCredential> =
        credentials.iter().filter(|c| c.issuer == iss).collect();
    if of_issuer.is_empty() {
        return Err((
            400,
            "invalid_request",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        ));
    }
    let of_subject: Vec<&&FakeFederatedCredential> =
        of_issuer.iter().filter(|c| c.subject == sub).collect();
    if of_subject.is_empty() {
        return Err((
            400,
            "invalid_request",
            700213,
            format!("No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        ));
    }
    if !of_subject.iter().any(|c| audiences.contains(&c.audience)) {
        return Err((
            400,
            "invalid_request",
            700212,
            format!("No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", audiences.join(",")),
        ));
    }
    check_time(&jwt.claims, now)?;
    let signed_by_issuer = iss == issuer.url
        && jwt.header["alg"].as_str() == Some("ES256")
        && jwt.header["kid"].as_str() == Some(issuer.kid.as_str())
        && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &issuer.public)
            .verify(jwt.signing_input.as_bytes(), &jwt.signature)
            .is_ok();
    if !signed_by_issuer {
        return Err((
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found.]"
                .to_string(),
        ));
    }
    Ok(())
}
