//! The revocation feed: every kind, gapless seqs, risks, subscriptions.

use std::sync::Arc;

use serde_json::json;

use lanyard_core::SpiffeId;

use super::Fixture;
use super::helpers::*;
use crate::*;

pub(super) async fn risks_keep_the_highest_level_and_match_users_across_issuers(fx: &Fixture) {
    let store = fx.open().await;
    let idp1 = Some("https://idp1");
    store.report_risk(risk(user("alice", None), "medium"), event("risk.report")).await.unwrap();
    store.report_risk(risk(user("alice", idp1), "low"), event("risk.report")).await.unwrap();
    store.report_risk(risk(user("alice", idp1), "high"), event("risk.report")).await.unwrap();
    let lower = store.report_risk(risk(user("alice", idp1), "low"), event("risk.report")).await.unwrap();
    assert_eq!((lower.kind, lower.subject.as_str()), (RevocationKind::RiskRaised, "user:alice@https://idp1"));
    assert_eq!(lower.detail["level"], "high", "the effective level");
    assert_eq!(lower.detail["reported_level"], "low");
    assert_eq!(lower.detail["risk_subject"], json!({"user": {"sub": "alice", "iss": "https://idp1"}}));
    store.report_risk(risk(user("bob", Some("https://idp2")), "high"), event("risk.report")).await.unwrap();
    let conn = id("connector/gh");
    store.report_risk(risk(RiskSubject::Connector(conn.clone()), "low"), event("risk.report")).await.unwrap();
    store.report_risk(risk(RiskSubject::Session(sid("s1")), "medium"), event("risk.report")).await.unwrap();
    assert_eq!(store.revocation_seq(), 7);

    let open_on = |subjects: Vec<RiskSubject>| {
        let store = &store;
        async move { store.open_risks(&subjects).await.unwrap() }
    };
    let alice_both = pairs(&[("user:alice", "medium"), ("user:alice@https://idp1", "high")]);
    assert_eq!(levels(&open_on(vec![user("alice", idp1)]).await), alice_both);
    // A report without issuer applies at every issuer; one with an issuer only there.
    assert_eq!(levels(&open_on(vec![user("alice", Some("https://idp9"))]).await), pairs(&[("user:alice", "medium")]));
    // Asked without an issuer: every report on that subject.
    assert_eq!(levels(&open_on(vec![user("alice", None)]).await), alice_both);
    assert!(open_on(vec![user("al", idp1), user("alice2", None), user("bob", idp1)]).await.is_empty());
    let mixed = vec![
        user("alice", idp1),
        user("alice", None),
        RiskSubject::Connector(conn.clone()),
        RiskSubject::Agent(id("agent/n1")),
        RiskSubject::Session(sid("s1")),
    ];
    assert_eq!(open_on(mixed).await.len(), 4, "each record once");
    assert_eq!(store.list_risks().await.unwrap().len(), 5);

    let cleared = store.clear_risk(&user("alice", idp1), 5, event("risk.clear")).await.unwrap();
    assert_eq!((cleared.kind, cleared.seq, cleared.at), (RevocationKind::RiskCleared, 8, 5));
    assert_eq!(levels(&open_on(vec![user("alice", idp1)]).await), pairs(&[("user:alice", "medium")]));
    let twice = store.clear_risk(&user("alice", idp1), 5, event("risk.clear")).await;
    assert!(matches!(&twice, Err(StoreError::NotFound(m)) if m == "open risk on user:alice@https://idp1"), "{twice:?}");
    let never = store.clear_risk(&RiskSubject::Agent(id("agent/n1")), 5, event("risk.clear")).await;
    assert!(matches!(never, Err(StoreError::NotFound(_))), "{never:?}");
    store.clear_risk(&user("alice", None), 6, event("risk.clear")).await.unwrap();
    assert!(open_on(vec![user("alice", idp1)]).await.is_empty());
    // After a clear the next report starts afresh, whatever its level.
    store.report_risk(risk(user("alice", None), "low"), event("risk.report")).await.unwrap();
    assert_eq!(levels(&open_on(vec![user("alice", None)]).await), pairs(&[("user:alice", "low")]));
    assert_eq!(store.revocation_seq(), 10);
    assert_eq!(audit_count(&*store).await, 10, "refusals record nothing");
}

