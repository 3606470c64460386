//! Entries, their change feed, join tokens, agents and keys.

use std::sync::Arc;

use super::Fixture;
use super::helpers::*;
use crate::*;

pub(super) async fn entry_crud_bumps_revisions_and_checks_them(fx: &Fixture) {
    let store = fx.open().await;
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
    assert_eq!(audit_count(&*store).await, 3);
    let kinds: Vec<String> = store.audit_range(1, 10).await.unwrap().into_iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds, ["entry.create", "entry.update", "entry.delete"]);
}

pub(super) async fn list_entries_filters_and_pages_by_id(fx: &Fixture) {
    let store = fx.open().await;
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

pub(super) async fn change_feed_is_incremental_after_a_revision(fx: &Fixture) {
    let store = fx.open().await;
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

pub(super) async fn re_parenting_moves_an_entry_between_agents_feeds(fx: &Fixture) {
    let store = fx.open().await;
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

pub(super) async fn subscribers_see_revisions_once_durable(fx: &Fixture) {
    let store = fx.open().await;
    let mut rx = store.subscribe_revision();
    assert_eq!(*rx.borrow_and_update(), 0);
    store.create_entry(entry("e1", "a"), event("c")).await.unwrap();
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow(), 1);
    assert_eq!(store.revision(), 1);
}

pub(super) async fn join_tokens_are_single_use_even_when_raced(fx: &Fixture) {
    let store = fx.open().await;
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

pub(super) async fn agents_and_keys(fx: &Fixture) {
    let store = fx.open().await;
    let mut agent = AgentRecord {
        spiffe_id: id("agent/b"),
        name: "b".into(),
        attested_at: 1,
        svid_serial: "01".into(),
        svid_expires_at: 2,
        banned: false,
        last_seen: 3,
        // Read back below through list_agents: it survives either store.
        previous_svid: Some(PreviousSvid { serial: "00".into(), accepted_until: 2 }),
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
    assert_eq!(audit_count(&*store).await, 4);
}
