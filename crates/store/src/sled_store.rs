//! The embedded store: one sled directory, no setup.

mod audit_file;
mod backup;
mod entries;
mod export;
mod layout;
mod log;
mod objects;
mod revocations;
mod tasks;

pub use backup::BackupManifest;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use lanyard_core::{Entry, EntryId, SessionId, SpiffeId, Task, TaskId};
use tokio::sync::watch;

use crate::audit::{AuditEvent, AuditFilter, AuditRecord, ChainReport};
use crate::commit::{Flusher, GroupCommit};
use crate::error::{Result, StoreError};
use crate::records::{AgentRecord, EntryChanges, EntryFilter, JoinTokenRecord, KeyRecord, TaskFilter};
use crate::revocation::{Revocation, RiskRecord, RiskSubject};
use crate::store::Store;
use audit_file::{AuditFile, RedoOp};
use entries::EntryState;
use layout::{AUDIT_APPLIED_KEY, SCHEMA_KEY, TreeId, Trees};
use log::{Durable, LogState};

/// A [`Store`] in a directory: sled trees for state, and `audit.log`, the
/// audit log and write-ahead log of every audited change.
///
/// Every write appends its audit record (with its tree writes) to the log,
/// applies its tree writes in one sled transaction, then awaits the group
/// commit, so it is acknowledged only once durable. Dropping the store flushes what is
/// pending and releases the directory lock; that final flush blocks the
/// dropping thread.
#[derive(Debug)]
pub struct SledStore {
    inner: Arc<Inner>,
    // Declared last: dropped after `inner`, it flushes and joins the flusher thread.
    _flusher: Flusher,
}

/// The state shared with blocking workers.
#[derive(Debug)]
struct Inner {
    trees: Trees,
    /// Entry writers hold it exclusively; change feeds share it, so that
    /// they read the entry trees at one revision.
    // INVARIANT: lock order is `entries`, then `chain`.
    entries: RwLock<EntryState>,
    /// The audit and revocation heads; held by every audited write from
    /// its first read until its transaction is applied, so neither
    /// sequence has gaps or forks and every check-then-write (a task's
    /// parent still running, a token unused) is atomic.
    chain: Mutex<LogState>,
    /// The applied and durable audit and revocation heads.
    durable: Arc<Durable>,
    /// The audit log.
    audit_file: Arc<AuditFile>,
    /// Held shared by a write from its log line to its tree writes, and
    /// exclusively by the flusher around syncing the log and flushing the
    /// trees: the trees are never durable ahead of the log.
    sled_gate: Arc<RwLock<()>>,
    /// Whether the trees have writes the last flush did not cover.
    sled_dirty: Arc<AtomicBool>,
    commit: Arc<GroupCommit>,
    /// The newest durable entry revision.
    revision: watch::Sender<u64>,
    /// Tombstones this many revisions older than the newest are pruned.
    tombstone_retention: u64,
}

impl SledStore {
    /// The on-disk layout version this build writes and reads.
    ///
    /// Still 1 with tasks, revocations and risks: their trees are new, and
    /// an audit record without a context encodes and hashes exactly as
    /// before, so nothing an older build wrote is misread. The reverse does
    /// not hold: a build from before them would open a newer store, ignore
    /// those trees and fail to verify records that carry a context, so do
    /// not downgrade past them.
    pub const SCHEMA_VERSION: u32 = 1;

    /// How many revisions a deletion or re-parenting stays visible to
    /// incremental change feeds; agents further behind get a snapshot.
    pub const TOMBSTONE_RETENTION: u64 = 100_000;

