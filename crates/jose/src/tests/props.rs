//! Property tests: round trips, tamper evidence, no panics, and agreement between
//! `decode_header` and `verify`.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;
use crate::decode_header;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".*", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(".*", json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// Header text from a few names and values, duplicates and all.
fn header_text() -> impl Strategy<Value = String> {
    let kid = key().kid().to_owned();
    let name = prop_oneof![
        4 => Just("alg"), 4 => Just("kid"), 2 => Just("typ"),
        1 => Just("jku"), 1 => Just("crit"), 1 => Just("x5u"),
    ];
    let value = prop_oneof![
        4 => Just("\"ES256\"".to_owned()),
        4 => Just(format!("\"{kid}\"")),
        2 => Just("\"JWT\"".to_owned()),
        1 => Just(format!("\"{}\"", other_key().kid())),
        1 => Just("\"none\"".to_owned()),
        1 => Just("\"\"".to_owned()),
        1 => Just("null".to_owned()),
        1 => Just("[1]".to_owned()),
        1 => "[a-z]{0,5}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec((name, value), 0..5).prop_map(|members| {
        let body: Vec<String> = members.iter().map(|(n, v)| format!("\"{n}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_object_round_trips(claims in json_object(), typ in ".{0,20}") {
        let json = serde_json::to_vec(&claims).unwrap();
        let token = key().sign(&typ, &json).unwrap();
        let verified = crate::verify(&token, Some(&[typ.as_str()]), find).unwrap();
        prop_assert_eq!(verified.claims, json);
        prop_assert_eq!(verified.header.typ, Some(typ));
    }

    #[test]
    fn flipping_any_byte_breaks_the_token(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let token = key().sign("JWT", CLAIMS).unwrap();
        let mut bytes = token.into_bytes();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(tampered) = String::from_utf8(bytes) {
            prop_assert!(check(&tampered).is_err());
        }
    }

    #[test]
    fn verify_never_panics_on_any_string(text in ".*") {
        let _ = check(&text);
        let _ = decode_header(&text);
    }

    #[test]
    fn verify_never_panics_on_token_like_strings(text in "[A-Za-z0-9_=+/.-]{0,400}") {
        let _ = check(&text);
        let _ = decode_header(&text);
    }

    #[test]
    fn decode_header_agrees_with_verify(header in header_text(), claims in json_object()) {
        let payload = serde_json::to_vec(&claims).unwrap();
        let token = forge(key(), &header, &payload);
        match decode_header(&token) {
            Err(e) => prop_assert_eq!(check(&token), Err(e)),
            Ok(h) => match check(&token) {
                Ok(verified) => prop_assert_eq!(verified.header, h),
                Err(e) => prop_assert_eq!(e, JoseError::UnknownKid(h.kid)),
            },
        }
    }

    #[test]
    fn decode_header_agrees_with_verify_on_junk(
        header in prop::collection::vec(any::<u8>(), 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let token = sign_segments(key(), &b64(&header), &b64(&payload));
        if let Err(e) = decode_header(&token) {
            prop_assert_eq!(check(&token), Err(e));
        }
    }
}
