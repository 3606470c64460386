//! Keys: loading, key ids, SPKI and JWK forms.

use ring::digest;

use super::*;
use crate::{Jwk, Jwks};

/// RFC 7515 Appendix A.3: an ES256 key and a signature made with it.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A3_SIG: &str = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// Made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` then
/// `openssl pkcs8 -topk8 -nocrypt`, and `openssl pkey -pubout` for the SPKI.
const OPENSSL_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgv1KcGZW2ObgwGDF55Q82hKnURnzqiEWpLsr02/+dNouhRANCAATgUCW62svQgiROg6be98p7DrfLJHMOUJNifYcZIz6XSkG3IcZg9z65MwoSsXe+TbXfrEyw47SUwQ3rrtujtEnF";
const OPENSSL_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4FAlutrL0IIkToOm3vfKew63yyRzDlCTYn2HGSM+l0pBtyHGYPc+uTMKErF3vk2136xMsOO0lMEN667bo7RJxQ==";
/// The same, on P-384.
const OPENSSL_P384_PKCS8: &str = "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCLTc0872yxfgAH8QcCnmXmI6qMjIq6x2Pf3wH0YkKZCMRjvLGnziR5N5DlFkuxslChZANiAASn6u37wIqeOawmpuY0oq+tyVFtFHJVg9J3AxI8GtISBYSr2JQ/EF2kRq0/DK+CiTzEa3L7m6Mi6VvSEistr+AjHKrrU/yW/Mlg4kZtmXVK76lYCRQ9gcK18DMTjxeW4Uk=";

fn a3_jwk() -> Jwk {
    Jwk { kty: "EC".into(), crv: "P-256".into(), x: A3_X.into(), y: A3_Y.into(), kid: None, use_: None, alg: None }
}

fn is_bad_key<T: std::fmt::Debug>(result: Result<T, JoseError>) -> bool {
    matches!(result, Err(JoseError::BadKey(_)))
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    let jwk = key().verifying_key().to_jwk(None);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk.x, jwk.y);
    let expected = b64(digest::digest(&digest::SHA256, canonical.as_bytes()));
    assert_eq!(key().kid(), expected);
    assert_eq!(key().kid().len(), 43);
    assert_eq!(VerifyingKey::from_jwk(&a3_jwk()).unwrap().kid().len(), 43);
}

#[test]
fn kid_is_deterministic_and_distinct() {
    let reloaded = SigningKey::from_pkcs8(key().pkcs8_der()).unwrap();
    assert_eq!(reloaded.kid(), key().kid());
    assert_eq!(reloaded.verifying_key(), key().verifying_key());
    assert_ne!(key().kid(), other_key().kid());
}

#[test]
fn openssl_keys_load_and_match() {
    let signing = SigningKey::from_pkcs8(&base64_std(OPENSSL_PKCS8)).unwrap();
    assert_eq!(signing.verifying_key().spki_der(), base64_std(OPENSSL_SPKI));
    assert_eq!(signing.kid(), "Rqgy1Iazcp7QZoDDiE1erXaT05Z7Tep5lDaNCmzseRI");
    let token = signing.sign("JWT", CLAIMS).unwrap();
    let vk = VerifyingKey::from_spki_der(&base64_std(OPENSSL_SPKI)).unwrap();
    assert!(crate::verify(&token, None, |_| Some(&vk)).is_ok());
}

#[test]
fn pkcs8_must_be_p256() {
    assert!(is_bad_key(SigningKey::from_pkcs8(&base64_std(OPENSSL_P384_PKCS8))));
    assert!(is_bad_key(SigningKey::from_pkcs8(b"")));
    assert!(is_bad_key(SigningKey::from_pkcs8(&key().pkcs8_der()[1..])));
    assert!(is_bad_key(SigningKey::from_pkcs8(&base64_std(OPENSSL_SPKI))));
}

#[test]
fn spki_round_trips() {
    let vk = key().verifying_key();
    let der = vk.spki_der();
    assert_eq!(der.len(), 91);
    assert_eq!(VerifyingKey::from_spki_der(&der).unwrap(), vk);
}

#[test]
fn spki_refused_unless_uncompressed_p256() {
    let der = key().verifying_key().spki_der();
    let mut longer = der.clone();
    longer.push(0);
    let mut p384_oid = der.clone();
    p384_oid[22] = 0x08; // the curve OID's last arc
    let mut compressed = der[..26].to_vec();
    compressed[1] = 0x39;
    compressed[24] = 0x22;
    compressed.push(0x02);
    compressed.extend_from_slice(&der[27..59]);
    let mut off_curve = der.clone();
    off_curve[90] ^= 1;
    for bad in [&der[..90], &longer, &p384_oid, &compressed, &off_curve, &[][..]] {
        assert!(is_bad_key(VerifyingKey::from_spki_der(bad)), "{bad:02x?}");
    }
}

