//! What the revocation feed has revoked, as a verifier holds it in memory:
//! pure state, changed only by verified events ([`crate::feed`]) and asked
//! by the checks ([`crate::check`]).

use std::collections::{HashMap, HashSet};

use lanyard_ca::TaskTokenClaims;

use crate::error::{FeedError, Revoked};

/// One verified revocation event (a SET of the feed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Its place in the feed: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When the issuer recorded it (Unix seconds, the SET's `iat`).
    pub at: u64,
    /// What happened.
    pub kind: EventKind,
    /// What it is about: a task id, a session, a `jti`, a SPIFFE ID, or a
    /// risk subject (`user:alice`, `user:alice@https://idp`,
    /// `connector:spiffe://…`, `agent:spiffe://…`, `session:s1`).
    pub subject: String,
    /// Every task the event ended.
    pub tasks: Vec<String>,
    /// For a raised risk: whether it stops tokens (the issuer's threshold).
    pub blocking: bool,
}

/// The kinds of revocation event (`urn:lanyard:revocation:<kind>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A task ended (with its descendants, all in `tasks`).
    TaskEnded,
    /// A session was revoked.
    SessionRevoked,
    /// A risk was reported; it revokes only when `blocking`.
    RiskRaised,
    /// An open risk was cleared.
    RiskCleared,
    /// One token was revoked by `jti`.
    TokenRevoked,
    /// A registration entry was deleted: tokens issued to its SPIFFE ID
    /// until then are revoked.
    EntryDeleted,
    /// A node agent was banned.
    AgentBanned,
    /// A signing key (`kid`, or CA serial) was revoked.
    KeyRevoked,
    /// A kind this build does not know; only its `tasks` are applied.
    Other(String),
}

impl EventKind {
    /// The kind for the name after `urn:lanyard:revocation:`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "task_ended" => Self::TaskEnded,
            "session_revoked" => Self::SessionRevoked,
            "risk_raised" => Self::RiskRaised,
            "risk_cleared" => Self::RiskCleared,
            "token_revoked" => Self::TokenRevoked,
            "entry_deleted" => Self::EntryDeleted,
            "agent_banned" => Self::AgentBanned,
            "key_revoked" => Self::KeyRevoked,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A signed statement that the feed's newest event was `head` at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Unix seconds, by the issuer's clock (the heartbeat's `iat`).
    pub at: u64,
    /// The newest event at that moment.
    pub head: u64,
}

/// A verified snapshot: everything revoked as of event `as_of`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was signed (Unix seconds).
    pub at: u64,
    /// The newest event it includes.
    pub as_of: u64,
    /// Ended tasks.
    pub ended_tasks: Vec<String>,
    /// Revoked sessions.
    pub revoked_sessions: Vec<String>,
    /// Revoked token ids.
    pub revoked_jtis: Vec<String>,
    /// SPIFFE IDs whose entry was deleted.
    pub deleted_entries: Vec<String>,
    /// Banned agents' SPIFFE IDs.
    pub banned_agents: Vec<String>,
    /// Subjects of open risks that block.
    pub blocking_risks: Vec<String>,
    /// Revoked signing keys (`kid`s and CA serials).
    pub revoked_keys: Vec<String>,
}

/// What is revoked, as of event [`seq`](Self::seq), and how current that is.
///
/// Events are idempotent: applying one twice changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationState {
    seq: u64,
    /// Issuer time of the newest heartbeat (or snapshot) that found this
    /// state caught up with the feed.
    current_at: Option<u64>,
    ended_tasks: HashSet<String>,
    revoked_sessions: HashSet<String>,
    revoked_jtis: HashSet<String>,
    /// SPIFFE ID → when its entry was (last) deleted: credentials issued
    /// until then are revoked, later ones (a new entry) are not.
    deleted_entries: HashMap<String, u64>,
    banned_agents: HashSet<String>,
    blocking_risks: HashSet<String>,
    revoked_keys: HashSet<String>,
}

impl RevocationState {
    /// The state a snapshot describes, current as of its signing.
    ///
    /// The snapshot does not say when entries were deleted; its own time
    /// stands in, so credentials issued before it are refused.
    pub fn from_snapshot(s: Snapshot) -> Self {
        Self {
            seq: s.as_of,
            current_at: Some(s.at),
            ended_tasks: s.ended_tasks.into_iter().collect(),
            revoked_sessions: s.revoked_sessions.into_iter().collect(),
            revoked_jtis: s.revoked_jtis.into_iter().collect(),
            deleted_entries: s.deleted_entries.into_iter().map(|id| (id, s.at)).collect(),
            banned_agents: s.banned_agents.into_iter().collect(),
            blocking_risks: s.blocking_risks.into_iter().collect(),
            revoked_keys: s.revoked_keys.into_iter().collect(),
        }
    }

