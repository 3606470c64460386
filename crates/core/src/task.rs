//! Tasks: one user's request, served by one connector, for named tools, one
//! classification of data and one kind of action, for minutes.
//!
//! Everything here is a value that is valid by construction, so the policy
//! and the token builder never re-check a tool name or a task id.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spiffe_id::SpiffeId;

/// Longest tool name.
pub const MAX_TOOL_LEN: usize = 128;
/// Longest audience.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Longest user subject, issuer or session id.
pub const MAX_USER_FIELD_LEN: usize = 256;
/// Most tools a task or entry may name.
pub const MAX_TOOLS: usize = 64;
/// Most audiences a task or entry may name.
pub const MAX_TASK_AUDIENCES: usize = 16;
/// Most `delegate_to` patterns an entry may carry.
pub const MAX_DELEGATES: usize = 32;
/// Deepest delegation chain: a root task is depth 0, its child 1, … up to 4.
pub const MAX_DELEGATION_DEPTH: usize = 4;
/// Longest a task may live.
pub const MAX_TASK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default and longest task-token lifetime.
pub const MAX_TASK_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Why a task field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFieldError {
    /// A tool name with characters outside `[A-Za-z0-9._:/-]`, empty or too long.
    #[error("tool names are 1-128 letters, digits, '.', '_', ':', '/' or '-': {0:?}")]
    BadTool(String),
    /// An audience that is empty, too long or has whitespace/control characters.
    #[error("audiences are 1-512 printable characters without spaces: {0:?}")]
    BadAudience(String),
    /// Not one of public, internal, confidential, restricted.
    #[error("classification must be public, internal, confidential or restricted, not {0:?}")]
    BadClassification(String),
    /// Not one of read, write, delete, execute.
    #[error("action must be read, write, delete or execute, not {0:?}")]
    BadAction(String),
    /// A user subject/issuer or session that is empty, too long or has control characters.
    #[error("{0} must be 1-256 printable characters")]
    BadText(&'static str),
    /// Not 32 lower-case hex digits.
    #[error("task ids are 32 lower-case hex digits")]
    BadTaskId,
    /// A `delegate_to` pattern that is neither a SPIFFE ID nor `<SPIFFE ID>/*`.
    #[error("delegate_to must be a SPIFFE ID or a SPIFFE ID prefix ending in /*: {0:?}")]
    BadDelegate(String),
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(String);

        impl $name {
            /// Parses and checks the value.
            pub fn parse(s: &str) -> Result<Self, TaskFieldError> {
                let check: fn(&str) -> Result<(), TaskFieldError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = TaskFieldError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

string_newtype!(
    /// A tool a connector may be scoped to, such as `github.create_issue`.
    Tool,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= MAX_TOOL_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
        if ok { Ok(()) } else { Err(TaskFieldError::BadTool(s.to_owned())) }
    }
);

string_newtype!(
    /// Who a token is for: the service that will check it (`aud`).
    Audience,
    |s| {
        let ok = printable(s, MAX_AUDIENCE_LEN) && !s.chars().any(char::is_whitespace);
        if ok { Ok(()) } else { Err(TaskFieldError::BadAudience(s.to_owned())) }
    }
);

string_newtype!(
    /// The end user's session, as the orchestrator names it.
    SessionId,
    |s| if printable(s, MAX_USER_FIELD_LEN) { Ok(()) } else { Err(TaskFieldError::BadText("session")) }
);

/// The end user a task acts for: their subject at their identity provider.
/// Kept apart from the connector's identity, never folded into `sub`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct User {
    /// Issuer (the identity provider), e.g. `https://idp.example`.
    pub iss: UserField,
    /// Subject at that issuer, e.g. `alice`.
    pub sub: UserField,
}

string_newtype!(
    /// A user subject or issuer.
    UserField,
    |s| if printable(s, MAX_USER_FIELD_LEN) { Ok(()) } else { Err(TaskFieldError::BadText("user sub and iss")) }
);

/// How sensitive the data a task touches is; ordered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Classification {
    /// Anyone may see it.
    Public,
    /// Inside the organisation.
    Internal,
    /// A need-to-know group.
    Confidential,
    /// The most sensitive.
    Restricted,
}

impl Classification {
    /// Every level, lowest first.
    pub const ALL: [Self; 4] = [Self::Public, Self::Internal, Self::Confidential, Self::Restricted];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        }
    }

    /// 0 for public up to 3 for restricted.
    pub fn level(self) -> i64 {
        match self {
            Self::Public => 0,
            Self::Internal => 1,
            Self::Confidential => 2,
            Self::Restricted => 3,
        }
    }
}

/// What a task does with its tools.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Action {
    /// Reads data.
    Read,
    /// Creates or changes data.
    Write,
    /// Removes data.
    Delete,
    /// Runs something.
    Execute,
}

impl Action {
    /// Every action.
    pub const ALL: [Self; 4] = [Self::Read, Self::Write, Self::Delete, Self::Execute];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Execute => "execute",
        }
    }
}

