//! The tamper-evident audit log: events, hash-chained records, and the walk
//! that verifies a chain.
//!
//! Record `n` commits to record `n - 1` through `prev_hash`, so altering,
//! removing or reordering any record breaks every hash after it. Truncating
//! the tail is only detectable against a head hash kept elsewhere: export
//! [`ChainReport::head`] to anchor it.

use lanyard_core::{Action, Audience, SessionId, SpiffeId, TaskId, Tool, User};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::records::hex32;

/// The `prev_hash` of record 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// An audit event as the caller describes it; the store adds seq and hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds, by the caller's clock.
    pub at: u64,
    /// What happened: `entry.create`, `x509svid.mint`, …
    pub kind: String,
    /// Who asked: `admin:uid=0`, an agent's SPIFFE ID, …
    pub actor: String,
    /// What it is about: a SPIFFE ID, an entry id, …
    pub subject: String,
    /// Anything else worth keeping, as JSON.
    pub detail: Value,
    /// The structured fields that audit queries filter on. Absent from the
    /// JSON (and from the hashed form) when empty, so records written
    /// before it existed hash as they always did.
    #[serde(default, skip_serializing_if = "AuditContext::is_empty")]
    pub context: AuditContext,
}

/// Who and what an audit record is about, as typed fields rather than
/// free-form `detail`.
///
/// The connector (the workload acting) and the end user (on whose behalf)
/// are separate fields and never folded into one. Every field is optional
/// and left out of the JSON when unset or empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditContext {
    /// `allow` or `deny`, for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Why, for a decision (the refusal reason, or what allowed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ids of the policies that determined the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The connector workload's SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<SpiffeId>,
    /// The end user the connector acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// The end user's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// The task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// The tools asked for or granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// The action asked for or granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The audience of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// The node agent that relayed the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<SpiffeId>,
    /// Hex SHA-256 of the minted token's `jti` (the `jti` itself is not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti_hash: Option<String>,
}

impl AuditContext {
    /// Whether no field is set (the context is then left out of the record).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Which records [`crate::Store::query_audit`] returns; every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records whose context names this task, or that ended it (a
    /// revocation's `detail.ended_tasks`).
    pub task: Option<TaskId>,
    /// Only records whose context names an end user with this subject (any issuer).
    pub user_sub: Option<String>,
    /// Only records whose context names this connector.
    pub connector: Option<SpiffeId>,
    /// Only events at or after this Unix second.
    pub since: Option<u64>,
    /// Only events of exactly this kind (`task.begin`, `task_token.mint`, …).
    pub kind: Option<String>,
}

impl AuditFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        let ctx = &event.context;
        self.task.as_ref().is_none_or(|t| ctx.task.as_ref() == Some(t) || ended(event, t))
            && self.user_sub.as_deref().is_none_or(|s| ctx.user.as_ref().is_some_and(|u| u.sub.as_str() == s))
            && self.connector.as_ref().is_none_or(|c| ctx.connector.as_ref() == Some(c))
            && self.since.is_none_or(|t| event.at >= t)
            && self.kind.as_deref().is_none_or(|k| event.kind == k)
    }
}

/// Whether a revocation record lists `task` among the tasks it ended.
fn ended(event: &AuditEvent, task: &TaskId) -> bool {
    let task = task.to_string();
    event.detail["ended_tasks"].as_array().is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(task.as_str())))
}

/// A stored audit record: one link of a hash chain.
///
/// `hash = SHA-256(prev_hash || seq as 8 bytes big-endian || canonical JSON
/// of event)`, see [`chain_hash`]. Hashes are lower-case hex in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// What happened.
    pub event: AuditEvent,
    /// The `hash` of record `seq - 1`, or [`GENESIS_HASH`] for record 1.
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// This record's hash.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

/// The outcome of a successful chain verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// How many records were checked.
    pub records: u64,
    /// The hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub head: [u8; 32],
}

/// The hash of record `seq` holding `event` after a record whose hash is `prev_hash`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, event: &AuditEvent) -> [u8; 32] {
    hash_canonical(prev_hash, seq, &canonical_event(event))
}

/// [`chain_hash`] of an event given as its canonical JSON.
fn hash_canonical(prev_hash: &[u8; 32], seq: u64, canonical: &str) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(prev_hash);
    context.update(&seq.to_be_bytes());
    context.update(canonical.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// An event with its canonical JSON, worked out once: the record's hash
/// covers that text, and the audit log stores it as the record's `event`.
/// Built before a writer takes the chain lock, so the lock is held only to
/// hash and link.
#[derive(Debug)]
pub(crate) struct CanonicalEvent {
    pub(crate) event: AuditEvent,
    /// [`canonical_event`] of `event`.
    pub(crate) json: String,
}

impl From<AuditEvent> for CanonicalEvent {
    fn from(event: AuditEvent) -> Self {
        let json = canonical_event(&event);
        Self { event, json }
    }
}

/// The canonical JSON of an event: no whitespace, object keys sorted by
/// their UTF-8 bytes at every depth, strings escaped minimally.
///
/// Independent of serde_json's map ordering features, so a record hashes the
/// same whichever crates are linked in.
pub fn canonical_event(event: &AuditEvent) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"actor\":");
    write_string(&event.actor, &mut out);
    out.push_str(",\"at\":");
    out.push_str(&event.at.to_string());
    if !event.context.is_empty() {
        out.push_str(",\"context\":");
        write_context(&event.context, &mut out);
    }
    out.push_str(",\"detail\":");
    write_value(&event.detail, &mut out);
    out.push_str(",\"kind\":");
    write_string(&event.kind, &mut out);
    out.push_str(",\"subject\":");
    write_string(&event.subject, &mut out);
    out.push('}');
    out
}