    /// Opens or creates the store in `dir`.
    ///
    /// Refuses a store written by a newer schema version
    /// ([`StoreError::NewerSchema`]) and a directory another process has
    /// open ([`StoreError::Locked`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Self::TOMBSTONE_RETENTION, Duration::ZERO)
    }

    /// Everything but the audit log, for `lanyard store migrate` (the audit
    /// log is read with [`Store::audit_range`]).
    pub async fn export(&self) -> Result<crate::StoreExport> {
        self.blocking(|inner| inner.export()).await
    }

    /// [`open`](Self::open) with a tombstone retention, and a delay added
    /// to every flush that lets tests stand in for a slow disk.
    fn open_with(dir: &Path, tombstone_retention: u64, flush_delay: Duration) -> Result<Self> {
        let db = open_db(dir)?;
        let trees = Trees::open(&db)?;
        check_schema(&trees, &db)?;
        let audit_file = Arc::new(AuditFile::open(dir)?);
        migrate_audit_tree(&trees, &audit_file, &db)?;
        let gap = recover(&trees, &audit_file, &db)?;
        let state = EntryState::load(&trees)?;
        let log = LogState::load(&trees, &audit_file)?;
        let durable = Arc::new(Durable::new(&log));
        let sled_gate = Arc::new(RwLock::new(()));
        let sled_dirty = Arc::new(AtomicBool::new(false));
        let flush = {
            let (durable, file, gate, dirty) =
                (Arc::clone(&durable), Arc::clone(&audit_file), Arc::clone(&sled_gate), Arc::clone(&sled_dirty));
            move || {
                if !flush_delay.is_zero() {
                    std::thread::sleep(flush_delay);
                }
                let mark = durable.mark();
                {
                    let _gate = gate.write().unwrap_or_else(PoisonError::into_inner);
                    file.sync()?;
                    if dirty.swap(false, Ordering::SeqCst) {
                        db.flush()?;
                    }
                }
                durable.publish(mark);
                Ok(())
            }
        };
        let (commit, flusher) = GroupCommit::start(flush)?;
        tracing::info!(
            path = %dir.display(),
            revision = state.revision,
            audit_seq = log.audit.seq,
            revocation_seq = log.revocation,
            "store opened"
        );
        let inner = Inner {
            trees,
            revision: watch::Sender::new(state.revision),
            entries: RwLock::new(state),
            chain: Mutex::new(log),
            durable,
            audit_file,
            sled_gate,
            sled_dirty,
            commit,
            tombstone_retention: tombstone_retention.max(1),
        };
        let store = Self { inner: Arc::new(inner), _flusher: flusher };
        if let Some((applied, logged)) = gap {
            store.record_gap(applied, logged)?;
        }
        Ok(store)
    }

    /// Notes in the log itself that the trees held changes past its end.
    fn record_gap(&self, applied: u64, logged: u64) -> Result<()> {
        tracing::error!(applied, logged, "the trees held changes whose audit records were lost in a crash");
        let event = AuditEvent {
            kind: "store.recovery".into(),
            actor: "store".into(),
            subject: String::new(),
            detail: serde_json::json!({
                "problem": "state changes past the end of the audit log; their records were lost before they were durable, and none of them was acknowledged",
                "trees_applied_through": applied,
                "log_ended_at": logged,
            }),
            ..AuditEvent::default()
        };
        self.inner.append_audit(event)?;
        Ok(())
    }

    /// How many flushes (fsyncs) the store has started: diagnostics for
    /// metrics and for checking that group commit batches.
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flush_count()
    }

    /// Runs a sled read on the calling task.
    ///
    /// sled answers reads from its page cache in well under a microsecond;
    /// a thread hop per read (spawn_blocking) cost about 20 µs and two
    /// context switches, on a path (minting) that reads several times.
    /// Reads fail too once the store is closed, since sled may then hold
    /// writes that will never be durable.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.inner.commit.check_open()?;
        f(&self.inner)
    }

    /// Runs a sled write on the blocking pool: a write can make sled seal a
    /// log buffer and write it out in the calling thread, which must not be
    /// one of the few async workers.
    async fn offload<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.inner.commit.check_open()?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("store worker failed: {e}"))))?
    }

    /// Appends audit records that change no state, on the calling task (a
    /// write to the log file, microseconds), then waits until durable.
    async fn append_only<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.inner.commit.check_open()?;
        let value = f(&self.inner)?;
        let ticket = self.inner.commit.ticket();
        self.inner.commit.wait(ticket).await?;
        Ok(value)
    }

    /// Runs a write, then waits until it is durable.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let (value, ticket) = self
            .offload(move |inner| {
                let value = f(inner)?;
                Ok((value, inner.commit.ticket()))
            })
            .await?;
        self.inner.commit.wait(ticket).await?;
        Ok(value)
    }

    /// Waits until every write applied so far is durable.
    async fn sync(&self) -> Result<()> {
        self.inner.commit.check_open()?;
        self.inner.commit.wait(self.inner.commit.ticket()).await
    }
}

