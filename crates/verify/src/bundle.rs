//! Reading a SPIFFE bundle (the Trust Domain and Bundle spec's JWKS form) into
//! a [`TrustBundle`]: `x509-svid` keys become CA certificates (their `x5c`),
//! `jwt-svid` keys become JWT authorities with Lanyard's purpose label.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lanyard_ca::bundle::PURPOSE_MEMBER;
use lanyard_ca::{JwtAuthorityKey, JwtKeyPurpose, TrustBundle};
use lanyard_core::TrustDomain;
use lanyard_jose::{Jwk, VerifyingKey};
use serde::Deserialize;
use serde_json::Value;

use crate::error::BundleError;

/// The refresh hint assumed when a bundle gives none (SPIRE's default).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// Most keys a bundle may hold; a bundle is a handful of keys, so a bound
/// caps the work done on a hostile answer.
pub const MAX_BUNDLE_KEYS: usize = 64;

/// The SPIFFE bundle document; unknown members are ignored, as the spec says.
#[derive(Deserialize)]
struct SpiffeBundle {
    keys: Vec<Value>,
    #[serde(default)]
    spiffe_sequence: u64,
    #[serde(default)]
    spiffe_refresh_hint: Option<u64>,
}

/// Parses SPIFFE bundle JSON.
///
/// - `x509-svid` keys must carry exactly one `x5c` certificate (standard
///   base64 DER), as the spec says; it becomes a trust anchor.
/// - `jwt-svid` keys must be EC P-256 with a `kid`; [`PURPOSE_MEMBER`] says
///   what they sign (`jwt-svid` when absent). A key with a purpose this build
///   does not know is left out: it can verify nothing here.
/// - Keys with another `use` are ignored.
///
/// The trust domain is `trust_domain` when given (the CA certificates must
/// name it, if they name one), else the one the CA certificates name.
pub fn parse_spiffe_bundle(json: &[u8], trust_domain: Option<&TrustDomain>) -> Result<TrustBundle, BundleError> {
    let doc: SpiffeBundle = serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
    if doc.keys.len() > MAX_BUNDLE_KEYS {
        return Err(BundleError::Json(format!("more than {MAX_BUNDLE_KEYS} keys")));
    }
    let mut x509_authorities = Vec::new();
    let mut jwt_authorities: Vec<JwtAuthorityKey> = Vec::new();
    let mut kids = HashSet::new();
    for (index, key) in doc.keys.iter().enumerate() {
        let bad = |reason: String| BundleError::BadKey { index, reason };
        match key.get("use").and_then(Value::as_str) {
            Some("x509-svid") => x509_authorities.push(x5c_certificate(key).map_err(bad)?),
            Some("jwt-svid") => {
                let Some(k) = jwt_key(key).map_err(bad)? else { continue };
                if !kids.insert(k.key.kid().to_owned()) {
                    return Err(BundleError::DuplicateKid(k.key.kid().to_owned()));
                }
                jwt_authorities.push(k);
            }
            _ => {}
        }
    }
    if x509_authorities.is_empty() && jwt_authorities.is_empty() {
        return Err(BundleError::Empty);
    }
    let trust_domain = bundle_trust_domain(&x509_authorities, trust_domain)?;
    Ok(TrustBundle {
        trust_domain,
        x509_authorities,
        jwt_authorities,
        sequence: doc.spiffe_sequence,
        refresh_hint: doc.spiffe_refresh_hint.map_or(DEFAULT_REFRESH_HINT, Duration::from_secs),
    })
}

/// The DER certificate of an `x509-svid` key.
fn x5c_certificate(key: &Value) -> Result<Vec<u8>, String> {
    let chain = key.get("x5c").and_then(Value::as_array).ok_or("x509-svid key has no x5c")?;
    let [cert] = chain.as_slice() else {
        return Err(format!("x5c must hold exactly one certificate, not {}", chain.len()));
    };
    let text = cert.as_str().ok_or("x5c entry is not a string")?;
    let der = STANDARD.decode(text).map_err(|e| format!("x5c is not base64: {e}"))?;
    // Parsed as a trust anchor now, so that one bad certificate is refused
    // here rather than breaking every chain check later.
    rustls::RootCertStore::empty()
        .add(rustls_pki_types::CertificateDer::from(der.as_slice()))
        .map_err(|e| format!("x5c is not a usable CA certificate: {e}"))?;
    // And as Lanyard reads CA certificates everywhere else (found by fuzzing:
    // webpki took a certificate x509-parser refuses, which re-serializing the
    // bundle then dropped).
    if lanyard_ca::bundle::ca_public_key(&der).is_none() {
        return Err("x5c is not a CA certificate with an EC P-256 key".into());
    }
    Ok(der)
}