/// Writes the members of one JSON object; the caller names them in sorted order.
struct ObjectWriter<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    /// Starts member `key`; the caller writes its value next.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_string(key, self.out);
        self.out.push(':');
        self.out
    }

    fn string(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            write_string(value, self.key(key));
        }
    }

    fn strings<'s>(&mut self, key: &str, values: impl ExactSizeIterator<Item = &'s str>) {
        if values.len() == 0 {
            return;
        }
        let out = self.key(key);
        out.push('[');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(value, out);
        }
        out.push(']');
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// The canonical JSON of a context: the members serde writes, keys in
/// byte order (the order below), nested `user` sorted too.
fn write_context(ctx: &AuditContext, out: &mut String) {
    let mut obj = ObjectWriter::open(out);
    obj.string("action", ctx.action.map(Action::as_str));
    obj.string("agent", ctx.agent.as_ref().map(SpiffeId::as_str));
    obj.string("audience", ctx.audience.as_ref().map(Audience::as_str));
    obj.string("connector", ctx.connector.as_ref().map(SpiffeId::as_str));
    obj.string("decision", ctx.decision.as_deref());
    obj.string("jti_hash", ctx.jti_hash.as_deref());
    obj.strings("policies", ctx.policies.iter().map(String::as_str));
    obj.string("reason", ctx.reason.as_deref());
    obj.string("session", ctx.session.as_ref().map(SessionId::as_str));
    obj.string("task", ctx.task.map(|t| t.to_string()).as_deref());
    obj.strings("tools", ctx.tools.iter().map(Tool::as_str));
    if let Some(user) = &ctx.user {
        let mut inner = ObjectWriter::open(obj.key("user"));
        inner.string("iss", Some(user.iss.as_str()));
        inner.string("sub", Some(user.sub.as_str()));
        inner.close();
    }
    obj.close();
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The head of the chain: what the next record links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// Seq of the last record, 0 for an empty log.
    pub(crate) seq: u64,
    /// Hash of the last record.
    pub(crate) hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub(crate) const GENESIS: Self = Self { seq: 0, hash: GENESIS_HASH };

    /// The record that would follow this head.
    pub(crate) fn next(&self, event: AuditEvent) -> AuditRecord {
        let canonical = canonical_event(&event);
        self.next_canonical(event, &canonical)
    }

    /// [`next`](Self::next) for an event whose canonical JSON is known.
    pub(crate) fn next_canonical(&self, event: AuditEvent, canonical: &str) -> AuditRecord {
        let seq = self.seq + 1;
        AuditRecord { seq, hash: hash_canonical(&self.hash, seq, canonical), prev_hash: self.hash, event }
    }

    /// The head after `record`.
    pub(crate) fn after(record: &AuditRecord) -> Self {
        Self { seq: record.seq, hash: record.hash }
    }
}

/// Checks records one by one, in key order, from seq 1.
#[derive(Debug)]
pub(crate) struct ChainWalker {
    head: ChainHead,
}

impl ChainWalker {
    /// A walker expecting record 1.
    pub(crate) fn new() -> Self {
        Self { head: ChainHead::GENESIS }
    }

    /// Checks the record stored at position `key_seq`, as parsed JSON.
    pub(crate) fn check(&mut self, key_seq: u64, stored: Value) -> Result<()> {
        let want = self.head.seq + 1;
        let broken = |reason: String| StoreError::ChainBroken { seq: want, reason };
        if key_seq != want {
            return Err(broken(format!("record {want} is missing (next is {key_seq})")));
        }
        let record: AuditRecord =
            serde_json::from_value(stored.clone()).map_err(|e| broken(format!("record does not decode: {e}")))?;
        if record.seq != want {
            return Err(broken(format!("record {want} is missing or out of order (found record {})", record.seq)));
        }
        if record.prev_hash != self.head.hash {
            return Err(broken("prev_hash is not the previous record's hash".into()));
        }
        if chain_hash(&record.prev_hash, record.seq, &record.event) != record.hash {
            return Err(broken("hash does not match the record's contents".into()));
        }
        // Serde skips members it does not know (an added `"admin": true`,
        // even inside `user`): such bytes are not covered by the hash.
        if serde_json::to_value(&record).ok().as_ref() != Some(&stored) {
            return Err(broken("record holds fields its hash does not cover".into()));
        }
        self.head = ChainHead::after(&record);
        Ok(())
    }

    /// The report once every record has been checked; `expected_seq` is the
    /// head the store knew before the walk, so a missing tail is caught.
    pub(crate) fn finish(self, expected_seq: u64) -> Result<ChainReport> {
        if self.head.seq < expected_seq {
            return Err(StoreError::ChainBroken {
                seq: self.head.seq + 1,
                reason: format!("records after {} are missing", self.head.seq),
            });
        }
        Ok(ChainReport { records: self.head.seq, head: self.head.hash })
    }
}

#[cfg(test)]
mod tests;