impl Inner {
    /// Records that entry revision `rev` is durable.
    fn publish_revision(&self, rev: u64) {
        self.revision.send_if_modified(|current| {
            let newer = rev > *current;
            if newer {
                *current = rev;
            }
            newer
        });
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked:
/// state is only assigned after the write it describes has been applied.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Moves the records of the `audit` tree (where stores kept them before
/// `audit.log`) into the log, once, then empties the tree.
fn migrate_audit_tree(trees: &Trees, file: &AuditFile, db: &sled::Db) -> Result<()> {
    let tree = trees.get(TreeId::Audit);
    if tree.is_empty() {
        return Ok(());
    }
    if file.len() > 0 {
        return Err(StoreError::Corrupt("audit records both in the audit tree and in audit.log".into()));
    }
    let mut last = 0;
    for item in tree.iter() {
        let (key, bytes) = item?;
        let record: AuditRecord = layout::decode(TreeId::Audit, &key, &bytes)?;
        last = record.seq;
        file.append(&record, &[])?;
    }
    file.sync()?;
    let mut batch = layout::Batch::default();
    batch.put(TreeId::Meta, AUDIT_APPLIED_KEY, &last)?;
    trees.apply(&batch)?;
    tree.clear()?;
    db.flush()?;
    tracing::info!(records = last, "moved the audit records into audit.log");
    Ok(())
}

/// Redoes the tree writes of logged records the trees lost (a crash after
/// the log was synced, before the trees were flushed). Answers the gap when
/// the trees are instead ahead of the log (see [`SledStore::record_gap`]).
fn recover(trees: &Trees, file: &AuditFile, db: &sled::Db) -> Result<Option<(u64, u64)>> {
    let applied: u64 = trees.read(TreeId::Meta, AUDIT_APPLIED_KEY)?.unwrap_or(0);
    let logged = file.len();
    if applied > logged {
        return Ok(Some((applied, logged)));
    }
    let mut redone = 0u64;
    file.scan(applied + 1, logged, |seq, stored| {
        if !stored.redo.is_empty() {
            let mut batch = RedoOp::to_batch(&stored.redo, seq)?;
            batch.put(TreeId::Meta, AUDIT_APPLIED_KEY, &seq)?;
            trees.apply(&batch)?;
            redone += 1;
        }
        Ok(true)
    })?;
    if redone > 0 {
        db.flush()?;
        tracing::warn!(redone, "redid audited changes the trees had lost in a crash");
    }
    Ok(None)
}

/// How long [`open_db`] waits for a directory lock that is being released.
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// Opens the sled database, waiting briefly for a lock on its way out.
///
/// sled releases its lock only once its background log writers let go of
/// the file, a moment after the last handle is dropped: reopening in the
/// same process (tests, a server restarting its store) can see the lock of
/// a store already closed. Another live process holding it fails after
/// [`LOCK_WAIT`].
fn open_db(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            Err(error) => match open_error(error, dir) {
                StoreError::Locked(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return Err(other),
            },
        }
    }
}

fn open_error(error: sled::Error, dir: &Path) -> StoreError {
    match &error {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked(dir.to_path_buf())
        }
        _ => error.into(),
    }
}

