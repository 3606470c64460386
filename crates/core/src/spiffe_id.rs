//! SPIFFE IDs and trust domains, valid by construction.
//!
//! The rules are those of the SPIFFE-ID specification (`standards/SPIFFE-ID.md`):
//! the scheme is exactly `spiffe://`; a trust domain is made of lower-case
//! letters, digits, `.`, `-` and `_`; a path is a sequence of `/segment`s,
//! each non-empty, not `.` or `..`, of letters, digits, `.`, `-` and `_`; no
//! trailing slash, query, fragment, port or user info.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme prefix of every SPIFFE ID.
pub const SCHEME_PREFIX: &str = "spiffe://";

/// "SPIFFE implementations MUST support SPIFFE URIs up to 2048 bytes in length
/// and SHOULD NOT generate URIs of length greater than 2048 bytes."
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// "Trust domain names [...] MUST NOT exceed 255 characters" (the DNS limit
/// the specification inherits).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input did not start with `spiffe://`.
    #[error("scheme is missing or is not \"spiffe://\"")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `[a-z0-9._-]` in the trust domain (upper case, port, user info…).
    #[error("trust domain characters are limited to lower-case letters, digits, '.', '-' and '_'")]
    BadTrustDomainChar,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// `//` somewhere in the path.
    #[error("path cannot contain empty segments")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path cannot contain dot segments")]
    DotSegment,
    /// A character outside `[A-Za-z0-9._-]` in the path (`%`, `?`, `#`, space…).
    #[error("path segment characters are limited to letters, digits, '.', '-' and '_'")]
    BadPathChar,
    /// The path ends with `/`.
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is longer than 2048 bytes")]
    TooLong,
}

/// A SPIFFE trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`: the key of bundle maps.
    pub fn id(&self) -> SpiffeId {
        SpiffeId { repr: format!("{SCHEME_PREFIX}{}", self.0), td_end: SCHEME_PREFIX.len() + self.0.len() }
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain><path>`.
///
/// The path may be empty (the trust domain's own ID). Two IDs are equal when
/// their strings are equal: the specification allows no alternative spellings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    repr: String,
    // INVARIANT: `repr[SCHEME_PREFIX.len()..td_end]` is a valid trust domain and
    // `repr[td_end..]` a valid path.
    td_end: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(SpiffeIdError::WrongScheme)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..td_len])?;
        validate_path(&rest[td_len..])?;
        Ok(Self { repr: s.to_owned(), td_end: SCHEME_PREFIX.len() + td_len })
    }

    /// Builds `spiffe://<td>/<segment>/<segment>…` from path segments, each
    /// checked as [`SpiffeId::parse`] would.
    pub fn from_segments<S: AsRef<str>>(td: &TrustDomain, segments: &[S]) -> Result<Self, SpiffeIdError> {
        let mut repr = td.id().repr;
        let td_end = repr.len();
        for segment in segments {
            let segment = segment.as_ref();
            validate_segment(segment)?;
            repr.push('/');
            repr.push_str(segment);
        }
        if repr.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(Self { repr, td_end })
    }

    /// The trust domain name (`example.org`).
    pub fn trust_domain_name(&self) -> &str {
        &self.repr[SCHEME_PREFIX.len()..self.td_end]
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.repr[self.td_end..]
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.repr
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.repr)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.repr)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        // "/" alone is a trailing slash too, not an empty segment.
        return Err(SpiffeIdError::TrailingSlash);
    }
    // INVARIANT: a non-empty path starts with '/' because the caller split on it.
    path.split('/').skip(1).try_for_each(validate_segment)
}

fn validate_segment(segment: &str) -> Result<(), SpiffeIdError> {
    match segment {
        "" => Err(SpiffeIdError::EmptySegment),
        "." | ".." => Err(SpiffeIdError::DotSegment),
        _ if segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) => Ok(()),
        _ => Err(SpiffeIdError::BadPathChar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_ids() {
        for s in ["spiffe://example.org", "spiffe://example.org/connector/github", "spiffe://a_b-c.9/x.y/Z-_/..a"] {
            let id = SpiffeId::parse(s).unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id = SpiffeId::parse("spiffe://example.org/connector/github").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/connector/github");
        assert_eq!(id.segments().collect::<Vec<_>>(), ["connector", "github"]);
    }

    #[test]
    fn refuses_each_rule() {
        use SpiffeIdError::*;
        let long_path = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://example.org/x", WrongScheme),
            ("SPIFFE://example.org/x", WrongScheme),
            ("spiffe:/example.org", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///path", MissingTrustDomain),
            ("spiffe://Example.org", BadTrustDomainChar),
            ("spiffe://example.org:8080/x", BadTrustDomainChar),
            ("spiffe://user@example.org/x", BadTrustDomainChar),
            ("spiffe://example.org/", TrailingSlash),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org//a", EmptySegment),
            ("spiffe://example.org/a/./b", DotSegment),
            ("spiffe://example.org/..", DotSegment),
            ("spiffe://example.org/a%20b", BadPathChar),
            ("spiffe://example.org/a?b", BadPathChar),
            ("spiffe://example.org/a#b", BadPathChar),
            ("spiffe://example.org/a b", BadPathChar),
            (long_path.as_str(), TooLong),
            (long_td.as_str(), TrustDomainTooLong),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn trust_domain_rules() {
        assert!(TrustDomain::new("example.org").is_ok());
        assert_eq!(TrustDomain::new("spiffe://example.org"), Err(SpiffeIdError::BadTrustDomainChar));
        assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::MissingTrustDomain));
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert_eq!(td.id().path(), "");
    }

    #[test]
    fn serde_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/a\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"spiffe://example.org/a\"");
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").is_err());
    }

    fn td_strategy() -> impl Strategy<Value = String> {
        "[a-z0-9._-]{1,40}"
    }

    fn segment_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,20}".prop_filter("dot segment", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn parse_display_round_trips(td in td_strategy(), segs in prop::collection::vec(segment_strategy(), 0..6)) {
            let s = format!("spiffe://{td}{}", segs.iter().map(|s| format!("/{s}")).collect::<String>());
            let id = SpiffeId::parse(&s).unwrap();
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id.clone());
            // The two entry points agree.
            let built = SpiffeId::from_segments(&TrustDomain::new(&td).unwrap(), &segs).unwrap();
            prop_assert_eq!(built, id);
        }

        #[test]
        fn parse_never_panics_and_accepted_ids_round_trip(s in "\\PC{0,64}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(id.path().is_empty() || id.path().starts_with('/'));
            }
        }

        #[test]
        fn from_segments_agrees_with_parse(td in td_strategy(), segs in prop::collection::vec("\\PC{0,8}", 0..4)) {
            let td = TrustDomain::new(&td).unwrap();
            let joined = format!("{}{}", td.id(), segs.iter().map(|s| format!("/{s}")).collect::<String>());
            let a = SpiffeId::from_segments(&td, &segs);
            let b = SpiffeId::parse(&joined);
            if !segs.iter().any(|s| s.contains('/')) {
                prop_assert_eq!(a.is_ok(), b.is_ok());
            } else {
                prop_assert!(a.is_err());
            }
            if let (Ok(a), Ok(b)) = (a, b) { prop_assert_eq!(a, b); }
        }
    }
}
