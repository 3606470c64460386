//! The audit chain: concurrency, batches, structured context and queries, decisions under preconditions.

use lanyard_core::{SessionId, TaskId};

use super::Fixture;
use super::helpers::*;
use crate::*;

pub(super) async fn audit_chain_is_gapless_under_concurrency(fx: &Fixture) {
    let store = fx.open().await;
    assert_eq!(append_concurrently(&store, 200).await, (1..=200).collect::<Vec<_>>());

    let report = store.verify_audit_chain().await.unwrap();
    assert_eq!(report.records, 200);
    let range = store.audit_range(199, 10).await.unwrap();
    assert_eq!(range.iter().map(|r| r.seq).collect::<Vec<_>>(), [199, 200]);
    assert_eq!(range[1].hash, report.head);
    assert_eq!(range[1].prev_hash, range[0].hash);
}

pub(super) async fn audit_batches_are_consecutive_and_atomic(fx: &Fixture) {
    let store = fx.open().await;
    store.append_audit(event("first")).await.unwrap();
    let batch = store.append_audit_batch(vec![event("a"), event("b"), event("c")]).await.unwrap();
    assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    assert!(store.append_audit_batch(vec![]).await.unwrap().is_empty());
    let report = store.verify_audit_chain().await.unwrap();
    assert_eq!((report.records, report.head), (4, batch[2].hash));
}

pub(super) async fn context_round_trips_and_queries_filter_on_it(fx: &Fixture) {
    let store = fx.open().await;
    let events = vec![
        ctx_event("task_token.mint", 100, 1, "alice", "gh"),
        ctx_event("task_token.deny", 200, 2, "bob", "gh"),
        AuditEvent { at: 300, ..event("entry.create") },
        ctx_event("task_token.mint", 400, 1, "alice", "slack"),
    ];
    for e in &events {
        store.append_audit(e.clone()).await.unwrap();
    }
    let stored: Vec<AuditEvent> = store.audit_range(1, 10).await.unwrap().into_iter().map(|r| r.event).collect();
    assert_eq!(stored, events);

    let query = |filter: AuditFilter, from, limit| {
        let store = &store;
        async move { seqs(&store.query_audit(&filter, from, limit).await.unwrap()) }
    };
    let all = AuditFilter::default();
    assert_eq!(query(all.clone(), 1, 10).await, [1, 2, 3, 4]);
    assert_eq!(query(all.clone(), 0, 2).await, [1, 2]);
    assert_eq!(query(all.clone(), 4, 10).await, [4]);
    assert!(query(all.clone(), 5, 10).await.is_empty());
    assert!(query(all, 1, 0).await.is_empty());
    let by_task = AuditFilter { task: Some(tid(1)), ..Default::default() };
    assert_eq!(query(by_task.clone(), 1, 10).await, [1, 4]);
    assert_eq!(query(by_task.clone(), 2, 10).await, [4], "paged");
    assert_eq!(query(by_task, 1, 1).await, [1]);
    assert_eq!(query(AuditFilter { user_sub: Some("bob".into()), ..Default::default() }, 1, 10).await, [2]);
    let gh = AuditFilter { connector: Some(id("connector/gh")), ..Default::default() };
    assert_eq!(query(gh, 1, 10).await, [1, 2]);
    assert_eq!(query(AuditFilter { since: Some(200), ..Default::default() }, 1, 10).await, [2, 3, 4]);
    let mints_since = AuditFilter { since: Some(150), kind: Some("task_token.mint".into()), ..Default::default() };
    assert_eq!(query(mints_since, 1, 10).await, [4]);
    let nobody = AuditFilter { task: Some(TaskId::from_bytes([0; 16])), ..Default::default() };
    assert!(query(nobody, 1, 10).await.is_empty());
}

