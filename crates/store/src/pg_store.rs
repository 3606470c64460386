//! The PostgreSQL store: the same [`Store`] over a database that several
//! `lanyard server` replicas share.
//!
//! Every audited write is one transaction that first locks the single row
//! of `lanyard_head` (the audit head, the revocation head and the entry
//! revision): that row lock is the chain lock of every replica, so the
//! audit log stays one gapless chain, revocations get one global sequence,
//! and every check-then-write (a task's parent still running, a join token
//! unused, a decision's preconditions) is atomic across replicas. A write
//! is acknowledged once its transaction has committed, which PostgreSQL
//! makes durable (`synchronous_commit` on, the default).
//!
//! Each commit also sends `NOTIFY lanyard` with the new heads; every
//! replica LISTENs, so the revision, audit and revocation watches of one
//! replica move when another writes (the revocation feed wakes within
//! milliseconds, not at the next poll). Records are kept as the JSON of the
//! types the embedded store keeps, one row each.

mod listen;

use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use lanyard_core::{EndReason, Entry, EntryId, SessionId, SpiffeId, Task, TaskId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;
use tokio_postgres::GenericClient;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::audit::{AuditEvent, AuditFilter, AuditRecord, ChainHead, ChainReport, ChainWalker};
use crate::ending::Ending;
use crate::error::{Result, StoreError};
use crate::migrate::{MigrationReport, StoreExport};
use crate::records::{AgentRecord, EntryChanges, EntryFilter, JoinTokenRecord, KeyRecord, TaskFilter};
use crate::revocation::{Revocation, RevocationKind, RiskRecord, RiskSubject, risk_key, risk_rank};
use crate::store::Store;

/// The schema this build writes and reads, and the SQL that brings a
/// database to each version (index 0 is version 1).
const MIGRATIONS: [&str; 1] = [include_str!("pg_store/schema_v1.sql")];
/// The newest schema version this build understands.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
/// The advisory lock held while migrating, so replicas starting together
/// migrate once.
const MIGRATION_LOCK: i64 = 0x6c61_6e79_6172_6431; // "lanyard1"
/// The advisory lock of [`Store::lock_keys`].
const KEY_LOCK: i64 = 0x6c61_6e79_6172_6432; // "lanyard2"
/// The channel every commit notifies with the new heads.
const CHANNEL: &str = "lanyard";
/// Database connections per replica.
const POOL_SIZE: usize = 16;
/// Records read per query while walking the audit log.
const SCAN_PAGE: i64 = 1_000;
/// How many revisions a deletion or re-parenting stays visible to
/// incremental change feeds (as in the embedded store).
const TOMBSTONE_RETENTION: u64 = 100_000;

/// A [`Store`] in a PostgreSQL database, shared by every server replica.
#[derive(Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
    _listener: listen::Listener,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    heads: Arc<Heads>,
    commit_latency: lanyard_core::metrics::Histogram,
}

/// The heads every replica follows: moved by this replica's commits and by
/// the notifications of the others'. They only grow.
#[derive(Debug)]
struct Heads {
    revision: watch::Sender<u64>,
    audit: watch::Sender<u64>,
    revocations: watch::Sender<u64>,
}

impl Heads {
    fn new(head: &HeadRow) -> Self {
        Self {
            revision: watch::Sender::new(head.revision),
            audit: watch::Sender::new(head.audit.seq),
            revocations: watch::Sender::new(head.revocation),
        }
    }

    /// Raises each head that `(revision, audit, revocation)` is ahead on.
    fn raise(&self, (revision, audit, revocation): (u64, u64, u64)) {
        for (tx, value) in [(&self.revision, revision), (&self.audit, audit), (&self.revocations, revocation)] {
            tx.send_if_modified(|current| {
                let newer = value > *current;
                if newer {
                    *current = value;
                }
                newer
            });
        }
    }
}

/// The `lanyard_head` row: the chain lock's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeadRow {
    audit: ChainHead,
    revocation: u64,
    revision: u64,
    tombstone_floor: u64,
}

impl HeadRow {
    async fn read(client: &impl GenericClient, lock: bool) -> Result<Self> {
        let sql = match lock {
            true => {
                "SELECT audit_seq, audit_hash, revocation_seq, revision, tombstone_floor FROM lanyard_head WHERE id = 1 FOR UPDATE"
            }
            false => {
                "SELECT audit_seq, audit_hash, revocation_seq, revision, tombstone_floor FROM lanyard_head WHERE id = 1"
            }
        };
        let row = client.query_one(sql, &[]).await.map_err(pg)?;
        let hash: Vec<u8> = row.get(1);
        let hash = <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::Corrupt("lanyard_head.audit_hash is not 32 bytes".into()))?;
        Ok(Self {
            audit: ChainHead { seq: to_u64(row.get(0))?, hash },
            revocation: to_u64(row.get(2))?,
            revision: to_u64(row.get(3))?,
            tombstone_floor: to_u64(row.get(4))?,
        })
    }

    fn notification(&self) -> String {
        format!("{} {} {}", self.revision, self.audit.seq, self.revocation)
    }
}

