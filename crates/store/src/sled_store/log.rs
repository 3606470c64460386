//! The audit log in the `audit` tree, the audited write every other write
//! goes through, and the durable heads of the audit log and the
//! revocation feed.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::layout::{Batch, REVOCATION_SEQ_KEY, TreeId, Trees, be_key, be_num, decode};
use super::{Inner, lock};
use crate::audit::{AuditEvent, AuditFilter, AuditRecord, ChainHead, ChainReport, ChainWalker};
use crate::error::{Result, StoreError};
use crate::revocation::Revocation;

/// What the chain lock guards: the heads of the two sequences every
/// audited write may extend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LogState {
    /// The last audit record applied.
    pub(super) audit: ChainHead,
    /// The seq of the last revocation event applied.
    pub(super) revocation: u64,
}

impl LogState {
    /// Reads both heads from the trees.
    pub(super) fn load(trees: &Trees) -> Result<Self> {
        Ok(Self { audit: load_head(trees)?, revocation: load_revocation_seq(trees)? })
    }
}

/// The head of the stored chain: its last record, or genesis.
fn load_head(trees: &Trees) -> Result<ChainHead> {
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

/// The newest revocation seq, from `meta`; no stored event may be newer.
fn load_revocation_seq(trees: &Trees) -> Result<u64> {
    let seq: u64 = trees.read(TreeId::Meta, REVOCATION_SEQ_KEY)?.unwrap_or(0);
    if let Some((key, _)) = trees.get(TreeId::Revocations).last()? {
        let last = be_num(TreeId::Revocations, &key)?;
        if last > seq {
            return Err(StoreError::Corrupt(format!(
                "meta revocation_seq is {seq} but revocations holds record {last}"
            )));
        }
    }
    Ok(seq)
}

/// The audit and revocation heads: as applied (by writers, under the chain
/// lock) and as durable (published by the flusher thread).
///
/// The flusher reads the applied heads before it flushes and publishes
/// them after: whatever they cover was applied before the flush started,
/// so it is durable. Publishing from the flusher, not from the writer that
/// awaits the flush, means a write whose caller went away is still
/// announced, and a writer's own seq is published before it is answered.
#[derive(Debug)]
pub(super) struct Durable {
    audit_applied: AtomicU64,
    revocation_applied: AtomicU64,
    audit: watch::Sender<u64>,
    revocations: watch::Sender<u64>,
}

impl Durable {
    /// Heads loaded at open: all of it is on disk already.
    pub(super) fn new(log: &LogState) -> Self {
        Self {
            audit_applied: AtomicU64::new(log.audit.seq),
            revocation_applied: AtomicU64::new(log.revocation),
            audit: watch::Sender::new(log.audit.seq),
            revocations: watch::Sender::new(log.revocation),
        }
    }

    /// Records that `log` is applied. INVARIANT: called after the write it
    /// describes is applied, with the chain lock held (so heads only grow).
    fn applied(&self, log: &LogState) {
        self.audit_applied.store(log.audit.seq, Ordering::SeqCst);
        self.revocation_applied.store(log.revocation, Ordering::SeqCst);
    }

    /// The applied heads; a flush that starts after this call covers them.
    pub(super) fn mark(&self) -> (u64, u64) {
        (self.audit_applied.load(Ordering::SeqCst), self.revocation_applied.load(Ordering::SeqCst))
    }

    /// Publishes heads from [`mark`](Self::mark) once their flush succeeded.
    pub(super) fn publish(&self, (audit, revocation): (u64, u64)) {
        for (tx, value) in [(&self.audit, audit), (&self.revocations, revocation)] {
            tx.send_if_modified(|current| {
                let newer = value > *current;
                if newer {
                    *current = value;
                }
                newer
            });
        }
    }

    /// The newest durable audit seq.
    pub(super) fn audit_head(&self) -> u64 {
        *self.audit.borrow()
    }

    /// The newest durable revocation seq.
    pub(super) fn revocation_seq(&self) -> u64 {
        *self.revocations.borrow()
    }

    pub(super) fn subscribe_audit(&self) -> watch::Receiver<u64> {
        self.audit.subscribe()
    }

    pub(super) fn subscribe_revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }
}

impl Inner {
    /// Applies `batch` together with the audit record of `event`, linked to
    /// the chain head, in one transaction; advances `log` once applied.
    ///
    /// The caller holds the chain lock (`log` is its guard) from whatever
    /// checks decided the batch until this returns.
    pub(super) fn apply_audited(&self, log: &mut LogState, batch: Batch, event: AuditEvent) -> Result<AuditRecord> {
        let mut records = self.commit_logged(log, batch, vec![event], None)?;
        records.pop().ok_or_else(|| StoreError::Corrupt("audit record was not written".into()))
    }

    /// [`apply_audited`](Self::apply_audited) that also appends `revocation`
    /// as the next event of the feed (its `seq` is assigned here).
    pub(super) fn apply_revocation(
        &self,
        log: &mut LogState,
        batch: Batch,
        mut revocation: Revocation,
        event: AuditEvent,
    ) -> Result<Revocation> {
        revocation.seq = log.revocation + 1;
        self.commit_logged(log, batch, vec![event], Some(&revocation))?;
        Ok(revocation)
    }

    /// Applies `batch`, the audit records of `events` (consecutive seqs)
    /// and `revocation` (seq `log.revocation + 1`) in one transaction, then
    /// advances `log` and the applied heads.
    fn commit_logged(
        &self,
        log: &mut LogState,
        mut batch: Batch,
        events: Vec<AuditEvent>,
        revocation: Option<&Revocation>,
    ) -> Result<Vec<AuditRecord>> {
        let mut next = *log;
        if let Some(revocation) = revocation {
            next.revocation = revocation.seq;
            batch.put(TreeId::Revocations, be_key(revocation.seq), revocation)?;
            batch.put(TreeId::Meta, REVOCATION_SEQ_KEY, &revocation.seq)?;
        }
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let record = next.audit.next(event);
            batch.put(TreeId::Audit, be_key(record.seq), &record)?;
            next.audit = ChainHead::after(&record);
            records.push(record);
        }
        self.trees.apply(&batch)?;
        *log = next;
        self.durable.applied(log);
        Ok(records)
    }

    pub(super) fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        self.apply_audited(&mut lock(&self.chain), Batch::default(), event)
    }

    pub(super) fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        self.commit_logged(&mut lock(&self.chain), Batch::default(), events, None)
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

    /// Records from `from` up to `upto` (the durable head) that pass `filter`.
    pub(super) fn query_audit(
        &self,
        filter: &AuditFilter,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let mut out = Vec::new();
        if limit == 0 || from > upto {
            return Ok(out);
        }
        for item in self.trees.get(TreeId::Audit).range(be_key(from)..=be_key(upto)) {
            let (key, bytes) = item?;
            let record: AuditRecord = decode(TreeId::Audit, &key, &bytes)?;
            if filter.matches(&record.event) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(super) fn verify_chain(&self) -> Result<ChainReport> {
        // Records appended during the walk are checked too if it sees them;
        // the head read first is the least the walk must reach.
        let expected = lock(&self.chain).audit.seq;
        let mut walker = ChainWalker::new();
        for item in self.trees.get(TreeId::Audit).iter() {
            let (key, bytes) = item?;
            walker.check(be_num(TreeId::Audit, &key)?, &bytes)?;
        }
        walker.finish(expected)
    }
}