pub(super) async fn a_decision_is_not_recorded_once_a_revocation_got_in(fx: &Fixture) {
    let store = fx.open().await;
    store.create_task(task(1, "gh", "s1", None), event("task.begin")).await.unwrap();
    store.create_task(task(2, "gh", "s2", None), event("task.begin")).await.unwrap();
    let pre = |t: u8, session: &str| Preconditions {
        tasks: vec![tid(t)],
        now: 1500,
        session: Some(sid(session)),
        risks: vec![RiskSubject::User { sub: "alice".into(), iss: None }],
        blocking_levels: blocking(),
        checked_at_revocation: None,
    };
    store.append_audit_if(event("allow"), pre(1, "s1")).await.unwrap();

    store.end_task(&tid(1), 1501, event("task.end")).await.unwrap();
    let err = store.append_audit_if(event("allow"), pre(1, "s1")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Revoked(why) if why.contains("has ended")), "{err:?}");

    let expired = Preconditions { now: u64::MAX, ..pre(2, "s2") };
    assert!(matches!(store.append_audit_if(event("allow"), expired).await, Err(StoreError::Revoked(_))));

    store.revoke_session(&SessionId::parse("s9").unwrap(), 1, event("session.revoke")).await.unwrap();
    let revoked = Preconditions { session: Some(sid("s9")), ..pre(2, "s2") };
    assert!(matches!(store.append_audit_if(event("allow"), revoked).await, Err(StoreError::Revoked(_))));

    let risk = RiskRecord {
        subject: RiskSubject::User { sub: "alice".into(), iss: None },
        level: "medium".into(),
        reason: "test".into(),
        reported_at: 1,
        reported_by: "admin".into(),
    };
    store.report_risk(risk, event("risk.report")).await.unwrap();
    let err = store.append_audit_if(event("allow"), pre(2, "s2")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Revoked(why) if why.contains("medium")), "{err:?}");
    // Below the blocking levels the risk does not stop it.
    let lenient = Preconditions { blocking_levels: vec!["high".into()], ..pre(2, "s2") };
    store.append_audit_if(event("allow"), lenient).await.unwrap();

    // Refused decisions wrote nothing.
    let kinds: Vec<_> = store.audit_range(1, 100).await.unwrap().into_iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "allow").count(), 2, "{kinds:?}");
}

pub(super) async fn checks_made_at_a_revocation_seq_stand_until_the_next_revocation(fx: &Fixture) {
    let store = fx.open().await;
    store.create_task(task(1, "gh", "s1", None), event("task.begin")).await.unwrap();
    let seen = store.revocation_seq();
    // The caller checked the task at `seen` and found it live and unexpired:
    // with no revocation since, the store takes its word (this `now` would
    // fail the store's own expiry check, which shows it was not repeated).
    let checked = Preconditions {
        tasks: vec![tid(1)],
        now: u64::MAX,
        session: Some(sid("s1")),
        risks: Vec::new(),
        blocking_levels: blocking(),
        checked_at_revocation: Some(seen),
    };
    store.append_audit_if(event("allow"), checked.clone()).await.unwrap();

    // Once a revocation got in, everything is checked again under the lock.
    store.end_task(&tid(1), 1501, event("task.end")).await.unwrap();
    assert_eq!(store.revocation_seq(), seen + 1);
    let stale = Preconditions { now: 1500, ..checked.clone() };
    let err = store.append_audit_if(event("allow"), stale).await.unwrap_err();
    assert!(matches!(&err, StoreError::Revoked(why) if why.contains("has ended")), "{err:?}");
    // A seq from before other revocations is no better.
    store.revoke_session(&sid("s1"), 1, event("session.revoke")).await.unwrap();
    let older = Preconditions { tasks: Vec::new(), now: 1500, ..checked };
    let err = store.append_audit_if(event("allow"), older).await.unwrap_err();
    assert!(matches!(&err, StoreError::Revoked(why) if why.contains("session")), "{err:?}");
    // A risk reported after the caller's checks is a revocation too.
    store.create_task(task(2, "gh", "s2", None), event("task.begin")).await.unwrap();
    let alice = RiskSubject::User { sub: "alice".into(), iss: None };
    let before_risk = Preconditions {
        tasks: vec![tid(2)],
        now: 1500,
        session: Some(sid("s2")),
        risks: vec![alice.clone()],
        blocking_levels: blocking(),
        checked_at_revocation: Some(store.revocation_seq()),
    };
    let risk = RiskRecord {
        subject: alice,
        level: "high".into(),
        reason: "test".into(),
        reported_at: 1,
        reported_by: "admin".into(),
    };
    store.report_risk(risk, event("risk.report")).await.unwrap();
    let err = store.append_audit_if(event("allow"), before_risk).await.unwrap_err();
    assert!(matches!(&err, StoreError::Revoked(why) if why.contains("high")), "{err:?}");

    let kinds: Vec<_> = store.audit_range(1, 100).await.unwrap().into_iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "allow").count(), 1, "{kinds:?}");
}