/// One audited write in progress: a transaction holding the head row.
struct Write<'a> {
    tx: Transaction<'a>,
    head: HeadRow,
}

impl<'a> Write<'a> {
    /// Begins a transaction and takes the chain lock.
    async fn begin(client: &'a mut deadpool_postgres::Object) -> Result<Self> {
        let tx = client.transaction().await.map_err(pg)?;
        let head = HeadRow::read(&*tx, true).await?;
        Ok(Self { tx, head })
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.tx.execute(sql, params).await.map_err(pg)
    }

    async fn one<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>> {
        self.tx.query_opt(sql, params).await.map_err(pg)?.map(|row| doc_of(what, &row)).transpose()
    }

    /// Appends the audit record of `event` after the head.
    async fn audit(&mut self, event: AuditEvent) -> Result<AuditRecord> {
        let record = self.head.audit.next(event);
        let json = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
        self.execute("INSERT INTO lanyard_audit (seq, record) VALUES ($1, $2)", &[&to_i64(record.seq)?, &json]).await?;
        self.head.audit = ChainHead::after(&record);
        Ok(record)
    }

    /// Appends `revocation` as the next event of the feed, and its audit
    /// record saying so (as the embedded store does).
    async fn revocation(&mut self, mut revocation: Revocation, mut event: AuditEvent) -> Result<Revocation> {
        revocation.seq = self.head.revocation + 1;
        if let Some(detail) = event.detail.as_object_mut() {
            detail.insert("revocation_seq".into(), revocation.seq.into());
            if !revocation.tasks.is_empty() {
                let ids = revocation.tasks.iter().map(|t| serde_json::Value::from(t.to_string())).collect();
                detail.insert("ended_tasks".into(), serde_json::Value::Array(ids));
            }
        }
        self.execute(
            "INSERT INTO lanyard_revocations (seq, doc) VALUES ($1, $2)",
            &[&to_i64(revocation.seq)?, &encode(&revocation)?],
        )
        .await?;
        self.head.revocation = revocation.seq;
        self.audit(event).await?;
        Ok(revocation)
    }

