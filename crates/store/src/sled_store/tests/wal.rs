//! The audit log as write-ahead log: redo after a crash, a torn last line,
//! the trees ahead of the log, the move from the old audit tree, and
//! decisions refused when a revocation got in first.

use super::{audit_lines, open, write_audit_lines};
use crate::Store;
use crate::contract::helpers::*;
use crate::sled_store::layout::{AUDIT_APPLIED_KEY, TreeId, Trees};
use crate::sled_store::open_db;

/// Runs `f` on the raw trees of the closed store in `dir`, then flushes.
fn with_trees(dir: &std::path::Path, f: impl FnOnce(&Trees)) {
    let db = open_db(dir).unwrap();
    let trees = Trees::open(&db).unwrap();
    f(&trees);
    db.flush().unwrap();
}

#[tokio::test]
async fn changes_the_trees_lost_are_redone_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_entry(entry("e1", "a"), event("entry.create")).await.unwrap();
    store.create_entry(entry("e2", "a"), event("entry.create")).await.unwrap();
    drop(store);

    // As if the crash came after the log was synced and before the trees were
    // flushed: the trees lose the second entry and think they applied only record 1.
    with_trees(dir.path(), |trees| {
        trees.get(TreeId::Entries).remove(b"e2").unwrap();
        trees.get(TreeId::Meta).insert(AUDIT_APPLIED_KEY, b"1".to_vec()).unwrap();
    });
    let store = open(&dir);
    let e2 = store.get_entry(&eid("e2")).await.unwrap().expect("redone from the log");
    assert_eq!(e2.spiffe_id, id("connector/e2"));
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 2);
    // Redo is idempotent: opening again changes nothing.
    drop(store);
    let store = open(&dir);
    assert_eq!(store.list_entries(&Default::default(), None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..3 {
        store.append_audit(event(&format!("e{i}"))).await.unwrap();
    }
    drop(store);
    let mut text = std::fs::read(dir.path().join("audit.log")).unwrap();
    text.extend_from_slice(b"{\"record\":{\"seq\":4,\"ev");
    std::fs::write(dir.path().join("audit.log"), text).unwrap();

    let store = open(&dir);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 3);
    let next = store.append_audit(event("after")).await.unwrap();
    assert_eq!(next.seq, 4);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 4);
}

#[tokio::test]
async fn trees_ahead_of_the_log_are_recorded_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_entry(entry("e1", "a"), event("entry.create")).await.unwrap();
    store.create_entry(entry("e2", "a"), event("entry.create")).await.unwrap();
    drop(store);
    // The record of the second change was lost; its change was not.
    let mut lines = audit_lines(dir.path());
    lines.pop();
    write_audit_lines(dir.path(), &lines);

    let store = open(&dir);
    let records = store.audit_range(1, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].event.kind, "store.recovery");
    assert_eq!(records[1].event.detail["trees_applied_through"], 2);
    assert_eq!(records[1].event.detail["log_ended_at"], 1);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 2, "the chain itself is whole");
}

#[tokio::test]
async fn records_in_the_old_audit_tree_move_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut appended = Vec::new();
    for e in [event("a"), event("b"), event("c")] {
        appended.push(store.append_audit(e).await.unwrap());
    }
    drop(store);
    // Put them back where an older build kept them, and remove the log.
    with_trees(dir.path(), |trees| {
        for r in &appended {
            trees.get(TreeId::Audit).insert(r.seq.to_be_bytes(), serde_json::to_vec(r).unwrap()).unwrap();
        }
    });
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();

    let store = open(&dir);
    assert_eq!(store.audit_range(1, 10).await.unwrap(), appended);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 3);
    drop(store);
    with_trees(dir.path(), |trees| assert!(trees.get(TreeId::Audit).is_empty(), "the tree is emptied"));
}
