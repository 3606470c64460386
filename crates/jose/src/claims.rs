//! Registered JWT claims (RFC 7519 §4.1) shared by every Lanyard token, and their checks.
//!
//! Token-specific validators (JWT-SVID, task token, revocation event) parse their own
//! claim types from [`Verified::claims`](crate::Verified::claims) and call
//! [`check_registered`] on the registered part.

use serde::{Deserialize, Serialize};

use crate::JoseError;

/// Clock skew tolerated by default between the issuer and the verifier, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Largest leeway [`check_registered`] honours, in seconds; larger values are clamped, so
/// a misconfigured verifier cannot accept long-expired tokens.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The `aud` claim: one audience as a string, or several as an array of strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience, serialized as a plain string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names exactly `a`.
    pub fn contains(&self, a: &str) -> bool {
        self.iter().any(|x| x == a)
    }

    /// Number of audiences named.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether no audience is named (an empty array).
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The audiences, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.as_slice().iter().map(String::as_str)
    }

    fn as_slice(&self) -> &[String] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(all) => all,
        }
    }
}

/// Registered claims every Lanyard token has. Times are integer seconds since the Unix
/// epoch: floats, strings and negative numbers are refused when parsing. Other claims are
/// ignored, so this can be read from any token's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Subject: for Lanyard tokens, a SPIFFE ID.
    pub sub: String,
    /// Audiences the token is meant for.
    pub aud: Audience,
    /// Expiry time.
    pub exp: u64,
    /// Issue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Time before which the token must not be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Unique token id, the handle for revocation and replay checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Checks the registered claims at time `now_unix`, allowing `leeway_secs` of clock skew
/// (at most [`MAX_LEEWAY_SECS`]):
/// - `exp`: valid while `now < exp + leeway`, else [`JoseError::Expired`];
/// - `nbf`: valid once `now + leeway >= nbf`, else [`JoseError::NotYetValid`];
/// - `iat`: must satisfy `iat <= now + leeway`, else [`JoseError::IssuedInFuture`];
/// - `aud`: must contain `expected_aud`, else [`JoseError::WrongAudience`].
pub fn check_registered(c: &Registered, expected_aud: &str, now_unix: u64, leeway_secs: u64) -> Result<(), JoseError> {
    let leeway = leeway_secs.min(MAX_LEEWAY_SECS);
    let late_now = now_unix.saturating_add(leeway);
    if now_unix >= c.exp.saturating_add(leeway) {
        return Err(JoseError::Expired);
    }
    if c.nbf.is_some_and(|nbf| late_now < nbf) {
        return Err(JoseError::NotYetValid);
    }
    if c.iat.is_some_and(|iat| iat > late_now) {
        return Err(JoseError::IssuedInFuture);
    }
    if !c.aud.contains(expected_aud) {
        return Err(JoseError::WrongAudience);
    }
    Ok(())
}