    /// Saves the head, notifies every replica and commits; the heads to
    /// publish once committed.
    async fn commit(self, latency: &lanyard_core::metrics::Histogram) -> Result<HeadRow> {
        let h = self.head;
        self.execute(
            "UPDATE lanyard_head SET audit_seq = $1, audit_hash = $2, revocation_seq = $3, revision = $4, tombstone_floor = $5 WHERE id = 1",
            &[&to_i64(h.audit.seq)?, &h.audit.hash.as_slice(), &to_i64(h.revocation)?, &to_i64(h.revision)?, &to_i64(h.tombstone_floor)?],
        )
        .await?;
        self.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &h.notification()]).await?;
        let started = Instant::now();
        self.tx.commit().await.map_err(pg)?;
        latency.observe(started.elapsed());
        Ok(h)
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// or the key=value form), applies the migrations it lacks and starts
    /// following the other replicas' commits.
    ///
    /// Refuses a database whose schema is newer than this build
    /// ([`StoreError::NewerSchema`]).
    pub async fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Postgres(format!("bad store URL: {e}")))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(pool_error)?;
        migrate(&mut client).await?;
        let head = HeadRow::read(&**client, false).await?;
        drop(client);
        let heads = Arc::new(Heads::new(&head));
        let listener = listen::Listener::start(config, Arc::clone(&heads)).await?;
        Ok(Self {
            inner: Arc::new(Inner { pool, heads, commit_latency: lanyard_core::metrics::Histogram::default() }),
            _listener: listener,
        })
    }

    /// Says which database `url` names, without its password: for
    /// `check-config` and logs. Fails as [`connect`](Self::connect) would
    /// on a URL that does not parse.
    pub fn describe(url: &str) -> Result<String> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Postgres(format!("bad store URL: {e}")))?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(host, port)| match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}", path.display()),
            })
            .collect();
        Ok(format!(
            "PostgreSQL database {} on {} as {}",
            config.get_dbname().unwrap_or("(the user's)"),
            if hosts.is_empty() { "localhost".to_owned() } else { hosts.join(", ") },
            config.get_user().unwrap_or("(the OS user)")
        ))
    }

    /// Copies `export` and the audit log of `source` (the store it came
    /// from, read page by page) into this store, in one transaction, so that
    /// the copy has the same records under the same revisions and sequence
    /// numbers and the very same audit chain. Refuses a database that holds
    /// anything already (`AlreadyExists`); checks the copied chain against
    /// the source's head before committing.
    pub async fn import(&self, export: StoreExport, source: &dyn Store) -> Result<MigrationReport> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let used = w
            .tx
            .query_one(
                "SELECT (SELECT count(*) FROM lanyard_audit) + (SELECT count(*) FROM lanyard_entries) + (SELECT count(*) FROM lanyard_keys)",
                &[],
            )
            .await
            .map_err(pg)?
            .get::<_, i64>(0);
        if used > 0 || w.head.audit.seq > 0 || w.head.revision > 0 || w.head.revocation > 0 {
            return Err(StoreError::AlreadyExists(
                "a Lanyard store in this database (migrate into an empty one)".into(),
            ));
        }
        let report = MigrationReport {
            entries: export.entries.len(),
            agents: export.agents.len(),
            keys: export.keys.len(),
            tasks: export.tasks.len(),
            revocations: export.revocations.len(),
            audit_records: 0,
        };
        for entry in &export.entries {
            insert_entry(&w, entry).await?;
        }
        for t in &export.tombstones {
            w.execute(
                "INSERT INTO lanyard_entry_tombstones (revision, id, parent_id) VALUES ($1, $2, $3)",
                &[&to_i64(t.revision)?, &t.id.as_str(), &t.parent.as_str()],
            )
            .await?;
        }
        for (hash, record) in &export.join_tokens {
            w.execute(
                "INSERT INTO lanyard_join_tokens (hash, doc) VALUES ($1, $2)",
                &[&hash.as_slice(), &encode(record)?],
            )
            .await?;
        }
        for agent in &export.agents {
            w.execute(
                "INSERT INTO lanyard_agents (id, doc) VALUES ($1, $2)",
                &[&agent.spiffe_id.as_str(), &encode(agent)?],
            )
            .await?;
        }
        for key in &export.keys {
            upsert_key(&w, key).await?;
        }
        for task in &export.tasks {
            let parent = task.parent.as_ref().map(|p| p.as_bytes().to_vec());
            w.execute(
                "INSERT INTO lanyard_tasks (id, session, parent, doc) VALUES ($1, $2, $3, $4)",
                &[&task.id.as_bytes().as_slice(), &task.session.as_str(), &parent, &encode(task)?],
            )
            .await?;
        }
        for (session, seq) in &export.revoked_sessions {
            w.execute(
                "INSERT INTO lanyard_revoked_sessions (session, seq) VALUES ($1, $2)",
                &[&session.as_str(), &to_i64(*seq)?],
            )
            .await?;
        }
        for risk in &export.risks {
            let user_sub = match &risk.subject {
                RiskSubject::User { sub, .. } => Some(sub.as_str()),
                _ => None,
            };
            w.execute(
                "INSERT INTO lanyard_risks (key, user_sub, doc) VALUES ($1, $2, $3)",
                &[&risk_key(&risk.subject), &user_sub, &encode(risk)?],
            )
            .await?;
        }
        for (expected, revocation) in (1..).zip(&export.revocations) {
            if revocation.seq != expected {
                return Err(StoreError::Corrupt(format!("revocation {expected} is missing from the source")));
            }
            w.execute(
                "INSERT INTO lanyard_revocations (seq, doc) VALUES ($1, $2)",
                &[&to_i64(revocation.seq)?, &encode(revocation)?],
            )
            .await?;
        }
        // The audit log, record by record, each checked to extend the chain.
        let mut walker = ChainWalker::new();
        let mut from = 1;
        loop {
            let page = source.audit_range(from, SCAN_PAGE as usize).await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            for record in page {
                let json = encode(&record)?;
                let value = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                walker.check(record.seq, value)?;
                w.execute("INSERT INTO lanyard_audit (seq, record) VALUES ($1, $2)", &[&to_i64(record.seq)?, &json])
                    .await?;
                w.head.audit = ChainHead::after(&record);
            }
        }
        let source_head = source.verify_audit_chain().await?;
        let copied = walker.finish(source_head.records)?;
        if copied.head != source_head.head {
            return Err(StoreError::ChainBroken {
                seq: copied.records,
                reason: "the copy's head is not the source's".into(),
            });
        }
        w.head.revocation = export.revocations.last().map_or(0, |r| r.seq);
        w.head.revision = export.revision;
        w.head.tombstone_floor = export.tombstone_floor;
        self.commit(w).await?;
        Ok(MigrationReport { audit_records: copied.records, ..report })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// Commits `write` and publishes its heads here (the other replicas
    /// learn them from the notification).
    async fn commit(&self, write: Write<'_>) -> Result<HeadRow> {
        let head = write.commit(&self.inner.commit_latency).await?;
        self.inner.heads.raise((head.revision, head.audit.seq, head.revocation));
        Ok(head)
    }

    async fn read_one<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>> {
        let client = self.client().await?;
        client.query_opt(sql, params).await.map_err(pg)?.map(|row| doc_of(what, &row)).transpose()
    }

    async fn read_all<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>> {
        let client = self.client().await?;
        let rows = client.query(sql, params).await.map_err(pg)?;
        rows.iter().map(|row| doc_of(what, row)).collect()
    }

    /// Ends `ending`'s tasks and their descendants and appends one event.
    async fn end_tasks(
        &self,
        mut w: Write<'_>,
        mut ending: Ending,
        roots: Vec<TaskId>,
        (kind, subject): (RevocationKind, String),
        event: AuditEvent,
    ) -> Result<Revocation> {
        // Breadth first below the roots; a task seen before is not walked again.
        let mut queue = std::collections::VecDeque::from(roots);
        while let Some(parent) = queue.pop_front() {
            let rows = w
                .tx
                .query("SELECT doc FROM lanyard_tasks WHERE parent = $1 ORDER BY id", &[&parent.as_bytes().as_slice()])
                .await
                .map_err(pg)?;
            for row in rows {
                let child: Task = doc_of("task", &row)?;
                let id = child.id;
                if ending.visit(child, EndReason::ParentEnded) {
                    queue.push_back(id);
                }
            }
        }
        let at = ending.at;
        let mut ids = Vec::with_capacity(ending.ended.len());
        for task in ending.ended {
            w.execute(
                "UPDATE lanyard_tasks SET doc = $2 WHERE id = $1",
                &[&task.id.as_bytes().as_slice(), &encode(&task)?],
            )
            .await?;
            ids.push(task.id);
        }
        let revocation = Revocation::draft(kind, at, subject, ids);
        let revocation = w.revocation(revocation, event).await?;
        self.commit(w).await?;
        Ok(revocation)
    }

    /// The open risks that apply to `subjects` (see [`Store::open_risks`]).
    async fn risks_of(client: &impl GenericClient, subjects: &[RiskSubject]) -> Result<Vec<RiskRecord>> {
        let mut found = std::collections::BTreeMap::new();
        for subject in subjects {
            let rows = match subject {
                RiskSubject::User { sub, iss: Some(_) } => {
                    let every = risk_key(&RiskSubject::User { sub: sub.clone(), iss: None });
                    client
                        .query(
                            "SELECT key, doc FROM lanyard_risks WHERE key = $1 OR key = $2",
                            &[&risk_key(subject), &every],
                        )
                        .await
                }
                RiskSubject::User { sub, iss: None } => {
                    client.query("SELECT key, doc FROM lanyard_risks WHERE user_sub = $1", &[sub]).await
                }
                _ => client.query("SELECT key, doc FROM lanyard_risks WHERE key = $1", &[&risk_key(subject)]).await,
            }
            .map_err(pg)?;
            for row in rows {
                let key: Vec<u8> = row.get(0);
                found.insert(key, decode::<RiskRecord>("risk", &row.get::<_, String>(1))?);
            }
        }
        Ok(found.into_values().collect())
    }

    /// Every audit record with `from <= seq <= upto`, page by page, to `visit`
    /// until it returns false.
    async fn scan_audit(
        &self,
        from: u64,
        upto: u64,
        mut visit: impl FnMut(u64, serde_json::Value) -> Result<bool>,
    ) -> Result<()> {
        let client = self.client().await?;
        let mut next = from.max(1);
        while next <= upto {
            let rows = client
                .query(
                    "SELECT seq, record FROM lanyard_audit WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    &[&to_i64(next)?, &to_i64(upto)?, &SCAN_PAGE],
                )
                .await
                .map_err(pg)?;
            let Some(last) = rows.last() else { return Ok(()) };
            let last_seq = to_u64(last.get(0))?;
            for row in &rows {
                let seq = to_u64(row.get(0))?;
                let text: String = row.get(1);
                let value = serde_json::from_str(&text)
                    .map_err(|e| StoreError::ChainBroken { seq, reason: format!("record does not decode: {e}") })?;
                if !visit(seq, value)? {
                    return Ok(());
                }
            }
            next = last_seq + 1;
        }
        Ok(())
    }
}

