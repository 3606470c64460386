//! The audited write every other write goes through (its record in
//! `audit.log`, its state change in the trees), reading the log back, and
//! the durable heads of the audit log and the revocation feed.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::audit_file::{AuditFile, RedoOp};
use super::layout::{AUDIT_APPLIED_KEY, Batch, REVOCATION_SEQ_KEY, TreeId, Trees, be_num};
use super::{Inner, lock};
use crate::audit::{AuditEvent, AuditFilter, AuditRecord, CanonicalEvent, ChainHead, ChainReport, ChainWalker};
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
    /// Reads the audit head from the log and the revocation head from the trees.
    pub(super) fn load(trees: &Trees, file: &AuditFile) -> Result<Self> {
        Ok(Self { audit: load_head(file)?, revocation: load_revocation_seq(trees)? })
    }
}

/// The head of the stored chain: its last record, or genesis.
///
/// A last line that does not decode, or claims another seq, is a damaged
/// log: the store still opens (so that `audit verify` can say where), with
/// the head at that line, and says so loudly.
fn load_head(file: &AuditFile) -> Result<ChainHead> {
    let seq = file.len();
    let Some(stored) = file.read(seq).or_else(|e| match e {
        StoreError::ChainBroken { .. } => Ok(None),
        other => Err(other),
    })?
    else {
        if seq > 0 {
            tracing::error!(seq, "the last audit log line does not decode: run `lanyard audit verify`");
        }
        return Ok(ChainHead { seq, hash: crate::audit::GENESIS_HASH });
    };
    match stored.decode(seq) {
        Ok(record) if record.seq == seq => Ok(ChainHead::after(&record)),
        _ => {
            tracing::error!(seq, "the last audit log line is not record {seq}: run `lanyard audit verify`");
            Ok(ChainHead { seq, hash: crate::audit::GENESIS_HASH })
        }
    }
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
    /// checks decided the batch until this returns. (A caller on a hot path
    /// makes the [`CanonicalEvent`] before it takes the lock.)
    pub(super) fn apply_audited(
        &self,
        log: &mut LogState,
        batch: Batch,
        event: impl Into<CanonicalEvent>,
    ) -> Result<AuditRecord> {
        let mut records = self.commit_logged(log, batch, vec![event.into()], None)?;
        records.pop().ok_or_else(|| StoreError::Corrupt("audit record was not written".into()))
    }

    /// [`apply_audited`](Self::apply_audited) that also appends `revocation`
    /// as the next event of the feed (its `seq` is assigned here).
    pub(super) fn apply_revocation(
        &self,
        log: &mut LogState,
        batch: Batch,
        mut revocation: Revocation,
        mut event: AuditEvent,
    ) -> Result<Revocation> {
        revocation.seq = log.revocation + 1;
        // The record says which tasks the revocation ended, and its seq.
        if let Some(detail) = event.detail.as_object_mut() {
            detail.insert("revocation_seq".into(), revocation.seq.into());
            if !revocation.tasks.is_empty() {
                let ids = revocation.tasks.iter().map(|t| serde_json::Value::from(t.to_string())).collect();
                detail.insert("ended_tasks".into(), serde_json::Value::Array(ids));
            }
        }
        self.commit_logged(log, batch, vec![event.into()], Some(&revocation))?;
        Ok(revocation)
    }

    /// Applies `batch`, the audit records of `events` (consecutive seqs)
    /// and `revocation` (seq `log.revocation + 1`), then advances `log` and
    /// the applied heads.
    ///
    /// Write-ahead: the records go to the log first, the last one carrying
    /// the tree writes (`redo`), then the writes go to the trees. The sled
    /// gate, held shared from the first to the second, keeps the flusher
    /// from syncing the log before a record and flushing the trees after its
    /// change, so the trees are never durable ahead of the log.
    fn commit_logged(
        &self,
        log: &mut LogState,
        mut batch: Batch,
        events: Vec<CanonicalEvent>,
        revocation: Option<&Revocation>,
    ) -> Result<Vec<AuditRecord>> {
        let mut next = *log;
        if let Some(revocation) = revocation {
            next.revocation = revocation.seq;
            batch.put(TreeId::Revocations, super::layout::be_key(revocation.seq), revocation)?;
            batch.put(TreeId::Meta, REVOCATION_SEQ_KEY, &revocation.seq)?;
        }
        let mut records = Vec::with_capacity(events.len());
        let mut texts = Vec::with_capacity(events.len());
        for CanonicalEvent { event, json } in events {
            let record = next.audit.next_canonical(event, &json);
            next.audit = ChainHead::after(&record);
            records.push(record);
            texts.push(json);
        }
        let changes_state = !batch.is_empty();
        if changes_state {
            batch.put(TreeId::Meta, AUDIT_APPLIED_KEY, &next.audit.seq)?;
        }
        let redo = RedoOp::from_batch(&batch);
        let _gate = changes_state.then(|| self.sled_gate.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (i, (record, json)) in records.iter().zip(&texts).enumerate() {
            let ops: &[RedoOp] = if i + 1 == records.len() { &redo } else { &[] };
            if let Err(e) = self.audit_file.append_canonical(record, json, ops) {
                // A part-written line must never be followed by another.
                self.commit.close();
                return Err(e);
            }
        }
        if changes_state {
            if let Err(e) = self.trees.apply(&batch) {
                // The record is in the log; the trees did not take the
                // change. Recovery redoes it at the next open; until then
                // this store must not answer.
                self.commit.close();
                return Err(e);
            }
            self.sled_dirty.store(true, Ordering::SeqCst);
            if batch.touches(TreeId::Keys) {
                // Keys are not in the log's redo (no private key in the
                // audit log), so they are durable before their record.
                self.trees.get(TreeId::Keys).flush()?;
            }
        }
        *log = next;
        self.durable.applied(log);
        Ok(records)
    }

    pub(super) fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        let event = CanonicalEvent::from(event);
        self.apply_audited(&mut lock(&self.chain), Batch::default(), event)
    }

    pub(super) fn append_audit_if(&self, event: AuditEvent, pre: &crate::Preconditions) -> Result<AuditRecord> {
        let event = CanonicalEvent::from(event);
        let mut log = lock(&self.chain);
        if pre.still_hold_at(log.revocation) {
            return self.apply_audited(&mut log, Batch::default(), event);
        }
        for id in &pre.tasks {
            match self.load_task(id)? {
                Some(t) if t.ended_at.is_some() => return Err(StoreError::Revoked(format!("task {id} has ended"))),
                Some(t) if t.expires_at <= pre.now => {
                    return Err(StoreError::Revoked(format!("task {id} has expired")));
                }
                Some(_) => {}
                None => return Err(StoreError::NotFound(format!("task {id}"))),
            }
        }
        if let Some(session) = &pre.session
            && self.is_session_revoked(session)?
        {
            return Err(StoreError::Revoked("the session is revoked".into()));
        }
        if let Some(risk) = self.open_risks(&pre.risks)?.into_iter().find(|r| pre.blocking_levels.contains(&r.level)) {
            return Err(StoreError::Revoked(format!("open {} risk on {}", risk.level, risk.subject)));
        }
        self.apply_audited(&mut log, Batch::default(), event)
    }

    pub(super) fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        let events = events.into_iter().map(CanonicalEvent::from).collect();
        self.commit_logged(&mut lock(&self.chain), Batch::default(), events, None)
    }

    pub(super) fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.audit_file.scan(from, self.audit_file.len(), |seq, stored| {
            out.push(stored.decode(seq)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
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
        self.audit_file.scan(from, upto, |seq, stored| {
            let record = stored.decode(seq)?;
            if filter.matches(&record.event) {
                out.push(record);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    pub(super) fn verify_chain(&self) -> Result<ChainReport> {
        // Records appended during the walk are checked too if it sees them;
        // the head read first is the least the walk must reach.
        let expected = lock(&self.chain).audit.seq;
        let mut walker = ChainWalker::new();
        self.audit_file.scan(1, self.audit_file.len(), |seq, stored| {
            walker.check(seq, stored.record)?;
            Ok(true)
        })?;
        walker.finish(expected)
    }
}
