//! Trust bundles: what relying parties need to check Lanyard credentials,
//! as PEM, as DER for the Workload API, as JWKS, and as a SPIFFE bundle.

use std::time::Duration;

use base64::Engine;
use lanyard_core::TrustDomain;
use lanyard_jose::{Jwk, Jwks, VerifyingKey};
use serde::Serialize;

/// What a JWT key signs. Both kinds are JWT-SVID keys to a SPIFFE validator;
/// a Lanyard verifier that requires a task token accepts only the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwtKeyPurpose {
    /// JWT-SVIDs from the Workload API.
    JwtSvid,
    /// Task tokens.
    TaskToken,
}

impl JwtKeyPurpose {
    /// `jwt-svid` or `task-token`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JwtSvid => "jwt-svid",
            Self::TaskToken => "task-token",
        }
    }

    /// Parses [`JwtKeyPurpose::as_str`]'s output; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::JwtSvid, Self::TaskToken].into_iter().find(|p| p.as_str() == s)
    }
}

/// A JWT signing key as published, with the end of its use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAuthorityKey {
    /// The public key; its `kid` is what tokens name.
    pub key: VerifyingKey,
    /// Unix seconds after which nothing it signed is valid.
    pub expires_at: u64,
    /// What it signs.
    pub purpose: JwtKeyPurpose,
}

/// The trust bundle of one trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    /// Whose bundle this is.
    pub trust_domain: TrustDomain,
    /// DER CA certificates.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT verification keys.
    pub jwt_authorities: Vec<JwtAuthorityKey>,
    /// Bumped on every change.
    pub sequence: u64,
    /// How often relying parties should refresh.
    pub refresh_hint: Duration,
}

#[derive(Serialize)]
struct X509Jwk {
    #[serde(flatten)]
    jwk: Jwk,
    x5c: [String; 1],
}

/// The JWK member naming a key's [`JwtKeyPurpose`]; SPIFFE and JOSE
/// libraries ignore members they do not know.
pub const PURPOSE_MEMBER: &str = "lanyard_purpose";

impl JwtAuthorityKey {
    /// The key as a JWK with `use` as given and its purpose.
    pub fn jwk_with_purpose(&self, use_: &str) -> Result<serde_json::Value, serde_json::Error> {
        let mut jwk = serde_json::to_value(self.key.to_jwk(Some(use_)))?;
        if let Some(members) = jwk.as_object_mut() {
            members.insert(PURPOSE_MEMBER.into(), self.purpose.as_str().into());
        }
        Ok(jwk)
    }
}

impl TrustBundle {
    /// The CA certificates as concatenated PEM blocks.
    pub fn x509_pem(&self) -> String {
        self.x509_authorities.iter().map(|der| pem("CERTIFICATE", der)).collect()
    }

    /// The CA certificates as concatenated DER, the Workload API's `bundle` form.
    pub fn x509_der_concat(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// The JWT keys as a standard JWKS (the Workload API's JWT bundle form).
    pub fn jwt_jwks(&self) -> Jwks {
        Jwks { keys: self.jwt_authorities.iter().map(|k| k.key.to_jwk(None)).collect() }
    }

    /// The JWT verification keys.
    pub fn jwt_keys(&self) -> Vec<VerifyingKey> {
        self.jwt_authorities.iter().map(|k| k.key.clone()).collect()
    }

    /// The bundle in the SPIFFE Trust Domain and Bundle format: a JWKS with
    /// `x509-svid` keys (with `x5c`) and `jwt-svid` keys (with `kid`), plus
    /// `spiffe_sequence` and `spiffe_refresh_hint`.
    pub fn spiffe_json(&self) -> Result<String, serde_json::Error> {
        let mut keys = Vec::new();
        for der in &self.x509_authorities {
            // A certificate whose key is not EC P-256 cannot be described as
            // such a JWK; Lanyard only makes P-256 CAs.
            if let Some(key) = ca_public_key(der) {
                let jwk = key.to_jwk(Some("x509-svid"));
                let entry = X509Jwk {
                    jwk: Jwk { kid: None, alg: None, ..jwk },
                    x5c: [base64::engine::general_purpose::STANDARD.encode(der)],
                };
                keys.push(serde_json::to_value(entry)?);
            }
        }
        for k in &self.jwt_authorities {
            keys.push(k.jwk_with_purpose("jwt-svid")?);
        }
        let doc = serde_json::json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint.as_secs(),
        });
        serde_json::to_string_pretty(&doc)
    }
}

/// The EC P-256 public key of a CA certificate, as bundles publish it;
/// `None` for a certificate x509-parser refuses or a key of another kind
/// (such a CA cannot appear in a SPIFFE bundle Lanyard writes).
pub fn ca_public_key(der: &[u8]) -> Option<VerifyingKey> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    VerifyingKey::from_spki_der(cert.public_key().raw).ok()
}

/// One PEM block.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every `label` block in `text`, decoded; other blocks are skipped.
pub fn parse_pem(text: &str, label: &str) -> Result<Vec<Vec<u8>>, base64::DecodeError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body_start = start + begin.len();
        let Some(stop) = rest[body_start..].find(&end) else {
            break;
        };
        let body: String = rest[body_start..body_start + stop].split_whitespace().collect();
        out.push(base64::engine::general_purpose::STANDARD.decode(body)?);
        rest = &rest[body_start + stop + end.len()..];
    }
    Ok(out)
}