/// Refuses newer layouts; stamps a new store with [`SledStore::SCHEMA_VERSION`].
fn check_schema(trees: &Trees, db: &sled::Db) -> Result<()> {
    let supported = SledStore::SCHEMA_VERSION;
    match trees.read::<u32>(TreeId::Meta, SCHEMA_KEY)? {
        Some(found) if found > supported => Err(StoreError::NewerSchema { found, supported }),
        Some(found) if found == supported => Ok(()),
        // Version 1 is the first; migrations from older versions go here.
        Some(found) => Err(StoreError::Corrupt(format!("meta schema_version {found} was never written by lanyard"))),
        None => {
            let mut batch = layout::Batch::default();
            batch.put(TreeId::Meta, SCHEMA_KEY, &supported)?;
            trees.apply(&batch)?;
            db.flush()?;
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn create_entry(&self, entry: Entry, audit: AuditEvent) -> Result<Entry> {
        let entry = self.write(move |inner| inner.create_entry(entry, audit)).await?;
        self.inner.publish_revision(entry.revision);
        Ok(entry)
    }

    async fn update_entry(&self, entry: Entry, expected_revision: u64, audit: AuditEvent) -> Result<Entry> {
        let entry = self.write(move |inner| inner.update_entry(entry, expected_revision, audit)).await?;
        self.inner.publish_revision(entry.revision);
        Ok(entry)
    }

    async fn delete_entry(&self, id: &EntryId, audit: AuditEvent) -> Result<Entry> {
        let id = id.clone();
        let (entry, revision) = self.write(move |inner| inner.delete_entry(&id, audit)).await?;
        self.inner.publish_revision(revision);
        Ok(entry)
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>> {
        let id = id.clone();
        self.blocking(move |inner| inner.load_entry(&id)).await
    }

    async fn list_entries(&self, filter: &EntryFilter, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>> {
        let (filter, after) = (filter.clone(), after.cloned());
        self.blocking(move |inner| inner.list_entries(&filter, after.as_ref(), limit)).await
    }

    async fn entry_changes(&self, parent: &SpiffeId, since: u64) -> Result<EntryChanges> {
        let parent = parent.clone();
        let changes = self.blocking(move |inner| inner.entry_changes(&parent, since)).await?;
        // The answer may include writes applied but not yet flushed: answer
        // only once they are durable, so an agent never holds a version
        // the store could lose.
        if self.revision() < changes.revision {
            self.sync().await?;
            self.inner.publish_revision(changes.revision);
        }
        Ok(changes)
    }

    fn revision(&self) -> u64 {
        *self.inner.revision.borrow()
    }

    fn subscribe_revision(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    async fn create_join_token(&self, token_hash: [u8; 32], record: JoinTokenRecord, audit: AuditEvent) -> Result<()> {
        self.write(move |inner| inner.create_join_token(token_hash, &record, audit)).await
    }

    async fn consume_join_token(&self, token_hash: [u8; 32], audit: AuditEvent) -> Result<Option<JoinTokenRecord>> {
        self.write(move |inner| inner.consume_join_token(token_hash, audit)).await
    }

    async fn put_agent(&self, agent: AgentRecord, audit: Option<AuditEvent>) -> Result<()> {
        self.write(move |inner| inner.put_agent(&agent, audit)).await
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>> {
        let key = id.as_str().to_owned();
        self.blocking(move |inner| inner.trees.read(TreeId::Agents, key)).await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.blocking(|inner| inner.list_all(TreeId::Agents)).await
    }

    async fn lock_keys(&self) -> Result<crate::KeyLock> {
        // One process has the directory; the server serializes its own key changes.
        Ok(crate::KeyLock::local())
    }

    async fn put_key(&self, key: KeyRecord, audit: AuditEvent) -> Result<()> {
        self.write(move |inner| inner.put_key(&key, audit)).await
    }

    async fn revoke_key(&self, key: KeyRecord, at: u64, audit: AuditEvent) -> Result<Revocation> {
        self.write(move |inner| inner.revoke_key(&key, at, audit)).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.blocking(|inner| inner.list_all(TreeId::Keys)).await
    }

    async fn delete_key(&self, id: &str, audit: AuditEvent) -> Result<()> {
        let id = id.to_owned();
        self.write(move |inner| inner.delete_key(&id, audit)).await
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        self.append_only(move |inner| inner.append_audit(event)).await
    }

    async fn append_audit_if(&self, event: AuditEvent, pre: crate::Preconditions) -> Result<u64> {
        self.append_only(move |inner| inner.append_audit_if(event, &pre).map(|record| record.seq)).await
    }

    async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.append_only(move |inner| inner.append_audit_batch(events)).await
    }

    async fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.blocking(move |inner| inner.audit_range(from, limit)).await
    }

    async fn backup(&self, to: &Path) -> Result<BackupManifest> {
        let to = to.to_owned();
        self.blocking(move |inner| inner.backup(&to)).await
    }

    async fn verify_audit_chain(&self) -> Result<ChainReport> {
        self.blocking(|inner| inner.verify_chain()).await
    }

    async fn flush(&self) -> Result<()> {
        self.sync().await
    }

    async fn ban_agent(&self, id: &SpiffeId, at: u64, audit: AuditEvent) -> Result<AgentRecord> {
        let id = id.clone();
        self.write(move |inner| inner.ban_agent(&id, at, audit)).await
    }

    async fn query_audit(&self, filter: &AuditFilter, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let (filter, upto) = (filter.clone(), self.audit_head());
        self.blocking(move |inner| inner.query_audit(&filter, from_seq, upto, limit)).await
    }

    fn audit_head(&self) -> u64 {
        self.inner.durable.audit_head()
    }

    fn commit_latency(&self) -> &lanyard_core::metrics::Histogram {
        &self.inner.commit.latency
    }

    fn subscribe_audit(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe_audit()
    }

    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<Task> {
        self.write(move |inner| inner.create_task(task, audit)).await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = *id;
        self.blocking(move |inner| inner.load_task(&id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter, limit: usize) -> Result<Vec<Task>> {
        let filter = filter.clone();
        self.blocking(move |inner| inner.list_tasks(&filter, limit)).await
    }

    async fn end_task(&self, id: &TaskId, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let id = *id;
        self.write(move |inner| inner.end_task(&id, at, audit)).await
    }

    async fn revoke_session(&self, session: &SessionId, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let session = session.clone();
        self.write(move |inner| inner.revoke_session(&session, at, audit)).await
    }

    async fn is_session_revoked(&self, session: &SessionId) -> Result<bool> {
        let session = session.clone();
        self.blocking(move |inner| inner.is_session_revoked(&session)).await
    }

    async fn report_risk(&self, risk: RiskRecord, audit: AuditEvent) -> Result<Revocation> {
        self.write(move |inner| inner.report_risk(risk, audit)).await
    }

    async fn clear_risk(&self, subject: &RiskSubject, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let subject = subject.clone();
        self.write(move |inner| inner.clear_risk(&subject, at, audit)).await
    }

    async fn open_risks(&self, subjects: &[RiskSubject]) -> Result<Vec<RiskRecord>> {
        let subjects = subjects.to_vec();
        self.blocking(move |inner| inner.open_risks(&subjects)).await
    }

    async fn list_risks(&self) -> Result<Vec<RiskRecord>> {
        self.blocking(|inner| inner.list_all(TreeId::Risks)).await
    }

    async fn revoke_token(&self, jti: &str, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let jti = jti.to_owned();
        self.write(move |inner| inner.revoke_token(&jti, at, audit)).await
    }

    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>> {
        let upto = self.revocation_seq();
        self.blocking(move |inner| inner.revocations_since(after, upto, limit)).await
    }

    fn revocation_seq(&self) -> u64 {
        self.inner.durable.revocation_seq()
    }

    fn subscribe_revocations(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe_revocations()
    }

    fn write_intent(&self) -> crate::WriteIntent {
        self.inner.commit.intent()
    }
}