#[test]
fn jwk_round_trips() {
    let vk = key().verifying_key();
    let jwk = vk.to_jwk(Some("jwt-svid"));
    assert_eq!(jwk.kid.as_deref(), Some(vk.kid()));
    assert_eq!(jwk.use_.as_deref(), Some("jwt-svid"));
    assert_eq!(VerifyingKey::from_jwk(&jwk).unwrap(), vk);

    let json = serde_json::to_string(&jwk).unwrap();
    let expected = format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","kid":"{}","use":"jwt-svid","alg":"ES256"}}"#,
        jwk.x,
        jwk.y,
        vk.kid()
    );
    assert_eq!(json, expected);
    assert_eq!(serde_json::from_str::<Jwk>(&json).unwrap(), jwk);
    let bare = serde_json::to_string(&vk.to_jwk(None)).unwrap();
    assert!(!bare.contains("use"));
}

#[test]
fn jwk_kid_is_taken_when_present() {
    let mut jwk = a3_jwk();
    let thumb = VerifyingKey::from_jwk(&jwk).unwrap();
    jwk.kid = Some("e9bc097a-ce51-4036-9562-d2ade882db0d".into());
    let named = VerifyingKey::from_jwk(&jwk).unwrap();
    assert_eq!(named.kid(), "e9bc097a-ce51-4036-9562-d2ade882db0d");
    assert_eq!(named, thumb.with_kid("e9bc097a-ce51-4036-9562-d2ade882db0d".into()));
}

#[test]
fn rfc7515_a3_signature_verifies() {
    let vk = VerifyingKey::from_jwk(&a3_jwk()).unwrap();
    let sig = crate::b64::decode(A3_SIG).unwrap();
    assert_eq!(vk.verify_signature(A3_INPUT.as_bytes(), &sig), Ok(()));
    let tampered = A3_INPUT.replace('J', "K");
    assert_eq!(vk.verify_signature(tampered.as_bytes(), &sig), Err(JoseError::BadSignature));
    assert_eq!(vk.verify_signature(A3_INPUT.as_bytes(), &sig[..63]), Err(JoseError::BadSignature));
}

#[test]
fn jwk_refusals() {
    let y_plus_one = {
        let mut y = crate::b64::decode(A3_Y).unwrap();
        y[31] ^= 1;
        b64(y)
    };
    let p = b64([0xff; 32]); // above the field prime
    let spoil = |f: &dyn Fn(&mut Jwk)| {
        let mut jwk = a3_jwk();
        f(&mut jwk);
        jwk
    };
    let cases = [
        ("kty RSA", spoil(&|j| j.kty = "RSA".into())),
        ("kty lower", spoil(&|j| j.kty = "ec".into())),
        ("crv P-384", spoil(&|j| j.crv = "P-384".into())),
        ("crv missing", spoil(&|j| j.crv = String::new())),
        ("x short", spoil(&|j| j.x = b64([1u8; 31]))),
        ("x long", spoil(&|j| j.x = b64([1u8; 33]))),
        ("x padded", spoil(&|j| j.x.push('='))),
        ("x standard", spoil(&|j| j.x = j.x.replace('f', "+"))),
        ("y off curve", spoil(&|j| j.y = y_plus_one.clone())),
        ("x y past p", spoil(&|j| (j.x, j.y) = (p.clone(), p.clone()))),
        ("zero point", spoil(&|j| (j.x, j.y) = (b64([0; 32]), b64([0; 32])))),
        ("alg RS256", spoil(&|j| j.alg = Some("RS256".into()))),
        ("alg ES384", spoil(&|j| j.alg = Some("ES384".into()))),
        ("empty kid", spoil(&|j| j.kid = Some(String::new()))),
    ];
    for (name, jwk) in cases {
        assert!(is_bad_key(VerifyingKey::from_jwk(&jwk)), "{name}");
    }
    let mut es256 = a3_jwk();
    es256.alg = Some("ES256".into());
    assert!(VerifyingKey::from_jwk(&es256).is_ok());
}

#[test]
fn jwks_ignores_unknown_members_and_tolerates_other_key_types() {
    let json = format!(
        r#"{{"spiffe_sequence":7,"keys":[
            {{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}","use":"jwt-svid","kid":"a","d":"secret","x5c":[]}},
            {{"kty":"RSA","n":"AQAB","e":"AQAB","use":"x509-svid"}}
        ]}}"#
    );
    let set: Jwks = serde_json::from_str(&json).unwrap();
    assert_eq!(set.keys.len(), 2);
    assert_eq!(VerifyingKey::from_jwk(&set.keys[0]).unwrap().kid(), "a");
    assert!(is_bad_key(VerifyingKey::from_jwk(&set.keys[1])));
    let dup = format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","x":"{A3_X}","y":"{A3_Y}"}}"#);
    assert!(serde_json::from_str::<Jwk>(&dup).is_err());
    assert_eq!(serde_json::from_str::<Jwks>(r#"{"keys":[]}"#).unwrap(), Jwks::default());
}
