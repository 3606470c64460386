//! Reading a whole store out for a move to another backend (`lanyard store
//! migrate`), while no server has it open.

use super::layout::{REVISION_KEY, RevRef, TOMBSTONE_FLOOR_KEY, TreeId, be_num, decode};
use super::{Inner, lock};
use crate::error::{Result, StoreError};
use crate::migrate::{StoreExport, Tombstone};

impl Inner {
    /// Everything but the audit log, read under the locks every write takes.
    pub(super) fn export(&self) -> Result<StoreExport> {
        let _entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _log = lock(&self.chain);
        let mut tombstones = Vec::new();
        for item in self.trees.get(TreeId::EntryTombstones).iter() {
            let (key, bytes) = item?;
            let at: RevRef = decode(TreeId::EntryTombstones, &key, &bytes)?;
            tombstones.push(Tombstone {
                revision: be_num(TreeId::EntryTombstones, &key)?,
                id: at.id,
                parent: at.parent,
            });
        }
        let mut join_tokens = Vec::new();
        for item in self.trees.get(TreeId::JoinTokens).iter() {
            let (key, bytes) = item?;
            let hash = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| StoreError::Corrupt("join_tokens key is not 32 bytes".into()))?;
            join_tokens.push((hash, decode(TreeId::JoinTokens, &key, &bytes)?));
        }
        let mut revoked_sessions = Vec::new();
        for item in self.trees.get(TreeId::RevokedSessions).iter() {
            let (key, bytes) = item?;
            let session = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Corrupt("revoked_sessions key is not a session id".into()))?;
            revoked_sessions.push((session, decode(TreeId::RevokedSessions, &key, &bytes)?));
        }
        Ok(StoreExport {
            entries: self.list_all(TreeId::Entries)?,
            tombstones,
            join_tokens,
            agents: self.list_all(TreeId::Agents)?,
            keys: self.list_all(TreeId::Keys)?,
            tasks: self.list_all(TreeId::Tasks)?,
            revoked_sessions,
            risks: self.list_all(TreeId::Risks)?,
            revocations: self.list_all(TreeId::Revocations)?,
            revision: self.trees.read(TreeId::Meta, REVISION_KEY)?.unwrap_or(0),
            tombstone_floor: self.trees.read(TreeId::Meta, TOMBSTONE_FLOOR_KEY)?.unwrap_or(0),
        })
    }
}