pub(super) async fn every_kind_shares_one_gapless_feed(fx: &Fixture) {
    let store = fx.open().await;
    store.create_entry(entry("e1", "n1"), event("entry.create")).await.unwrap();
    store.put_agent(agent("n1"), None).await.unwrap();
    store.create_task(task(1, "a", "s1", None), event("task.begin")).await.unwrap();
    store.create_task(task(2, "a", "s2", None), event("task.begin")).await.unwrap();

    store.end_task(&tid(1), 10, event("task.end")).await.unwrap();
    store.revoke_session(&sid("s2"), 11, event("session.revoke")).await.unwrap();
    store.report_risk(risk(user("alice", None), "high"), event("risk.report")).await.unwrap();
    store.clear_risk(&user("alice", None), 12, event("risk.clear")).await.unwrap();
    store.revoke_token("jti-123", 13, event("token.revoke")).await.unwrap();
    store.delete_entry(&eid("e1"), event("entry.delete")).await.unwrap();
    store.ban_agent(&id("agent/n1"), 14, event("agent.ban")).await.unwrap();

    let feed = store.revocations_since(0, 100).await.unwrap();
    assert_eq!(feed.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    let kinds: Vec<RevocationKind> = feed.iter().map(|r| r.kind).collect();
    use RevocationKind::*;
    assert_eq!(kinds, [TaskEnded, SessionRevoked, RiskRaised, RiskCleared, TokenRevoked, EntryDeleted, AgentBanned]);
    let subjects: Vec<&str> = feed.iter().map(|r| r.subject.as_str()).collect();
    let task1 = tid(1).to_string();
    assert_eq!(
        subjects,
        [
            task1.as_str(),
            "s2",
            "user:alice",
            "user:alice",
            "jti-123",
            "spiffe://example.org/connector/e1",
            "spiffe://example.org/agent/n1"
        ]
    );
    assert_eq!(feed[1].tasks, [tid(2)]);
    assert_eq!(feed[5].detail, json!({"entry_id": "e1"}));
    assert_eq!(feed[5].at, event("entry.delete").at, "entry deletions take the audit event's time");
    assert_eq!(store.revocation_seq(), 7);

    let seqs = |after, limit| {
        let store = &store;
        async move { store.revocations_since(after, limit).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>() }
    };
    assert_eq!(seqs(3, 2).await, [4, 5]);
    assert_eq!(seqs(6, 10).await, [7]);
    assert!(seqs(7, 10).await.is_empty());
    assert!(seqs(100, 10).await.is_empty());
    assert!(seqs(0, 0).await.is_empty());
    // The JSON a feed endpoint would serve.
    let json = serde_json::to_value(&feed[4]).unwrap();
    assert_eq!(
        json,
        json!({"seq": 5, "at": 13, "kind": "token_revoked", "subject": "jti-123", "tasks": [], "detail": {}})
    );
}

pub(super) async fn entry_deletion_and_agent_bans_are_one_write_with_their_event(fx: &Fixture) {
    let store = fx.open().await;
    store.create_entry(entry("e1", "n1"), event("entry.create")).await.unwrap();
    store.put_agent(agent("n1"), None).await.unwrap();

    let missing = store.delete_entry(&eid("nope"), event("entry.delete")).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    let unknown = store.ban_agent(&id("agent/ghost"), 5, event("agent.ban")).await;
    assert!(matches!(&unknown, Err(StoreError::NotFound(m)) if m.contains("agent/ghost")), "{unknown:?}");
    assert_eq!((store.revocation_seq(), audit_count(&*store).await), (0, 1), "refusals write nothing");

    let deleted = store.delete_entry(&eid("e1"), event("entry.delete")).await.unwrap();
    assert_eq!(deleted.id, eid("e1"));
    let banned = store.ban_agent(&id("agent/n1"), 7, event("agent.ban")).await.unwrap();
    assert!(banned.banned);
    assert_eq!(store.get_agent(&id("agent/n1")).await.unwrap(), Some(banned.clone()));
    drop(store);

    // Each change, its event and its audit record are on disk together.
    let store = fx.open().await;
    assert_eq!(store.get_entry(&eid("e1")).await.unwrap(), None);
    assert_eq!(store.get_agent(&id("agent/n1")).await.unwrap(), Some(banned));
    let feed = store.revocations_since(0, 10).await.unwrap();
    assert_eq!(
        feed.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [RevocationKind::EntryDeleted, RevocationKind::AgentBanned]
    );
    let kinds: Vec<String> = store.audit_range(1, 10).await.unwrap().into_iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds, ["entry.create", "entry.delete", "agent.ban"]);
    // A write based on the record from before the ban cannot lift it.
    let stale = store.put_agent(agent("n1"), Some(event("agent.renew"))).await;
    assert!(matches!(&stale, Err(StoreError::Revoked(m)) if m.ends_with("agent/n1 is banned")), "{stale:?}");
    assert!(store.get_agent(&id("agent/n1")).await.unwrap().unwrap().banned);
    // A second ban is another event.
    assert!(store.ban_agent(&id("agent/n1"), 8, event("agent.ban")).await.unwrap().banned);
    assert_eq!(store.revocation_seq(), 3);
}

