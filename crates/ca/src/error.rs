//! Errors of the CA crate.

/// Why a certificate, CSR, key or token could not be made or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CSR is not DER PKCS#10, is too large, or has trailing bytes.
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify: it was not made with its key.
    #[error("CSR signature does not verify")]
    CsrSignature,
    /// The CSR's key is not an ECDSA P-256 key.
    #[error("CSR key must be ECDSA P-256")]
    UnsupportedKey,
    /// The certificate does not follow the X509-SVID rules (which one is said).
    #[error("not a valid X509-SVID: {0}")]
    InvalidSvid(String),
    /// The chain does not lead to a trusted authority, is expired, etc.
    #[error("certificate chain does not verify: {0}")]
    ChainInvalid(String),
    /// Stored key material does not parse or does not match its certificate.
    #[error("bad key material: {0}")]
    BadKey(String),
    /// A JWT could not be signed or verified.
    #[error(transparent)]
    Jose(#[from] lanyard_jose::JoseError),
    /// Too many or empty audiences.
    #[error("{0}")]
    BadAudience(&'static str),
    /// rcgen refused to build the certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
}
