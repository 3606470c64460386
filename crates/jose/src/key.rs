//! P-256 signing and verifying keys, their SPKI form and their RFC 7638 key ids.

use ring::agreement;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use crate::{JoseError, jws};

/// SEC1 uncompressed P-256 point: `0x04 || x || y`.
const POINT_LEN: usize = 65;
/// Size of one P-256 coordinate.
pub(crate) const COORD_LEN: usize = 32;
/// RFC 7518 §3.4: an ES256 signature is `R || S`, "each ... a 32-octet sequence".
pub(crate) const SIGNATURE_LEN: usize = 64;

/// DER of a SubjectPublicKeyInfo (RFC 5480) for `id-ecPublicKey` on `prime256v1`, up to
/// the 65-byte point. DER is canonical, so every such key starts with exactly these bytes.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, // SEQUENCE, 89 bytes
    0x30, 0x13, // SEQUENCE (AlgorithmIdentifier), 19 bytes
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // OID 1.2.840.10045.2.1
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // OID 1.2.840.10045.3.1.7
    0x03, 0x42, 0x00, // BIT STRING, 66 bytes, no unused bits
];

/// An ES256 private key, ready to sign compact JWS.
///
/// `Debug` prints only the key id.
pub struct SigningKey {
    key_pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    public: VerifyingKey,
    rng: SystemRandom,
}

/// A P-256 public key with the key id that tokens name it by.
///
/// INVARIANT: `point` is an uncompressed point that lies on P-256.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifyingKey {
    kid: String,
    point: [u8; POINT_LEN],
}

impl SigningKey {
    /// Generates a fresh P-256 key from the operating system's randomness.
    pub fn generate() -> Result<Self, JoseError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JoseError::Crypto)?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads a PKCS#8 (RFC 5958) DER private key; it must be a P-256 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, JoseError> {
        let rng = SystemRandom::new();
        let key_pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| JoseError::BadKey(format!("not a p-256 pkcs8 private key: {e}")))?;
        let public = VerifyingKey::from_point(key_pair.public_key().as_ref())?;
        Ok(Self { key_pair, pkcs8: der.to_vec(), public, rng })
    }

    /// The PKCS#8 DER this key was generated as or loaded from. This is secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The public half, with the same key id.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// Signs `claims_json` as a compact JWS with the header
    /// `{"alg":"ES256","kid":<kid>,"typ":<typ>}` (in that order).
    ///
    /// The payload is used byte for byte, but must be a JSON object with unique top-level
    /// members ([`JoseError::BadPayload`]), and the token must fit in
    /// [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) ([`JoseError::Malformed`]), so that
    /// everything signed here also passes [`verify`](crate::verify).
    pub fn sign(&self, typ: &str, claims_json: &[u8]) -> Result<String, JoseError> {
        jws::sign(self, typ, claims_json)
    }

    /// Serializes `claims` with `serde_json`, then [`sign`](Self::sign)s them.
    pub fn sign_claims<T: serde::Serialize>(&self, typ: &str, claims: &T) -> Result<String, JoseError> {
        let json = serde_json::to_vec(claims).map_err(|_| JoseError::BadPayload)?;
        self.sign(typ, &json)
    }

    /// Raw ES256 signature (`r || s`) over `message`.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<signature::Signature, JoseError> {
        self.key_pair.sign(&self.rng, message).map_err(|_| JoseError::Crypto)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid()).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a DER SubjectPublicKeyInfo; only `id-ecPublicKey` on `prime256v1` with an
    /// uncompressed point is accepted. The key id is the RFC 7638 thumbprint.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, JoseError> {
        match der.strip_prefix(&SPKI_P256_PREFIX) {
            Some(point) => Self::from_point(point),
            None => Err(JoseError::BadKey("spki is not an uncompressed p-256 ecPublicKey".into())),
        }
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn spki_der(&self) -> Vec<u8> {
        [&SPKI_P256_PREFIX[..], &self.point].concat()
    }

    /// The key id tokens signed by this key carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The same key under another key id (for keys published with their own `kid`).
    pub fn with_kid(self, kid: String) -> Self {
        Self { kid, ..self }
    }

    /// Checks an ES256 signature: exactly 64 bytes of `r || s` (not DER) over
    /// `signing_input`.
    pub fn verify_signature(&self, signing_input: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        if sig.len() != SIGNATURE_LEN {
            return Err(JoseError::BadSignature);
        }
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(signing_input, sig)
            .map_err(|_| JoseError::BadSignature)
    }

    /// Builds a key from a SEC1 uncompressed point, refusing points off the curve.
    pub(crate) fn from_point(point: &[u8]) -> Result<Self, JoseError> {
        let point = match <[u8; POINT_LEN]>::try_from(point) {
            Ok(p @ [0x04, ..]) => p,
            _ => {
                return Err(JoseError::BadKey("expected a 65-byte uncompressed p-256 point".into()));
            }
        };
        check_on_curve(&point)?;
        Ok(Self { kid: thumbprint(&point), point })
    }

    /// The affine coordinates `(x, y)`, 32 bytes each.
    pub(crate) fn coordinates(&self) -> (&[u8], &[u8]) {
        self.point[1..].split_at(COORD_LEN)
    }
}

/// ring offers no public point check for signature keys, and would otherwise only refuse
/// a bad point at the first verification. Its ECDH does the full check (coordinates below
/// p, point on the curve), so one throwaway agreement validates the point up front.
fn check_on_curve(point: &[u8; POINT_LEN]) -> Result<(), JoseError> {
    let rng = SystemRandom::new();
    let ephemeral =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).map_err(|_| JoseError::Crypto)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(ephemeral, &peer, |_| ())
        .map_err(|_| JoseError::BadKey("point is not on the p-256 curve".into()))
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order with
/// no whitespace, base64url-encoded. Coordinates are base64url, so nothing needs escaping.
fn thumbprint(point: &[u8; POINT_LEN]) -> String {
    let (x, y) = point[1..].split_at(COORD_LEN);
    let canonical =
        format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, crate::b64::encode(x), crate::b64::encode(y),);
    crate::b64::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}
