//! Reading and checking X.509-SVIDs: the leaf rules of the X509-SVID
//! specification, and chain validation through rustls-webpki.

use std::time::SystemTime;

use lanyard_core::SpiffeId;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

use crate::CaError;
use crate::x509::to_system_time;

/// What a caller needs to know about a verified X.509-SVID leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidInfo {
    /// The SPIFFE ID in its URI SAN.
    pub spiffe_id: SpiffeId,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// DER SubjectPublicKeyInfo of the certified key.
    pub spki_der: Vec<u8>,
}

/// Which side of a TLS connection the SVID is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A server presenting its SVID.
    Server,
    /// A client presenting its SVID.
    Client,
}

fn invalid(reason: &str) -> CaError {
    CaError::InvalidSvid(reason.to_owned())
}

/// Parses a leaf certificate and checks the X509-SVID leaf rules: one URI SAN
/// holding a SPIFFE ID, basicConstraints cA=false, a critical keyUsage with
/// digitalSignature and without keyCertSign/cRLSign.
pub fn inspect_leaf(der: &[u8]) -> Result<SvidInfo, CaError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CaError::InvalidSvid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes after certificate"));
    }
    let spiffe_id = single_spiffe_id(&cert)?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if !bc.value.ca => {}
        Ok(Some(_)) => return Err(invalid("leaf has cA=true")),
        Ok(None) => return Err(invalid("leaf lacks basicConstraints")),
        Err(e) => return Err(CaError::InvalidSvid(e.to_string())),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.critical {
                return Err(invalid("keyUsage is not critical"));
            }
            if !ku.value.digital_signature() {
                return Err(invalid("keyUsage lacks digitalSignature"));
            }
            if ku.value.key_cert_sign() || ku.value.crl_sign() {
                return Err(invalid("leaf keyUsage allows certificate or CRL signing"));
            }
        }
        Ok(None) => return Err(invalid("leaf lacks keyUsage")),
        Err(e) => return Err(CaError::InvalidSvid(e.to_string())),
    }
    let validity = cert.validity();
    Ok(SvidInfo {
        spiffe_id,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        serial: lanyard_core::hex::encode(cert.raw_serial()),
        spki_der: cert.public_key().raw.to_vec(),
    })
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, CaError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::InvalidSvid(e.to_string()))?
        .ok_or_else(|| invalid("no subjectAltName"))?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => SpiffeId::parse(uri).map_err(|e| CaError::InvalidSvid(format!("URI SAN: {e}"))),
        (None, _) => Err(invalid("no URI SAN")),
        (Some(_), Some(_)) => Err(invalid("more than one URI SAN")),
    }
}

/// The trust domain a CA certificate names in its URI SAN (`spiffe://<td>`).
pub fn ca_trust_domain(der: &[u8]) -> Option<lanyard_core::TrustDomain> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    single_spiffe_id(&cert).ok().map(|id| id.trust_domain())
}

/// Verifies `chain` (DER, leaf first) up to one of `roots` at `now` for
/// `usage`, then checks the leaf rules. Chain building and signature checks
/// are rustls-webpki's; nothing here re-implements them.
pub fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>], now: SystemTime, usage: Usage) -> Result<SvidInfo, CaError> {
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| invalid("empty certificate chain"))?;
    let info = inspect_leaf(leaf)?;
    let anchors_der: Vec<CertificateDer<'_>> = roots.iter().map(|r| CertificateDer::from(r.as_slice())).collect();
    let anchors = anchors_der
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::ChainInvalid(format!("trust anchor: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| CaError::ChainInvalid(e.to_string()))?;
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    ee.verify_for_usage(
        SUPPORTED_ALGS,
        &anchors,
        &intermediates,
        UnixTime::since_unix_epoch(since_epoch),
        eku,
        None,
        None,
    )
    .map_err(|e| CaError::ChainInvalid(e.to_string()))?;
    Ok(info)
}

/// Signature algorithms accepted in SVID chains.
pub static SUPPORTED_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
    &[webpki::ring::ECDSA_P256_SHA256, webpki::ring::ECDSA_P384_SHA384, webpki::ring::ED25519];
