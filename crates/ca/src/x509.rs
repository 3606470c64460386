//! The X.509 certificate authority: a P-256 CA that signs X.509-SVIDs exactly
//! as the SPIFFE X509-SVID specification requires — a self-signed root, or an
//! intermediate under an operator's existing root ([`UpstreamCa`]).

use std::time::{Duration, SystemTime};

use lanyard_core::rotation::validity;
use lanyard_core::{DnsName, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber, SubjectPublicKeyInfo,
};

use crate::csr::CsrPublicKey;
use crate::{CaError, rand};

/// What an authorized request for an X.509-SVID comes to: every constraint
/// already applied. The CA signs exactly this and nothing else.
#[derive(Clone, Debug)]
pub struct X509SvidTemplate {
    /// The single URI SAN.
    pub spiffe_id: SpiffeId,
    /// Extra DNS SANs; the first also becomes the subject CN.
    pub dns_names: Vec<DnsName>,
    /// Requested lifetime; capped by the CA's own notAfter.
    pub ttl: Duration,
    /// The key to certify, from a verified CSR.
    pub public_key: CsrPublicKey,
}

/// A signed certificate and the facts callers need about it.
#[derive(Clone, Debug)]
pub struct SignedCert {
    /// DER certificate.
    pub der: Vec<u8>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// notAfter.
    pub not_after: SystemTime,
}

/// A CA key and its certificate (self-signed, or issued by an upstream CA).
pub struct X509Authority {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    not_before: SystemTime,
    not_after: SystemTime,
    /// Issued by another CA: sent after every leaf it signs.
    intermediate: bool,
}

/// An operator's existing CA under which Lanyard's CAs are intermediates.
pub struct UpstreamCa {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl std::fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCa").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl UpstreamCa {
    /// The upstream CA certificate (PEM) and its private key (PEM PKCS#8).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let certs = crate::bundle::parse_pem(cert_pem, "CERTIFICATE")
            .map_err(|e| CaError::BadKey(format!("upstream CA certificate: {e}")))?;
        let [cert_der] = certs.as_slice() else {
            return Err(CaError::BadKey(format!(
                "the upstream CA file must hold one certificate, not {}",
                certs.len()
            )));
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::BadKey(format!("upstream CA key: {e}")))?;
        let (not_after, spki, is_ca) = {
            let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
                .map_err(|e| CaError::BadKey(format!("upstream CA certificate: {e}")))?;
            (to_system_time(cert.validity().not_after.timestamp()), cert.public_key().raw.to_vec(), cert.is_ca())
        };
        if !is_ca {
            return Err(CaError::BadKey("the upstream certificate is not a CA (basicConstraints cA)".into()));
        }
        if crate::bundle::ca_public_key(cert_der).is_none() {
            // The bundle publishes it as an EC P-256 JWK.
            return Err(CaError::BadKey("the upstream CA's key must be EC P-256".into()));
        }
        use rcgen::PublicKeyData;
        if spki != key.subject_public_key_info() {
            return Err(CaError::BadKey("the upstream CA key does not match its certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(Self { cert_der: cert_der.clone(), issuer, not_after })
    }

    /// The upstream CA certificate (DER): a trust anchor of the bundle.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Authority")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Authority {
    /// Generates a new self-signed root for `td`, valid from `now` for `ttl`.
    pub fn generate(td: &TrustDomain, now: SystemTime, ttl: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(td, now, now + ttl)?;
        let cert = params.self_signed(&key)?;
        Self::from_parts(cert.der().to_vec(), &key.serialize_der())
    }

    /// Generates a new CA for `td` issued by `upstream` (an intermediate),
    /// valid from `now` for `ttl` but never past the upstream CA.
    pub fn generate_under(
        td: &TrustDomain,
        now: SystemTime,
        ttl: Duration,
        upstream: &UpstreamCa,
    ) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(td, now, (now + ttl).min(upstream.not_after))?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &upstream.issuer)?;
        Self::from_parts(cert.der().to_vec(), &key.serialize_der())
    }

