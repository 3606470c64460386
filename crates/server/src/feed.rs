//! The revocation feed: every revocation event as a signed Security Event
//! Token (RFC 8417), served on the bundle endpoint for verifiers.
//!
//! - `GET /v1/revocations?after=SEQ&wait=SECONDS` answers the events after
//!   `SEQ` (at most [`MAX_EVENTS`]), waiting up to `wait` seconds (≤ 60) for
//!   one when there are none; every answer carries a signed heartbeat with the
//!   feed's head, so a verifier can tell a quiet feed from a withheld one.
//! - `GET /v1/revocations/snapshot` answers, signed, everything revoked as of
//!   a sequence number, for a verifier starting cold.
//!
//! SETs, heartbeats and snapshots are signed with the JWT-SVID key (in the
//! bundle); their `typ` keeps any of them from passing as a JWT-SVID.

use std::collections::BTreeSet;
use std::time::Duration;

use lanyard_core::unix_secs;
use lanyard_policy::RiskLevel;
use lanyard_store::{Revocation, RevocationKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::state::State;
use crate::status::ApiError;

/// `typ` of a revocation event.
pub const SET_TYP: &str = "secevent+jwt";
/// `typ` of a feed heartbeat.
pub const HEARTBEAT_TYP: &str = "lanyard-feed+jwt";
/// `typ` of a snapshot.
pub const SNAPSHOT_TYP: &str = "lanyard-snapshot+jwt";
/// Prefix of the event type URIs (`urn:lanyard:revocation:task_ended`, …).
pub const EVENT_URI_PREFIX: &str = "urn:lanyard:revocation:";
/// Most events in one answer.
pub const MAX_EVENTS: usize = 500;
/// Longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// One answer of the feed.
#[derive(Serialize)]
pub(crate) struct FeedPage {
    /// SETs, oldest first.
    events: Vec<String>,
    /// What to pass as `after` next time.
    next: u64,
    /// The newest durable event.
    head: u64,
    /// The oldest event still served; older positions need the snapshot.
    oldest: u64,
    /// Signed `{iss, iat, head}`.
    heartbeat: String,
}

fn kind_name(kind: RevocationKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl State {
    fn issuer(&self) -> Value {
        self.config.public_url.as_deref().map_or(Value::Null, |u| Value::from(u.trim_end_matches('/')))
    }

    /// Whether an open risk at `level` stops tokens here.
    fn blocking(&self, level: &str) -> bool {
        level.parse::<RiskLevel>().map_or(true, |l| l >= self.ceilings.risk_threshold)
    }

    /// What a verifier needs of one event: what it is about, the tasks it
    /// ended, and for risks the level and whether it blocks. Not the reason
    /// or who reported it: the feed is public.
    fn event_payload(&self, r: &Revocation) -> Value {
        let mut payload = json!({
            "subject": r.subject,
            "tasks": r.tasks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if r.kind == RevocationKind::RiskRaised {
            let level = r.detail["level"].as_str().unwrap_or("high");
            payload["level"] = Value::from(level);
            payload["blocking"] = Value::from(self.blocking(level));
        }
        payload
    }

    fn sign(&self, typ: &str, claims: &Value) -> Result<String, ApiError> {
        self.keys().jwt.sign_claims_as(typ, claims).map_err(|e| ApiError::Internal(format!("signing: {e}")))
    }

    /// The SET for one revocation event.
    pub(crate) fn sign_event(&self, r: &Revocation) -> Result<String, ApiError> {
        let uri = format!("{EVENT_URI_PREFIX}{}", kind_name(r.kind));
        let mut events = serde_json::Map::new();
        events.insert(uri, self.event_payload(r));
        let claims = json!({
            "iss": self.issuer(),
            "iat": r.at,
            "jti": format!("{}:revocation:{}", self.td, r.seq),
            "seq": r.seq,
            "events": events,
        });
        self.sign(SET_TYP, &claims)
    }

    /// Events after `after`, waiting up to `wait` for the first.
    pub(crate) async fn feed(&self, after: u64, wait: Duration) -> Result<FeedPage, ApiError> {
        let mut heads = self.store.subscribe_revocations();
        let mut shutdown = self.shutdown.subscribe();
        if *heads.borrow_and_update() <= after && !wait.is_zero() {
            let _waiting = self.metrics.feed_wait();
            let arrived = heads.wait_for(|head| *head > after);
            tokio::select! {
                _ = tokio::time::timeout(wait, arrived) => {}
                _ = shutdown.changed() => {}
            }
        }
        let events = self.store.revocations_since(after, MAX_EVENTS).await?;
        let head = self.store.revocation_seq();
        let now = self.now();
        for r in &events {
            // `at` is whole seconds: the lag is as coarse.
            self.metrics.feed_delivered(now.duration_since(lanyard_core::from_unix_secs(r.at)).unwrap_or_default());
        }
        let next = events.last().map_or(after, |r| r.seq);
        let signed = events.iter().map(|r| self.sign_event(r)).collect::<Result<Vec<_>, _>>()?;
        let heartbeat =
            self.sign(HEARTBEAT_TYP, &json!({ "iss": self.issuer(), "iat": unix_secs(self.now()), "head": head }))?;
        Ok(FeedPage { events: signed, next, head, oldest: 1, heartbeat })
    }

    /// Everything revoked as of the feed's head, signed: a verifier starts
    /// from here and follows the feed from `as_of`.
    ///
    /// Events are kept for ever for now, so this folds the whole feed; once
    /// retention is bounded it will read the same state from the store.
    pub(crate) async fn snapshot(&self) -> Result<String, ApiError> {
        let as_of = self.store.revocation_seq();
        let mut ended_tasks = BTreeSet::new();
        let mut sessions = BTreeSet::new();
        let mut jtis = BTreeSet::new();
        let mut entries = BTreeSet::new();
        let mut agents = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut after = 0;
        loop {
            let page = self.store.revocations_since(after, MAX_EVENTS).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page.iter().filter(|r| r.seq <= as_of) {
                ended_tasks.extend(r.tasks.iter().map(ToString::to_string));
                let subject = r.subject.clone();
                match r.kind {
                    RevocationKind::SessionRevoked => drop(sessions.insert(subject)),
                    RevocationKind::TokenRevoked => drop(jtis.insert(subject)),
                    RevocationKind::EntryDeleted => drop(entries.insert(subject)),
                    RevocationKind::AgentBanned => drop(agents.insert(subject)),
                    RevocationKind::KeyRevoked => drop(keys.insert(subject)),
                    RevocationKind::TaskEnded | RevocationKind::RiskRaised | RevocationKind::RiskCleared => {}
                }
            }
            if after >= as_of {
                break;
            }
        }
        let risks: Vec<Value> = self
            .store
            .list_risks()
            .await?
            .iter()
            .map(|r| json!({ "subject": r.subject.to_string(), "level": r.level, "blocking": self.blocking(&r.level) }))
            .collect();
        let claims = json!({
            "iss": self.issuer(),
            "iat": unix_secs(self.now()),
            "as_of": as_of,
            "ended_tasks": ended_tasks,
            "revoked_sessions": sessions,
            "revoked_jtis": jtis,
            "deleted_entries": entries,
            "banned_agents": agents,
            "revoked_keys": keys,
            "risks": risks,
        });
        self.sign(SNAPSHOT_TYP, &claims)
    }
}
