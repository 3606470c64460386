//! `SledStore` against the `Store` contract, on temporary directories.

mod audit_log;
mod backup;
mod revocations;
mod tasks;
mod wal;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{SledStore, open_db};
use crate::contract::helpers::*;
use crate::{AgentRecord, EntryFilter, JoinTokenRecord, KeyKind, KeyRecord, Store, StoreError, hash_join_token};

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path()).unwrap()
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
        previous_svid: None,
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
