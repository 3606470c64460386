//! The happy path and its exact output.

use super::*;
use crate::{Header, decode_header, verify};

#[test]
fn sign_then_verify_round_trips() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let verified = verify(&token, Some(&["JWT"]), find).unwrap();
    let header = Header { alg: "ES256".into(), kid: key().kid().into(), typ: Some("JWT".into()) };
    assert_eq!(verified.header, header);
    assert_eq!(verified.claims, CLAIMS);
    assert_eq!(decode_header(&token).unwrap(), header);
}

#[test]
fn header_is_exactly_alg_kid_typ_in_order() {
    let token = key().sign("secevent+jwt", CLAIMS).unwrap();
    let [header, payload, sig] = segments(&token);
    let expected = format!(r#"{{"alg":"ES256","kid":"{}","typ":"secevent+jwt"}}"#, key().kid());
    assert_eq!(header, b64(expected));
    assert_eq!(payload, b64(CLAIMS));
    assert_eq!(sig.len(), 86);
}

#[test]
fn sign_claims_serializes_with_serde_json() {
    let claims = serde_json::json!({"sub": "spiffe://example.org/a", "aud": ["x", "y"], "exp": 5});
    let token = key().sign_claims("JWT", &claims).unwrap();
    let verified = check(&token).unwrap();
    assert_eq!(verified.claims, serde_json::to_vec(&claims).unwrap());
}

#[test]
fn typ_is_optional_when_not_restricted() {
    let token = forge(key(), &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key().kid()), CLAIMS);
    assert_eq!(check(&token).unwrap().header.typ, None);
}

#[test]
fn whitespace_in_header_json_is_fine() {
    let header = format!(" {{ \"kid\" : \"{}\" ,\n \"alg\":\"ES256\" }} ", key().kid());
    assert!(check(&forge(key(), &header, CLAIMS)).is_ok());
}

#[test]
fn key_found_by_kid_among_several() {
    let keys = [other_key().verifying_key(), key().verifying_key()];
    let token = key().sign("JWT", CLAIMS).unwrap();
    let verified = verify(&token, None, |kid| keys.iter().find(|k| k.kid() == kid)).unwrap();
    assert_eq!(verified.header.kid, key().kid());
}

#[test]
fn token_made_by_openssl_verifies() {
    // Key, kid (RFC 7638, computed in Python) and signature all made outside this crate.
    let spki = base64_std(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4FAlutrL0IIkToOm3vfKew63yyRzDlCTYn2HGSM+l0pBtyHGYPc+uTMKErF3vk2136xMsOO0lMEN667bo7RJxQ==",
    );
    let vk = VerifyingKey::from_spki_der(&spki).unwrap();
    assert_eq!(vk.kid(), "Rqgy1Iazcp7QZoDDiE1erXaT05Z7Tep5lDaNCmzseRI");
    let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6IlJxZ3kxSWF6Y3A3UVpvRERpRTFlclhhVDA1WjdUZXA1bERhTkNtenNlUkkiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9vcGVuc3NsIiwiYXVkIjoiZGIiLCJleHAiOjIwMDAwMDAwMDB9.2p6CtxJ5bwdNmB8iuJ3IE9fUv2uE1aobqLxYDOnHPp-SLJvK971kSY9_MFlbjHLCSRhpuuEhkbfpsovqlXwlVA";
    let verified = verify(token, Some(&["JWT"]), |kid| (kid == vk.kid()).then_some(&vk)).unwrap();
    assert_eq!(verified.claims, br#"{"sub":"spiffe://example.org/openssl","aud":"db","exp":2000000000}"#);
}

#[test]
fn sign_refuses_what_verify_would_refuse() {
    // A name spelt with an escape is the same name.
    for payload in [&b"[1]"[..], b"not json", b"", br#"{"a":1,"a":2}"#, br#"{"aud":1,"\u0061ud":2}"#] {
        assert_eq!(key().sign("JWT", payload), Err(JoseError::BadPayload));
    }
    assert_eq!(key().sign_claims("JWT", &42), Err(JoseError::BadPayload));
}

#[test]
fn longest_signable_token_verifies_and_one_more_byte_is_refused() {
    let payload = |n: usize| format!(r#"{{"p":"{}"}}"#, "a".repeat(n));
    let mut n = crate::MAX_TOKEN_LEN * 3 / 4 - 300;
    let mut last = key().sign("JWT", payload(n).as_bytes()).unwrap();
    while let Ok(token) = key().sign("JWT", payload(n + 1).as_bytes()) {
        last = token;
        n += 1;
    }
    assert!(last.len() <= crate::MAX_TOKEN_LEN);
    assert!(last.len() > crate::MAX_TOKEN_LEN - 4);
    assert!(check(&last).is_ok());
    assert_eq!(key().sign("JWT", payload(n + 1).as_bytes()), Err(JoseError::Malformed));
}

#[test]
fn debug_shows_only_the_kid() {
    let shown = format!("{:?}", key());
    assert_eq!(shown, format!("SigningKey {{ kid: {:?}, .. }}", key().kid()));
}
