//! `SledStore` against the `Store` contract, on temporary directories.

mod audit_log;
mod backup;
mod revocations;
mod tasks;
mod wal;

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::{Entry, EntryId, Selector, SpiffeId};
use serde_json::json;

use super::{SledStore, open_db};
use crate::{
    AgentRecord, AuditEvent, EntryChanges, EntryFilter, JoinTokenRecord, KeyKind, KeyRecord, Store, StoreError,
    hash_join_token,
};

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org/{s}")).unwrap()
}

fn eid(s: &str) -> EntryId {
    EntryId::parse(s).unwrap()
}

fn entry(entry_id: &str, parent: &str) -> Entry {
    Entry {
        id: eid(entry_id),
        spiffe_id: id(&format!("connector/{entry_id}")),
        parent_id: id(&format!("agent/{parent}")),
        selectors: vec![Selector::Uid(1000)],
        x509_ttl: "1h".parse().unwrap(),
        jwt_ttl: "5m".parse().unwrap(),
        dns_names: vec![],
        expires_at: None,
        hint: String::new(),
        revision: 0,
        tools: vec![],
        audiences: vec![],
        max_classification: lanyard_core::Classification::Public,
        delegate_to: vec![],
        task_authority: false,
    }
}

fn event(kind: &str) -> AuditEvent {
    AuditEvent {
        at: 1_700_000_000,
        kind: kind.into(),
        actor: "admin:uid=0".into(),
        subject: "test".into(),
        detail: json!({"k": kind}),
        ..AuditEvent::default()
    }
}

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path()).unwrap()
}

async fn audit_count(store: &SledStore) -> u64 {
    store.verify_audit_chain().await.unwrap().records
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

fn removed(changes: &EntryChanges) -> Vec<&str> {
    changes.removed.iter().map(EntryId::as_str).collect()
}

#[tokio::test]
async fn entry_crud_bumps_revisions_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.revision(), 0);

    let created = store.create_entry(entry("e1", "a"), event("entry.create")).await.unwrap();
    assert_eq!(created.revision, 1);
    assert_eq!(store.revision(), 1);
    assert_eq!(store.get_entry(&eid("e1")).await.unwrap(), Some(created.clone()));

    let again = store.create_entry(entry("e1", "b"), event("entry.create")).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(_))), "{again:?}");

    let mut changed = created.clone();
    changed.hint = "v2".into();
    let updated = store.update_entry(changed.clone(), 1, event("entry.update")).await.unwrap();
    assert_eq!((updated.revision, updated.hint.as_str()), (2, "v2"));

    let stale = store.update_entry(changed, 1, event("entry.update")).await;
    assert!(matches!(stale, Err(StoreError::Conflict { expected: 1, actual: 2 })), "{stale:?}");
    let missing = store.update_entry(entry("nope", "a"), 1, event("entry.update")).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");

    let deleted = store.delete_entry(&eid("e1"), event("entry.delete")).await.unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(store.revision(), 3);
    assert_eq!(store.get_entry(&eid("e1")).await.unwrap(), None);
    let twice = store.delete_entry(&eid("e1"), event("entry.delete")).await;
    assert!(matches!(&twice, Err(StoreError::NotFound(m)) if m == "entry e1"), "{twice:?}");
    assert_eq!(twice.unwrap_err().to_string(), "entry e1 not found");

    // Exactly one audit record per successful write, none for refusals.
    assert_eq!(audit_count(&store).await, 3);
    let kinds: Vec<String> = store.audit_range(1, 10).await.unwrap().into_iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds, ["entry.create", "entry.update", "entry.delete"]);
}