/// A `jwt-svid` key with its purpose; `None` for a purpose this build does not know.
fn jwt_key(key: &Value) -> Result<Option<JwtAuthorityKey>, String> {
    let jwk: Jwk = serde_json::from_value(key.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk.kid.as_deref().is_none_or(str::is_empty) {
        return Err("jwt-svid key has no kid".into());
    }
    let purpose = match key.get(PURPOSE_MEMBER) {
        None => JwtKeyPurpose::JwtSvid,
        Some(Value::String(p)) => match JwtKeyPurpose::parse(p) {
            Some(purpose) => purpose,
            None => return Ok(None),
        },
        Some(_) => return Err(format!("{PURPOSE_MEMBER} is not a string")),
    };
    let key = VerifyingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    // The bundle does not say when a key stops signing; the issuer drops it
    // from the bundle instead.
    Ok(Some(JwtAuthorityKey { key, expires_at: u64::MAX, purpose }))
}

/// The configured trust domain, checked against the CAs, or the CAs' own.
fn bundle_trust_domain(cas: &[Vec<u8>], configured: Option<&TrustDomain>) -> Result<TrustDomain, BundleError> {
    let mut named = cas.iter().filter_map(|der| lanyard_ca::svid::ca_trust_domain(der));
    let expected = match configured {
        Some(td) => td.clone(),
        None => named.next().ok_or(BundleError::NoTrustDomain)?,
    };
    for found in cas.iter().filter_map(|der| lanyard_ca::svid::ca_trust_domain(der)) {
        if found != expected {
            return Err(BundleError::WrongTrustDomain { expected: expected.to_string(), found: found.to_string() });
        }
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Fixture;

    #[test]
    fn the_issuers_own_json_round_trips() {
        let f = Fixture::new();
        let parsed = parse_spiffe_bundle(f.bundle.spiffe_json().unwrap().as_bytes(), None).unwrap();
        // Keys published in SPIFFE JSON carry no end of use.
        let expected: Vec<_> =
            f.bundle.jwt_authorities.iter().map(|k| JwtAuthorityKey { expires_at: u64::MAX, ..k.clone() }).collect();
        assert_eq!(parsed.jwt_authorities, expected);
        assert_eq!(parsed.x509_authorities, f.bundle.x509_authorities);
        assert_eq!(parsed.trust_domain, f.bundle.trust_domain);
        assert_eq!((parsed.sequence, parsed.refresh_hint), (f.bundle.sequence, f.bundle.refresh_hint));
    }

    #[test]
    fn purpose_defaults_to_jwt_svid_and_unknown_purposes_are_left_out() {
        let f = Fixture::new();
        let mut doc: Value = serde_json::from_str(&f.bundle.spiffe_json().unwrap()).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys[1].as_object_mut().unwrap().remove(PURPOSE_MEMBER);
        keys[2][PURPOSE_MEMBER] = "from-the-future".into();
        let parsed = parse_spiffe_bundle(doc.to_string().as_bytes(), None).unwrap();
        assert_eq!(parsed.jwt_authorities.len(), 1);
        assert_eq!(parsed.jwt_authorities[0].purpose, JwtKeyPurpose::JwtSvid);
        assert_eq!(parsed.jwt_authorities[0].key, f.jwt_svid.verifying_key());
    }

    #[test]
    fn bad_bundles_are_refused_with_the_reason() {
        let f = Fixture::new();
        let good: Value = serde_json::from_str(&f.bundle.spiffe_json().unwrap()).unwrap();
        let edit = |change: &dyn Fn(&mut Value)| {
            let mut doc = good.clone();
            change(&mut doc);
            parse_spiffe_bundle(doc.to_string().as_bytes(), None).unwrap_err()
        };
        assert!(matches!(edit(&|d| d["keys"][0]["x5c"] = serde_json::json!([])), BundleError::BadKey { index: 0, .. }));
        assert!(matches!(edit(&|d| d["keys"][0]["x5c"] = serde_json::json!(["AAAA"])), BundleError::BadKey { .. }));
        assert!(matches!(edit(&|d| d["keys"][1]["kid"] = Value::Null), BundleError::BadKey { index: 1, .. }));
        assert!(matches!(edit(&|d| d["keys"][1]["crv"] = "P-384".into()), BundleError::BadKey { index: 1, .. }));
        assert!(matches!(edit(&|d| d["keys"][2]["kid"] = d["keys"][1]["kid"].clone()), BundleError::DuplicateKid(_)));
        assert!(matches!(edit(&|d| d["keys"] = serde_json::json!([])), BundleError::Empty));
        assert!(matches!(
            edit(&|d| {
                let jwt = d["keys"][1].clone();
                d["keys"] = serde_json::json!([jwt]);
            }),
            BundleError::NoTrustDomain
        ));
        assert!(matches!(parse_spiffe_bundle(b"[]", None), Err(BundleError::Json(_))));
        let other = TrustDomain::new("other.org").unwrap();
        let json = f.bundle.spiffe_json().unwrap();
        assert!(matches!(
            parse_spiffe_bundle(json.as_bytes(), Some(&other)),
            Err(BundleError::WrongTrustDomain { .. })
        ));
    }

    #[test]
    fn a_ca_certificate_only_webpki_accepts_is_refused() {
        // Found by fuzzing (fuzz/regressions/bundle): a mutated CA
        // certificate that webpki takes as an anchor but x509-parser refuses;
        // the bundle was accepted, then lost the CA when written back out.
        let json = include_bytes!("../testdata/bundle-ca-x509-parser-refuses.json");
        let e = parse_spiffe_bundle(json, None).unwrap_err();
        assert!(matches!(&e, BundleError::BadKey { index: 0, reason } if reason.contains("EC P-256")), "{e}");
    }
}
