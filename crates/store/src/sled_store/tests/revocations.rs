//! The revocation feed: every kind, gapless seqs, risks, subscriptions.

use std::sync::Arc;
use std::time::Duration;

use super::{SledStore, open};
use crate::contract::helpers::*;
use crate::{RiskSubject, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_caller_went_away_is_still_announced() {
    let dir = tempfile::tempdir().unwrap();
    // A 100 ms fsync leaves time to drop the caller between apply and flush.
    let store = Arc::new(SledStore::open_with(dir.path(), 10, Duration::from_millis(100)).unwrap());
    let mut rx = store.subscribe_revocations();
    let caller = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.revoke_token("j1", 1, event("token.revoke")).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    caller.abort();
    tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
    assert_eq!(*rx.borrow(), 1);
    assert_eq!(store.revocations_since(0, 10).await.unwrap()[0].subject, "j1");
}

#[tokio::test]
async fn reopening_keeps_the_feed_the_log_and_their_counters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_task(task(1, "a", "s1", None), event("task.begin")).await.unwrap();
    store.revoke_session(&sid("s1"), 5, event("session.revoke")).await.unwrap();
    store.report_risk(risk(RiskSubject::Agent(id("agent/n1")), "high"), event("risk.report")).await.unwrap();
    store.revoke_token("j1", 6, event("token.revoke")).await.unwrap();
    let (audit_head, rev_seq) = (store.audit_head(), store.revocation_seq());
    assert_eq!((audit_head, rev_seq), (4, 3));
    let feed = store.revocations_since(0, 10).await.unwrap();
    let task1 = store.get_task(&tid(1)).await.unwrap();
    drop(store);

    let store = open(&dir);
    assert_eq!((store.audit_head(), store.revocation_seq()), (audit_head, rev_seq));
    assert_eq!(*store.subscribe_revocations().borrow(), rev_seq);
    assert_eq!(store.revocations_since(0, 10).await.unwrap(), feed);
    assert_eq!(store.get_task(&tid(1)).await.unwrap(), task1);
    assert!(store.is_session_revoked(&sid("s1")).await.unwrap());
    assert_eq!(store.list_risks().await.unwrap().len(), 1);
    let next = store.revoke_token("j2", 7, event("token.revoke")).await.unwrap();
    assert_eq!(next.seq, rev_seq + 1);
    assert_eq!(store.append_audit(event("after")).await.unwrap().seq, audit_head + 2);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, audit_head + 2);
}

#[tokio::test]
async fn a_counter_behind_its_feed_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.revoke_token("j1", 1, event("token.revoke")).await.unwrap();
    store.revoke_token("j2", 1, event("token.revoke")).await.unwrap();
    drop(store);
    {
        let db = super::open_db(dir.path()).unwrap();
        db.open_tree("meta").unwrap().insert("revocation_seq", b"1").unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("revocation_seq is 1 but revocations holds record 2"), "{err}");
}