#[tokio::test]
async fn list_entries_filters_and_pages_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (e, parent) in [("e3", "a"), ("e1", "a"), ("e2", "b"), ("e4", "a")] {
        store.create_entry(entry(e, parent), event("entry.create")).await.unwrap();
    }
    let all = EntryFilter::default();
    assert_eq!(ids(&store.list_entries(&all, None, 10).await.unwrap()), ["e1", "e2", "e3", "e4"]);
    assert_eq!(ids(&store.list_entries(&all, Some(&eid("e2")), 1).await.unwrap()), ["e3"]);

    let of_a = EntryFilter { parent_id: Some(id("agent/a")), spiffe_id: None };
    assert_eq!(ids(&store.list_entries(&of_a, None, 10).await.unwrap()), ["e1", "e3", "e4"]);
    assert_eq!(ids(&store.list_entries(&of_a, Some(&eid("e1")), 1).await.unwrap()), ["e3"]);

    let by_id = EntryFilter { parent_id: None, spiffe_id: Some(id("connector/e2")) };
    assert_eq!(ids(&store.list_entries(&by_id, None, 10).await.unwrap()), ["e2"]);
    let both = EntryFilter { parent_id: Some(id("agent/a")), spiffe_id: Some(id("connector/e2")) };
    assert!(store.list_entries(&both, None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn change_feed_is_incremental_after_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let agent_a = id("agent/a");
    store.create_entry(entry("e1", "a"), event("c")).await.unwrap();
    store.create_entry(entry("other", "z"), event("c")).await.unwrap();
    store.create_entry(entry("e2", "a"), event("c")).await.unwrap();

    let snap = store.entry_changes(&agent_a, 0).await.unwrap();
    assert!(snap.snapshot);
    assert_eq!((ids(&snap.upserted), snap.revision), (vec!["e1", "e2"], 3));

    let none = store.entry_changes(&agent_a, 3).await.unwrap();
    assert_eq!(none, EntryChanges { revision: 3, ..EntryChanges::default() });

    let e1 = store.get_entry(&eid("e1")).await.unwrap().unwrap();
    store.update_entry(e1, 1, event("u")).await.unwrap();
    store.delete_entry(&eid("e2"), event("d")).await.unwrap();
    store.delete_entry(&eid("other"), event("d")).await.unwrap();

    let changes = store.entry_changes(&agent_a, 3).await.unwrap();
    assert!(!changes.snapshot);
    assert_eq!(ids(&changes.upserted), ["e1"]);
    assert_eq!(removed(&changes), ["e2"]);
    assert_eq!(changes.revision, 6);

    // An agent ahead of the store gets a snapshot.
    let ahead = store.entry_changes(&agent_a, 99).await.unwrap();
    assert!(ahead.snapshot && ahead.removed.is_empty());
    assert_eq!((ids(&ahead.upserted), ahead.revision), (vec!["e1"], 6));
}

#[tokio::test]
async fn re_parenting_moves_an_entry_between_agents_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let e = store.create_entry(entry("e1", "a"), event("c")).await.unwrap();
    let since = store.revision();

    let mut to_b = e.clone();
    to_b.parent_id = id("agent/b");
    let at_b = store.update_entry(to_b, e.revision, event("u")).await.unwrap();
    let mut to_c = at_b.clone();
    to_c.parent_id = id("agent/c");
    let at_c = store.update_entry(to_c, at_b.revision, event("u")).await.unwrap();

    let a = store.entry_changes(&id("agent/a"), since).await.unwrap();
    assert_eq!((ids(&a.upserted).len(), removed(&a)), (0, vec!["e1"]));
    let b = store.entry_changes(&id("agent/b"), since).await.unwrap();
    assert!(b.upserted.is_empty(), "B ends without it: {b:?}");
    let c = store.entry_changes(&id("agent/c"), since).await.unwrap();
    assert_eq!((c.upserted.clone(), c.removed.len()), (vec![at_c.clone()], 0));
    assert_eq!(c.revision, at_c.revision);
    for agent in ["a", "b", "c"] {
        assert_eq!(store.entry_changes(&id(&format!("agent/{agent}")), at_c.revision).await.unwrap().upserted, vec![]);
    }

    // Leaving and coming back is an upsert, not a removal.
    let mut back = at_c.clone();
    back.parent_id = id("agent/a");
    let back = store.update_entry(back, at_c.revision, event("u")).await.unwrap();
    let a = store.entry_changes(&id("agent/a"), since).await.unwrap();
    assert_eq!((a.upserted, a.removed.len()), (vec![back], 0));
    let c = store.entry_changes(&id("agent/c"), at_c.revision).await.unwrap();
    assert_eq!(removed(&c), ["e1"]);
}

#[tokio::test]
async fn feeds_older_than_retained_tombstones_get_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(dir.path(), 3, Duration::ZERO).unwrap();
    let agent_a = id("agent/a");
    store.create_entry(entry("keep", "a"), event("c")).await.unwrap();
    for i in 0..4 {
        let e = format!("gone{i}");
        store.create_entry(entry(&e, "a"), event("c")).await.unwrap();
        store.delete_entry(&eid(&e), event("d")).await.unwrap();
    }
    // Revisions 1..=9; tombstones at 3, 5, 7, 9; retention 3 pruned up to 5.
    assert_eq!(store.revision(), 9);
    let old = store.entry_changes(&agent_a, 2).await.unwrap();
    assert!(old.snapshot);
    assert_eq!(ids(&old.upserted), ["keep"]);
    let recent = store.entry_changes(&agent_a, 5).await.unwrap();
    assert!(!recent.snapshot);
    assert_eq!(removed(&recent), ["gone2", "gone3"]);

    // The floor survives a restart.
    drop(store);
    let store = SledStore::open_with(dir.path(), 3, Duration::ZERO).unwrap();
    assert!(store.entry_changes(&agent_a, 2).await.unwrap().snapshot);
}