macro_rules! keyword_enum {
    ($name:ident, $err:ident) => {
        impl FromStr for $name {
            type Err = TaskFieldError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| TaskFieldError::$err(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

keyword_enum!(Classification, BadClassification);
keyword_enum!(Action, BadAction);

/// A task id: 128 random bits, written as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId([u8; 16]);

impl TaskId {
    /// The id for these random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Parses 32 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Self, TaskFieldError> {
        crate::hex::decode_lower::<16>(s).map(Self).ok_or(TaskFieldError::BadTaskId)
    }

    /// The raw bytes (store keys).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl FromStr for TaskId {
    type Err = TaskFieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Who a connector may hand a sub-task to: one SPIFFE ID, or every ID under
/// a prefix (`spiffe://example.org/connector/*`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum DelegatePattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// IDs strictly below this one (`<id>/*`).
    Below(SpiffeId),
}

impl DelegatePattern {
    /// Parses `spiffe://…` or `spiffe://…/*`.
    pub fn parse(s: &str) -> Result<Self, TaskFieldError> {
        let bad = || TaskFieldError::BadDelegate(s.to_owned());
        match s.strip_suffix("/*") {
            Some(prefix) => SpiffeId::parse(prefix).map(Self::Below).map_err(|_| bad()),
            None => SpiffeId::parse(s).map(Self::Exact).map_err(|_| bad()),
        }
    }

    /// Whether `id` is allowed by this pattern. `Below` matches on whole
    /// path segments: `…/connector/*` admits `…/connector/github`, never
    /// `…/connectors-evil`.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(want) => want == id,
            Self::Below(prefix) => {
                id.as_str().strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
            }
        }
    }
}

impl FromStr for DelegatePattern {
    type Err = TaskFieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DelegatePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Below(id) => write!(f, "{id}/*"),
        }
    }
}

impl Serialize for DelegatePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DelegatePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Why a task stopped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Ended by its orchestrator, its connector or an admin.
    Ended,
    /// An ancestor task ended.
    ParentEnded,
    /// Its session was revoked.
    SessionRevoked,
}

/// A task as the server keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Task {
    /// Random id.
    pub id: TaskId,
    /// The connector that serves it.
    pub connector: SpiffeId,
    /// The end user it acts for.
    pub user: User,
    /// The user's session.
    pub session: SessionId,
    /// Tools it may use.
    pub tools: Vec<Tool>,
    /// Services it may present tokens to.
    pub audiences: Vec<Audience>,
    /// The most sensitive data it may touch.
    pub classification: Classification,
    /// What it does.
    pub action: Action,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; it ends by itself then.
    pub expires_at: u64,
    /// Unix seconds, once ended.
    pub ended_at: Option<u64>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// The task it was delegated from.
    pub parent: Option<TaskId>,
    /// Earlier actors, oldest first (empty for a root task).
    pub chain: Vec<SpiffeId>,
    /// Who began it (`admin:uid=0` or an orchestrator's SPIFFE ID).
    pub begun_by: String,
}

impl Task {
    /// Whether it can still mint at `now_unix`: not ended, not expired.
    pub fn is_active(&self, now_unix: u64) -> bool {
        self.ended_at.is_none() && now_unix < self.expires_at
    }

    /// How many delegations led here (0 for a root task).
    pub fn depth(&self) -> usize {
        self.chain.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keywords_round_trip_and_order() {
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse::<Classification>(), Ok(c));
        }
        assert!(Classification::Public < Classification::Restricted);
        assert_eq!("secret".parse::<Classification>(), Err(TaskFieldError::BadClassification("secret".into())));
        assert_eq!("Read".parse::<Action>(), Err(TaskFieldError::BadAction("Read".into())));
        assert_eq!(serde_json::to_string(&Action::Write).unwrap(), "\"write\"");
    }

    #[test]
    fn field_rules() {
        assert!(Tool::parse("github.create_issue").is_ok());
        assert!(Tool::parse("mcp:server/tool-1").is_ok());
        for bad in ["", "a b", "x;y", &"t".repeat(129)] {
            assert!(Tool::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Audience::parse("https://api.example/v1").is_ok());
        assert!(Audience::parse("a b").is_err());
        assert!(Audience::parse("").is_err());
        assert!(UserField::parse("alice").is_ok());
        assert!(UserField::parse("a\nb").is_err());
        assert!(SessionId::parse("").is_err());
    }

    #[test]
    fn task_ids() {
        let id = TaskId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(TaskId::parse(&id.to_string()), Ok(id));
        assert_eq!(TaskId::parse("AB"), Err(TaskFieldError::BadTaskId));
    }

    #[test]
    fn delegate_patterns_match_whole_segments() {
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let below = DelegatePattern::parse("spiffe://example.org/connector/*").unwrap();
        assert!(below.matches(&id("spiffe://example.org/connector/github")));
        assert!(below.matches(&id("spiffe://example.org/connector/a/b")));
        assert!(!below.matches(&id("spiffe://example.org/connector")));
        assert!(!below.matches(&id("spiffe://example.org/connectors-evil")));
        assert!(!below.matches(&id("spiffe://example.org/connectorx/github")));
        let exact = DelegatePattern::parse("spiffe://example.org/connector/github").unwrap();
        assert!(exact.matches(&id("spiffe://example.org/connector/github")));
        assert!(!exact.matches(&id("spiffe://example.org/connector/github/x")));
        assert!(DelegatePattern::parse("spiffe://example.org/*/x").is_err());
        assert!(DelegatePattern::parse("*").is_err());
        assert_eq!(below.to_string(), "spiffe://example.org/connector/*");
    }

    proptest! {
        #[test]
        fn accepted_tools_round_trip(s in "\\PC{0,40}") {
            if let Ok(t) = Tool::parse(&s) {
                prop_assert_eq!(t.to_string(), s.clone());
                prop_assert_eq!(serde_json::from_str::<Tool>(&serde_json::to_string(&t).unwrap()).unwrap(), t);
            }
        }

        #[test]
        fn delegate_patterns_round_trip(segs in prop::collection::vec("[a-z0-9]{1,8}", 1..4), star in any::<bool>()) {
            let s = format!("spiffe://example.org/{}{}", segs.join("/"), if star { "/*" } else { "" });
            let p = DelegatePattern::parse(&s).unwrap();
            prop_assert_eq!(p.to_string(), s);
        }
    }
}