pub(super) async fn subscribers_hear_of_each_durable_write(fx: &Fixture) {
    let store = fx.open().await;
    let mut audit_rx = store.subscribe_audit();
    let mut rev_rx = store.subscribe_revocations();
    assert_eq!((*audit_rx.borrow_and_update(), *rev_rx.borrow_and_update()), (0, 0));

    let record = store.append_audit(event("a")).await.unwrap();
    // Published by the flush, before the writer is answered.
    assert_eq!(store.audit_head(), record.seq);
    audit_rx.changed().await.unwrap();
    assert_eq!(*audit_rx.borrow_and_update(), 1);
    assert!(!rev_rx.has_changed().unwrap(), "no revocation yet");

    let rev = store.revoke_token("j1", 1, event("token.revoke")).await.unwrap();
    assert_eq!(store.revocation_seq(), rev.seq);
    rev_rx.changed().await.unwrap();
    assert_eq!(*rev_rx.borrow_and_update(), 1);
    audit_rx.changed().await.unwrap();
    assert_eq!(*audit_rx.borrow_and_update(), 2);
}

pub(super) async fn concurrent_revocations_and_audits_stay_gapless(fx: &Fixture) {
    let store = fx.open().await;
    let mut handles = Vec::new();
    for i in 0..150u64 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            match i % 3 {
                0 => Some(store.revoke_token(&format!("j{i}"), i, event("token.revoke")).await.unwrap().seq),
                1 => {
                    let subject =
                        RiskSubject::Connector(SpiffeId::parse(&format!("spiffe://example.org/c/{i}")).unwrap());
                    Some(store.report_risk(risk(subject, "low"), event("risk.report")).await.unwrap().seq)
                }
                _ => {
                    store.append_audit(event("mint")).await.unwrap();
                    None
                }
            }
        }));
    }
    let mut seqs = Vec::new();
    for h in handles {
        seqs.extend(h.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let feed = store.revocations_since(0, 1000).await.unwrap();
    assert_eq!(feed.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(store.revocation_seq(), 100);
    assert_eq!(store.verify_audit_chain().await.unwrap().records, 150);
    assert_eq!(store.audit_head(), 150);
}
