//! Tasks: creation checks, listings, and ending with descendants.

use lanyard_core::EndReason;

use super::Fixture;
use super::helpers::*;
use crate::*;

pub(super) async fn tasks_are_created_read_and_listed_by_filter(fx: &Fixture) {
    let store = fx.open().await;
    let t1 = store.create_task(task(1, "a", "s1", None), event("task.begin")).await.unwrap();
    store.create_task(task(2, "b", "s1", None), event("task.begin")).await.unwrap();
    let mut t3 = task(3, "a", "s2", None);
    t3.expires_at = 1500;
    store.create_task(t3, event("task.begin")).await.unwrap();
    store.create_task(task(4, "a", "s2", None), event("task.begin")).await.unwrap();
    store.end_task(&tid(4), 1100, event("task.end")).await.unwrap();

    assert_eq!(store.get_task(&tid(1)).await.unwrap(), Some(t1));
    assert_eq!(store.get_task(&tid(9)).await.unwrap(), None);
    let dup = store.create_task(task(1, "z", "s9", None), event("task.begin")).await;
    assert!(matches!(&dup, Err(StoreError::AlreadyExists(m)) if m.contains(&tid(1).to_string())), "{dup:?}");
    let orphan = store.create_task(task(5, "a", "s1", Some(8)), event("task.begin")).await;
    assert!(matches!(orphan, Err(StoreError::NotFound(_))), "{orphan:?}");

    let list = |filter: TaskFilter, limit| {
        let store = &store;
        async move { task_ids(&store.list_tasks(&filter, limit).await.unwrap()) }
    };
    let conn_a = Some(id("connector/a"));
    assert_eq!(list(TaskFilter::default(), 10).await, [tid(1), tid(2), tid(3), tid(4)]);
    assert_eq!(list(TaskFilter::default(), 1).await, [tid(1)]);
    assert!(list(TaskFilter::default(), 0).await.is_empty());
    assert_eq!(
        list(TaskFilter { connector: conn_a.clone(), ..Default::default() }, 10).await,
        [tid(1), tid(3), tid(4)]
    );
    assert_eq!(list(TaskFilter { session: Some(sid("s1")), ..Default::default() }, 10).await, [tid(1), tid(2)]);
    assert_eq!(list(TaskFilter { session: Some(sid("s1")), ..Default::default() }, 1).await, [tid(1)]);
    assert!(list(TaskFilter { session: Some(sid("s")), ..Default::default() }, 10).await.is_empty());
    // Expired (3) and ended (4) tasks are not active.
    assert_eq!(list(TaskFilter { active_at: Some(1600), ..Default::default() }, 10).await, [tid(1), tid(2)]);
    assert_eq!(list(TaskFilter { active_at: Some(1200), ..Default::default() }, 10).await, [tid(1), tid(2), tid(3)]);
    assert!(list(TaskFilter { active_at: Some(2000), ..Default::default() }, 10).await.is_empty());
    let a_active = TaskFilter { active_at: Some(1600), connector: conn_a, session: None };
    assert_eq!(list(a_active, 10).await, [tid(1)]);
    let s2_active = TaskFilter { active_at: Some(1000), connector: None, session: Some(sid("s2")) };
    assert_eq!(list(s2_active, 10).await, [tid(3)]);

    // Four creations and one end; refusals record nothing.
    assert_eq!(audit_count(&*store).await, 5);
}

