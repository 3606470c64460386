//! Registration entries: which workloads, served by which agent, get which identity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Ttl;
use crate::ids;
use crate::selector::Selector;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::task::{Audience, Classification, DelegatePattern, MAX_DELEGATES, MAX_TASK_AUDIENCES, MAX_TOOLS, Tool};

/// Most selectors one entry may carry.
pub const MAX_SELECTORS: usize = 32;
/// Most extra DNS names one entry may carry.
pub const MAX_DNS_NAMES: usize = 32;
/// Longest hint.
pub const MAX_HINT_LEN: usize = 128;
/// Longest entry id accepted from outside.
pub const MAX_ENTRY_ID_LEN: usize = 64;

/// A server-assigned entry identifier: 1–64 of `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(String);

impl EntryId {
    /// Parses an entry id.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ENTRY_ID_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(Self(s.to_owned())) } else { Err(EntryError::BadId) }
    }

    /// Builds the id for 128 random bits (32 lower-case hex digits).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(crate::hex::encode(&bytes))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EntryId {
    type Err = EntryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", self.0)
    }
}

impl Serialize for EntryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A DNS name for an X.509-SVID SAN: RFC 1123 labels, optionally a leading `*.`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DnsName(String);

impl DnsName {
    /// Parses and lower-cases a DNS name.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let name = s.to_ascii_lowercase();
        let body = name.strip_prefix("*.").unwrap_or(&name);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !body.split('.').all(label_ok) {
            return Err(EntryError::BadDnsName(s.to_owned()));
        }
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The id has characters outside `[A-Za-z0-9_-]` or is empty/too long.
    #[error("entry id must be 1-64 letters, digits, '-' or '_'")]
    BadId,
    /// No selectors: the entry would match nobody, or everybody.
    #[error("an entry needs at least one selector")]
    NoSelectors,
    /// More than [`MAX_SELECTORS`].
    #[error("an entry may have at most 32 selectors")]
    TooManySelectors,
    /// More than [`MAX_DNS_NAMES`].
    #[error("an entry may have at most 32 DNS names")]
    TooManyDnsNames,
    /// Not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    BadDnsName(String),
    /// The SPIFFE ID or parent ID is in another trust domain.
    #[error("{0} is not in trust domain {1}")]
    ForeignTrustDomain(SpiffeId, TrustDomain),
    /// The SPIFFE ID is in a namespace Lanyard keeps for its own components.
    #[error("{0} is reserved for Lanyard's own components (/agent/…, /lanyard/…)")]
    ReservedId(SpiffeId),
    /// The SPIFFE ID is the trust domain itself.
    #[error("an entry's SPIFFE ID needs a path")]
    EmptyPath,
    /// An entry names itself as its parent.
    #[error("an entry cannot be its own parent")]
    SelfParent,
    /// The hint is too long or has control characters.
    #[error("hint must be at most 128 printable characters")]
    BadHint,
    /// Too many tools, audiences or delegates.
    #[error(
        "an entry may name at most {MAX_TOOLS} tools, {MAX_TASK_AUDIENCES} audiences and {MAX_DELEGATES} delegates"
    )]
    TooManyCeilings,
}

/// A registration entry.
///
/// Every field holds a value that is valid on its own; [`Entry::check`] adds
/// the rules that relate fields to each other and to the trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Server-assigned id.
    pub id: EntryId,
    /// The identity handed out.
    pub spiffe_id: SpiffeId,
    /// The agent allowed to serve it.
    pub parent_id: SpiffeId,
    /// All must match the caller; sorted and without duplicates.
    pub selectors: Vec<Selector>,
    /// Lifetime of X.509-SVIDs.
    pub x509_ttl: Ttl,
    /// Lifetime of JWT-SVIDs.
    pub jwt_ttl: Ttl,
    /// Extra DNS SANs on the X.509-SVID.
    pub dns_names: Vec<DnsName>,
    /// Unix seconds after which the entry is no longer served.
    pub expires_at: Option<u64>,
    /// Operator label handed to the workload with its SVIDs.
    pub hint: String,
    /// Bumped on every change.
    pub revision: u64,
    /// Tools this connector may ever be scoped to (task ceiling).
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// Audiences it may ever get task tokens for (task ceiling).
    #[serde(default)]
    pub audiences: Vec<Audience>,
    /// The most sensitive data its tasks may touch.
    #[serde(default = "lowest_classification")]
    pub max_classification: Classification,
    /// Connectors it may hand a sub-task to.
    #[serde(default)]
    pub delegate_to: Vec<DelegatePattern>,
    /// Whether this workload may begin tasks (an orchestrator, MCP host or gateway).
    #[serde(default)]
    pub task_authority: bool,
}

fn lowest_classification() -> Classification {
    Classification::Public
}

