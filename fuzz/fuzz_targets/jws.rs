//! Compact JWS verification: no input verifies under a key it was not signed
//! with, and the header reader and the verifier agree on what is malformed.
#![no_main]

use std::sync::OnceLock;

use lanyard_jose::{SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key").verifying_key())
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let header = lanyard_jose::decode_header(token);
    // Every kid names our key: only the signature can refuse.
    let verified = lanyard_jose::verify(token, None, |_| Some(key()));
    assert!(verified.is_err(), "a token nobody signed verified: {token:?}");
    if let Err(header_error) = header {
        assert_eq!(verified.unwrap_err(), header_error, "header and verifier disagree on {token:?}");
    }
});
