//! The storage interface the server codes against.

use lanyard_core::{Entry, EntryId, SessionId, SpiffeId, Task, TaskId};

use crate::audit::{AuditEvent, AuditFilter, AuditRecord, ChainReport};
use crate::error::Result;
use crate::records::{AgentRecord, EntryChanges, EntryFilter, JoinTokenRecord, KeyRecord, TaskFilter};
use crate::revocation::{Revocation, RiskRecord, RiskSubject};

/// Everything the server persists. Used as `Arc<dyn Store>`.
///
/// Every write returns only once it is durable, together with its audit
/// record when it has one: an acknowledged write survives a crash. A write
/// that fails (`AlreadyExists`, `Conflict`, `NotFound`, …) changes nothing and
/// records no audit event. After a failed flush every call fails with
/// [`StoreError::Closed`](crate::StoreError::Closed).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts `entry` (its id is chosen by the caller and must be new, else
    /// `AlreadyExists`), sets `entry.revision` to the next global revision and
    /// appends `audit` in the same atomic write; returns once durable. The
    /// store does not validate entries: the caller has run
    /// [`Entry::check`](lanyard_core::Entry::check).
    async fn create_entry(&self, entry: Entry, audit: AuditEvent) -> Result<Entry>;

    /// Replaces the entry with `entry.id` if its stored revision is
    /// `expected_revision` (else `Conflict`; `NotFound` if absent), with a new
    /// global revision; atomic with `audit`; returns once durable.
    async fn update_entry(&self, entry: Entry, expected_revision: u64, audit: AuditEvent) -> Result<Entry>;

    /// Deletes an entry (`NotFound` if absent) and leaves a tombstone so that
    /// agents syncing incrementally learn of it; appends an
    /// [`EntryDeleted`](crate::RevocationKind::EntryDeleted) revocation
    /// (subject the entry's SPIFFE ID, detail `{"entry_id": …}`, `at` the
    /// audit event's); all atomic with `audit`; returns the deleted entry
    /// once durable.
    async fn delete_entry(&self, id: &EntryId, audit: AuditEvent) -> Result<Entry>;

    /// The entry with this id.
    async fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>>;

    /// Entries matching `filter`, ordered by id, starting after `after`, at most `limit`.
    async fn list_entries(&self, filter: &EntryFilter, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>>;

    /// Entries of `parent` that changed after revision `since` (upserted), or
    /// that left `parent` after it (removed: deleted, or re-parented).
    ///
    /// Answers with a snapshot instead (`snapshot = true`, every current
    /// entry of `parent`, nothing removed) when `since` is 0, when it is
    /// ahead of the store, or when it is older than the tombstones kept.
    /// Incremental answers cost O(changes since), snapshots O(entries of
    /// `parent`). `revision` is the durable store revision the answer is
    /// complete up to.
    async fn entry_changes(&self, parent: &SpiffeId, since: u64) -> Result<EntryChanges>;

    /// The latest durable entry revision.
    fn revision(&self) -> u64;

    /// Receives the new revision after each entry write is durable.
    fn subscribe_revision(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Stores a join token under the SHA-256 of its secret
    /// ([`hash_join_token`](crate::hash_join_token)); `AlreadyExists` if that
    /// hash is stored; durable with its audit record.
    async fn create_join_token(&self, token_hash: [u8; 32], record: JoinTokenRecord, audit: AuditEvent) -> Result<()>;

    /// Removes and returns the token's record, durably and with its audit
    /// record, before returning: a token can never be used twice, even across
    /// a crash. `None` (and no audit record) if unknown or already used.
    /// Expiry is the caller's check.
    async fn consume_join_token(&self, token_hash: [u8; 32], audit: AuditEvent) -> Result<Option<JoinTokenRecord>>;

    /// Inserts or replaces an agent, with an audit record when given; durable.
    /// A ban sticks: replacing a banned agent with an unbanned record fails
    /// with [`Revoked`](crate::StoreError::Revoked) and changes nothing, so a
    /// renewal that read the record before [`ban_agent`](Self::ban_agent)
    /// cannot undo it.
    async fn put_agent(&self, agent: AgentRecord, audit: Option<AuditEvent>) -> Result<()>;

    /// The agent with this SPIFFE ID.
    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>>;

    /// Every agent, ordered by SPIFFE ID.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;

    /// Marks the agent banned and appends an
    /// [`AgentBanned`](crate::RevocationKind::AgentBanned) revocation
    /// (subject the agent's ID), atomically with `audit`; returns the
    /// updated record once durable. `NotFound` if unknown. Banning a banned
    /// agent appends another event.
    async fn ban_agent(&self, id: &SpiffeId, at: u64, audit: AuditEvent) -> Result<AgentRecord>;

    /// Keeps every other server sharing this store from changing signing
    /// keys until the returned lock is dropped, so that one replica at a
    /// time decides a rotation. Waits while another holds it. (A store one
    /// process has to itself returns at once.)
    async fn lock_keys(&self) -> Result<crate::KeyLock>;

    /// Inserts or replaces a signing key; durable with its audit record.
    async fn put_key(&self, key: KeyRecord, audit: AuditEvent) -> Result<()>;

    /// Every signing key, ordered by id.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;

    /// Deletes a signing key (`NotFound` if absent); durable with its audit record.
    async fn delete_key(&self, id: &str, audit: AuditEvent) -> Result<()>;

    /// Appends an audit record and returns it once durable. Concurrent
    /// callers share one flush (group commit).
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord>;

    /// Appends an allow decision's record only if `pre` still holds at that
    /// moment (checked under the lock every revocation takes); otherwise
    /// [`StoreError::Revoked`] naming what no longer holds, and nothing is
    /// written. Returns the record's seq once durable. (Not the record: a
    /// mint has no use for it, and what it does not hold across the wait
    /// is freed by the thread that allocated it.)
    async fn append_audit_if(&self, event: AuditEvent, pre: crate::Preconditions) -> Result<u64>;

    /// Appends several records atomically, with consecutive seqs, and
    /// returns them once durable: one write for a batch of credentials.
    /// An empty batch writes nothing.
    async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>>;

    /// Records with `seq >= from`, ascending, at most `limit`.
    async fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Durable records with `seq >= from_seq` that match `filter`,
    /// ascending, at most `limit`.
    ///
    /// There is no index: this scans the log from `from_seq` until `limit`
    /// records matched, O(records scanned), about a microsecond each. Page
    /// with `from_seq` = last seq + 1. `since` is checked on every record
    /// (no early start by time), so it holds even if clocks went back.
    async fn query_audit(&self, filter: &AuditFilter, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// The seq of the newest durable audit record (0 for an empty log).
    fn audit_head(&self) -> u64;

    /// How long group commits (one fsync for many writers) take.
    fn commit_latency(&self) -> &lanyard_core::metrics::Histogram;

    /// Receives [`audit_head`](Self::audit_head) after each flush that made
    /// new audit records durable (for `audit tail --follow`).
    fn subscribe_audit(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Walks the whole chain: gapless seqs from 1, each `prev_hash` the
    /// previous `hash`, each `hash` recomputed. `ChainBroken` names the first
    /// bad record.
    async fn verify_audit_chain(&self) -> Result<ChainReport>;

    /// Makes every applied write durable (called at shutdown).
    async fn flush(&self) -> Result<()>;

    /// Stores a new task, indexed by session and (when it has one) under its
    /// parent, atomically with `audit`; returns it once durable.
    ///
    /// `AlreadyExists` if the id is taken; `NotFound` if its parent is
    /// unknown; [`Revoked`](crate::StoreError::Revoked) if its parent has
    /// ended or its session is revoked: checked in the same critical
    /// section as the write, so a task can never start under a parent or a
    /// session that an acknowledged end or revocation already covered. TTL
    /// and ceilings are the caller's checks.
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<Task>;

    /// The task with this id.
    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>>;

    /// Tasks matching `filter`, ordered by id, at most `limit`. With a
    /// session, reads that session's index; otherwise scans every task.
    async fn list_tasks(&self, filter: &TaskFilter, limit: usize) -> Result<Vec<Task>>;

    /// Ends a task (`NotFound` if unknown) and every descendant not already
    /// ended, at any depth (reason [`ParentEnded`](lanyard_core::EndReason::ParentEnded)),
    /// and appends one [`TaskEnded`](crate::RevocationKind::TaskEnded)
    /// event listing every task it ended, the task first; all atomically
    /// with `audit`.
    ///
    /// Ending an ended task is not an error: it still appends an event (and
    /// the audit record), whose `tasks` lists only what this call ended:
    /// descendants still running, or nothing.
    async fn end_task(&self, id: &TaskId, at: u64, audit: AuditEvent) -> Result<Revocation>;

    /// Marks the session revoked, ends every task of it not already ended
    /// (reason [`SessionRevoked`](lanyard_core::EndReason::SessionRevoked))
    /// and their descendants (reason `ParentEnded`), and appends one
    /// [`SessionRevoked`](crate::RevocationKind::SessionRevoked) event
    /// listing them; atomically with `audit`. A session with no tasks (yet)
    /// can be revoked; revoking it again appends another event.
    async fn revoke_session(&self, session: &SessionId, at: u64, audit: AuditEvent) -> Result<Revocation>;

    /// Whether the session has been revoked.
    async fn is_session_revoked(&self, session: &SessionId) -> Result<bool>;

    /// Records a risk and appends a [`RiskRaised`](crate::RevocationKind::RiskRaised)
    /// event (at `risk.reported_at`), atomically with `audit`.
    ///
    /// One open record is kept per subject, at the highest level reported
    /// since it was last cleared (`low` < `medium` < `high` < any level the
    /// store does not know): a report at that level or above replaces it, a
    /// lower one leaves it (the report itself is in the event and the
    /// audit log). The event's `level` in `detail` is the effective one.
    async fn report_risk(&self, risk: RiskRecord, audit: AuditEvent) -> Result<Revocation>;

    /// Clears the open risk on exactly `subject` (a user without `iss` does
    /// not clear reports that named an issuer) and appends a
    /// [`RiskCleared`](crate::RevocationKind::RiskCleared) event, atomically
    /// with `audit`. `NotFound` if nothing is open on it.
    async fn clear_risk(&self, subject: &RiskSubject, at: u64, audit: AuditEvent) -> Result<Revocation>;

    /// The open risks that apply to any of `subjects`, each once, in a stable order.
    ///
    /// For `User { sub, iss: Some(iss) }` that is the report on the user at
    /// that issuer and the one on `sub` at every issuer (reported without
    /// `iss`); for `User { sub, iss: None }` every report on `sub`, whatever
    /// its issuer (fail closed when the issuer is unknown).
    async fn open_risks(&self, subjects: &[RiskSubject]) -> Result<Vec<RiskRecord>>;

    /// Every open risk, in the same stable order.
    async fn list_risks(&self) -> Result<Vec<RiskRecord>>;

    /// Appends a [`TokenRevoked`](crate::RevocationKind::TokenRevoked)
    /// event for one token (`subject` = `jti`), atomically with `audit`.
    async fn revoke_token(&self, jti: &str, at: u64, audit: AuditEvent) -> Result<Revocation>;

    /// Writes `key` (marked revoked) and appends a
    /// [`KeyRevoked`](crate::RevocationKind::KeyRevoked) event for it,
    /// atomically with `audit`.
    async fn revoke_key(&self, key: KeyRecord, at: u64, audit: AuditEvent) -> Result<Revocation>;

    /// Writes a backup of everything into `to` (a new or empty directory,
    /// on this host), consistent to one point, while the store stays open:
    /// writers wait while it is taken. Restore it with
    /// [`SledStore::restore`](crate::SledStore::restore).
    async fn backup(&self, to: &std::path::Path) -> Result<crate::BackupManifest>;

    /// Durable revocation events with `seq > after`, ascending, at most `limit`.
    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>>;

    /// The seq of the newest durable revocation event (0 when none).
    fn revocation_seq(&self) -> u64;

    /// Announces a write on its way: call where a request starts the work
    /// that ends in a durable write, hold until it is answered. A store that
    /// groups commits waits for more writers while many are on their way
    /// (see [`WriteIntent`]); one that does not answers an inert intent.
    fn write_intent(&self) -> crate::WriteIntent {
        crate::WriteIntent::default()
    }

    /// Receives [`revocation_seq`](Self::revocation_seq) after each flush
    /// that made new revocation events durable.
    fn subscribe_revocations(&self) -> tokio::sync::watch::Receiver<u64>;
}
