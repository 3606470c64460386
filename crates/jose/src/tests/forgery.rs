//! The forgery list: every token here must be refused, with the error that names why.
//! Most are validly signed by the trusted key, to show each rule holds on its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::hmac;

use super::*;
use crate::{MAX_TOKEN_LEN, decode_header, verify};

fn bad_header(token: &str) -> bool {
    matches!(check(token), Err(JoseError::BadHeader(_)))
}

#[test]
fn alg_none_without_signature() {
    let token = format!("{}.{}.", b64(header_with_alg("none")), b64(CLAIMS));
    assert_eq!(check(&token), Err(JoseError::Malformed));
    let with_junk = format!("{token}AAAA");
    assert_eq!(check(&with_junk), Err(JoseError::UnsupportedAlg("none".into())));
}

#[test]
fn alg_none_with_valid_signature() {
    let token = forge(key(), &header_with_alg("none"), CLAIMS);
    assert_eq!(check(&token), Err(JoseError::UnsupportedAlg("none".into())));
    let no_kid = forge(key(), r#"{"alg":"none"}"#, CLAIMS);
    assert_eq!(check(&no_kid), Err(JoseError::UnsupportedAlg("none".into())));
}

#[test]
fn hs256_keyed_with_the_public_key() {
    let public = key().verifying_key();
    let jwk_json = serde_json::to_vec(&public.to_jwk(None)).unwrap();
    for secret in [public.spki_der(), jwk_json, public.kid().as_bytes().to_vec()] {
        let input = format!("{}.{}", b64(header_with_alg("HS256")), b64(CLAIMS));
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
        let token = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(check(&token), Err(JoseError::UnsupportedAlg("HS256".into())));
    }
}

#[test]
fn any_alg_but_exact_es256() {
    for alg in ["ES384", "ES512", "es256", "Es256", "ES256 ", " ES256", "RS256", "PS256", "EdDSA", ""] {
        let token = forge(key(), &header_with_alg(alg), CLAIMS);
        assert_eq!(check(&token), Err(JoseError::UnsupportedAlg(alg.into())), "{alg:?}");
    }
    let not_string = format!(r#"{{"alg":["ES256"],"kid":"{}"}}"#, key().kid());
    assert!(bad_header(&forge(key(), &not_string, CLAIMS)));
    let no_alg = format!(r#"{{"kid":"{}"}}"#, key().kid());
    assert!(bad_header(&forge(key(), &no_alg, CLAIMS)));
}

#[test]
fn extra_header_members() {
    let kid = key().kid();
    for member in [
        r#""jku":"https://evil.example/keys""#,
        r#""x5u":"https://evil.example/cert""#,
        r#""jwk":{"kty":"EC","crv":"P-256","x":"","y":""}"#,
        r#""x5c":["MIIB"]"#,
        r#""crit":["b64"]"#,
        r#""b64":false"#,
        r#""zip":"DEF""#,
        r#""cty":"JWT""#,
        r#""enc":"A128GCM""#,
    ] {
        let header = format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT",{member}}}"#);
        assert!(bad_header(&forge(key(), &header, CLAIMS)), "{member}");
    }
}

#[test]
fn duplicate_header_members() {
    let kid = key().kid();
    let other = other_key().kid();
    for header in [
        format!(r#"{{"alg":"ES256","kid":"{kid}","kid":"{other}"}}"#),
        format!(r#"{{"alg":"none","alg":"ES256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
        format!(r#"{{"alg":"ES256","al\u0067":"ES256","kid":"{kid}"}}"#),
    ] {
        assert!(bad_header(&forge(key(), &header, CLAIMS)), "{header}");
    }
}

#[test]
fn header_not_an_object() {
    for header in ["[]", "\"ES256\"", "null", "{", "{}x", "not json"] {
        assert!(bad_header(&forge(key(), header, CLAIMS)), "{header}");
    }
    // The empty object gets as far as the missing alg.
    assert!(bad_header(&forge(key(), "{}", CLAIMS)));
}

#[test]
fn missing_or_empty_kid() {
    let token = forge(key(), r#"{"alg":"ES256","typ":"JWT"}"#, CLAIMS);
    assert_eq!(check(&token), Err(JoseError::MissingKid));
    let token = forge(key(), r#"{"alg":"ES256","kid":"","typ":"JWT"}"#, CLAIMS);
    assert_eq!(check(&token), Err(JoseError::MissingKid));
    assert!(bad_header(&forge(key(), r#"{"alg":"ES256","kid":7}"#, CLAIMS)));
    assert!(bad_header(&forge(key(), r#"{"alg":"ES256","kid":null}"#, CLAIMS)));
}

#[test]
fn unknown_kid() {
    let token = other_key().sign("JWT", CLAIMS).unwrap();
    assert_eq!(check(&token), Err(JoseError::UnknownKid(other_key().kid().into())));
}

#[test]
fn signature_from_another_key() {
    let token = forge(other_key(), &header_with_alg("ES256"), CLAIMS);
    assert_eq!(check(&token), Err(JoseError::BadSignature));
}

#[test]
fn der_encoded_signature() {
    let rng = ring::rand::SystemRandom::new();
    let der_signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        key().pkcs8_der(),
        &rng,
    )
    .unwrap();
    let input = format!("{}.{}", b64(header_with_alg("ES256")), b64(CLAIMS));
    let der = der_signer.sign(&rng, input.as_bytes()).unwrap();
    assert_eq!(der.as_ref()[0], 0x30, "a DER SEQUENCE");
    let token = format!("{input}.{}", b64(der.as_ref()));
    assert_eq!(check(&token), Err(JoseError::BadSignature));
}

#[test]
fn signature_of_wrong_length() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [h, p, s] = segments(&token);
    let sig = crate::b64::decode(&s).unwrap();
    let mut long = sig.clone();
    long.push(0);
    for bytes in [&sig[..63], &sig[..32], &sig[..1], &long[..]] {
        let token = format!("{h}.{p}.{}", b64(bytes));
        assert_eq!(check(&token), Err(JoseError::BadSignature), "{} bytes", bytes.len());
    }
    // Dropping one character leaves a length no base64 has.
    let chopped = format!("{h}.{p}.{}", &s[..s.len() - 1]);
    assert_eq!(check(&chopped), Err(JoseError::BadBase64));
    let zeros = format!("{h}.{p}.{}", b64([0u8; 64]));
    assert_eq!(check(&zeros), Err(JoseError::BadSignature));
}

#[test]
fn payload_modified_after_signing() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [h, _, s] = segments(&token);
    let evil = br#"{"sub":"spiffe://example.org/admin","aud":"db","exp":2000000000}"#;
    let token = format!("{h}.{}.{s}", b64(evil));
    assert_eq!(check(&token), Err(JoseError::BadSignature));
}

#[test]
fn header_modified_after_signing() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [_, p, s] = segments(&token);
    let header = format!(r#"{{"alg":"ES256","kid":"{}","typ":"secevent+jwt"}}"#, key().kid());
    let token = format!("{}.{p}.{s}", b64(header));
    assert_eq!(check(&token), Err(JoseError::BadSignature));
}

#[test]
fn padding_in_any_segment() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [h, p, s] = segments(&token);
    assert_eq!(check(&format!("{h}=.{p}.{s}")), Err(JoseError::BadBase64));
    assert_eq!(check(&format!("{h}.{p}.{s}==")), Err(JoseError::BadBase64));
    // Signed over the padded payload, so only the encoding is at fault.
    assert_eq!(check(&sign_segments(key(), &h, &format!("{p}="))), Err(JoseError::BadBase64));
}

#[test]
fn standard_base64_alphabet() {
    // A signature using '-' or '_' in base64url uses '+' or '/' in standard base64.
    let (h, p, s) = loop {
        let [h, p, s] = segments(&key().sign("JWT", CLAIMS).unwrap());
        if s.contains(['-', '_']) {
            break (h, p, s);
        }
    };
    let std_sig = s.replace('-', "+").replace('_', "/");
    assert_eq!(check(&format!("{h}.{p}.{std_sig}")), Err(JoseError::BadBase64));

    // Header and payload encoded with the standard alphabet, yet validly signed.
    let odd = br#"{"p":"???>>>~~~???>>>~~~"}"#;
    let std_payload = STANDARD_NO_PAD.encode(odd);
    assert!(std_payload.contains(['+', '/']));
    let token = sign_segments(key(), &h, &std_payload);
    assert_eq!(check(&token), Err(JoseError::BadBase64));
    let header = format!(r#"{{"alg":"ES256","kid":"{}","typ":"???>>>~~~???>>>"}}"#, key().kid());
    let std_header = STANDARD_NO_PAD.encode(&header);
    assert!(std_header.contains(['+', '/']));
    assert_eq!(check(&sign_segments(key(), &std_header, &p)), Err(JoseError::BadBase64));
}

#[test]
fn wrong_segment_count_or_empty_segments() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [h, p, s] = segments(&token);
    for bad in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}."),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}."),
        token.replace('.', ""),
    ] {
        assert_eq!(check(&bad), Err(JoseError::Malformed), "{bad:?}");
        assert_eq!(decode_header(&bad), Err(JoseError::Malformed), "{bad:?}");
    }
}

#[test]
fn token_over_max_len() {
    let big = format!(r#"{{"p":"{}"}}"#, "a".repeat(MAX_TOKEN_LEN));
    let token = forge(key(), &header_with_alg("ES256"), big.as_bytes());
    assert!(token.len() > MAX_TOKEN_LEN);
    assert_eq!(check(&token), Err(JoseError::Malformed));
    assert_eq!(decode_header(&token), Err(JoseError::Malformed));
}

#[test]
fn payload_not_a_json_object() {
    for payload in [
        &b"not json"[..],
        b"[1,2]",
        b"\"string\"",
        b"42",
        b"null",
        b"{}x",
        b"{\"a\":}",
        br#"{"exp":1,"exp":2}"#,
        br#"{"e\u0078p":1,"exp":2}"#,
        br#"{"exp":1,"\u0065xp":2}"#,
        b"{\"s\":\"\xff\"}",
        b"\xef\xbb\xbf{}",
    ] {
        let token = forge(key(), &header_with_alg("ES256"), payload);
        assert_eq!(check(&token), Err(JoseError::BadPayload), "{payload:?}");
    }
    assert!(check(&forge(key(), &header_with_alg("ES256"), b" {} ")).is_ok());
}

#[test]
fn typ_not_allowed() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    for allowed in [&["secevent+jwt"][..], &["jwt"], &["JWT "], &[]] {
        assert_eq!(verify(&token, Some(allowed), find), Err(JoseError::WrongTyp), "{allowed:?}");
    }
    let untyped = forge(key(), &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key().kid()), CLAIMS);
    assert_eq!(verify(&untyped, Some(&["JWT"]), find), Err(JoseError::WrongTyp));
    assert!(bad_header(&forge(key(), &format!(r#"{{"alg":"ES256","kid":"{}","typ":1}}"#, key().kid()), CLAIMS)));
    assert!(verify(&token, Some(&["secevent+jwt", "JWT"]), find).is_ok());
}

#[test]
fn swapped_segments() {
    let token = key().sign("JWT", CLAIMS).unwrap();
    let [h, p, s] = segments(&token);
    assert!(bad_header(&format!("{p}.{h}.{s}")));
    assert_eq!(check(&format!("{h}.{s}.{p}")), Err(JoseError::BadSignature));
    assert!(matches!(check(&format!("{s}.{p}.{h}")), Err(JoseError::BadHeader(_))));
}

#[test]
fn rfc7515_a3_example_has_no_kid() {
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    assert_eq!(check(token), Err(JoseError::MissingKid));
}
