//! JSON Web Keys (RFC 7517) for P-256 public keys, and key sets.

use serde::{Deserialize, Serialize};

use crate::key::COORD_LEN;
use crate::{ALG_ES256, JoseError, VerifyingKey};

/// One JSON Web Key as found in a JWKS or SPIFFE bundle.
///
/// Unknown members are ignored on input. `crv`, `x` and `y` read as empty when absent, so
/// a set holding other key types still parses; [`VerifyingKey::from_jwk`] refuses those.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; `EC` for every key this crate accepts.
    pub kty: String,
    /// Curve; `P-256` for every key this crate accepts.
    #[serde(default)]
    pub crv: String,
    /// The point's x coordinate, 32 bytes, unpadded base64url.
    #[serde(default)]
    pub x: String,
    /// The point's y coordinate, 32 bytes, unpadded base64url.
    #[serde(default)]
    pub y: String,
    /// Key id that token headers name this key by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use (`sig`, or `jwt-svid` / `x509-svid` in SPIFFE bundles).
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Algorithm the key is for; when present it must be `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

/// A JSON Web Key Set (RFC 7517 §5); unknown top-level members are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, in publication order.
    pub keys: Vec<Jwk>,
}

impl VerifyingKey {
    /// Reads an EC P-256 JWK: `x` and `y` must be 32 bytes each and name a point on the
    /// curve, and `alg`, if present, must be `ES256`. The key id is `kid` when present
    /// (it must not be empty), else the RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JoseError> {
        if jwk.kty != "EC" {
            return Err(bad(format!("jwk kty {:?} is not EC", jwk.kty)));
        }
        if jwk.crv != "P-256" {
            return Err(bad(format!("jwk crv {:?} is not P-256", jwk.crv)));
        }
        if jwk.alg.as_deref().is_some_and(|alg| alg != ALG_ES256) {
            return Err(bad(format!("jwk alg {:?} is not ES256", jwk.alg)));
        }
        let mut point = vec![0x04];
        point.extend_from_slice(&coordinate(&jwk.x, "x")?);
        point.extend_from_slice(&coordinate(&jwk.y, "y")?);
        let key = Self::from_point(&point)?;
        match &jwk.kid {
            None => Ok(key),
            Some(kid) if kid.is_empty() => Err(bad("jwk kid is empty".into())),
            Some(kid) => Ok(key.with_kid(kid.clone())),
        }
    }

    /// This key as a JWK with `kty`, `crv`, `x`, `y`, `kid`, `alg: ES256` and, if given,
    /// `use`.
    pub fn to_jwk(&self, use_: Option<&str>) -> Jwk {
        let (x, y) = self.coordinates();
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: crate::b64::encode(x),
            y: crate::b64::encode(y),
            kid: Some(self.kid().to_owned()),
            use_: use_.map(str::to_owned),
            alg: Some(ALG_ES256.into()),
        }
    }
}

/// RFC 7518 §6.2.1.2: a coordinate is "the full size of a coordinate for the curve".
fn coordinate(text: &str, name: &str) -> Result<[u8; COORD_LEN], JoseError> {
    let bytes = crate::b64::decode(text).map_err(|_| bad(format!("jwk {name} is not base64url")))?;
    bytes.try_into().map_err(|_| bad(format!("jwk {name} is not {COORD_LEN} bytes")))
}

fn bad(reason: String) -> JoseError {
    JoseError::BadKey(reason)
}
