//! CSR parsing (the server reads agents' CSRs): never panics, and a CSR it
//! accepts names a public key that parses as one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = lanyard_ca::csr::parse_csr(data) {
        assert!(!key.spki_der().is_empty());
    }
});
