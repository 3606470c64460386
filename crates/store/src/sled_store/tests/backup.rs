//! Backups taken while writers run, and restores into new directories.

use std::sync::Arc;

use super::open;
use crate::contract::helpers::{entry, event};
use crate::{EntryFilter, SledStore, Store, StoreError};

#[tokio::test]
async fn a_backup_taken_under_load_restores_to_a_store_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    for i in 0..20 {
        store.create_entry(entry(&format!("{i:032x}"), "node1"), event("entry.create")).await.unwrap();
    }
    // Writers keep going while the backup is taken.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..200 {
                store.append_audit(event("load")).await.unwrap();
            }
        })
    };
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b1");
    let manifest = store.backup(&to).await.unwrap();
    writer.await.unwrap();
    assert_eq!(manifest.format, "lanyard-backup-v1");
    assert!(manifest.audit_records >= 20, "{manifest:?}");
    for file in ["records.jsonl", "audit.log", "manifest.json"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(to.join(file)).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{file} is private");
    }
    // The records, without the zeros the live log keeps past its end.
    let log = std::fs::read(to.join("audit.log")).unwrap();
    assert!(!log.contains(&0) && log.ends_with(b"\n"), "the backup's audit.log is whole records only");
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count() as u64, manifest.audit_records);

    let restored_dir = backups.path().join("restored");
    let restored = SledStore::restore(&to, &restored_dir).unwrap();
    assert_eq!(restored, manifest);
    let restored = SledStore::open(&restored_dir).unwrap();
    let report = restored.verify_audit_chain().await.unwrap();
    assert_eq!(report.records, manifest.audit_records, "the chain up to the backup point, whole");
    let entries = restored.list_entries(&EntryFilter::default(), None, 100).await.unwrap();
    assert_eq!(entries.len(), 20, "every entry");
    assert_eq!(entries, store.list_entries(&EntryFilter::default(), None, 100).await.unwrap());
    // The restored store is a working store: it takes new writes.
    restored.append_audit(event("after.restore")).await.unwrap();
    assert_eq!(restored.verify_audit_chain().await.unwrap().records, manifest.audit_records + 1);
}

#[tokio::test]
async fn damaged_or_foreign_backups_and_occupied_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_entry(entry(&format!("{:032x}", 1), "node1"), event("entry.create")).await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b");
    store.backup(&to).await.unwrap();
    // Not into a non-empty directory, neither a backup nor a restore.
    assert!(matches!(store.backup(&to).await, Err(StoreError::Corrupt(m)) if m.contains("not empty")));
    assert!(matches!(SledStore::restore(&to, dir.path()), Err(StoreError::Corrupt(m)) if m.contains("not empty")));

    let copy = |name: &str| {
        let path = backups.path().join(name);
        std::fs::create_dir(&path).unwrap();
        for file in ["records.jsonl", "audit.log", "manifest.json"] {
            std::fs::copy(to.join(file), path.join(file)).unwrap();
        }
        path
    };
    // A changed byte in either file fails its checksum.
    let tampered = copy("tampered");
    let mut log = std::fs::read(tampered.join("audit.log")).unwrap();
    log[10] ^= 1;
    std::fs::write(tampered.join("audit.log"), log).unwrap();
    let error = SledStore::restore(&tampered, &backups.path().join("t")).unwrap_err();
    assert!(error.to_string().contains("audit.log does not match"), "{error}");
    // A newer schema is refused.
    let newer = copy("newer");
    let manifest = std::fs::read_to_string(newer.join("manifest.json")).unwrap();
    std::fs::write(newer.join("manifest.json"), manifest.replace("\"schema_version\": 1", "\"schema_version\": 99"))
        .unwrap();
    assert!(matches!(SledStore::restore(&newer, &backups.path().join("n")), Err(StoreError::NewerSchema { .. })));
}