    /// The newest event applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Issuer time (Unix seconds) at which this state was last known to be
    /// complete; `None` until a heartbeat or snapshot said so.
    pub fn current_at(&self) -> Option<u64> {
        self.current_at
    }

    /// Applies the next event. An event already applied is skipped
    /// (`Ok(false)`); one that skips a sequence number is refused, since an
    /// event in between is missing.
    pub fn apply(&mut self, e: &RevocationEvent) -> Result<bool, FeedError> {
        if e.seq <= self.seq {
            return Ok(false);
        }
        if e.seq != self.seq + 1 {
            return Err(FeedError::Gap { expected: self.seq + 1, found: e.seq });
        }
        self.ended_tasks.extend(e.tasks.iter().cloned());
        let subject = e.subject.clone();
        match &e.kind {
            EventKind::TaskEnded => drop(self.ended_tasks.insert(subject)),
            EventKind::SessionRevoked => drop(self.revoked_sessions.insert(subject)),
            EventKind::TokenRevoked => drop(self.revoked_jtis.insert(subject)),
            EventKind::AgentBanned => drop(self.banned_agents.insert(subject)),
            EventKind::KeyRevoked => drop(self.revoked_keys.insert(subject)),
            EventKind::EntryDeleted => {
                let at = self.deleted_entries.entry(subject).or_insert(e.at);
                *at = (*at).max(e.at);
            }
            // The event carries the subject's effective level, so a risk
            // that no longer blocks is no longer one.
            EventKind::RiskRaised if e.blocking => drop(self.blocking_risks.insert(subject)),
            EventKind::RiskRaised | EventKind::RiskCleared => drop(self.blocking_risks.remove(&subject)),
            EventKind::Other(_) => {}
        }
        self.seq = e.seq;
        Ok(true)
    }

    /// Records a heartbeat: when it finds this state caught up (its head is
    /// not past our position), the state is current as of its time.
    /// Returns whether it was caught up. Time never goes back, so an old
    /// heartbeat replayed changes nothing.
    pub fn observe(&mut self, beat: Heartbeat) -> bool {
        let caught_up = beat.head <= self.seq;
        if caught_up {
            self.current_at = Some(self.current_at.map_or(beat.at, |at| at.max(beat.at)));
        }
        caught_up
    }

    /// Whether anything revokes this task token: its task, its session, its
    /// `jti`, its connector (entry deleted, banned, blocking risk), its user
    /// or its session (blocking risk).
    pub fn check_task_token(&self, c: &TaskTokenClaims) -> Result<(), Revoked> {
        // A revoked session also ends its tasks: name the cause first.
        if self.revoked_sessions.contains(&c.sid) {
            return Err(Revoked::Session(c.sid.clone()));
        }
        if self.ended_tasks.contains(&c.txn) {
            return Err(Revoked::Task(c.txn.clone()));
        }
        self.check_token(&c.jti)?;
        self.check_workload(&c.sub, c.iat)?;
        self.check_risk(&["user:", &c.user.sub])?;
        self.check_risk(&["user:", &c.user.sub, "@", &c.user.iss])?;
        self.check_risk(&["session:", &c.sid])
    }

    /// Whether the signing key `kid` is revoked.
    pub fn check_key(&self, kid: &str) -> Result<(), Revoked> {
        match self.revoked_keys.contains(kid) {
            true => Err(Revoked::Key(kid.to_owned())),
            false => Ok(()),
        }
    }

    /// Whether the token `jti` is revoked.
    pub fn check_token(&self, jti: &str) -> Result<(), Revoked> {
        match self.revoked_jtis.contains(jti) {
            true => Err(Revoked::Token(jti.to_owned())),
            false => Ok(()),
        }
    }

    /// Whether a credential issued to `spiffe_id` at `issued_at` (Unix
    /// seconds) is revoked: its entry deleted since, a banned agent, or a
    /// blocking risk on it as a connector or an agent.
    pub fn check_workload(&self, spiffe_id: &str, issued_at: u64) -> Result<(), Revoked> {
        if self.deleted_entries.get(spiffe_id).is_some_and(|deleted| issued_at <= *deleted) {
            return Err(Revoked::EntryDeleted(spiffe_id.to_owned()));
        }
        if self.banned_agents.contains(spiffe_id) {
            return Err(Revoked::AgentBanned(spiffe_id.to_owned()));
        }
        self.check_risk(&["connector:", spiffe_id])?;
        self.check_risk(&["agent:", spiffe_id])
    }

    /// A blocking risk on the subject made of `parts`.
    fn check_risk(&self, parts: &[&str]) -> Result<(), Revoked> {
        // Most of the time no risk is open: no subject string to build.
        if self.blocking_risks.is_empty() {
            return Ok(());
        }
        let subject = parts.concat();
        match self.blocking_risks.contains(&subject) {
            true => Err(Revoked::Risk(subject)),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "revocation_tests.rs"]
mod tests;
