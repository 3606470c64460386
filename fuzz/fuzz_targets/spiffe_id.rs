//! SPIFFE IDs and trust domains: a parsed value prints back exactly as it was
//! written (the parser accepts canonical forms only), and parsing what it
//! prints gives the same value; the two constructors agree.
#![no_main]

use lanyard_core::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text);
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
        assert!(id.is_member_of(&id.trust_domain()));
    } else {
        assert!(text.parse::<SpiffeId>().is_err());
    }
    if let Ok(td) = TrustDomain::new(text) {
        assert_eq!(td.to_string(), text);
        assert_eq!(td.id().trust_domain(), td);
    }
});
