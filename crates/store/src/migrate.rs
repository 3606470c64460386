//! Moving a store to another backend: everything but the audit log as
//! records ([`StoreExport`]), the audit log record by record, so that the
//! copy holds the same registrations, keys, tasks and revocations under the
//! same revisions and sequence numbers, and the very same audit chain.

use lanyard_core::{Entry, EntryId, SessionId, SpiffeId, Task};

use crate::records::{AgentRecord, JoinTokenRecord, KeyRecord};
use crate::revocation::{Revocation, RiskRecord};

/// Everything a store holds but its audit log.
#[derive(Clone, Debug, Default)]
pub struct StoreExport {
    /// Every registration entry, with its revision.
    pub entries: Vec<Entry>,
    /// Entries that left a parent (deleted or re-parented), for incremental syncs.
    pub tombstones: Vec<Tombstone>,
    /// Unused join tokens, under the SHA-256 of their secret.
    pub join_tokens: Vec<([u8; 32], JoinTokenRecord)>,
    /// Attested agents.
    pub agents: Vec<AgentRecord>,
    /// Signing keys, sealed as they are stored.
    pub keys: Vec<KeyRecord>,
    /// Every task, ended or not.
    pub tasks: Vec<Task>,
    /// Revoked sessions, with the seq of their first revocation.
    pub revoked_sessions: Vec<(SessionId, u64)>,
    /// Open risks.
    pub risks: Vec<RiskRecord>,
    /// The revocation feed, from 1.
    pub revocations: Vec<Revocation>,
    /// The newest entry revision.
    pub revision: u64,
    /// Revisions at or below this have had their tombstones pruned.
    pub tombstone_floor: u64,
}

/// An entry that left `parent` at `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// When it left.
    pub revision: u64,
    /// Which entry.
    pub id: EntryId,
    /// The parent it left.
    pub parent: SpiffeId,
}

/// What a migration copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Registration entries.
    pub entries: usize,
    /// Agents.
    pub agents: usize,
    /// Signing keys.
    pub keys: usize,
    /// Tasks.
    pub tasks: usize,
    /// Revocation events.
    pub revocations: usize,
    /// Audit records.
    pub audit_records: u64,
}
