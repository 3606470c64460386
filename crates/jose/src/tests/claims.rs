//! Registered-claim checks.

use crate::JoseError;
use crate::claims::{Audience, DEFAULT_LEEWAY_SECS, MAX_LEEWAY_SECS, Registered, check_registered};

const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = DEFAULT_LEEWAY_SECS;

fn registered() -> Registered {
    Registered {
        sub: "spiffe://example.org/web".into(),
        aud: Audience::One("db".into()),
        exp: NOW + 300,
        iat: Some(NOW),
        nbf: Some(NOW),
        iss: None,
        jti: Some("j1".into()),
    }
}

fn check(c: &Registered, now: u64) -> Result<(), JoseError> {
    check_registered(c, "db", now, LEEWAY)
}

#[test]
fn fresh_token_passes() {
    assert_eq!(check(&registered(), NOW), Ok(()));
}

#[test]
fn expiry_with_leeway_edge() {
    let c = registered();
    assert_eq!(check(&c, c.exp + LEEWAY - 1), Ok(()));
    assert_eq!(check(&c, c.exp + LEEWAY), Err(JoseError::Expired));
    assert_eq!(check_registered(&c, "db", c.exp, 0), Err(JoseError::Expired));
    assert_eq!(check_registered(&c, "db", c.exp - 1, 0), Ok(()));
}

#[test]
fn leeway_is_bounded() {
    let c = registered();
    let late = c.exp + MAX_LEEWAY_SECS;
    assert_eq!(check_registered(&c, "db", late, u64::MAX), Err(JoseError::Expired));
    assert_eq!(check_registered(&c, "db", late - 1, u64::MAX), Ok(()));
}

#[test]
fn not_yet_valid() {
    let mut c = registered();
    c.nbf = Some(NOW + LEEWAY);
    assert_eq!(check(&c, NOW), Ok(()));
    c.nbf = Some(NOW + LEEWAY + 1);
    assert_eq!(check(&c, NOW), Err(JoseError::NotYetValid));
}

#[test]
fn issued_in_future() {
    let mut c = registered();
    c.nbf = None;
    c.iat = Some(NOW + LEEWAY);
    assert_eq!(check(&c, NOW), Ok(()));
    c.iat = Some(NOW + LEEWAY + 1);
    assert_eq!(check(&c, NOW), Err(JoseError::IssuedInFuture));
}

#[test]
fn wrong_audience() {
    let c = registered();
    assert_eq!(check_registered(&c, "other", NOW, LEEWAY), Err(JoseError::WrongAudience));
    assert_eq!(check_registered(&c, "DB", NOW, LEEWAY), Err(JoseError::WrongAudience));
    assert_eq!(check_registered(&c, "", NOW, LEEWAY), Err(JoseError::WrongAudience));
    let mut empty = registered();
    empty.aud = Audience::Many(vec![]);
    assert_eq!(check(&empty, NOW), Err(JoseError::WrongAudience));
}

#[test]
fn audience_array() {
    let mut c = registered();
    c.aud = Audience::Many(vec!["api".into(), "db".into()]);
    assert_eq!(check(&c, NOW), Ok(()));
    assert_eq!(c.aud.len(), 2);
    assert_eq!(c.aud.iter().collect::<Vec<_>>(), ["api", "db"]);
    assert!(!c.aud.contains("d"));
    assert_eq!(Audience::One("x".into()).len(), 1);
    assert!(Audience::Many(vec![]).is_empty());
}

#[test]
fn json_forms() {
    let one: Registered = serde_json::from_str(r#"{"sub":"s","aud":"db","exp":5,"extra":{}}"#).unwrap();
    assert_eq!(one.aud, Audience::One("db".into()));
    assert_eq!(one.iat, None);
    let many: Registered = serde_json::from_str(r#"{"sub":"s","aud":["a","b"],"exp":5}"#).unwrap();
    assert_eq!(many.aud, Audience::Many(vec!["a".into(), "b".into()]));
    assert_eq!(serde_json::to_string(&one).unwrap(), r#"{"sub":"s","aud":"db","exp":5}"#);
}

#[test]
fn times_must_be_integers() {
    for bad in [
        r#"{"sub":"s","aud":"db","exp":5.0}"#,
        r#"{"sub":"s","aud":"db","exp":5.5}"#,
        r#"{"sub":"s","aud":"db","exp":5e3}"#,
        r#"{"sub":"s","aud":"db","exp":"5"}"#,
        r#"{"sub":"s","aud":"db","exp":-5}"#,
        r#"{"sub":"s","aud":"db","exp":18446744073709551616}"#,
        r#"{"sub":"s","aud":"db","exp":5,"iat":1.5}"#,
        r#"{"sub":"s","aud":"db","exp":5,"nbf":"1"}"#,
        r#"{"sub":"s","aud":"db"}"#,
        r#"{"sub":"s","aud":7,"exp":5}"#,
        r#"{"sub":"s","aud":["a",1],"exp":5}"#,
        r#"{"sub":"s","aud":"db","exp":5,"exp":6}"#,
    ] {
        assert!(serde_json::from_str::<Registered>(bad).is_err(), "{bad}");
    }
}
