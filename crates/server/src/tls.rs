//! TLS for the node API: the server presents its own SVID
//! (`spiffe://<td>/lanyard/server`) and asks agents for theirs.
//!
//! A client certificate is optional at the TLS layer — an agent without one
//! can still call Attest with a join token — and every other RPC refuses a
//! caller that presented none. When one is presented, rustls-webpki checks it
//! chains to the trust bundle's CAs before any handler runs.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use lanyard_ca::{X509Authority, X509SvidTemplate, csr};
use lanyard_core::{TrustDomain, ids};
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::StartError;

/// Lifetime of the server's own node-API certificate; renewed at half-life.
pub(crate) const SERVER_SVID_TTL: Duration = Duration::from_secs(24 * 3600);

/// The certificate the server presents, swapped in place on renewal.
#[derive(Debug)]
pub(crate) struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

impl ServerCert {
    pub(crate) fn new(ca: &X509Authority, td: &TrustDomain, now: SystemTime) -> Result<(Self, SystemTime), StartError> {
        let (key, not_after) = mint(ca, td, now)?;
        Ok((Self { current: RwLock::new(key) }, not_after))
    }

    /// Mints a fresh server SVID; returns its notAfter.
    pub(crate) fn renew(
        &self,
        ca: &X509Authority,
        td: &TrustDomain,
        now: SystemTime,
    ) -> Result<SystemTime, StartError> {
        let (key, not_after) = mint(ca, td, now)?;
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(not_after)
    }
}

fn mint(ca: &X509Authority, td: &TrustDomain, now: SystemTime) -> Result<(Arc<CertifiedKey>, SystemTime), StartError> {
    let (pkcs8, request) = csr::new_key_and_csr()?;
    let template = X509SvidTemplate {
        spiffe_id: ids::server_id(td),
        dns_names: Vec::new(),
        ttl: SERVER_SVID_TTL,
        public_key: csr::parse_csr(&request)?,
    };
    let signed = ca.sign_svid(&template, now)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key_der)
        .map_err(|e| StartError::Keys(format!("server key: {e}")))?;
    let chain = ca.chain(signed.der).into_iter().map(CertificateDer::from).collect();
    Ok((Arc::new(CertifiedKey::new(chain, signer)), signed.not_after))
}

/// The rustls configuration of the node API for the given trust anchors.
pub(crate) fn server_config(cert: Arc<ServerCert>, roots: &[Vec<u8>]) -> Result<rustls::ServerConfig, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root.clone())).map_err(|e| StartError::Keys(format!("trust anchor: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| StartError::Keys(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| StartError::Keys(format!("tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
