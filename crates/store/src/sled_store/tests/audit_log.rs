//! Structured audit fields, audit queries, and offline verification of a
//! copied store after tampering.

use std::path::Path;

use serde_json::json;

use super::{audit_lines, open, tamper, write_audit_lines};
use crate::contract::helpers::*;
use crate::{SledStore, Store, StoreError};

/// A copy of the store directory `src` (the store must be closed).
fn copy_store(src: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for item in std::fs::read_dir(from).unwrap() {
            let item = item.unwrap();
            let target = to.join(item.file_name());
            if item.file_type().unwrap().is_dir() {
                copy(&item.path(), &target);
            } else {
                std::fs::copy(item.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(src, dir.path());
    dir
}

/// Opens `dir` and returns where and why its chain is broken.
async fn broken(dir: &Path) -> (u64, String) {
    let store = SledStore::open(dir).unwrap();
    match store.verify_audit_chain().await {
        Err(StoreError::ChainBroken { seq, reason }) => (seq, reason),
        other => panic!("chain verified: {other:?}"),
    }
}

/// A closed store with ten records of mixed writes.
async fn sample_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_task(task(1, "gh", "s1", None), event("task.begin")).await.unwrap();
    for i in 0..6 {
        store.append_audit(ctx_event("task_token.mint", 100 + i, 1, "alice", "gh")).await.unwrap();
    }
    store.revoke_token("j1", 200, event("token.revoke")).await.unwrap();
    store.end_task(&tid(1), 300, event("task.end")).await.unwrap();
    store.append_audit(event("done")).await.unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 10);
    dir
}

#[tokio::test]
async fn a_copied_store_opens_and_verifies_offline() {
    let original = sample_store().await;
    let copy = copy_store(original.path());
    let store = SledStore::open(copy.path()).unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 10);
    assert_eq!((store.audit_head(), store.revocation_seq()), (10, 2));
    assert!(store.get_task(&tid(1)).await.unwrap().unwrap().ended_at.is_some());
}

#[tokio::test]
async fn tampering_with_a_copy_is_named_by_verification() {
    let original = sample_store().await;

    // A record's content edited.
    let copy = copy_store(original.path());
    tamper(copy.path(), 5, |r| r["event"]["at"] = json!(1));
    let (seq, reason) = broken(copy.path()).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("hash does not match"), "{reason}");

    // A structured field edited: the user is not who was recorded.
    let copy = copy_store(original.path());
    tamper(copy.path(), 4, |r| r["event"]["context"]["user"]["sub"] = json!("mallory"));
    assert_eq!(broken(copy.path()).await.0, 4);
    let copy = copy_store(original.path());
    tamper(copy.path(), 3, |r| r["event"]["context"]["decision"] = json!("deny"));
    assert_eq!(broken(copy.path()).await.0, 3);
    // Context removed altogether.
    let copy = copy_store(original.path());
    tamper(copy.path(), 6, |r| drop(r["event"].as_object_mut().unwrap().remove("context")));
    assert_eq!(broken(copy.path()).await.0, 6);

    // A record deleted: a gap.
    let copy = copy_store(original.path());
    let mut lines = audit_lines(copy.path());
    lines.remove(3);
    write_audit_lines(copy.path(), &lines);
    let (seq, reason) = broken(copy.path()).await;
    assert_eq!(seq, 4, "{reason}");
    assert!(reason.contains("record 4 is missing or out of order"), "{reason}");

    // Two records swapped, whole.
    let copy = copy_store(original.path());
    let mut lines = audit_lines(copy.path());
    lines.swap(5, 6);
    write_audit_lines(copy.path(), &lines);
    let (seq, reason) = broken(copy.path()).await;
    assert_eq!(seq, 6, "{reason}");
    assert!(reason.contains("found record 7"), "{reason}");

    // Two records' events swapped, seqs and hashes left in place.
    let copy = copy_store(original.path());
    let read = |seq: u64| {
        let line: serde_json::Value =
            serde_json::from_str(&audit_lines(copy.path())[usize::try_from(seq - 1).unwrap()]).unwrap();
        line["record"]["event"].clone()
    };
    let (e7, e8) = (read(7), read(8));
    tamper(copy.path(), 7, |r| r["event"] = e8);
    tamper(copy.path(), 8, |r| r["event"] = e7);
    let (seq, reason) = broken(copy.path()).await;
    assert_eq!(seq, 7, "{reason}");
    assert!(reason.contains("hash does not match"), "{reason}");

    // The original was never touched.
    let store = SledStore::open(original.path()).unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 10);
}
