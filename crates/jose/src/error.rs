//! The one error type of this crate.

/// Why a key could not be used, a token could not be built, or a token was refused.
///
/// Messages are safe to log: they never contain key material, and attacker-supplied
/// strings (`alg`, `kid`) are quoted with escapes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// The token is not three non-empty dot-separated segments, or is longer than
    /// [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) (also returned when signing would exceed it).
    #[error("malformed token: expected three non-empty segments, at most 16 KiB in all")]
    Malformed,
    /// A segment is not unpadded base64url (padding, `+`/`/`, stray bits or bytes).
    #[error("token segment is not unpadded base64url")]
    BadBase64,
    /// The protected header is not a JSON object holding only `alg`, `kid` and `typ`,
    /// each once and each a string.
    #[error("bad token header: {0}")]
    BadHeader(String),
    /// The header names an algorithm other than `ES256` (`none`, HMAC, other curves).
    #[error("unsupported alg {0:?}: only ES256 is accepted")]
    UnsupportedAlg(String),
    /// The header has no `kid`, or an empty one.
    #[error("token header has no kid")]
    MissingKid,
    /// No trusted key has this `kid`: the signer is unknown or the bundle is stale.
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    /// The signature is not 64 bytes of `r || s`, or does not verify under the key.
    #[error("bad signature")]
    BadSignature,
    /// The payload is not a JSON object (or has a duplicate top-level member).
    #[error("token payload is not a json object with unique members")]
    BadPayload,
    /// Key bytes are not a usable P-256 key (wrong curve, encoding or point).
    #[error("bad key: {0}")]
    BadKey(String),
    /// The header `typ` is absent or not one the caller allows.
    #[error("token typ is missing or not allowed here")]
    WrongTyp,
    /// `exp` has passed, even allowing for clock skew.
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead, even allowing for clock skew.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is ahead of the clock by more than the allowed skew.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `aud` does not name the expected audience.
    #[error("token audience does not include the expected audience")]
    WrongAudience,
    /// `ring` failed to generate randomness, a key or a signature.
    #[error("cryptographic operation failed")]
    Crypto,
}
