//! Revocation-feed answers, SETs and snapshots (what verifiers read from the
//! network): nothing unsigned is ever accepted.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use lanyard_ca::{JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, TrustBundle, X509Authority};
use libfuzzer_sys::fuzz_target;

fn bundle() -> &'static TrustBundle {
    static BUNDLE: OnceLock<TrustBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let now = SystemTime::now();
        let td = "example.org".parse().expect("td");
        let ca = X509Authority::generate(&td, now, Duration::from_secs(3600)).expect("ca");
        let jwt = JwtAuthority::generate(now, Duration::from_secs(3600)).expect("jwt");
        TrustBundle {
            trust_domain: td,
            x509_authorities: vec![ca.cert_der().to_vec()],
            jwt_authorities: vec![JwtAuthorityKey {
                key: jwt.verifying_key(),
                expires_at: u64::MAX,
                purpose: JwtKeyPurpose::JwtSvid,
            }],
            sequence: 1,
            refresh_hint: Duration::from_secs(300),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let bundle = bundle();
    assert!(lanyard_verify::parse_page(data, bundle).is_err());
    assert!(lanyard_verify::parse_snapshot_answer(data, bundle).is_err());
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(lanyard_verify::verify_event(text, bundle).is_err());
        assert!(lanyard_verify::verify_heartbeat(text, bundle).is_err());
    }
});
