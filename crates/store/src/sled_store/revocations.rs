//! Risks, token revocations, agent bans, and reading the revocation feed.
//! (Task ends and session revocations are in `tasks`; entry deletions in
//! `entries`.)

use std::collections::BTreeMap;

use lanyard_core::SpiffeId;

use super::layout::{Batch, TreeId, be_key, be_num, decode};
use super::{Inner, lock};
use crate::audit::AuditEvent;
use crate::error::{Result, StoreError};
use crate::records::{AgentRecord, KeyRecord};
use crate::revocation::{Revocation, RevocationKind, RiskRecord, RiskSubject, risk_key, risk_rank, user_risk_prefix};

impl Inner {
    pub(super) fn report_risk(&self, risk: RiskRecord, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let key = risk_key(&risk.subject);
        let open: Option<RiskRecord> = self.trees.read(TreeId::Risks, &key)?;
        let mut batch = Batch::default();
        let effective = match open {
            Some(open) if risk_rank(&open.level) > risk_rank(&risk.level) => open.level,
            _ => {
                batch.put(TreeId::Risks, &key, &risk)?;
                risk.level.clone()
            }
        };
        let revocation = Revocation::risk_raised(&risk, &effective);
        self.apply_revocation(&mut log, batch, revocation, event)
    }

    pub(super) fn clear_risk(&self, subject: &RiskSubject, at: u64, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let key = risk_key(subject);
        if !self.trees.get(TreeId::Risks).contains_key(&key)? {
            return Err(StoreError::NotFound(format!("open risk on {subject}")));
        }
        let mut batch = Batch::default();
        batch.remove(TreeId::Risks, &key);
        let revocation = Revocation::risk_cleared(subject, at);
        self.apply_revocation(&mut log, batch, revocation, event)
    }

    pub(super) fn open_risks(&self, subjects: &[RiskSubject]) -> Result<Vec<RiskRecord>> {
        let tree = self.trees.get(TreeId::Risks);
        // Keyed by store key: each record once, in key order.
        let mut found = BTreeMap::new();
        let mut exact = |key: Vec<u8>| -> Result<()> {
            if let Some(bytes) = tree.get(&key)? {
                found.insert(key.clone(), decode(TreeId::Risks, &key, &bytes)?);
            }
            Ok(())
        };
        let mut every_issuer = Vec::new();
        for subject in subjects {
            match subject {
                RiskSubject::User { sub, iss: Some(_) } => {
                    exact(risk_key(subject))?;
                    exact(risk_key(&RiskSubject::User { sub: sub.clone(), iss: None }))?;
                }
                RiskSubject::User { sub, iss: None } => every_issuer.push(user_risk_prefix(sub)),
                _ => exact(risk_key(subject))?,
            }
        }
        for prefix in every_issuer {
            for item in tree.scan_prefix(prefix) {
                let (key, bytes) = item?;
                found.insert(key.to_vec(), decode(TreeId::Risks, &key, &bytes)?);
            }
        }
        Ok(found.into_values().collect())
    }

    pub(super) fn revoke_token(&self, jti: &str, at: u64, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let revocation = Revocation::draft(RevocationKind::TokenRevoked, at, jti.to_owned(), vec![]);
        self.apply_revocation(&mut log, Batch::default(), revocation, event)
    }

    pub(super) fn revoke_key(&self, key: &KeyRecord, at: u64, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let mut batch = Batch::default();
        batch.put(TreeId::Keys, key.id.as_bytes(), key)?;
        let revocation = Revocation::draft(RevocationKind::KeyRevoked, at, key.id.clone(), vec![]);
        self.apply_revocation(&mut log, batch, revocation, event)
    }

    pub(super) fn ban_agent(&self, id: &SpiffeId, at: u64, event: AuditEvent) -> Result<AgentRecord> {
        let mut log = lock(&self.chain);
        let mut agent: AgentRecord =
            self.trees.read(TreeId::Agents, id.as_str())?.ok_or_else(|| StoreError::NotFound(format!("agent {id}")))?;
        agent.banned = true;
        let mut batch = Batch::default();
        batch.put(TreeId::Agents, id.as_str(), &agent)?;
        let revocation = Revocation::draft(RevocationKind::AgentBanned, at, id.to_string(), vec![]);
        self.apply_revocation(&mut log, batch, revocation, event)?;
        Ok(agent)
    }

    /// Events with `after < seq <= upto` (the durable head), at most `limit`.
    pub(super) fn revocations_since(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<Revocation>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        self.trees
            .get(TreeId::Revocations)
            .range(be_key(after + 1)..=be_key(upto))
            .take(limit)
            .map(|item| {
                let (key, bytes) = item?;
                let revocation: Revocation = decode(TreeId::Revocations, &key, &bytes)?;
                let seq = be_num(TreeId::Revocations, &key)?;
                if revocation.seq != seq {
                    return Err(StoreError::Corrupt(format!("revocations record {seq} claims seq {}", revocation.seq)));
                }
                Ok(revocation)
            })
            .collect()
    }
}