pub(super) async fn ending_a_task_ends_every_descendant_in_one_event(fx: &Fixture) {
    let store = fx.open().await;
    // 1 ─┬─ 2 ── 4 ── 5      (5 is three levels below 1)
    //    └─ 3 (ended first)
    // 9 unrelated
    for (n, parent) in [(1, None), (2, Some(1)), (3, Some(1)), (4, Some(2)), (5, Some(4)), (9, None)] {
        store.create_task(task(n, "a", "s1", parent), event("task.begin")).await.unwrap();
    }
    let first = store.end_task(&tid(3), 1100, event("task.end")).await.unwrap();
    assert_eq!((first.seq, first.tasks.clone()), (1, vec![tid(3)]));

    let rev = store.end_task(&tid(1), 1234, event("task.end")).await.unwrap();
    assert_eq!((rev.seq, rev.kind, rev.at), (2, RevocationKind::TaskEnded, 1234));
    assert_eq!(rev.subject, tid(1).to_string());
    assert_eq!(rev.tasks, [tid(1), tid(2), tid(4), tid(5)], "the task first, then breadth first");

    assert_eq!(end_state(&*store, 1).await, (Some(1234), Some(EndReason::Ended)));
    for n in [2, 4, 5] {
        assert_eq!(end_state(&*store, n).await, (Some(1234), Some(EndReason::ParentEnded)), "task {n}");
    }
    assert_eq!(end_state(&*store, 3).await, (Some(1100), Some(EndReason::Ended)), "ended before: untouched");
    assert_eq!(end_state(&*store, 9).await, (None, None));

    // No child can start under an ended task, at any depth.
    for parent in [1, 5] {
        let late = store.create_task(task(20 + parent, "a", "s1", Some(parent)), event("task.delegate")).await;
        assert!(matches!(&late, Err(StoreError::Revoked(m)) if m.contains("has ended")), "{late:?}");
    }

    // Ending again is not an error: a new event, naming nothing new.
    let again = store.end_task(&tid(1), 1300, event("task.end")).await.unwrap();
    assert_eq!((again.seq, again.tasks.len()), (3, 0));
    assert_eq!(end_state(&*store, 1).await, (Some(1234), Some(EndReason::Ended)));

    let unknown = store.end_task(&tid(77), 1300, event("task.end")).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
    assert_eq!(store.revocation_seq(), 3);
    assert_eq!(store.revocations_since(0, 10).await.unwrap().len(), 3);
    // Six creations, three ends.
    assert_eq!(audit_count(&*store).await, 9);
}

pub(super) async fn revoking_a_session_ends_its_tasks_and_no_others(fx: &Fixture) {
    let store = fx.open().await;
    store.create_task(task(1, "a", "s1", None), event("task.begin")).await.unwrap();
    store.create_task(task(2, "b", "s1", Some(1)), event("task.begin")).await.unwrap();
    store.create_task(task(3, "a", "s2", None), event("task.begin")).await.unwrap();
    store.create_task(task(4, "a", "s1", None), event("task.begin")).await.unwrap();
    // A descendant filed under another session still ends with its parent.
    store.create_task(task(5, "c", "s3", Some(1)), event("task.begin")).await.unwrap();
    store.end_task(&tid(4), 1100, event("task.end")).await.unwrap();
    assert!(!store.is_session_revoked(&sid("s1")).await.unwrap());

    let rev = store.revoke_session(&sid("s1"), 1200, event("session.revoke")).await.unwrap();
    assert_eq!((rev.kind, rev.subject.as_str(), rev.seq), (RevocationKind::SessionRevoked, "s1", 2));
    assert_eq!(rev.tasks, [tid(1), tid(2), tid(5)]);
    assert_eq!(end_state(&*store, 1).await, (Some(1200), Some(EndReason::SessionRevoked)));
    assert_eq!(end_state(&*store, 2).await, (Some(1200), Some(EndReason::SessionRevoked)));
    assert_eq!(end_state(&*store, 5).await, (Some(1200), Some(EndReason::ParentEnded)));
    assert_eq!(end_state(&*store, 4).await, (Some(1100), Some(EndReason::Ended)));
    assert_eq!(end_state(&*store, 3).await, (None, None));

    assert!(store.is_session_revoked(&sid("s1")).await.unwrap());
    assert!(!store.is_session_revoked(&sid("s2")).await.unwrap());
    let late = store.create_task(task(6, "a", "s1", None), event("task.begin")).await;
    assert!(matches!(&late, Err(StoreError::Revoked(m)) if m == "session s1 is revoked"), "{late:?}");
    assert!(store.get_task(&tid(6)).await.unwrap().is_none());

    let again = store.revoke_session(&sid("s1"), 1300, event("session.revoke")).await.unwrap();
    assert_eq!((again.seq, again.tasks.len()), (3, 0));
    // A session can be revoked before any task of it exists.
    let empty = store.revoke_session(&sid("s-new"), 1300, event("session.revoke")).await.unwrap();
    assert!(empty.tasks.is_empty());
    assert!(store.is_session_revoked(&sid("s-new")).await.unwrap());
}
