//! The audit log in the `audit` tree, and the audited write every other
//! write goes through.

use super::layout::{Batch, TreeId, Trees, be_key, be_num, decode};
use super::{Inner, lock};
use crate::audit::{AuditEvent, AuditRecord, ChainHead, ChainReport, ChainWalker};
use crate::error::{Result, StoreError};

/// The head of the stored chain: its last record, or genesis.
pub(super) fn load_head(trees: &Trees) -> Result<ChainHead> {
    let Some((key, bytes)) = trees.get(TreeId::Audit).last()? else {
        return Ok(ChainHead::GENESIS);
    };
    let record: AuditRecord = decode(TreeId::Audit, &key, &bytes)?;
    let seq = be_num(TreeId::Audit, &key)?;
    if record.seq != seq {
        return Err(StoreError::Corrupt(format!("audit record {seq} claims seq {}", record.seq)));
    }
    Ok(ChainHead::after(&record))
}

impl Inner {
    /// Applies `batch` together with the audit record of `event`, linked to
    /// `head`, in one transaction; advances `head` once applied.
    ///
    /// The caller holds the chain lock (`head` is its guard) from whatever
    /// checks decided the batch until this returns.
    pub(super) fn apply_audited(&self, head: &mut ChainHead, batch: Batch, event: AuditEvent) -> Result<AuditRecord> {
        let mut records = self.apply_audited_many(head, batch, vec![event])?;
        records.pop().ok_or_else(|| StoreError::Corrupt("audit record was not written".into()))
    }

    /// [`apply_audited`](Self::apply_audited) for several events, which get
    /// consecutive seqs.
    fn apply_audited_many(
        &self,
        head: &mut ChainHead,
        mut batch: Batch,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditRecord>> {
        let mut next = *head;
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let record = next.next(event);
            batch.put(TreeId::Audit, be_key(record.seq), &record)?;
            next = ChainHead::after(&record);
            records.push(record);
        }
        self.trees.apply(&batch)?;
        *head = next;
        Ok(records)
    }

    pub(super) fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        self.apply_audited(&mut lock(&self.chain), Batch::default(), event)
    }

    pub(super) fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        self.apply_audited_many(&mut lock(&self.chain), Batch::default(), events)
    }

    pub(super) fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.trees
            .get(TreeId::Audit)
            .range(be_key(from)..)
            .take(limit)
            .map(|item| {
                let (key, bytes) = item?;
                decode(TreeId::Audit, &key, &bytes)
            })
            .collect()
    }

    pub(super) fn verify_chain(&self) -> Result<ChainReport> {
        // Records appended during the walk are checked too if it sees them;
        // the head read first is the least the walk must reach.
        let expected = lock(&self.chain).seq;
        let mut walker = ChainWalker::new();
        for item in self.trees.get(TreeId::Audit).iter() {
            let (key, bytes) = item?;
            walker.check(be_num(TreeId::Audit, &key)?, &bytes)?;
        }
        walker.finish(expected)
    }
}