/// Applies the migrations the database lacks, under an advisory lock.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    let result = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS lanyard_schema (version integer NOT NULL)")
            .await
            .map_err(pg)?;
        let found: Option<i32> =
            client.query_opt("SELECT max(version) FROM lanyard_schema", &[]).await.map_err(pg)?.and_then(|r| r.get(0));
        let found = found.unwrap_or(0);
        if found > PG_SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: u32::try_from(PG_SCHEMA_VERSION).unwrap_or(0),
            });
        }
        for (version, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(found).unwrap_or(0)) {
            let tx = client.transaction().await.map_err(pg)?;
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute("INSERT INTO lanyard_schema (version) VALUES ($1)", &[&version]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            tracing::info!(version, "applied a PostgreSQL store migration");
        }
        Ok(())
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    result
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    })
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Postgres(other.to_string()),
    }
}

fn encode(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode a record: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what} record does not decode: {e}")))
}

/// The record in the first column of `row` (a `doc`), decoded.
fn doc_of<T: DeserializeOwned>(what: &str, row: &tokio_postgres::Row) -> Result<T> {
    decode(what, &row.get::<_, String>(0))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{n} is out of PostgreSQL's bigint range")))
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative counter {n} in the database")))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn create_entry(&self, mut entry: Entry, audit: AuditEvent) -> Result<Entry> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let exists =
            w.tx.query_opt("SELECT 1 FROM lanyard_entries WHERE id = $1", &[&entry.id.as_str()]).await.map_err(pg)?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists(format!("entry {}", entry.id)));
        }
        w.head.revision += 1;
        entry.revision = w.head.revision;
        insert_entry(&w, &entry).await?;
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(entry)
    }

    async fn update_entry(&self, mut entry: Entry, expected_revision: u64, audit: AuditEvent) -> Result<Entry> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let old: Entry = w
            .one("entry", "SELECT doc FROM lanyard_entries WHERE id = $1", &[&entry.id.as_str()])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("entry {}", entry.id)))?;
        if old.revision != expected_revision {
            return Err(StoreError::Conflict { expected: expected_revision, actual: old.revision });
        }
        w.execute("DELETE FROM lanyard_entries WHERE id = $1", &[&old.id.as_str()]).await?;
        if old.parent_id != entry.parent_id {
            w.head.revision += 1;
            tombstone(&mut w, &old).await?;
        }
        w.head.revision += 1;
        entry.revision = w.head.revision;
        insert_entry(&w, &entry).await?;
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(entry)
    }

    async fn delete_entry(&self, id: &EntryId, audit: AuditEvent) -> Result<Entry> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let old: Entry = w
            .one("entry", "SELECT doc FROM lanyard_entries WHERE id = $1", &[&id.as_str()])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("entry {id}")))?;
        w.execute("DELETE FROM lanyard_entries WHERE id = $1", &[&id.as_str()]).await?;
        w.head.revision += 1;
        tombstone(&mut w, &old).await?;
        let revocation = Revocation {
            seq: 0,
            at: audit.at,
            kind: RevocationKind::EntryDeleted,
            subject: old.spiffe_id.to_string(),
            tasks: Vec::new(),
            detail: json!({ "entry_id": old.id }),
        };
        w.revocation(revocation, audit).await?;
        self.commit(w).await?;
        Ok(old)
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>> {
        self.read_one("entry", "SELECT doc FROM lanyard_entries WHERE id = $1", &[&id.as_str()]).await
    }

    async fn list_entries(&self, filter: &EntryFilter, after: Option<&EntryId>, limit: usize) -> Result<Vec<Entry>> {
        let after = after.map_or("", EntryId::as_str);
        let limit = limit_of(limit);
        let entries: Vec<Entry> = match &filter.parent_id {
            Some(parent) => {
                self.read_all(
                    "entry",
                    "SELECT doc FROM lanyard_entries WHERE parent_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&parent.as_str(), &after, &limit],
                )
                .await?
            }
            None => {
                self.read_all(
                    "entry",
                    "SELECT doc FROM lanyard_entries WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await?
            }
        };
        Ok(entries.into_iter().filter(|e| filter.spiffe_id.as_ref().is_none_or(|s| *s == e.spiffe_id)).collect())
    }

    async fn entry_changes(&self, parent: &SpiffeId, since: u64) -> Result<EntryChanges> {
        let mut client = self.client().await?;
        // One snapshot of the database for the whole answer.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let head = HeadRow::read(&*tx, false).await?;
        let snapshot = since == 0 || since > head.revision || since < head.tombstone_floor;
        let docs = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<Entry>> {
            rows.iter().map(|r| doc_of("entry", r)).collect()
        };
        let mut changes = if snapshot {
            let rows = tx
                .query("SELECT doc FROM lanyard_entries WHERE parent_id = $1 ORDER BY id", &[&parent.as_str()])
                .await
                .map_err(pg)?;
            EntryChanges { upserted: docs(rows)?, snapshot: true, ..EntryChanges::default() }
        } else {
            let since = to_i64(since)?;
            let rows = tx
                .query(
                    "SELECT doc FROM lanyard_entries WHERE parent_id = $1 AND revision > $2 ORDER BY revision",
                    &[&parent.as_str(), &since],
                )
                .await
                .map_err(pg)?;
            let upserted = docs(rows)?;
            let live: std::collections::HashSet<&EntryId> = upserted.iter().map(|e| &e.id).collect();
            let rows = tx
                .query(
                    "SELECT id FROM lanyard_entry_tombstones WHERE parent_id = $1 AND revision > $2",
                    &[&parent.as_str(), &since],
                )
                .await
                .map_err(pg)?;
            let mut removed = std::collections::BTreeSet::new();
            for row in rows {
                let id = EntryId::parse(&row.get::<_, String>(0))
                    .map_err(|e| StoreError::Corrupt(format!("tombstone entry id: {e}")))?;
                if !live.contains(&id) {
                    removed.insert(id);
                }
            }
            EntryChanges { upserted, removed: removed.into_iter().collect(), ..EntryChanges::default() }
        };
        tx.commit().await.map_err(pg)?;
        changes.revision = head.revision;
        self.inner.heads.raise((head.revision, 0, 0));
        Ok(changes)
    }

    fn revision(&self) -> u64 {
        *self.inner.heads.revision.borrow()
    }

    fn subscribe_revision(&self) -> watch::Receiver<u64> {
        self.inner.heads.revision.subscribe()
    }

    async fn create_join_token(&self, token_hash: [u8; 32], record: JoinTokenRecord, audit: AuditEvent) -> Result<()> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let inserted = w
            .execute(
                "INSERT INTO lanyard_join_tokens (hash, doc) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                &[&token_hash.as_slice(), &encode(&record)?],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists("join token".into()));
        }
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(())
    }

    async fn consume_join_token(&self, token_hash: [u8; 32], audit: AuditEvent) -> Result<Option<JoinTokenRecord>> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let Some(record) = w
            .one::<JoinTokenRecord>(
                "join token",
                "DELETE FROM lanyard_join_tokens WHERE hash = $1 RETURNING doc",
                &[&token_hash.as_slice()],
            )
            .await?
        else {
            return Ok(None);
        };
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(Some(record))
    }

    async fn put_agent(&self, agent: AgentRecord, audit: Option<AuditEvent>) -> Result<()> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let old: Option<AgentRecord> =
            w.one("agent", "SELECT doc FROM lanyard_agents WHERE id = $1", &[&agent.spiffe_id.as_str()]).await?;
        if old.is_some_and(|old| old.banned) && !agent.banned {
            return Err(StoreError::Revoked(format!("agent {} is banned", agent.spiffe_id)));
        }
        w.execute(
            "INSERT INTO lanyard_agents (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
            &[&agent.spiffe_id.as_str(), &encode(&agent)?],
        )
        .await?;
        if let Some(audit) = audit {
            w.audit(audit).await?;
        }
        self.commit(w).await?;
        Ok(())
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>> {
        self.read_one("agent", "SELECT doc FROM lanyard_agents WHERE id = $1", &[&id.as_str()]).await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.read_all("agent", "SELECT doc FROM lanyard_agents ORDER BY id", &[]).await
    }

    async fn ban_agent(&self, id: &SpiffeId, at: u64, audit: AuditEvent) -> Result<AgentRecord> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let mut agent: AgentRecord = w
            .one("agent", "SELECT doc FROM lanyard_agents WHERE id = $1", &[&id.as_str()])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("agent {id}")))?;
        agent.banned = true;
        w.execute("UPDATE lanyard_agents SET doc = $2 WHERE id = $1", &[&id.as_str(), &encode(&agent)?]).await?;
        w.revocation(Revocation::draft(RevocationKind::AgentBanned, at, id.to_string(), vec![]), audit).await?;
        self.commit(w).await?;
        Ok(agent)
    }

    async fn lock_keys(&self) -> Result<crate::KeyLock> {
        // A session lock on a connection taken out of the pool: dropping the
        // lock closes the connection, and PostgreSQL releases the lock with
        // it (also when this process dies).
        let client = deadpool_postgres::Object::take(self.client().await?);
        client.execute("SELECT pg_advisory_lock($1)", &[&KEY_LOCK]).await.map_err(pg)?;
        Ok(crate::KeyLock::held_by(client))
    }

    async fn put_key(&self, key: KeyRecord, audit: AuditEvent) -> Result<()> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        upsert_key(&w, &key).await?;
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read_all("key", "SELECT doc FROM lanyard_keys ORDER BY id", &[]).await
    }

    async fn delete_key(&self, id: &str, audit: AuditEvent) -> Result<()> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        if w.execute("DELETE FROM lanyard_keys WHERE id = $1", &[&id]).await? == 0 {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(())
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let record = w.audit(event).await?;
        self.commit(w).await?;
        Ok(record)
    }

    async fn append_audit_if(&self, event: AuditEvent, pre: crate::Preconditions) -> Result<u64> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        if pre.still_hold_at(w.head.revocation) {
            let record = w.audit(event).await?;
            self.commit(w).await?;
            return Ok(record.seq);
        }
        for id in &pre.tasks {
            let task: Option<Task> =
                w.one("task", "SELECT doc FROM lanyard_tasks WHERE id = $1", &[&id.as_bytes().as_slice()]).await?;
            match task {
                Some(t) if t.ended_at.is_some() => return Err(StoreError::Revoked(format!("task {id} has ended"))),
                Some(t) if t.expires_at <= pre.now => {
                    return Err(StoreError::Revoked(format!("task {id} has expired")));
                }
                Some(_) => {}
                None => return Err(StoreError::NotFound(format!("task {id}"))),
            }
        }
        if let Some(session) = &pre.session {
            let revoked =
                w.tx.query_opt("SELECT 1 FROM lanyard_revoked_sessions WHERE session = $1", &[&session.as_str()])
                    .await
                    .map_err(pg)?;
            if revoked.is_some() {
                return Err(StoreError::Revoked("the session is revoked".into()));
            }
        }
        let risks = Self::risks_of(&*w.tx, &pre.risks).await?;
        if let Some(risk) = risks.into_iter().find(|r| pre.blocking_levels.contains(&r.level)) {
            return Err(StoreError::Revoked(format!("open {} risk on {}", risk.level, risk.subject)));
        }
        let record = w.audit(event).await?;
        self.commit(w).await?;
        Ok(record.seq)
    }

    async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            records.push(w.audit(event).await?);
        }
        self.commit(w).await?;
        Ok(records)
    }

    async fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.query_audit(&AuditFilter::default(), from, limit).await
    }

    async fn query_audit(&self, filter: &AuditFilter, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let upto = self.audit_head();
        self.scan_audit(from_seq, upto, |seq, value| {
            let record: AuditRecord = serde_json::from_value(value)
                .map_err(|e| StoreError::ChainBroken { seq, reason: format!("record does not decode: {e}") })?;
            if filter.matches(&record.event) {
                out.push(record);
            }
            Ok(out.len() < limit)
        })
        .await?;
        Ok(out)
    }

    fn audit_head(&self) -> u64 {
        *self.inner.heads.audit.borrow()
    }

    fn commit_latency(&self) -> &lanyard_core::metrics::Histogram {
        &self.inner.commit_latency
    }

    fn subscribe_audit(&self) -> watch::Receiver<u64> {
        self.inner.heads.audit.subscribe()
    }

    async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let expected = HeadRow::read(&**self.client().await?, false).await?.audit.seq;
        let mut walker = ChainWalker::new();
        self.scan_audit(1, u64::try_from(i64::MAX).unwrap_or(u64::MAX), |seq, value| {
            walker.check(seq, value)?;
            Ok(true)
        })
        .await?;
        walker.finish(expected)
    }

    async fn flush(&self) -> Result<()> {
        // Every acknowledged write has committed: nothing is pending.
        Ok(())
    }

    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<Task> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let id = task.id.as_bytes().as_slice();
        if w.tx.query_opt("SELECT 1 FROM lanyard_tasks WHERE id = $1", &[&id]).await.map_err(pg)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("task {}", task.id)));
        }
        let revoked =
            w.tx.query_opt("SELECT 1 FROM lanyard_revoked_sessions WHERE session = $1", &[&task.session.as_str()])
                .await
                .map_err(pg)?;
        if revoked.is_some() {
            return Err(StoreError::Revoked(format!("session {} is revoked", task.session)));
        }
        if let Some(parent_id) = &task.parent {
            let parent: Task = w
                .one("task", "SELECT doc FROM lanyard_tasks WHERE id = $1", &[&parent_id.as_bytes().as_slice()])
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("parent task {parent_id}")))?;
            if parent.ended_at.is_some() {
                return Err(StoreError::Revoked(format!("parent task {parent_id} has ended")));
            }
        }
        let parent = task.parent.as_ref().map(|p| p.as_bytes().to_vec());
        w.execute(
            "INSERT INTO lanyard_tasks (id, session, parent, doc) VALUES ($1, $2, $3, $4)",
            &[&id, &task.session.as_str(), &parent, &encode(&task)?],
        )
        .await?;
        w.audit(audit).await?;
        self.commit(w).await?;
        Ok(task)
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>> {
        self.read_one("task", "SELECT doc FROM lanyard_tasks WHERE id = $1", &[&id.as_bytes().as_slice()]).await
    }

    async fn list_tasks(&self, filter: &TaskFilter, limit: usize) -> Result<Vec<Task>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = match &filter.session {
            Some(session) => {
                client.query("SELECT doc FROM lanyard_tasks WHERE session = $1 ORDER BY id", &[&session.as_str()]).await
            }
            None => client.query("SELECT doc FROM lanyard_tasks ORDER BY id", &[]).await,
        }
        .map_err(pg)?;
        let mut out = Vec::new();
        for row in rows {
            let task: Task = doc_of("task", &row)?;
            if filter.matches(&task) {
                out.push(task);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn end_task(&self, id: &TaskId, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let w = Write::begin(&mut client).await?;
        let task: Task = w
            .one("task", "SELECT doc FROM lanyard_tasks WHERE id = $1", &[&id.as_bytes().as_slice()])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        let mut ending = Ending::new(at);
        ending.visit(task, EndReason::Ended);
        self.end_tasks(w, ending, vec![*id], (RevocationKind::TaskEnded, id.to_string()), audit).await
    }

    async fn revoke_session(&self, session: &SessionId, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let w = Write::begin(&mut client).await?;
        let rows =
            w.tx.query("SELECT doc FROM lanyard_tasks WHERE session = $1 ORDER BY id", &[&session.as_str()])
                .await
                .map_err(pg)?;
        let mut ending = Ending::new(at);
        let mut roots = Vec::new();
        for row in rows {
            let task: Task = doc_of("task", &row)?;
            roots.push(task.id);
            ending.visit(task, EndReason::SessionRevoked);
        }
        // The first revocation's seq stays: it says since when.
        w.execute(
            "INSERT INTO lanyard_revoked_sessions (session, seq) VALUES ($1, $2) ON CONFLICT (session) DO NOTHING",
            &[&session.as_str(), &to_i64(w.head.revocation + 1)?],
        )
        .await?;
        self.end_tasks(w, ending, roots, (RevocationKind::SessionRevoked, session.to_string()), audit).await
    }

    async fn is_session_revoked(&self, session: &SessionId) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM lanyard_revoked_sessions WHERE session = $1", &[&session.as_str()])
            .await
            .map_err(pg)?;
        Ok(row.is_some())
    }

    async fn report_risk(&self, risk: RiskRecord, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let key = risk_key(&risk.subject);
        let open: Option<RiskRecord> = w.one("risk", "SELECT doc FROM lanyard_risks WHERE key = $1", &[&key]).await?;
        let effective = match open {
            Some(open) if risk_rank(&open.level) > risk_rank(&risk.level) => open.level,
            _ => {
                let user_sub = match &risk.subject {
                    RiskSubject::User { sub, .. } => Some(sub.as_str()),
                    _ => None,
                };
                w.execute(
                    "INSERT INTO lanyard_risks (key, user_sub, doc) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc",
                    &[&key, &user_sub, &encode(&risk)?],
                )
                .await?;
                risk.level.clone()
            }
        };
        let revocation = Revocation::risk_raised(&risk, &effective);
        let revocation = w.revocation(revocation, audit).await?;
        self.commit(w).await?;
        Ok(revocation)
    }

    async fn clear_risk(&self, subject: &RiskSubject, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        if w.execute("DELETE FROM lanyard_risks WHERE key = $1", &[&risk_key(subject)]).await? == 0 {
            return Err(StoreError::NotFound(format!("open risk on {subject}")));
        }
        let revocation = Revocation::risk_cleared(subject, at);
        let revocation = w.revocation(revocation, audit).await?;
        self.commit(w).await?;
        Ok(revocation)
    }

    async fn open_risks(&self, subjects: &[RiskSubject]) -> Result<Vec<RiskRecord>> {
        let client = self.client().await?;
        Self::risks_of(&**client, subjects).await
    }

    async fn list_risks(&self) -> Result<Vec<RiskRecord>> {
        self.read_all("risk", "SELECT doc FROM lanyard_risks ORDER BY key", &[]).await
    }

    async fn revoke_token(&self, jti: &str, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let revocation =
            w.revocation(Revocation::draft(RevocationKind::TokenRevoked, at, jti.to_owned(), vec![]), audit).await?;
        self.commit(w).await?;
        Ok(revocation)
    }

    async fn revoke_key(&self, key: KeyRecord, at: u64, audit: AuditEvent) -> Result<Revocation> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        upsert_key(&w, &key).await?;
        let revocation =
            w.revocation(Revocation::draft(RevocationKind::KeyRevoked, at, key.id.clone(), vec![]), audit).await?;
        self.commit(w).await?;
        Ok(revocation)
    }

    async fn backup(&self, _to: &std::path::Path) -> Result<crate::BackupManifest> {
        Err(StoreError::Unsupported(
            "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, pg_basebackup, PITR)".into(),
        ))
    }

    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>> {
        let upto = self.revocation_seq();
        if after >= upto {
            return Ok(Vec::new());
        }
        let revocations: Vec<Revocation> = self
            .read_all(
                "revocation",
                "SELECT doc FROM lanyard_revocations WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                &[&to_i64(after)?, &to_i64(upto)?, &limit_of(limit)],
            )
            .await?;
        // Gapless by construction; a hole would be a damaged database.
        for (expected, r) in (after + 1..).zip(&revocations) {
            if r.seq != expected {
                return Err(StoreError::Corrupt(format!("revocation {expected} is missing (found {})", r.seq)));
            }
        }
        Ok(revocations)
    }

    fn revocation_seq(&self) -> u64 {
        *self.inner.heads.revocations.borrow()
    }

    fn subscribe_revocations(&self) -> watch::Receiver<u64> {
        self.inner.heads.revocations.subscribe()
    }
}