impl Entry {
    /// Checks the rules that span fields; sorts and de-duplicates selectors
    /// and DNS names so that equal entries compare equal.
    pub fn check(&mut self, td: &TrustDomain) -> Result<(), EntryError> {
        self.selectors.sort();
        self.selectors.dedup();
        self.dns_names.sort();
        self.dns_names.dedup();
        self.tools.sort();
        self.tools.dedup();
        self.audiences.sort();
        self.audiences.dedup();
        self.delegate_to.sort();
        self.delegate_to.dedup();
        if self.tools.len() > MAX_TOOLS
            || self.audiences.len() > MAX_TASK_AUDIENCES
            || self.delegate_to.len() > MAX_DELEGATES
        {
            return Err(EntryError::TooManyCeilings);
        }
        if self.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        if self.selectors.len() > MAX_SELECTORS {
            return Err(EntryError::TooManySelectors);
        }
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(EntryError::TooManyDnsNames);
        }
        for id in [&self.spiffe_id, &self.parent_id] {
            if !id.is_member_of(td) {
                return Err(EntryError::ForeignTrustDomain(id.clone(), td.clone()));
            }
        }
        if self.spiffe_id.path().is_empty() {
            return Err(EntryError::EmptyPath);
        }
        if ids::is_reserved(&self.spiffe_id) {
            return Err(EntryError::ReservedId(self.spiffe_id.clone()));
        }
        if self.spiffe_id == self.parent_id {
            return Err(EntryError::SelfParent);
        }
        if self.hint.len() > MAX_HINT_LEN || self.hint.chars().any(char::is_control) {
            return Err(EntryError::BadHint);
        }
        Ok(())
    }

    /// Whether the entry is past its `expires_at` at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at.is_some_and(|t| now_unix >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    pub(crate) fn sample() -> Entry {
        Entry {
            id: EntryId::parse("e1").unwrap(),
            spiffe_id: SpiffeId::parse("spiffe://example.org/connector/github").unwrap(),
            parent_id: SpiffeId::parse("spiffe://example.org/agent/node1").unwrap(),
            selectors: vec![Selector::Uid(1000), Selector::Uid(1000), Selector::Gid(5)],
            x509_ttl: "1h".parse().unwrap(),
            jwt_ttl: "5m".parse().unwrap(),
            dns_names: vec![DnsName::parse("GitHub.internal").unwrap()],
            expires_at: None,
            hint: String::new(),
            revision: 1,
            tools: vec![Tool::parse("github.search").unwrap()],
            audiences: vec![Audience::parse("api.github.com").unwrap()],
            max_classification: Classification::Internal,
            delegate_to: vec![],
            task_authority: false,
        }
    }

    #[test]
    fn accepts_and_normalises() {
        let mut e = sample();
        e.check(&td()).unwrap();
        assert_eq!(e.selectors, vec![Selector::Uid(1000), Selector::Gid(5)]);
        assert_eq!(e.dns_names[0].as_str(), "github.internal");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
    }

    #[test]
    fn refuses_each_rule() {
        type Mutation = Box<dyn Fn(&mut Entry)>;
        let cases: Vec<(Mutation, EntryError)> = vec![
            (Box::new(|e| e.selectors.clear()), EntryError::NoSelectors),
            (Box::new(|e| e.selectors = (0..33).map(Selector::Uid).collect()), EntryError::TooManySelectors),
            (
                Box::new(|e| e.spiffe_id = SpiffeId::parse("spiffe://other.org/x").unwrap()),
                EntryError::ForeignTrustDomain(SpiffeId::parse("spiffe://other.org/x").unwrap(), td()),
            ),
            (
                Box::new(|e| e.spiffe_id = SpiffeId::parse("spiffe://example.org/agent/evil").unwrap()),
                EntryError::ReservedId(SpiffeId::parse("spiffe://example.org/agent/evil").unwrap()),
            ),
            (
                Box::new(|e| e.spiffe_id = SpiffeId::parse("spiffe://example.org/lanyard/server").unwrap()),
                EntryError::ReservedId(SpiffeId::parse("spiffe://example.org/lanyard/server").unwrap()),
            ),
            (Box::new(|e| e.spiffe_id = SpiffeId::parse("spiffe://example.org").unwrap()), EntryError::EmptyPath),
            (
                Box::new(|e| {
                    e.parent_id = SpiffeId::parse("spiffe://example.org/alias").unwrap();
                    e.spiffe_id = e.parent_id.clone();
                }),
                EntryError::SelfParent,
            ),
            (Box::new(|e| e.hint = "a\nb".into()), EntryError::BadHint),
        ];
        for (i, (mutate, want)) in cases.into_iter().enumerate() {
            let mut e = sample();
            mutate(&mut e);
            assert_eq!(e.check(&td()), Err(want), "case {i}");
        }
    }

    #[test]
    fn old_records_without_ceilings_get_the_narrowest() {
        let mut json: serde_json::Value = serde_json::to_value(sample()).unwrap();
        for field in ["tools", "audiences", "max_classification", "delegate_to", "task_authority"] {
            json.as_object_mut().unwrap().remove(field);
        }
        let e: Entry = serde_json::from_value(json).unwrap();
        assert!(e.tools.is_empty() && e.audiences.is_empty() && e.delegate_to.is_empty() && !e.task_authority);
        assert_eq!(e.max_classification, Classification::Public);
    }

    #[test]
    fn entry_ids_and_dns_names() {
        assert!(EntryId::parse("").is_err());
        assert!(EntryId::parse("a/b").is_err());
        assert!(EntryId::parse(&"a".repeat(65)).is_err());
        assert_eq!(EntryId::from_random([0xab; 16]).as_str().len(), 32);
        for bad in ["", "-a.com", "a-.com", "a..com", "a_b.com", "*.*.com", "a.com."] {
            assert!(DnsName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DnsName::parse("*.svc.cluster.local").is_ok());
    }

    #[test]
    fn expiry() {
        let mut e = sample();
        assert!(!e.is_expired(u64::MAX));
        e.expires_at = Some(100);
        assert!(!e.is_expired(99));
        assert!(e.is_expired(100));
    }
}
