//! Certificate signing requests: made on the node, checked on the server.
//!
//! The server takes one thing from a CSR — its public key — and only after the
//! CSR's signature proves the requester holds the matching private key. Names,
//! extensions and attributes in the CSR are ignored: the registration entry
//! decides what the certificate says.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use crate::CaError;

/// Largest CSR accepted, in bytes.
pub const MAX_CSR_LEN: usize = 8 * 1024;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// An ECDSA P-256 public key taken from a CSR whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrPublicKey {
    spki_der: Vec<u8>,
}

impl CsrPublicKey {
    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Parses a DER PKCS#10 request, verifies its self-signature and returns its key.
pub fn parse_csr(der: &[u8]) -> Result<CsrPublicKey, CaError> {
    if der.is_empty() || der.len() > MAX_CSR_LEN {
        return Err(CaError::MalformedCsr(format!("length {} is outside 1..={MAX_CSR_LEN}", der.len())));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CaError::MalformedCsr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::MalformedCsr("trailing bytes".into()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|oid| oid.to_id_string());
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY || curve.as_deref() != Some(OID_P256) {
        return Err(CaError::UnsupportedKey);
    }
    csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
    Ok(CsrPublicKey { spki_der: spki.raw.to_vec() })
}

/// A fresh P-256 key and a CSR for it: what an agent does for every identity.
/// Returns the PKCS#8 DER private key and the DER CSR.
pub fn new_key_and_csr() -> Result<(Vec<u8>, Vec<u8>), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (pkcs8, csr) = new_key_and_csr().unwrap();
        let key = parse_csr(&csr).unwrap();
        let pair = KeyPair::try_from(pkcs8.as_slice()).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(key.spki_der(), pair.subject_public_key_info());
    }

    #[test]
    fn refuses_tampered_and_garbage() {
        let (_, mut csr) = new_key_and_csr().unwrap();
        assert!(matches!(parse_csr(&[]), Err(CaError::MalformedCsr(_))));
        assert!(matches!(parse_csr(b"not a csr"), Err(CaError::MalformedCsr(_))));
        assert!(matches!(parse_csr(&vec![0x30; MAX_CSR_LEN + 1]), Err(CaError::MalformedCsr(_))));
        let mut trailing = csr.clone();
        trailing.push(0);
        assert!(matches!(parse_csr(&trailing), Err(CaError::MalformedCsr(_))));
        // Flip a bit in the signature (the last byte).
        let last = csr.len() - 1;
        csr[last] ^= 1;
        assert!(matches!(parse_csr(&csr), Err(CaError::CsrSignature | CaError::MalformedCsr(_))));
    }

    #[test]
    fn refuses_other_key_types() {
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = CertificateParams::default().serialize_request(&key).unwrap();
            assert!(matches!(parse_csr(csr.der()), Err(CaError::UnsupportedKey)));
        }
    }

    #[test]
    fn csr_signed_by_another_key_is_refused() {
        // Swap the SPKI of one CSR into another: the signature no longer matches the key.
        let (_, a) = new_key_and_csr().unwrap();
        let (_, b) = new_key_and_csr().unwrap();
        let spki_a = parse_csr(&a).unwrap().spki_der;
        let spki_b = parse_csr(&b).unwrap().spki_der;
        let pos = b.windows(spki_b.len()).position(|w| w == spki_b.as_slice()).unwrap();
        let mut forged = b.clone();
        forged[pos..pos + spki_a.len()].copy_from_slice(&spki_a);
        assert!(matches!(parse_csr(&forged), Err(CaError::CsrSignature)));
    }
}
