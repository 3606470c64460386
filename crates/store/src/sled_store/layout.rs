//! How the store lies in sled: trees, keys, value encoding, and atomic
//! multi-tree batches.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema_version`, `revision`, `tombstone_floor` | JSON number |
//! | `entries` | entry id | [`Entry`](lanyard_core::Entry) JSON |
//! | `entries_by_parent` | parent SPIFFE ID `\0` entry id | empty |
//! | `entries_by_rev` | revision, u64 big-endian | [`RevRef`] of the live entry at that revision |
//! | `entry_tombstones` | revision, u64 big-endian | [`RevRef`] of the entry that left `parent` then |
//! | `agents` | agent SPIFFE ID | [`AgentRecord`](crate::AgentRecord) JSON |
//! | `join_tokens` | SHA-256 of the token | [`JoinTokenRecord`](crate::JoinTokenRecord) JSON |
//! | `keys` | key id | [`KeyRecord`](crate::KeyRecord) JSON |
//! | `audit` | seq, u64 big-endian | before `audit.log`: records, moved to the file at open |
//! | `tasks` | task id, 16 bytes | [`Task`](lanyard_core::Task) JSON |
//! | `task_children` | parent id ‖ child id, 16 + 16 bytes | empty |
//! | `tasks_by_session` | session `\0` task id (16 bytes) | empty |
//! | `revocations` | seq, u64 big-endian | [`Revocation`](crate::Revocation) JSON |
//! | `revoked_sessions` | session | JSON number: seq of its first revocation |
//! | `risks` | [`risk_key`](crate::revocation::risk_key) of the subject | [`RiskRecord`](crate::RiskRecord) JSON |
//!
//! `meta` also holds `revocation_seq`, the newest revocation event's seq, and
//! `audit_applied`, the seq of the newest audit record whose state change is
//! in the trees (what recovery redoes from; see `audit_file`).
//! The task, revocation and risk trees came after schema version 1 without
//! changing how anything older is read, so they did not bump it: a store
//! without them simply has none yet.
//!
//! INVARIANT: each entry has exactly one `entries_by_rev` key, its current
//! revision; tombstones live in their own tree so that they can be pruned
//! oldest-first without walking live entries.

use std::convert::Infallible;
use std::fmt;
use std::ops::Bound;

use lanyard_core::{EntryId, SessionId, SpiffeId, TaskId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::{Result, StoreError};

/// `meta` key of the schema version.
pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
/// `meta` key of the newest entry revision.
pub(super) const REVISION_KEY: &[u8] = b"revision";
/// `meta` key of the newest pruned tombstone's revision.
pub(super) const TOMBSTONE_FLOOR_KEY: &[u8] = b"tombstone_floor";

/// `meta` key of the newest revocation event's seq.
pub(super) const REVOCATION_SEQ_KEY: &[u8] = b"revocation_seq";
/// `meta` key: the newest audit record whose change the trees hold.
pub(super) const AUDIT_APPLIED_KEY: &[u8] = b"audit_applied";

/// One sled tree; the discriminant indexes [`Trees::all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TreeId {
    Meta,
    Entries,
    EntriesByParent,
    EntriesByRev,
    EntryTombstones,
    Agents,
    JoinTokens,
    Keys,
    Audit,
    Tasks,
    TaskChildren,
    TasksBySession,
    Revocations,
    RevokedSessions,
    Risks,
}

const TREE_COUNT: usize = 15;

impl TreeId {
    pub(super) const ALL: [TreeId; TREE_COUNT] = [
        TreeId::Meta,
        TreeId::Entries,
        TreeId::EntriesByParent,
        TreeId::EntriesByRev,
        TreeId::EntryTombstones,
        TreeId::Agents,
        TreeId::JoinTokens,
        TreeId::Keys,
        TreeId::Audit,
        TreeId::Tasks,
        TreeId::TaskChildren,
        TreeId::TasksBySession,
        TreeId::Revocations,
        TreeId::RevokedSessions,
        TreeId::Risks,
    ];

    /// The sled tree name.
    pub(super) fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Entries => "entries",
            TreeId::EntriesByParent => "entries_by_parent",
            TreeId::EntriesByRev => "entries_by_rev",
            TreeId::EntryTombstones => "entry_tombstones",
            TreeId::Agents => "agents",
            TreeId::JoinTokens => "join_tokens",
            TreeId::Keys => "keys",
            TreeId::Audit => "audit",
            TreeId::Tasks => "tasks",
            TreeId::TaskChildren => "task_children",
            TreeId::TasksBySession => "tasks_by_session",
            TreeId::Revocations => "revocations",
            TreeId::RevokedSessions => "revoked_sessions",
            TreeId::Risks => "risks",
        }
    }

    /// The tree called `name`.
    pub(super) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether keys are big-endian u64s.
    fn numeric_keys(self) -> bool {
        matches!(self, TreeId::EntriesByRev | TreeId::EntryTombstones | TreeId::Audit | TreeId::Revocations)
    }
}

