//! Compact JWS (RFC 7515 §7.1) with ES256 only, parsed strictly.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{JoseError, SigningKey, VerifyingKey};

/// The only JWS algorithm: ECDSA on P-256 with SHA-256 (RFC 7518 §3.4).
pub const ALG_ES256: &str = "ES256";

/// Longest token accepted or produced, in bytes (16 KiB).
///
/// Lanyard tokens are a few hundred bytes to a couple of KiB; the bound caps the work done
/// on input before any signature check.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Length of a 64-byte ES256 signature in unpadded base64url.
const SIGNATURE_B64_LEN: usize = 86;

/// Header members a token may carry; anything else (`jku`, `x5u`, `jwk`, `crit`, `b64`,
/// `zip`, …) could change how the token is read, so it is refused.
const HEADER_MEMBERS: [&str; 3] = ["alg", "kid", "typ"];

/// A protected header that passed the strict rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Always [`ALG_ES256`].
    pub alg: String,
    /// The signing key's id; never empty.
    pub kid: String,
    /// Token type, such as `JWT` or `secevent+jwt`.
    pub typ: Option<String>,
}

/// A token whose header, signature and payload syntax all checked out.
///
/// The claims are not yet validated: see [`claims::check_registered`](crate::claims::check_registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The protected header.
    pub header: Header,
    /// The decoded payload: JSON object text, exactly as signed.
    pub claims: Vec<u8>,
}

/// Parses and verifies a compact JWS.
///
/// The token must be three non-empty segments of unpadded base64url, at most
/// [`MAX_TOKEN_LEN`] bytes. The header must be a JSON object with only `alg` (exactly
/// `ES256`), `kid` (a non-empty string) and optionally `typ` (a string), none repeated.
/// When `allowed_typs` is `Some`, `typ` must be present and one of them (compared exactly).
/// `find_key` maps the header's `kid` to a trusted key. The signature must be 64 bytes of
/// `r || s` and the payload a JSON object with unique top-level members.
///
/// ECDSA signatures are malleable (`s` and `n - s` both verify), so never use the token
/// text as a unique id: use its `jti`.
pub fn verify<'k>(
    token: &str,
    allowed_typs: Option<&[&str]>,
    find_key: impl Fn(&str) -> Option<&'k VerifyingKey>,
) -> Result<Verified, JoseError> {
    let segments = Segments::split(token)?;
    let header = parse_header(segments.header)?;
    let key = find_key(&header.kid).ok_or_else(|| JoseError::UnknownKid(header.kid.clone()))?;
    // Nothing from the payload is read until the signature holds.
    let signature = crate::b64::decode(segments.signature)?;
    key.verify_signature(segments.signing_input.as_bytes(), &signature)?;
    if let Some(allowed) = allowed_typs {
        match &header.typ {
            Some(typ) if allowed.contains(&typ.as_str()) => {}
            _ => return Err(JoseError::WrongTyp),
        }
    }
    let claims = crate::b64::decode(segments.payload)?;
    check_payload(&claims)?;
    Ok(Verified { header, claims })
}

/// Reads a token's header without verifying anything else, for diagnostics.
///
/// The token shape and header rules are those of [`verify`]: a header refused here is
/// refused there with the same error.
pub fn decode_header(token: &str) -> Result<Header, JoseError> {
    parse_header(Segments::split(token)?.header)
}

/// Builds the compact JWS for [`SigningKey::sign`].
pub(crate) fn sign(key: &SigningKey, typ: &str, claims_json: &[u8]) -> Result<String, JoseError> {
    /// Field order is the header's member order.
    #[derive(Serialize)]
    struct OutHeader<'a> {
        alg: &'a str,
        kid: &'a str,
        typ: &'a str,
    }

    check_payload(claims_json)?;
    let header = serde_json::to_vec(&OutHeader { alg: ALG_ES256, kid: key.kid(), typ })
        .map_err(|e| JoseError::BadHeader(e.to_string()))?;
    let mut token = format!("{}.{}", crate::b64::encode(&header), crate::b64::encode(claims_json));
    if token.len() + 1 + SIGNATURE_B64_LEN > MAX_TOKEN_LEN {
        return Err(JoseError::Malformed);
    }
    let signature = key.sign_bytes(token.as_bytes())?;
    token.push('.');
    token.push_str(&crate::b64::encode(signature.as_ref()));
    Ok(token)
}

/// The three segments of a compact JWS, still encoded.
struct Segments<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// `header '.' payload`, the bytes the signature covers.
    signing_input: &'t str,
}

impl<'t> Segments<'t> {
    fn split(token: &'t str) -> Result<Self, JoseError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JoseError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(JoseError::Malformed);
        }
        Ok(Self { header, payload, signature, signing_input: &token[..header.len() + 1 + payload.len()] })
    }
}

/// Decodes and checks a header segment. `alg` is checked before `kid` so that a token
/// forged with `"alg":"none"` is reported as such.
fn parse_header(segment: &str) -> Result<Header, JoseError> {
    let bytes = crate::b64::decode(segment)?;
    let Members(members) =
        serde_json::from_slice(&bytes).map_err(|e| JoseError::BadHeader(format!("not a json object: {e}")))?;

    let mut values: [Option<Value>; 3] = Default::default();
    for (name, value) in members {
        let Some(i) = HEADER_MEMBERS.iter().position(|m| *m == name) else {
            return Err(JoseError::BadHeader(format!("member {name:?} is not allowed")));
        };
        if values[i].replace(value).is_some() {
            return Err(JoseError::BadHeader(format!("duplicate member {name:?}")));
        }
    }
    let [alg, kid, typ] = values;

    let alg = match alg {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(JoseError::BadHeader("alg is not a string".into())),
        None => return Err(JoseError::BadHeader("missing alg".into())),
    };
    if alg != ALG_ES256 {
        return Err(JoseError::UnsupportedAlg(alg));
    }
    let kid = match kid {
        Some(Value::String(kid)) if !kid.is_empty() => kid,
        Some(Value::String(_)) | None => return Err(JoseError::MissingKid),
        Some(_) => return Err(JoseError::BadHeader("kid is not a string".into())),
    };
    let typ = match typ {
        Some(Value::String(typ)) => Some(typ),
        Some(_) => return Err(JoseError::BadHeader("typ is not a string".into())),
        None => None,
    };
    Ok(Header { alg, kid, typ })
}

/// The payload must be JSON object text with unique top-level members, so that every
/// reader of the claims sees the same values.
fn check_payload(bytes: &[u8]) -> Result<(), JoseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| JoseError::BadPayload)?;
    serde_json::from_str::<UniqueObject>(text).map(|_| ()).map_err(|_| JoseError::BadPayload)
}

/// A JSON object's members in order, duplicates kept (serde_json's map keeps only the
/// last one, which would hide a repeated `alg`).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// A member name, borrowed from the JSON text unless it holds an escape.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Accepts any JSON object whose top-level member names are unique.
struct UniqueObject;

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueVisitor;
        impl<'de> Visitor<'de> for UniqueVisitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object with unique members")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut seen = HashSet::new();
                while let Some(MemberName(name)) = map.next_key()? {
                    if !seen.insert(name) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(UniqueObject)
            }
        }
        deserializer.deserialize_map(UniqueVisitor)
    }
}
