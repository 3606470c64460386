//! Join tokens, agents and signing keys.
//!
//! Existence checks run under the chain lock, like the write they decide,
//! so two racing callers are serialized: exactly one consumes a token.

use serde::de::DeserializeOwned;

use super::layout::{Batch, TreeId, decode};
use super::{Inner, lock};
use crate::audit::AuditEvent;
use crate::error::{Result, StoreError};
use crate::records::{AgentRecord, JoinTokenRecord, KeyRecord};

impl Inner {
    pub(super) fn create_join_token(&self, hash: [u8; 32], record: &JoinTokenRecord, event: AuditEvent) -> Result<()> {
        let mut log = lock(&self.chain);
        if self.trees.get(TreeId::JoinTokens).contains_key(hash)? {
            return Err(StoreError::AlreadyExists("join token".into()));
        }
        let mut batch = Batch::default();
        batch.put(TreeId::JoinTokens, hash, record)?;
        self.apply_audited(&mut log, batch, event)?;
        Ok(())
    }

    pub(super) fn consume_join_token(&self, hash: [u8; 32], event: AuditEvent) -> Result<Option<JoinTokenRecord>> {
        let mut log = lock(&self.chain);
        let Some(record) = self.trees.read(TreeId::JoinTokens, hash)? else {
            return Ok(None);
        };
        let mut batch = Batch::default();
        batch.remove(TreeId::JoinTokens, hash);
        self.apply_audited(&mut log, batch, event)?;
        Ok(Some(record))
    }

    pub(super) fn put_agent(&self, agent: &AgentRecord, event: Option<AuditEvent>) -> Result<()> {
        let mut log = lock(&self.chain);
        // INVARIANT: a ban is never undone by a write that read the record
        // before it (a renewal racing `ban_agent`).
        if !agent.banned {
            let stored: Option<AgentRecord> = self.trees.read(TreeId::Agents, agent.spiffe_id.as_str())?;
            if stored.is_some_and(|s| s.banned) {
                return Err(StoreError::Revoked(format!("agent {} is banned", agent.spiffe_id)));
            }
        }
        let mut batch = Batch::default();
        batch.put(TreeId::Agents, agent.spiffe_id.as_str(), agent)?;
        match event {
            Some(event) => self.apply_audited(&mut log, batch, event).map(drop),
            None => self.trees.apply(&batch),
        }
    }

    pub(super) fn put_key(&self, key: &KeyRecord, event: AuditEvent) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(TreeId::Keys, key.id.as_bytes(), key)?;
        self.apply_audited(&mut lock(&self.chain), batch, event)?;
        Ok(())
    }

    pub(super) fn delete_key(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut log = lock(&self.chain);
        if !self.trees.get(TreeId::Keys).contains_key(id)? {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        let mut batch = Batch::default();
        batch.remove(TreeId::Keys, id);
        self.apply_audited(&mut log, batch, event)?;
        Ok(())
    }

    /// Every record of `tree`, in key order.
    pub(super) fn list_all<T: DeserializeOwned>(&self, tree: TreeId) -> Result<Vec<T>> {
        self.trees
            .get(tree)
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(tree, &key, &bytes)
            })
            .collect()
    }
}