impl fmt::Display for TreeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an entry is at a revision: the value of `entries_by_rev` and
/// `entry_tombstones`. The parent is kept so that a change feed filters by
/// parent without loading entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RevRef {
    pub(super) id: EntryId,
    pub(super) parent: SpiffeId,
}

/// Every tree of one database.
#[derive(Debug)]
pub(super) struct Trees {
    all: [sled::Tree; TREE_COUNT],
}

/// One write: a tree, a key, and the new value (`None` removes the key).
pub(super) type Op = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// Writes to apply atomically across trees.
#[derive(Debug, Default)]
pub(super) struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// Sets `key` to `value` encoded as JSON.
    pub(super) fn put<T: Serialize>(&mut self, tree: TreeId, key: impl AsRef<[u8]>, value: &T) -> Result<()> {
        let bytes = encode(tree, key.as_ref(), value)?;
        self.ops.push((tree, key.as_ref().to_vec(), Some(bytes)));
        Ok(())
    }

    /// Sets `key` to raw bytes.
    pub(super) fn put_raw(&mut self, tree: TreeId, key: impl AsRef<[u8]>, value: &[u8]) {
        self.ops.push((tree, key.as_ref().to_vec(), Some(value.to_vec())));
    }

    /// Removes `key`.
    pub(super) fn remove(&mut self, tree: TreeId, key: impl AsRef<[u8]>) {
        self.ops.push((tree, key.as_ref().to_vec(), None));
    }

    /// The writes, in order.
    pub(super) fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether there is nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether any write goes to `tree`.
    pub(super) fn touches(&self, tree: TreeId) -> bool {
        self.ops.iter().any(|(t, _, _)| *t == tree)
    }
}

impl Trees {
    /// Opens (creating) every tree.
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        let mut trees = Vec::with_capacity(TREE_COUNT);
        for id in TreeId::ALL {
            trees.push(db.open_tree(id.name())?);
        }
        let all = trees.try_into().map_err(|_| StoreError::Corrupt("tree count mismatch".into()))?;
        Ok(Self { all })
    }

    /// One tree.
    pub(super) fn get(&self, id: TreeId) -> &sled::Tree {
        &self.all[id as usize]
    }

    /// Decodes the JSON value at `key`, if any.
    pub(super) fn read<T: DeserializeOwned>(&self, tree: TreeId, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = key.as_ref();
        self.get(tree).get(key)?.map(|bytes| decode(tree, key, &bytes)).transpose()
    }

    /// Applies every write of `batch` in one sled transaction over the trees
    /// it touches: after a crash either all of them are there or none.
    pub(super) fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.ops.is_empty() {
            // sled's commit indexes the first tree: never hand it none.
            return Ok(());
        }
        let mut touched: Vec<TreeId> = batch.ops.iter().map(|(tree, _, _)| *tree).collect();
        touched.sort_by_key(|t| *t as usize);
        touched.dedup();
        let trees: Vec<&sled::Tree> = touched.iter().map(|t| self.get(*t)).collect();
        let outcome: std::result::Result<(), TransactionError<Infallible>> = trees.as_slice().transaction(|views| {
            for (tree, key, value) in &batch.ops {
                // INVARIANT: `touched` holds every tree of `batch.ops`.
                let Some(i) = touched.iter().position(|t| t == tree) else {
                    continue;
                };
                match value {
                    Some(v) => views[i].insert(key.as_slice(), v.as_slice())?,
                    None => views[i].remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<Infallible>>(())
        });
        outcome.map_err(|e| match e {
            TransactionError::Abort(never) => match never {},
            TransactionError::Storage(e) => StoreError::Sled(e),
        })
    }
}

/// JSON of a value to store under `tree`/`key`.
pub(super) fn encode<T: Serialize>(tree: TreeId, key: &[u8], value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("{tree} record {} does not encode: {e}", KeyDisplay(tree, key))))
}

/// Decodes a stored JSON value; failure names the tree and key.
pub(super) fn decode<T: DeserializeOwned>(tree: TreeId, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{tree} record {} does not decode: {e}", KeyDisplay(tree, key))))
}

/// A revision or seq as a key that sorts numerically.
pub(super) fn be_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The number in a [`be_key`] key.
pub(super) fn be_num(tree: TreeId, key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{tree} key {} is not 8 bytes", KeyDisplay(tree, key))))?;
    Ok(u64::from_be_bytes(bytes))
}

