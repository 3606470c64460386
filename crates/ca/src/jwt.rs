//! JWT-SVIDs: ES256 tokens per the SPIFFE JWT-SVID specification.

use std::time::{Duration, SystemTime};

use lanyard_core::{SpiffeId, TrustDomain, unix_secs};
use lanyard_jose::{SigningKey, VerifyingKey, claims};
use serde::{Deserialize, Serialize};

use crate::{CaError, rand};

/// "The aud claim MUST be present, containing one or more values"; Lanyard
/// caps the count so a request cannot grow tokens and caches without bound.
pub const MAX_AUDIENCES: usize = 32;
/// Longest single audience value.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// The `typ` header Lanyard writes on JWT-SVIDs.
pub const JWT_TYP: &str = "JWT";
/// `typ` values a JWT-SVID may carry ("JWT" or "JOSE", or none).
pub const JWT_SVID_TYPS: &[&str] = &["JWT", "JOSE"];

/// The claims of a JWT-SVID minted by Lanyard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    /// The issuer URL, when the server has a public URL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iss: Option<String>,
    /// The workload's SPIFFE ID.
    pub sub: String,
    /// The audiences, always as an array.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Random token id.
    pub jti: String,
}

/// An authorized request for a JWT-SVID.
#[derive(Clone, Debug)]
pub struct JwtSvidTemplate {
    /// Subject.
    pub spiffe_id: SpiffeId,
    /// Audiences, checked by [`check_audiences`].
    pub audiences: Vec<String>,
    /// Lifetime; capped by the signing key's own end.
    pub ttl: Duration,
    /// `iss` claim, when set.
    pub issuer: Option<String>,
}

/// Checks a requested audience list: 1 to [`MAX_AUDIENCES`] non-empty values.
pub fn check_audiences(audiences: &[String]) -> Result<(), CaError> {
    if audiences.is_empty() {
        return Err(CaError::BadAudience("at least one audience is required"));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(CaError::BadAudience("at most 32 audiences may be requested"));
    }
    if audiences.iter().any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN) {
        return Err(CaError::BadAudience("audiences must be 1-512 bytes"));
    }
    Ok(())
}

/// A JWT signing key with the moment it stops signing.
#[derive(Debug)]
pub struct JwtAuthority {
    key: SigningKey,
    not_after: SystemTime,
}

impl JwtAuthority {
    /// A fresh key valid from `now` for `ttl`.
    pub fn generate(now: SystemTime, ttl: Duration) -> Result<Self, CaError> {
        Ok(Self { key: SigningKey::generate()?, not_after: now + ttl })
    }

    /// Rebuilds a stored key.
    pub fn from_parts(pkcs8: &[u8], not_after: SystemTime) -> Result<Self, CaError> {
        Ok(Self { key: SigningKey::from_pkcs8(pkcs8)?, not_after })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// PKCS#8 DER, for the store.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.key.pkcs8_der()
    }

    /// The public half, for the bundle.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// When the key stops being used.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs arbitrary claims with this key, with `typ` as given: for
    /// documents other than JWT-SVIDs (audit checkpoints, revocation events),
    /// whose `typ` keeps them from passing as one.
    pub fn sign_claims_as<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, CaError> {
        Ok(self.key.sign_claims(typ, claims)?)
    }

    /// Signs a JWT-SVID for `template` at `now`; returns the token and its expiry.
    pub fn sign_svid(&self, template: &JwtSvidTemplate, now: SystemTime) -> Result<(String, SystemTime), CaError> {
        check_audiences(&template.audiences)?;
        let exp = (now + template.ttl).min(self.not_after);
        let claims = JwtSvidClaims {
            iss: template.issuer.clone(),
            sub: template.spiffe_id.to_string(),
            aud: template.audiences.clone(),
            exp: unix_secs(exp),
            iat: unix_secs(now),
            jti: random_jti()?,
        };
        Ok((self.key.sign_claims(JWT_TYP, &claims)?, exp))
    }
}

/// A random token id: 128 bits, base64url.
pub fn random_jti() -> Result<String, CaError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::bytes::<16>()?))
}

/// Validates a JWT-SVID for `audience` against the JWT authorities of `td`:
/// strict ES256 signature by a known key, `exp`/`nbf`/`iat` with bounded
/// skew, `aud` containing `audience`, `sub` a SPIFFE ID of `td`.
/// Returns the subject and the full claims object.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    td: &TrustDomain,
    keys: &[VerifyingKey],
    now: SystemTime,
) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), CaError> {
    let verified = lanyard_jose::verify(token, Some(JWT_SVID_TYPS), |kid| keys.iter().find(|k| k.kid() == kid))
        .or_else(|e| match e {
            // typ is optional for JWT-SVIDs: accept its absence, nothing else.
            lanyard_jose::JoseError::WrongTyp => {
                let header = lanyard_jose::decode_header(token)?;
                if header.typ.is_some() {
                    return Err(e);
                }
                lanyard_jose::verify(token, None, |kid| keys.iter().find(|k| k.kid() == kid))
            }
            other => Err(other),
        })?;
    let registered: claims::Registered =
        serde_json::from_slice(&verified.claims).map_err(|_| lanyard_jose::JoseError::BadPayload)?;
    claims::check_registered(&registered, audience, unix_secs(now), claims::DEFAULT_LEEWAY_SECS)?;
    let sub = SpiffeId::parse(&registered.sub).map_err(|e| CaError::InvalidSvid(format!("sub: {e}")))?;
    if !sub.is_member_of(td) {
        return Err(CaError::InvalidSvid(format!("sub {sub} is not in trust domain {td}")));
    }
    let map = serde_json::from_slice(&verified.claims).map_err(|_| lanyard_jose::JoseError::BadPayload)?;
    Ok((sub, map))
}
