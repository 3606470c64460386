//! Tests: one module per concern, sharing the keys and token builders below.

mod claims;
mod forgery;
mod keys;
mod props;
mod sign_verify;

use std::sync::LazyLock;

use crate::{JoseError, SigningKey, Verified, VerifyingKey};

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate().unwrap());
static OTHER_KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate().unwrap());
static TRUSTED: LazyLock<VerifyingKey> = LazyLock::new(|| KEY.verifying_key());

/// A typical JWT-SVID payload.
const CLAIMS: &[u8] = br#"{"sub":"spiffe://example.org/web","aud":"db","exp":2000000000}"#;

fn key() -> &'static SigningKey {
    &KEY
}

fn other_key() -> &'static SigningKey {
    &OTHER_KEY
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    crate::b64::encode(bytes.as_ref())
}

/// Trusts only [`key()`].
fn find(kid: &str) -> Option<&'static VerifyingKey> {
    (kid == TRUSTED.kid()).then_some(&*TRUSTED)
}

/// Verifies against [`key()`] with any `typ`.
fn check(token: &str) -> Result<Verified, JoseError> {
    crate::verify(token, None, find)
}

/// A token that is validly signed by `signer` over whatever segments are given, so a test
/// shows that the rule it checks holds even when the signature is good.
fn sign_segments(signer: &SigningKey, header_b64: &str, payload_b64: &str) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let sig = signer.sign_bytes(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

/// [`sign_segments`] over raw header text and payload bytes.
fn forge(signer: &SigningKey, header: &str, payload: &[u8]) -> String {
    sign_segments(signer, &b64(header), &b64(payload))
}

/// A header naming [`key()`] with `alg` as given.
fn header_with_alg(alg: &str) -> String {
    format!(r#"{{"alg":"{alg}","kid":"{}","typ":"JWT"}}"#, key().kid())
}

/// Splits a token into its three segments.
fn segments(token: &str) -> [String; 3] {
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts.try_into().unwrap()
}

/// Decodes standard, padded base64 (as `openssl` and `base64` print it).
fn base64_std(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}