/// `entries_by_parent` key prefix of every entry of `parent`.
pub(super) fn parent_prefix(parent: &SpiffeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(parent.as_str().len() + 1);
    key.extend_from_slice(parent.as_str().as_bytes());
    // INVARIANT: neither SPIFFE IDs nor entry ids contain NUL.
    key.push(0);
    key
}

/// `entries_by_parent` key of `id` under `parent`.
pub(super) fn parent_key(parent: &SpiffeId, id: &EntryId) -> Vec<u8> {
    let mut key = parent_prefix(parent);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// Bounds of the keys starting with `prefix` that sort after `prefix + after`.
pub(super) fn range_after(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(after) => Bound::Excluded([prefix, after].concat()),
        None => Bound::Included(prefix.to_vec()),
    };
    let end = match prefix.split_last() {
        // Every prefix used here ends in NUL, so bumping it cannot overflow.
        Some((last, head)) => Bound::Excluded([head, &[last.saturating_add(1)]].concat()),
        None => Bound::Unbounded,
    };
    (start, end)
}

/// `task_children` key prefix of every child of `parent`.
pub(super) fn children_prefix(parent: &TaskId) -> [u8; 16] {
    *parent.as_bytes()
}

/// `task_children` key of `child` under `parent`.
pub(super) fn child_key(parent: &TaskId, child: &TaskId) -> Vec<u8> {
    [parent.as_bytes().as_slice(), child.as_bytes()].concat()
}

/// `tasks_by_session` key prefix of every task of `session`.
pub(super) fn session_prefix(session: &SessionId) -> Vec<u8> {
    // INVARIANT: session ids have no control characters, so no NUL.
    [session.as_str().as_bytes(), b"\0"].concat()
}

/// `tasks_by_session` key of `task` in `session`.
pub(super) fn session_key(session: &SessionId, task: &TaskId) -> Vec<u8> {
    [session_prefix(session).as_slice(), task.as_bytes()].concat()
}

/// The task id at the end of an index key whose last 16 bytes are one.
pub(super) fn trailing_task_id(tree: TreeId, key: &[u8]) -> Result<TaskId> {
    key.len()
        .checked_sub(16)
        .and_then(|start| <[u8; 16]>::try_from(&key[start..]).ok())
        .map(TaskId::from_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{tree} key {} is too short", KeyDisplay(tree, key))))
}

/// How `key` of `tree` is shown in error messages.
pub(super) fn show_key(tree: TreeId, key: &[u8]) -> String {
    KeyDisplay(tree, key).to_string()
}

/// A key shown in an error: a number, a task id, text, or hex.
struct KeyDisplay<'a>(TreeId, &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let KeyDisplay(tree, key) = *self;
        if let (true, Ok(bytes)) = (tree.numeric_keys(), <[u8; 8]>::try_from(key)) {
            return write!(f, "{}", u64::from_be_bytes(bytes));
        }
        if let (TreeId::Tasks, Ok(bytes)) = (tree, <[u8; 16]>::try_from(key)) {
            return write!(f, "{}", TaskId::from_bytes(bytes));
        }
        if matches!(tree, TreeId::TaskChildren | TreeId::TasksBySession) && key.len() >= 16 {
            let (head, id) = key.split_at(key.len() - 16);
            let head = match tree {
                TreeId::TaskChildren => lanyard_core::hex::encode(head),
                _ => String::from_utf8_lossy(head.strip_suffix(b"\0").unwrap_or(head)).into_owned(),
            };
            return write!(f, "{head:?}/{}", lanyard_core::hex::encode(id));
        }
        match std::str::from_utf8(key) {
            Ok(s) if !s.chars().any(char::is_control) => write!(f, "{s:?}"),
            _ => f.write_str(&lanyard_core::hex::encode(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_readably_in_errors() {
        let err = decode::<u64>(TreeId::Audit, &be_key(7), b"{").unwrap_err();
        assert!(err.to_string().contains("audit record 7 does not decode"), "{err}");
        let err = decode::<u64>(TreeId::Entries, b"e1", b"x").unwrap_err();
        assert!(err.to_string().contains("entries record \"e1\""), "{err}");
        let err = decode::<u64>(TreeId::JoinTokens, &[0, 1], b"x").unwrap_err();
        assert!(err.to_string().contains("join_tokens record 0001"), "{err}");
    }

    #[test]
    fn prefix_ranges_stay_within_the_parent() {
        let (start, end) = range_after(b"p\0", Some(b"a"));
        assert_eq!(start, Bound::Excluded(b"p\0a".to_vec()));
        assert_eq!(end, Bound::Excluded(b"p\x01".to_vec()));
        assert_eq!(range_after(b"", None).1, Bound::Unbounded);
    }
}
