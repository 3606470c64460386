//! Revocation events (the feed verifiers follow) and risk reports.
//!
//! Every revocation is one event with its own gapless sequence number,
//! written in the same transaction as the state change it announces and
//! its audit record: a verifier that has seen event `n` has seen every
//! revocation up to `n`, and the server refuses from the moment the write
//! is acknowledged.

use std::fmt;

use lanyard_core::{SessionId, SpiffeId, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event of the revocation feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// 1, 2, 3, … without gaps, across every kind; a counter of its own,
    /// unrelated to audit seqs and entry revisions.
    pub seq: u64,
    /// Unix seconds, by the caller's clock.
    pub at: u64,
    /// What was revoked.
    pub kind: RevocationKind,
    /// What it is about: a task id, a session, a [`RiskSubject`] as
    /// displayed, a `jti`, an entry's or an agent's SPIFFE ID.
    pub subject: String,
    /// Every task this event ended (empty for kinds that end none).
    pub tasks: Vec<TaskId>,
    /// Kind-specific facts, as JSON (see [`RevocationKind`]).
    pub detail: Value,
}

impl Revocation {
    /// An event before the store gives it its seq.
    pub(crate) fn draft(kind: RevocationKind, at: u64, subject: String, tasks: Vec<TaskId>) -> Self {
        Self { seq: 0, at, kind, subject, tasks, detail: serde_json::json!({}) }
    }

    /// The event of a risk report, `effective` being the level the open
    /// record has after it.
    pub(crate) fn risk_raised(risk: &RiskRecord, effective: &str) -> Self {
        let mut event = Self::draft(RevocationKind::RiskRaised, risk.reported_at, risk.subject.to_string(), vec![]);
        event.detail = serde_json::json!({
            "risk_subject": risk.subject,
            "level": effective,
            "reported_level": risk.level,
            "reason": risk.reason,
            "reported_by": risk.reported_by,
        });
        event
    }

    /// The event of clearing the open risk on `subject`.
    pub(crate) fn risk_cleared(subject: &RiskSubject, at: u64) -> Self {
        let mut event = Self::draft(RevocationKind::RiskCleared, at, subject.to_string(), vec![]);
        event.detail = serde_json::json!({ "risk_subject": subject });
        event
    }
}

/// What a [`Revocation`] announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A task ended, with its descendants; `subject` is the task id.
    TaskEnded,
    /// A session was revoked, ending its tasks; `subject` is the session.
    SessionRevoked,
    /// A risk was reported; `detail` has `risk_subject`, the effective
    /// `level`, the `reported_level`, `reason` and `reported_by`.
    RiskRaised,
    /// An open risk was cleared; `detail` has `risk_subject`.
    RiskCleared,
    /// One token was revoked; `subject` is its `jti`.
    TokenRevoked,
    /// A registration entry was deleted; `subject` is its SPIFFE ID,
    /// `detail` has `entry_id`.
    EntryDeleted,
    /// A node agent was banned; `subject` is its SPIFFE ID.
    AgentBanned,
    /// A signing key was revoked; `subject` is its id (JWT `kid` or CA
    /// serial). Verifiers stop trusting it before their next bundle refresh.
    KeyRevoked,
}

/// What a risk report is about.
///
/// A user risk without `iss` applies to that subject at every issuer; with
/// `iss`, only at that issuer. See [`crate::Store::open_risks`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSubject {
    /// An end user.
    User {
        /// The subject at the identity provider.
        sub: String,
        /// The identity provider; `None` for every one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iss: Option<String>,
    },
    /// A connector workload.
    Connector(SpiffeId),
    /// A node agent.
    Agent(SpiffeId),
    /// An end user's session.
    Session(SessionId),
}

impl fmt::Display for RiskSubject {
    /// `user:alice`, `user:alice@https://idp`, `connector:spiffe://…`,
    /// `agent:spiffe://…`, `session:s1`. For reading, not parsing: a
    /// subject may itself contain `@`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { sub, iss: None } => write!(f, "user:{sub}"),
            Self::User { sub, iss: Some(iss) } => write!(f, "user:{sub}@{iss}"),
            Self::Connector(id) => write!(f, "connector:{id}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
            Self::Session(session) => write!(f, "session:{session}"),
        }
    }
}

