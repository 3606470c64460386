//! The agent's connection to the server's node API: TLS that checks the
//! server presents `spiffe://<td>/lanyard/server` chained to the trust
//! bundle, and presents the agent's own SVID once it has one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use lanyard_ca::svid::{self, Usage};
use lanyard_core::{SpiffeId, TrustDomain, ids};
use lanyard_proto::node::node_client::NodeClient;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::AgentError;

/// Longest a connection attempt to the server may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message accepted from the server.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Accepts exactly the server's SPIFFE ID, chained to the trust bundle. The
/// TLS server name is not used: SPIFFE authenticates by ID, not hostname.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Vec<Vec<u8>>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> =
            std::iter::once(end_entity).chain(intermediates).map(|c| c.as_ref().to_vec()).collect();
        let info = svid::verify_chain(&chain, &self.roots, SystemTime::now(), Usage::Server)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if info.spiffe_id != self.expected {
            return Err(rustls::Error::General(format!(
                "server presented {}, expected {}",
                info.spiffe_id, self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The agent's own credentials for mutual TLS.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    /// DER chain, leaf first.
    pub(crate) chain: Vec<Vec<u8>>,
    /// PKCS#8 DER key.
    pub(crate) key: Vec<u8>,
}

/// Opens a gRPC channel to `server` (`host:port`), trusting `roots` for the
/// server of `td`, presenting `identity` when given.
pub(crate) async fn connect(
    server: &str,
    td: &TrustDomain,
    roots: &[Vec<u8>],
    identity: Option<&ClientIdentity>,
) -> Result<NodeClient<Channel>, AgentError> {
    let channel = connect_channel(server, td, roots, identity).await?;
    Ok(NodeClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// The channel [`connect`] makes.
pub(crate) async fn connect_channel(
    server: &str,
    td: &TrustDomain,
    roots: &[Vec<u8>],
    identity: Option<&ClientIdentity>,
) -> Result<Channel, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(SpiffeServerVerifier {
        roots: roots.to_vec(),
        expected: ids::server_id(td),
        provider: Arc::clone(&provider),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain.iter().map(|c| CertificateDer::from(c.clone())).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone())),
            )
            .map_err(|e| AgentError::Tls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = server.to_owned();
    let endpoint = Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| AgentError::Config(format!("server address {server:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from("lanyard-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| AgentError::Connect(server.to_owned(), error_chain(&e)))?;
    Ok(channel)
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