#[tokio::test]
async fn subscribers_see_revisions_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut rx = store.subscribe_revision();
    assert_eq!(*rx.borrow_and_update(), 0);
    store.create_entry(entry("e1", "a"), event("c")).await.unwrap();
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow(), 1);
    assert_eq!(store.revision(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_tokens_are_single_use_even_when_raced() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    let hash = hash_join_token("tok-1");
    let record = JoinTokenRecord { name: "node1".into(), created_at: 1, expires_at: 2 };
    store.create_join_token(hash, record.clone(), event("jt.create")).await.unwrap();
    let dup = store.create_join_token(hash, record.clone(), event("jt.create")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "{dup:?}");

    let racers: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.consume_join_token(hash, event("jt.use")).await })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        if let Some(rec) = r.await.unwrap().unwrap() {
            winners.push(rec);
        }
    }
    assert_eq!(winners, vec![record]);
    assert_eq!(store.consume_join_token(hash, event("jt.use")).await.unwrap(), None);
    // create + the one successful use.
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 2);
}

/// Every byte of every file under `dir`.
fn all_file_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            out.extend(all_file_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn join_tokens_are_stored_only_as_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let token = "lanyard-secret-token-9f8e7d6c";
    let record = JoinTokenRecord { name: "findable-node-name".into(), created_at: 1, expires_at: 2 };
    store.create_join_token(hash_join_token(token), record, event("jt.create")).await.unwrap();
    drop(store);
    let bytes = all_file_bytes(dir.path());
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"findable-node-name"), "positive control: the record is on disk");
    assert!(!contains(token.as_bytes()), "the token itself is on disk");
}

/// Appends `n` events from `n` concurrent tasks; returns their seqs, sorted.
async fn append_concurrently(store: &Arc<SledStore>, n: usize) -> Vec<u64> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.append_audit(event(&format!("e{i}"))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap().seq);
    }
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_chain_is_gapless_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    assert_eq!(append_concurrently(&store, 200).await, (1..=200).collect::<Vec<_>>());

    let report = store.verify_audit_chain().await.unwrap();
    assert_eq!(report.records, 200);
    let range = store.audit_range(199, 10).await.unwrap();
    assert_eq!(range.iter().map(|r| r.seq).collect::<Vec<_>>(), [199, 200]);
    assert_eq!(range[1].hash, report.head);
    assert_eq!(range[1].prev_hash, range[0].hash);
}

/// Flushes taken by 100 concurrent appends, once the blocking pool is warm
/// (so appends arrive as fast as in a running server, not one thread spawn
/// at a time).
async fn flushes_for_100_appends(store: &Arc<SledStore>) -> u64 {
    append_concurrently(store, 100).await;
    let before = store.flush_count();
    append_concurrently(store, 100).await;
    store.flush_count() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let flushes = flushes_for_100_appends(&store).await;
    assert!(flushes < 100, "{flushes} flushes for 100 concurrent appends");

    // With a disk whose fsync takes 5 ms, batching is deterministic.
    let dir = tempfile::tempdir().unwrap();
    let slow_disk = Duration::from_millis(5);
    let store = Arc::new(SledStore::open_with(dir.path(), 10, slow_disk).unwrap());
    let flushes = flushes_for_100_appends(&store).await;
    assert!(flushes <= 10, "{flushes} flushes for 100 concurrent appends");
}

#[tokio::test]
async fn audit_batches_are_consecutive_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.append_audit(event("first")).await.unwrap();
    let batch = store.append_audit_batch(vec![event("a"), event("b"), event("c")]).await.unwrap();
    assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    assert!(store.append_audit_batch(vec![]).await.unwrap().is_empty());
    let report = store.verify_audit_chain().await.unwrap();
    assert_eq!((report.records, report.head), (4, batch[2].hash));
}

/// The lines of the closed store's audit log.
pub(super) fn audit_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("audit.log")).unwrap().lines().map(str::to_owned).collect()
}