/// An open risk on one subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRecord {
    /// Who or what is at risk.
    pub subject: RiskSubject,
    /// `low`, `medium` or `high`: the policy crate owns the levels and
    /// their meaning; the store keeps the string and only ranks it
    /// (see [`crate::Store::report_risk`]).
    pub level: String,
    /// Why, in the reporter's words.
    pub reason: String,
    /// Unix seconds of the report.
    pub reported_at: u64,
    /// Who reported it (`admin:uid=0`, a detector's SPIFFE ID, …).
    pub reported_by: String,
}

/// Orders risk levels: `low` < `medium` < `high` < anything else. A level
/// this build does not know ranks above all it knows, so that a newer,
/// more severe level is never replaced by a lesser one (fail closed).
pub(crate) fn risk_rank(level: &str) -> u8 {
    match level {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        _ => 4,
    }
}

/// The `risks` key of `subject`: a tag byte, then the subject, so that
/// every key is distinct whatever the strings hold. A user's is
/// [`user_risk_prefix`] then `\0` (every issuer) or `\x01` and the issuer.
pub(crate) fn risk_key(subject: &RiskSubject) -> Vec<u8> {
    match subject {
        RiskSubject::User { sub, iss } => {
            let mut key = user_risk_prefix(sub);
            match iss {
                None => key.push(0),
                Some(iss) => {
                    key.push(1);
                    key.extend_from_slice(iss.as_bytes());
                }
            }
            key
        }
        RiskSubject::Connector(id) => [b"c", id.as_str().as_bytes()].concat(),
        RiskSubject::Agent(id) => [b"a", id.as_str().as_bytes()].concat(),
        RiskSubject::Session(session) => [b"s", session.as_str().as_bytes()].concat(),
    }
}

/// The `risks` key prefix of every report on the user `sub`, at any
/// issuer. Length-prefixed, so `al` is no prefix of `alice`.
pub(crate) fn user_risk_prefix(sub: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(sub.len() + 10);
    key.push(b'u');
    key.extend_from_slice(&(sub.len() as u64).to_be_bytes());
    key.extend_from_slice(sub.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_display_and_serialize() {
        let alice = RiskSubject::User { sub: "alice".into(), iss: None };
        let alice_at = RiskSubject::User { sub: "alice".into(), iss: Some("https://idp".into()) };
        let conn = RiskSubject::Connector(SpiffeId::parse("spiffe://example.org/connector/gh").unwrap());
        let agent = RiskSubject::Agent(SpiffeId::parse("spiffe://example.org/agent/n1").unwrap());
        let session = RiskSubject::Session(SessionId::parse("s1").unwrap());
        assert_eq!(alice.to_string(), "user:alice");
        assert_eq!(alice_at.to_string(), "user:alice@https://idp");
        assert_eq!(conn.to_string(), "connector:spiffe://example.org/connector/gh");
        assert_eq!(agent.to_string(), "agent:spiffe://example.org/agent/n1");
        assert_eq!(session.to_string(), "session:s1");
        assert_eq!(serde_json::to_value(&alice).unwrap(), json!({"user": {"sub": "alice"}}));
        assert_eq!(serde_json::to_value(&conn).unwrap(), json!({"connector": "spiffe://example.org/connector/gh"}));
        for s in [alice, alice_at, conn, agent, session] {
            assert_eq!(serde_json::from_value::<RiskSubject>(serde_json::to_value(&s).unwrap()).unwrap(), s);
        }
    }

    #[test]
    fn kinds_are_snake_case_and_levels_rank() {
        assert_eq!(serde_json::to_value(RevocationKind::TaskEnded).unwrap(), json!("task_ended"));
        assert_eq!(serde_json::to_value(RevocationKind::AgentBanned).unwrap(), json!("agent_banned"));
        assert!(risk_rank("low") < risk_rank("medium"));
        assert!(risk_rank("medium") < risk_rank("high"));
        assert!(risk_rank("high") < risk_rank("critical"));
    }
}
