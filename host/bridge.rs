//! How farmgate connects to a farm's members: plain HTTP or HTTPS (bridging), HTTP/1.1 or
//! HTTP/2, and for HTTPS which name the member's certificate must carry and which roots it must
//! chain to.
//!
//! TMG checked a bridged member's certificate against either the member's name or the rule's
//! internal site name; a farm picks one of the two ([`TlsVerify`]), and the name checked is also
//! the SNI name sent. Every connection's TLS identity (that name, the roots, whether h2 is
//! offered) is part of its [`PeerKey`], so two farms that reach one address with different TLS
//! settings never share a connection, while farms with the same settings do.
//!
//! Roots: a farm's `tls_ca_file`, else the operating system's store (read once with
//! rustls-native-certs, because internal farms are usually signed by an internal CA that
//! administrators install into the system store, as TMG relied on the Windows machine store;
//! a fixed public root list such as webpki-roots would never contain it).
//!
//! This module makes connections; it does not pool them (that is `pool`) and does not decide
//! statuses (a failed handshake is a [`ConnectError`] that `error` maps to 502).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Config, TlsVerify, UpstreamSettings};
use crate::tls::{ALPN_H2, ALPN_HTTP11, VERSIONS, provider};
use crate::upstream::{
    ConnectError, Driver, PeerKey, ReqBody, Route, Sender, TlsFailure, TlsIdentity, Trust,
};

/// A farm's way to its members, built once per config.
pub struct FarmUpstream {
    pub https: bool,
    pub http2: bool,
    verify: TlsVerify,
    trust: Trust,
    /// rustls configs: offering `http/1.1` only, and offering `h2` then `http/1.1`.
    tls: Option<[Arc<ClientConfig>; 2]>,
}

impl FarmUpstream {
    pub fn new(s: &UpstreamSettings) -> FarmUpstream {
        let trust = match (&s.ca, s.verify) {
            (_, TlsVerify::None) => Trust::Insecure,
            (Some(ca), _) => Trust::Bundle(Arc::from(ca.path.as_path())),
            (None, _) => Trust::System,
        };
        let tls = s.https.then(|| {
            let verifier: Option<Arc<dyn ServerCertVerifier>> = match s.verify {
                TlsVerify::None => Some(Arc::new(NoVerification(provider()))),
                _ => None,
            };
            let roots = match &s.ca {
                Some(ca) => {
                    let mut store = RootCertStore::empty();
                    let (_added, _ignored) =
                        store.add_parsable_certificates(ca.certs.iter().cloned());
                    Arc::new(store)
                }
                None => system_roots(),
            };
            let build = |alpn: Vec<Vec<u8>>| {
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(VERSIONS)
                    .expect("the ring provider supports TLS 1.2 and 1.3");
                let mut cfg = match &verifier {
                    Some(v) => builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::clone(v))
                        .with_no_client_auth(),
                    None => builder
                        .with_root_certificates(Arc::clone(&roots))
                        .with_no_client_auth(),
                };
                cfg.alpn_protocols = alpn;
                Arc::new(cfg)
            };
            [
                build(vec![ALPN_HTTP11.to_vec()]),
                build(vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]),
            ]
        });
        FarmUpstream {
            https: s.https,
            http2: s.http2,
            verify: s.verify,
            trust,
            tls,
        }
    }

    /// The way to a member for a request of a rule. `upgrade`: the request asks for a protocol
    /// upgrade, which needs HTTP/1.1 whatever the farm prefers.
    pub fn route(
        &self,
        member_host: &str,
        internal_site_name: Option<&str>,
        upgrade: bool,
    ) -> Route {
        let http2 = self.http2 && !upgrade;
        let tls = self.tls.as_ref().map(|configs| {
            let name = match (self.verify, internal_site_name) {
                (TlsVerify::InternalSiteName, Some(n)) => crate::names::split_host_port(n).0,
                // A router plugin may send a rule without an internal site name to such a farm;
                // the member's own name is then what is checked.
                _ => member_host,
            };
            (
                TlsIdentity {
                    server_name: Arc::from(name),
                    trust: self.trust.clone(),
                },
                Arc::clone(&configs[usize::from(http2)]),
            )
        });
        Route { http2, tls }
    }
}

impl Route {
    /// Opens a connection for `key` (one of this route's keys): TCP, then TLS when bridging,
    /// then the HTTP handshake (HTTP/2 when the key asks for it and, over TLS, the member agreed
    /// by ALPN). `timeout` bounds TCP and TLS together.
    pub async fn connect(
        &self,
        key: &PeerKey,
        timeout: Duration,
    ) -> Result<(Sender, Driver), ConnectError> {
        let addr = key.addr;
        let opened = tokio::time::timeout(timeout, async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Io { addr, source })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some((id, config)) => {
                    let tls_err = |message: String| {
                        ConnectError::Tls(Box::new(TlsFailure {
                            addr,
                            server_name: id.server_name.to_string(),
                            message,
                        }))
                    };
                    let name = ServerName::try_from(id.server_name.to_string())
                        .map_err(|e| tls_err(format!("not a valid server name: {e}")))?;
                    let tls = TlsConnector::from(Arc::clone(config))
                        .connect(name, tcp)
                        .await
                        .map_err(|e| tls_err(tls_error_text(&e)))?;
                    Ok(Stream::Tls(Box::new(tls)))
                }
            }
        })
        .await;
        let stream = match opened {
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
            Ok(r) => r?,
        };
        let h2 = match &stream {
            Stream::Plain(_) => key.http2,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol() == Some(ALPN_H2),
        };
        match stream {
            Stream::Plain(s) => handshake(TokioIo::new(s), h2, addr).await,
            Stream::Tls(s) => handshake(TokioIo::new(*s), h2, addr).await,
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn handshake<T>(io: T, h2: bool, addr: SocketAddr) -> Result<(Sender, Driver), ConnectError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |source| ConnectError::Handshake { addr, source };
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake::<_, ReqBody>(io)
            .await
            .map_err(failed)?;
        Ok((Sender::H2(sender), Box::pin(conn)))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, ReqBody>(io)
            .await
            .map_err(failed)?;
        // Upgrades (WebSocket) take the connection over after a 101.
        Ok((Sender::H1(sender), Box::pin(conn.with_upgrades())))
    }
}

/// The handshake failure as an operator wants to read it: rustls's reason (`invalid peer
/// certificate: UnknownIssuer`, `... NotValidForName ...`) rather than an I/O wrapper.
fn tls_error_text(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => format!("member certificate refused: {c}"),
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// The operating system's root certificates, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate could not be read");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system root certificates were found; HTTPS members of farms without tls_ca_file will fail verification"
            );
        } else {
            tracing::debug!(added, ignored, "system root certificates loaded");
        }
        Arc::new(store)
    }))
}

/// Logs at start what bridging will check, and warns about farms that check nothing.
pub fn log_start(config: &Config) {
    for f in config.farms.iter().filter(|f| f.upstream.https) {
        if f.upstream.verify == TlsVerify::None {
            tracing::warn!(
                farm = %f.name,
                "tls_verify = \"none\": the certificates of this farm's HTTPS members are NOT checked; anyone on the path to them can read and change the traffic"
            );
        } else if f.upstream.ca.is_none() {
            // Load the system roots now rather than on the first request.
            system_roots();
        }
    }
}

/// The verifier of `tls_verify = "none"`: accepts any certificate for any name, but still checks
/// that the handshake is signed by the certificate's key (so the connection is at least encrypted
/// to whoever holds that key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
