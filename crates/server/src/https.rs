//! HTTPS for the bundle endpoint (SPIFFE federation's `https_web` profile):
//! a listener that completes TLS handshakes off the accept loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::StartError;
use crate::limits::TLS_HANDSHAKE_TIMEOUT;

/// Loads a PEM certificate chain and its PEM private key (PKCS#8 or SEC1).
pub(crate) fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, StartError> {
    let fail = |what: &Path, why: String| StartError::Config(format!("{}: {why}", what.display()));
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| fail(p, e.to_string()));
    let chain = lanyard_ca::bundle::parse_pem(&read(cert)?, "CERTIFICATE").map_err(|e| fail(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(fail(cert, "no PEM certificate in it".into()));
    }
    let key_pem = read(key)?;
    let pkcs8 = lanyard_ca::bundle::parse_pem(&key_pem, "PRIVATE KEY").map_err(|e| fail(key, e.to_string()))?;
    let sec1 = lanyard_ca::bundle::parse_pem(&key_pem, "EC PRIVATE KEY").map_err(|e| fail(key, e.to_string()))?;
    let key_der = match (pkcs8.into_iter().next(), sec1.into_iter().next()) {
        (Some(der), _) => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        (None, Some(der)) => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        (None, None) => return Err(fail(key, "no PEM PRIVATE KEY or EC PRIVATE KEY in it".into())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Config(format!("bundle TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain.into_iter().map(CertificateDer::from).collect(), key_der)
        .map_err(|e| StartError::Config(format!("bundle TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS connections, handshaken in their own tasks so a slow client holds
/// up nobody; for `axum::serve`.
pub(crate) struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        let _ = ready.send((tls, peer)).await;
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { addr, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task is gone only when the server is: wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
