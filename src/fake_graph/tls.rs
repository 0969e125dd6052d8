//! TLS for the fake: a throw-away certificate authority generated at start with rcgen, one leaf
//! certificate for the loopback names that signs all three listeners, and the socket binding.
//!
//! The exporter only talks to Graph over https (as Microsoft's SDKs insist on), so the fake must
//! too; a private CA per `FakeGraph` means only a client that explicitly trusts [`ca_pem`] accepts
//! it, which is exactly what the exporter's `--demo` mode and the tests do.
//!
//! [`ca_pem`]: super::FakeGraph::ca_pem

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// The generated CA and server configuration shared by the three listeners.
pub(crate) struct FakeTls {
    /// PEM of the CA certificate, handed to clients that should trust the fake.
    pub(crate) ca_pem: String,
    /// rustls server configuration presenting the leaf certificate, ALPN h2 and http/1.1.
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// Maps any displayable error (rcgen, rustls) to an `io::Error`, since `FakeGraph::start` returns
/// `io::Result`.
fn io_err(context: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("fake graph TLS setup: {context}: {e}"))
}

/// Generates a fresh CA and a leaf certificate for `127.0.0.1`, `::1` and `localhost`, and builds
/// a rustls server config with the `ring` provider (explicitly, so that it never depends on a
/// process-wide default provider being installed).
pub(crate) fn generate() -> io::Result<FakeTls> {
    let ca_key = KeyPair::generate().map_err(|e| io_err("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| io_err("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "office365-activations-exporter fake Graph CA",
    );
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| io_err("CA certificate", e))?;

    let leaf_key = KeyPair::generate().map_err(|e| io_err("leaf key", e))?;
    let mut leaf_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| io_err("leaf", e))?;
    leaf_params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::DnsName(
            "localhost"
                .to_string()
                .try_into()
                .map_err(|e| io_err("SAN", e))?,
        ),
    ];
    // The clouds' real host names, for tests that point their DNS at the fake.
    for cloud in super::identity::FakeCloud::ALL {
        for host in [cloud.login_host(), cloud.graph_host()] {
            let san = SanType::DnsName(host.to_string().try_into().map_err(|e| io_err("SAN", e))?);
            if !leaf_params.subject_alt_names.contains(&san) {
                leaf_params.subject_alt_names.push(san);
            }
        }
    }
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(|e| io_err("leaf certificate", e))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|e| io_err("server certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(FakeTls {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}

/// Binds a listener on `127.0.0.1` with an OS-chosen port.
pub(crate) async fn bind_v4() -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// Binds the download host: `127.0.0.1:<port>` and, where IPv6 loopback exists, `[::1]` on the
/// same port, so that a client resolving `localhost` to `::1` first reaches the fake instead of a
/// refused connection (or, worse, another program that holds `[::1]:<port>`). Retries with a new
/// port when only the IPv6 side is taken; gives up on IPv6 (without failing) when it is
/// unavailable.
pub(crate) async fn bind_dual() -> io::Result<(TcpListener, Option<TcpListener>)> {
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        let v4 = bind_v4().await?;
        let port = v4.local_addr()?.port();
        match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            Ok(v6) => return Ok((v4, Some(v6))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                tracing::debug!(error = %e, "fake graph: no IPv6 loopback, download host on 127.0.0.1 only");
                return Ok((v4, None));
            }
        }
    }
    tracing::debug!(
        "fake graph: could not find a port free on both loopbacks, download host on 127.0.0.1 only"
    );
    Ok((bind_v4().await?, None))
}
