//! Registration entries: writes with revisions and tombstones, listings, and
//! the per-parent change feed agents sync from.

use std::collections::{BTreeSet, HashSet};
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};

use lanyard_core::{Entry, EntryId, SpiffeId};

use super::layout::{
    Batch, REVISION_KEY, RevRef, TOMBSTONE_FLOOR_KEY, TreeId, Trees, be_key, be_num, decode, parent_key, parent_prefix,
    range_after,
};
use super::{Inner, lock};
use crate::audit::AuditEvent;
use crate::error::{Result, StoreError};
use crate::records::{EntryChanges, EntryFilter};
use crate::revocation::{Revocation, RevocationKind};

/// Most tombstones pruned by one write, to bound its transaction.
const PRUNE_BATCH: usize = 1_000;

/// Entry revision bookkeeping, mirrored in `meta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct EntryState {
    /// The newest revision applied.
    pub(super) revision: u64,
    /// The newest revision whose tombstone may have been pruned: change
    /// feeds from before it must be snapshots.
    pub(super) tombstone_floor: u64,
}

impl EntryState {
    /// Reads the state from `meta`.
    pub(super) fn load(trees: &Trees) -> Result<Self> {
        Ok(Self {
            revision: trees.read(TreeId::Meta, REVISION_KEY)?.unwrap_or(0),
            tombstone_floor: trees.read(TreeId::Meta, TOMBSTONE_FLOOR_KEY)?.unwrap_or(0),
        })
    }
}

fn not_found(id: &EntryId) -> StoreError {
    StoreError::NotFound(format!("entry {id}"))
}