async fn insert_entry(w: &Write<'_>, entry: &Entry) -> Result<()> {
    w.execute(
        "INSERT INTO lanyard_entries (id, parent_id, revision, doc) VALUES ($1, $2, $3, $4)",
        &[&entry.id.as_str(), &entry.parent_id.as_str(), &to_i64(entry.revision)?, &encode(entry)?],
    )
    .await?;
    Ok(())
}

/// Records that `old` left its parent at the head revision, and prunes
/// tombstones past the retention (raising the floor below which agents get
/// a snapshot).
async fn tombstone(w: &mut Write<'_>, old: &Entry) -> Result<()> {
    w.execute(
        "INSERT INTO lanyard_entry_tombstones (revision, id, parent_id) VALUES ($1, $2, $3)",
        &[&to_i64(w.head.revision)?, &old.id.as_str(), &old.parent_id.as_str()],
    )
    .await?;
    let cutoff = w.head.revision.saturating_sub(TOMBSTONE_RETENTION);
    if cutoff > w.head.tombstone_floor {
        let pruned = w
            .tx
            .query_opt(
                "WITH gone AS (DELETE FROM lanyard_entry_tombstones WHERE revision <= $1 RETURNING revision) SELECT max(revision) FROM gone",
                &[&to_i64(cutoff)?],
            )
            .await
            .map_err(pg)?
            .and_then(|row| row.get::<_, Option<i64>>(0));
        if let Some(max) = pruned {
            w.head.tombstone_floor = w.head.tombstone_floor.max(to_u64(max)?);
        }
    }
    Ok(())
}

async fn upsert_key(w: &Write<'_>, key: &KeyRecord) -> Result<()> {
    w.execute(
        "INSERT INTO lanyard_keys (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
        &[&key.id.as_str(), &encode(key)?],
    )
    .await?;
    Ok(())
}