    /// Rebuilds an authority from its stored certificate and PKCS#8 key,
    /// checking that they belong together.
    pub fn from_parts(cert_der: Vec<u8>, pkcs8: &[u8]) -> Result<Self, CaError> {
        let key = KeyPair::try_from(pkcs8).map_err(|e| CaError::BadKey(e.to_string()))?;
        let (not_before, not_after, spki, intermediate) = {
            let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| CaError::BadKey(format!("CA certificate: {e}")))?;
            let validity = cert.validity();
            (
                to_system_time(validity.not_before.timestamp()),
                to_system_time(validity.not_after.timestamp()),
                cert.public_key().raw.to_vec(),
                cert.issuer().as_raw() != cert.subject().as_raw(),
            )
        };
        use rcgen::PublicKeyData;
        if spki != key.subject_public_key_info() {
            return Err(CaError::BadKey("CA key does not match its certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(Self { cert_der, issuer, not_before, not_after, intermediate })
    }

    /// The chain to present for `leaf`, which this CA signed: the leaf, then
    /// this CA's certificate when it is an intermediate.
    pub fn chain(&self, leaf: Vec<u8>) -> Vec<Vec<u8>> {
        match self.intermediate {
            true => vec![leaf, self.cert_der.clone()],
            false => vec![leaf],
        }
    }

    /// Whether an upstream CA issued this one.
    pub fn is_intermediate(&self) -> bool {
        self.intermediate
    }

    /// The DER CA certificate, as published in the bundle.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The PKCS#8 DER private key, for the store.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.issuer.key().serialize_der()
    }

    /// When the CA certificate becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the CA certificate expires; no SVID outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs an X.509-SVID for `template` at `now`.
    ///
    /// Per the X509-SVID specification: exactly one URI SAN, basicConstraints
    /// cA=false, keyUsage digitalSignature only (critical), extended key usage
    /// serverAuth and clientAuth, a random 127-bit serial, notBefore backdated
    /// by [`lanyard_core::rotation::BACKDATE`], notAfter no later than the CA's.
    pub fn sign_svid(&self, template: &X509SvidTemplate, now: SystemTime) -> Result<SignedCert, CaError> {
        let (not_before, not_after) = validity(now, template.ttl, self.not_after);
        let cn = template.dns_names.first().map_or("", DnsName::as_str);
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cn);
        params.subject_alt_names = std::iter::once(uri(&template.spiffe_id).map(SanType::URI))
            .chain(template.dns_names.iter().map(|d| dns(d).map(SanType::DnsName)))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        let serial_hex = lanyard_core::hex::encode(&serial.to_bytes());
        params.serial_number = Some(serial);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let public_key = SubjectPublicKeyInfo::from_der(template.public_key.spki_der())?;
        let cert = params.signed_by(&public_key, &self.issuer)?;
        Ok(SignedCert { der: cert.der().to_vec(), serial: serial_hex, not_after })
    }
}

/// A CA certificate's parameters for `td`: its SPIFFE ID as the one URI SAN.
fn ca_params(td: &TrustDomain, now: SystemTime, not_after: SystemTime) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("Lanyard CA {td}"));
    params.subject_alt_names = vec![SanType::URI(uri(&td.id())?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    params.not_before = now.checked_sub(lanyard_core::rotation::BACKDATE).unwrap_or(now).into();
    params.not_after = not_after.into();
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Lanyard");
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, common_name);
    }
    dn
}

fn uri(id: &SpiffeId) -> Result<rcgen::string::Ia5String, CaError> {
    rcgen::string::Ia5String::try_from(id.as_str()).map_err(CaError::from)
}

fn dns(name: &DnsName) -> Result<rcgen::string::Ia5String, CaError> {
    rcgen::string::Ia5String::try_from(name.as_str()).map_err(CaError::from)
}

/// 16 random bytes with the top bit cleared: a positive 127-bit serial.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = rand::bytes::<16>()?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the encoding length is fixed
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn to_system_time(unix: i64) -> SystemTime {
    u64::try_from(unix).map_or(SystemTime::UNIX_EPOCH, lanyard_core::from_unix_secs)
}
