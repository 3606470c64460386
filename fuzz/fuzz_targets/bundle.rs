//! SPIFFE bundle JSON (what verifiers fetch): never panics; a bundle it
//! accepts holds at least one key and round-trips through its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = lanyard_verify::parse_spiffe_bundle(data, None) {
        assert!(!bundle.x509_authorities.is_empty() || !bundle.jwt_authorities.is_empty());
        let json = bundle.spiffe_json().expect("serializes");
        let again =
            lanyard_verify::parse_spiffe_bundle(json.as_bytes(), Some(&bundle.trust_domain)).expect("re-parses");
        assert_eq!(again.x509_authorities, bundle.x509_authorities);
        assert_eq!(again.jwt_authorities.len(), bundle.jwt_authorities.len());
    }
});
