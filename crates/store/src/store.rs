//! The storage interface the server codes against.

use lanyard_core::{Entry, EntryId, SpiffeId};

use crate::audit::{AuditEvent, AuditRecord, ChainReport};
use crate::error::Result;
use crate::records::{AgentRecord, EntryChanges, EntryFilter, JoinTokenRecord, KeyRecord};

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
    /// agents syncing incrementally learn of it; atomic with `audit`; returns
    /// the deleted entry once durable.
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
    async fn put_agent(&self, agent: AgentRecord, audit: Option<AuditEvent>) -> Result<()>;

    /// The agent with this SPIFFE ID.
    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>>;

    /// Every agent, ordered by SPIFFE ID.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;

    /// Inserts or replaces a signing key; durable with its audit record.
    async fn put_key(&self, key: KeyRecord, audit: AuditEvent) -> Result<()>;

    /// Every signing key, ordered by id.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;

    /// Deletes a signing key (`NotFound` if absent); durable with its audit record.
    async fn delete_key(&self, id: &str, audit: AuditEvent) -> Result<()>;

    /// Appends an audit record and returns it once durable. Concurrent
    /// callers share one flush (group commit).
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord>;

    /// Appends several records atomically, with consecutive seqs, and
    /// returns them once durable: one write for a batch of credentials.
    /// An empty batch writes nothing.
    async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>>;

    /// Records with `seq >= from`, ascending, at most `limit`.
    async fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Walks the whole chain: gapless seqs from 1, each `prev_hash` the
    /// previous `hash`, each `hash` recomputed. `ChainBroken` names the first
    /// bad record.
    async fn verify_audit_chain(&self) -> Result<ChainReport>;

    /// Makes every applied write durable (called at shutdown).
    async fn flush(&self) -> Result<()>;
}