impl Inner {
    fn write_entries(&self) -> RwLockWriteGuard<'_, EntryState> {
        // State is assigned only after its write is applied: see `lock`.
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_entries(&self) -> RwLockReadGuard<'_, EntryState> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn load_entry(&self, id: &EntryId) -> Result<Option<Entry>> {
        self.trees.read(TreeId::Entries, id.as_str())
    }

    pub(super) fn create_entry(&self, mut entry: Entry, event: AuditEvent) -> Result<Entry> {
        let mut state = self.write_entries();
        if self.load_entry(&entry.id)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("entry {}", entry.id)));
        }
        let mut next = *state;
        next.revision += 1;
        entry.revision = next.revision;
        let mut batch = Batch::default();
        put_live(&mut batch, &entry)?;
        self.commit_entries(&mut state, next, batch, event, None)?;
        Ok(entry)
    }

    pub(super) fn update_entry(&self, mut entry: Entry, expected: u64, event: AuditEvent) -> Result<Entry> {
        let mut state = self.write_entries();
        let old = self.load_entry(&entry.id)?.ok_or_else(|| not_found(&entry.id))?;
        if old.revision != expected {
            return Err(StoreError::Conflict { expected, actual: old.revision });
        }
        let mut next = *state;
        let mut batch = Batch::default();
        batch.remove(TreeId::EntriesByRev, be_key(old.revision));
        if old.parent_id != entry.parent_id {
            batch.remove(TreeId::EntriesByParent, parent_key(&old.parent_id, &old.id));
            next.revision += 1;
            self.add_tombstone(&mut batch, &mut next, &old)?;
        }
        next.revision += 1;
        entry.revision = next.revision;
        put_live(&mut batch, &entry)?;
        self.commit_entries(&mut state, next, batch, event, None)?;
        Ok(entry)
    }

    /// Returns the deleted entry and the revision of its tombstone.
    pub(super) fn delete_entry(&self, id: &EntryId, event: AuditEvent) -> Result<(Entry, u64)> {
        let mut state = self.write_entries();
        let old = self.load_entry(id)?.ok_or_else(|| not_found(id))?;
        let mut next = *state;
        next.revision += 1;
        let mut batch = Batch::default();
        batch.remove(TreeId::Entries, id.as_str());
        batch.remove(TreeId::EntriesByParent, parent_key(&old.parent_id, id));
        batch.remove(TreeId::EntriesByRev, be_key(old.revision));
        self.add_tombstone(&mut batch, &mut next, &old)?;
        let revocation = Revocation {
            seq: 0,
            at: event.at,
            kind: RevocationKind::EntryDeleted,
            subject: old.spiffe_id.to_string(),
            tasks: Vec::new(),
            detail: serde_json::json!({ "entry_id": old.id }),
        };
        self.commit_entries(&mut state, next, batch, event, Some(revocation))?;
        Ok((old, next.revision))
    }

    /// Records at `next.revision` that `old` left its parent, and prunes
    /// tombstones that fell out of retention.
    fn add_tombstone(&self, batch: &mut Batch, next: &mut EntryState, old: &Entry) -> Result<()> {
        let tomb = RevRef { id: old.id.clone(), parent: old.parent_id.clone() };
        batch.put(TreeId::EntryTombstones, be_key(next.revision), &tomb)?;
        let cutoff = next.revision.saturating_sub(self.tombstone_retention);
        let tree = self.trees.get(TreeId::EntryTombstones);
        for item in tree.range(..=be_key(cutoff)).take(PRUNE_BATCH) {
            let (key, _) = item?;
            next.tombstone_floor = next.tombstone_floor.max(be_num(TreeId::EntryTombstones, &key)?);
            batch.remove(TreeId::EntryTombstones, key);
        }
        Ok(())
    }

    /// Adds the new revision state to `batch`, applies it with the audit
    /// record (and `revocation`, when given), and only then advances `state`.
    fn commit_entries(
        &self,
        state: &mut EntryState,
        next: EntryState,
        mut batch: Batch,
        event: AuditEvent,
        revocation: Option<Revocation>,
    ) -> Result<()> {
        batch.put(TreeId::Meta, REVISION_KEY, &next.revision)?;
        if next.tombstone_floor != state.tombstone_floor {
            batch.put(TreeId::Meta, TOMBSTONE_FLOOR_KEY, &next.tombstone_floor)?;
        }
        let mut log = lock(&self.chain);
        match revocation {
            Some(revocation) => drop(self.apply_revocation(&mut log, batch, revocation, event)?),
            None => drop(self.apply_audited(&mut log, batch, event)?),
        }
        *state = next;
        Ok(())
    }

    pub(super) fn list_entries(
        &self,
        filter: &EntryFilter,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let wanted = |e: &Entry| filter.spiffe_id.as_ref().is_none_or(|s| *s == e.spiffe_id);
        match &filter.parent_id {
            Some(parent) => self.entries_of(parent, after, limit, wanted),
            None => {
                let after = after.map(|a| a.as_str().as_bytes());
                let mut out = Vec::new();
                for item in self.trees.get(TreeId::Entries).range(range_after(b"", after)) {
                    if out.len() >= limit {
                        break;
                    }
                    let (key, bytes) = item?;
                    let entry: Entry = decode(TreeId::Entries, &key, &bytes)?;
                    if wanted(&entry) {
                        out.push(entry);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Entries of `parent` by id, through the parent index.
    fn entries_of(
        &self,
        parent: &SpiffeId,
        after: Option<&EntryId>,
        limit: usize,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<Entry>> {
        let prefix = parent_prefix(parent);
        let after = after.map(|a| a.as_str().as_bytes());
        let index = self.trees.get(TreeId::EntriesByParent);
        let mut out = Vec::new();
        for item in index.range(range_after(&prefix, after)) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            let id = &key[prefix.len()..];
            let entry = self.indexed_entry(TreeId::EntriesByParent, &key, id)?;
            if entry.parent_id == *parent && wanted(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The entry an index record points at; its absence is corruption.
    fn indexed_entry(&self, index: TreeId, index_key: &[u8], id: &[u8]) -> Result<Entry> {
        match self.trees.get(TreeId::Entries).get(id)? {
            Some(bytes) => decode(TreeId::Entries, id, &bytes),
            None => Err(StoreError::Corrupt(format!(
                "{index} record {index_key:?} names entry {:?}, which is missing",
                String::from_utf8_lossy(id)
            ))),
        }
    }

    pub(super) fn entry_changes(&self, parent: &SpiffeId, since: u64) -> Result<EntryChanges> {
        // Shared with other readers, exclusive of entry writers: the trees
        // are read at exactly `state.revision`.
        let state = self.read_entries();
        let snapshot = since == 0 || since > state.revision || since < state.tombstone_floor;
        let mut changes = if snapshot {
            EntryChanges {
                upserted: self.entries_of(parent, None, usize::MAX, |_| true)?,
                snapshot: true,
                ..EntryChanges::default()
            }
        } else {
            self.changes_since(parent, since)?
        };
        changes.revision = state.revision;
        Ok(changes)
    }

    /// O(changes since): walks revisions after `since`, live then tombstones.
    fn changes_since(&self, parent: &SpiffeId, since: u64) -> Result<EntryChanges> {
        let from = be_key(since.saturating_add(1));
        let mut upserted = Vec::new();
        let mut live = HashSet::new();
        for item in self.trees.get(TreeId::EntriesByRev).range(from..) {
            let (key, bytes) = item?;
            let at: RevRef = decode(TreeId::EntriesByRev, &key, &bytes)?;
            if at.parent == *parent {
                let entry = self.indexed_entry(TreeId::EntriesByRev, &key, at.id.as_str().as_bytes())?;
                live.insert(at.id);
                upserted.push(entry);
            }
        }
        // INVARIANT: an entry's live revision is newer than any tombstone of
        // it, so an entry that left and came back is upserted, not removed.
        let mut removed = BTreeSet::new();
        for item in self.trees.get(TreeId::EntryTombstones).range(from..) {
            let (key, bytes) = item?;
            let tomb: RevRef = decode(TreeId::EntryTombstones, &key, &bytes)?;
            if tomb.parent == *parent && !live.contains(&tomb.id) {
                removed.insert(tomb.id);
            }
        }
        Ok(EntryChanges { upserted, removed: removed.into_iter().collect(), ..EntryChanges::default() })
    }
}

/// Writes `entry` and its parent and revision index records.
fn put_live(batch: &mut Batch, entry: &Entry) -> Result<()> {
    batch.put(TreeId::Entries, entry.id.as_str(), entry)?;
    batch.put_raw(TreeId::EntriesByParent, parent_key(&entry.parent_id, &entry.id), b"");
    let at = RevRef { id: entry.id.clone(), parent: entry.parent_id.clone() };
    batch.put(TreeId::EntriesByRev, be_key(entry.revision), &at)
}
