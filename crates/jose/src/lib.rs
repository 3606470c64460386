//! ES256 compact JWS for Lanyard: signing and strict verification of JWT-SVIDs, task
//! tokens and revocation events, with `ring` as the only cryptography.
//!
//! Verification refuses anything outside the one shape Lanyard issues: exactly three
//! unpadded base64url segments, a header of only `alg` (pinned to `ES256`), `kid` and
//! `typ`, a 64-byte `r || s` signature by a key found by `kid`, and a JSON object payload.
//! There is no `none`, no HMAC, no JSON serialization and no key taken from the token.
//! Claims are then checked with [`claims::check_registered`].
//!
//! ```
//! use lanyard_jose::claims::{self, Registered};
//! use lanyard_jose::{SigningKey, verify};
//!
//! let key = SigningKey::generate()?;
//! let token = key.sign(
//!     "JWT",
//!     br#"{"sub":"spiffe://example.org/web","aud":"db","exp":2000000000}"#,
//! )?;
//!
//! let trusted = key.verifying_key();
//! let verified = verify(&token, Some(&["JWT"]), |kid| {
//!     (kid == trusted.kid()).then_some(&trusted)
//! })?;
//! let registered: Registered = serde_json::from_slice(&verified.claims)?;
//! claims::check_registered(&registered, "db", 1_900_000_000, claims::DEFAULT_LEEWAY_SECS)?;
//! assert_eq!(registered.sub, "spiffe://example.org/web");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod b64;
pub mod claims;
mod error;
mod jwk;
mod jws;
mod key;
#[cfg(test)]
mod tests;

pub use error::JoseError;
pub use jwk::{Jwk, Jwks};
pub use jws::{ALG_ES256, Header, MAX_TOKEN_LEN, Verified, decode_header, verify};
pub use key::{SigningKey, VerifyingKey};