/// Replaces the closed store's audit log.
pub(super) fn write_audit_lines(dir: &std::path::Path, lines: &[String]) {
    std::fs::write(dir.join("audit.log"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// Rewrites audit record `seq` in the log of the closed store in `dir`.
pub(super) fn tamper(dir: &std::path::Path, seq: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut lines = audit_lines(dir);
    let i = usize::try_from(seq - 1).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    edit(&mut line["record"]);
    lines[i] = line.to_string();
    write_audit_lines(dir, &lines);
}

#[tokio::test]
async fn tampering_with_a_stored_record_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store.append_audit(event(&format!("e{i}"))).await.unwrap();
    }
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 10);
    drop(store);

    tamper(dir.path(), 5, |r| r["event"]["actor"] = json!("mallory"));
    let store = open(&dir);
    let err = store.verify_audit_chain().await.unwrap_err();
    assert!(matches!(err, StoreError::ChainBroken { seq: 5, .. }), "{err:?}");
    assert!(err.to_string().starts_with("audit chain broken at record 5"), "{err}");
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let e = store.create_entry(entry("e1", "a"), event("c")).await.unwrap();
    store.create_entry(entry("e2", "a"), event("c")).await.unwrap();
    store.delete_entry(&eid("e2"), event("d")).await.unwrap();
    let agent = AgentRecord {
        spiffe_id: id("agent/a"),
        name: "a".into(),
        attested_at: 1,
        svid_serial: "0a".into(),
        svid_expires_at: 2,
        banned: false,
        last_seen: 3,
    };
    store.put_agent(agent.clone(), None).await.unwrap();
    let key = KeyRecord {
        id: "kid1".into(),
        kind: KeyKind::JwtSvid,
        pkcs8: vec![1, 2, 3],
        cert_der: None,
        public_der: None,
        not_before: 1,
        not_after: 2,
        activated_at: Some(1),
        revoked_at: None,
    };
    store.put_key(key.clone(), event("key.put")).await.unwrap();
    let head = store.verify_audit_chain().await.unwrap();
    drop(store);

    let store = open(&dir);
    assert_eq!(store.revision(), 3);
    assert_eq!(store.get_entry(&eid("e1")).await.unwrap(), Some(e));
    assert_eq!(store.get_agent(&id("agent/a")).await.unwrap(), Some(agent));
    assert_eq!(store.list_keys().await.unwrap(), vec![key]);
    assert_eq!(store.verify_audit_chain().await.unwrap(), head);
    let next = store.append_audit(event("after")).await.unwrap();
    assert_eq!((next.seq, next.prev_hash), (head.records + 1, head.head));
    let feed = store.entry_changes(&id("agent/a"), 1).await.unwrap();
    assert_eq!(removed(&feed), ["e2"]);
    assert_eq!(store.create_entry(entry("e3", "a"), event("c")).await.unwrap().revision, 4);
}

#[tokio::test]
async fn agents_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut agent = AgentRecord {
        spiffe_id: id("agent/b"),
        name: "b".into(),
        attested_at: 1,
        svid_serial: "01".into(),
        svid_expires_at: 2,
        banned: false,
        last_seen: 3,
    };
    store.put_agent(agent.clone(), Some(event("agent.attest"))).await.unwrap();
    agent.banned = true;
    store.put_agent(agent.clone(), Some(event("agent.ban"))).await.unwrap();
    let mut other = agent.clone();
    other.spiffe_id = id("agent/a");
    store.put_agent(other.clone(), None).await.unwrap();
    assert_eq!(store.list_agents().await.unwrap(), vec![other, agent.clone()]);
    assert_eq!(store.get_agent(&id("agent/x")).await.unwrap(), None);

    let key = KeyRecord {
        id: "ca-01".into(),
        kind: KeyKind::X509Ca,
        pkcs8: vec![9; 40],
        cert_der: Some(vec![0x30, 0x82]),
        public_der: None,
        not_before: 1,
        not_after: 2,
        activated_at: Some(1),
        revoked_at: None,
    };
    store.put_key(key.clone(), event("key.put")).await.unwrap();
    assert_eq!(store.list_keys().await.unwrap(), vec![key]);
    store.delete_key("ca-01", event("key.delete")).await.unwrap();
    assert!(store.list_keys().await.unwrap().is_empty());
    let gone = store.delete_key("ca-01", event("key.delete")).await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
    assert_eq!(audit_count(&store).await, 4);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    {
        let db = open_db(dir.path()).unwrap();
        db.open_tree("meta").unwrap().insert("schema_version", b"7").unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found: 7, supported: 1 }), "{err:?}");
    assert_eq!(err.to_string(), "store schema version 7 is newer than this lanyard supports (1); upgrade lanyard");
}

#[tokio::test]
async fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::Locked(p) if p == dir.path()), "{err:?}");
    assert!(err.to_string().ends_with("is in use by another process"), "{err}");
}

#[tokio::test]
async fn undecodable_records_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    {
        let db = open_db(dir.path()).unwrap();
        db.open_tree("entries").unwrap().insert("e1", b"{not json").unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    let err = store.get_entry(&eid("e1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("entries record \"e1\""), "{err}");
    let listed = store.list_entries(&EntryFilter::default(), None, 10).await;
    assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
}
