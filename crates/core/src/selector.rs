//! Workload selectors: facts an agent attests about a caller, and the
//! conditions a registration entry places on them.
//!
//! Written `unix:<kind>:<value>`, as SPIRE's unix workload attestor does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hex;

/// Longest user or group name accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Longest executable path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// One fact about a workload process.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// `unix:uid:<n>`: the effective user id.
    Uid(u32),
    /// `unix:gid:<n>`: the effective group id.
    Gid(u32),
    /// `unix:user:<name>`: the user name of the uid.
    User(String),
    /// `unix:group:<name>`: the group name of the gid.
    Group(String),
    /// `unix:path:<abs path>`: the executable the process runs.
    Path(String),
    /// `unix:sha256:<64 hex>`: SHA-256 of that executable.
    Sha256([u8; 32]),
}

/// Why a string is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Not of the form `unix:<kind>:<value>`.
    #[error("selector must look like unix:<kind>:<value>, e.g. unix:uid:1000")]
    Malformed,
    /// A type other than `unix`.
    #[error("unknown selector type {0:?} (only \"unix\" is supported)")]
    UnknownType(String),
    /// A kind other than uid, gid, user, group, path, sha256.
    #[error("unknown unix selector {0:?} (expected uid, gid, user, group, path or sha256)")]
    UnknownKind(String),
    /// uid/gid that is not a decimal u32.
    #[error("{0} must be a decimal number")]
    NotANumber(&'static str),
    /// Empty, too long or containing whitespace, control characters or ':'.
    #[error("{0} name must be 1-256 characters without whitespace, control characters or ':'")]
    BadName(&'static str),
    /// Not an absolute path, or too long, or containing NUL.
    #[error("path must be absolute, at most 4096 bytes, without NUL")]
    BadPath,
    /// Not 64 lower-case hex digits.
    #[error("sha256 must be 64 lower-case hex digits")]
    BadDigest,
}

impl Selector {
    /// Parses `unix:<kind>:<value>`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let (ty, rest) = s.split_once(':').ok_or(SelectorError::Malformed)?;
        if ty != "unix" {
            return Err(SelectorError::UnknownType(ty.to_owned()));
        }
        let (kind, value) = rest.split_once(':').ok_or(SelectorError::Malformed)?;
        match kind {
            "uid" => Ok(Self::Uid(parse_id(value, "uid")?)),
            "gid" => Ok(Self::Gid(parse_id(value, "gid")?)),
            "user" => Ok(Self::User(parse_name(value, "user")?)),
            "group" => Ok(Self::Group(parse_name(value, "group")?)),
            "path" => {
                if !value.starts_with('/') || value.len() > MAX_PATH_LEN || value.contains('\0') {
                    return Err(SelectorError::BadPath);
                }
                Ok(Self::Path(value.to_owned()))
            }
            "sha256" => hex::decode_lower::<32>(value).map(Self::Sha256).ok_or(SelectorError::BadDigest),
            other => Err(SelectorError::UnknownKind(other.to_owned())),
        }
    }

    /// Whether evaluating this selector needs the executable hashed.
    pub fn needs_digest(&self) -> bool {
        matches!(self, Self::Sha256(_))
    }
}

fn parse_id(value: &str, what: &'static str) -> Result<u32, SelectorError> {
    // Reject '+', leading zeros and the like so Display round-trips.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || (value.len() > 1 && value.starts_with('0')) {
        return Err(SelectorError::NotANumber(what));
    }
    value.parse().map_err(|_| SelectorError::NotANumber(what))
}

fn parse_name(value: &str, what: &'static str) -> Result<String, SelectorError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && !value.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':');
    if ok { Ok(value.to_owned()) } else { Err(SelectorError::BadName(what)) }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(n) => write!(f, "unix:uid:{n}"),
            Self::Gid(n) => write!(f, "unix:gid:{n}"),
            Self::User(s) => write!(f, "unix:user:{s}"),
            Self::Group(s) => write!(f, "unix:group:{s}"),
            Self::Path(s) => write!(f, "unix:path:{s}"),
            Self::Sha256(d) => write!(f, "unix:sha256:{}", hex::encode(d)),
        }
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a caller described by `attested` satisfies every selector in `required`.
///
/// An empty `required` never matches: an entry must say who it is for.
pub fn all_match(required: &[Selector], attested: &[Selector]) -> bool {
    !required.is_empty() && required.iter().all(|s| attested.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_kind() {
        let digest = "ab".repeat(32);
        for s in [
            "unix:uid:0".to_owned(),
            "unix:uid:4294967295".to_owned(),
            "unix:gid:1000".to_owned(),
            "unix:user:alice".to_owned(),
            "unix:group:wheel".to_owned(),
            "unix:path:/usr/bin/python3".to_owned(),
            format!("unix:sha256:{digest}"),
        ] {
            assert_eq!(Selector::parse(&s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_selectors() {
        use SelectorError::*;
        let cases: &[(&str, SelectorError)] = &[
            ("uid:1000", UnknownType("uid".into())),
            ("unix", Malformed),
            ("unix:uid", Malformed),
            ("k8s:ns:default", UnknownType("k8s".into())),
            ("unix:pid:1", UnknownKind("pid".into())),
            ("unix:uid:", NotANumber("uid")),
            ("unix:uid:-1", NotANumber("uid")),
            ("unix:uid:+1", NotANumber("uid")),
            ("unix:uid:01", NotANumber("uid")),
            ("unix:uid:4294967296", NotANumber("uid")),
            ("unix:user:", BadName("user")),
            ("unix:user:a b", BadName("user")),
            ("unix:group:a:b", BadName("group")),
            ("unix:path:bin/x", BadPath),
            ("unix:sha256:AB", BadDigest),
        ];
        for (input, want) in cases {
            assert_eq!(Selector::parse(input).as_ref(), Err(want), "{input:?}");
        }
        let upper = format!("unix:sha256:{}", "AB".repeat(32));
        assert_eq!(Selector::parse(&upper), Err(BadDigest));
    }

    #[test]
    fn matching_needs_every_selector() {
        let s = |x: &str| Selector::parse(x).unwrap();
        let attested = [s("unix:uid:1000"), s("unix:gid:100"), s("unix:path:/bin/x")];
        assert!(all_match(&[s("unix:uid:1000")], &attested));
        assert!(all_match(&[s("unix:uid:1000"), s("unix:path:/bin/x")], &attested));
        assert!(!all_match(&[s("unix:uid:1000"), s("unix:path:/bin/y")], &attested));
        assert!(!all_match(&[s("unix:uid:0")], &attested));
        assert!(!all_match(&[], &attested));
    }

    proptest! {
        #[test]
        fn round_trips(s in "unix:(uid|gid):[1-9][0-9]{0,8}|unix:(user|group):[a-z_][a-z0-9_-]{0,30}|unix:path:/[a-zA-Z0-9/._-]{0,60}|unix:sha256:[0-9a-f]{64}") {
            let sel = Selector::parse(&s).unwrap();
            prop_assert_eq!(sel.to_string(), s);
            let again: Selector = serde_json::from_str(&serde_json::to_string(&sel).unwrap()).unwrap();
            prop_assert_eq!(again, sel);
        }

        #[test]
        fn accepted_selectors_round_trip(s in "unix:\\PC{0,40}") {
            if let Ok(sel) = Selector::parse(&s) {
                prop_assert_eq!(sel.to_string(), s);
            }
        }
    }
}
