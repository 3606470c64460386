//! Unpadded base64url (RFC 7515 §2), the only encoding a compact JWS or a JWK uses.
//!
//! The engine refuses padding, the standard alphabet's `+` and `/`, and non-zero
//! trailing bits, so every byte string has exactly one accepted encoding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::JoseError;

pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode(text: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| JoseError::BadBase64)
}
