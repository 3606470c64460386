use super::*;

use crate::testkit::{CONNECTOR, Fixture, TASK};

const AGENT: &str = "spiffe://example.org/agent/node-1";

/// Event `seq`, recorded at `1_000 + seq`, blocking when a risk.
fn event(seq: u64, kind: EventKind, subject: &str) -> RevocationEvent {
    RevocationEvent { seq, at: 1_000 + seq, kind, subject: subject.into(), tasks: vec![], blocking: true }
}

/// alice's task-token claims (session `s1`) for task `txn`, issued at `iat`.
fn claims(txn: &str, iat: u64) -> TaskTokenClaims {
    let f = Fixture::new();
    let mut claims = TaskTokenClaims::new(&f.template(), f.now, "jti-1".into());
    (claims.txn, claims.iat) = (txn.into(), iat);
    claims
}

/// A state with `events` (numbered from 1) applied in order.
fn applied(events: &[RevocationEvent]) -> RevocationState {
    let mut state = RevocationState::default();
    for e in events {
        assert!(state.apply(e).unwrap(), "event {} not applied", e.seq);
    }
    state
}

#[test]
fn events_apply_in_order() {
    let mut state = RevocationState::default();
    assert_eq!((state.seq(), state.current_at()), (0, None));
    assert!(state.apply(&event(1, EventKind::TaskEnded, TASK)).unwrap());
    assert_eq!(state.seq(), 1);
    assert!(state.apply(&event(2, EventKind::TokenRevoked, "jti-9")).unwrap());
    assert!(state.apply(&event(3, EventKind::AgentBanned, AGENT)).unwrap());
    assert_eq!(state.seq(), 3);
    assert_eq!(state.check_task_token(&claims(TASK, 0)), Err(Revoked::Task(TASK.into())));
    assert_eq!(state.check_token("jti-9"), Err(Revoked::Token("jti-9".into())));
    assert_eq!(state.check_token("jti-1"), Ok(()));
    assert_eq!(state.check_workload(AGENT, 5_000), Err(Revoked::AgentBanned(AGENT.into())));
    assert_eq!(state.check_workload(CONNECTOR, 5_000), Ok(()));
    // Applying events does not say the state is current: only a heartbeat does.
    assert_eq!(state.current_at(), None);
}

#[test]
fn re_applying_an_event_changes_nothing() {
    let mut state = applied(&[event(1, EventKind::SessionRevoked, "s1"), event(2, EventKind::TaskEnded, "t2")]);
    let before = state.clone();
    for seq in [1, 2] {
        assert!(!state.apply(&event(seq, EventKind::TaskEnded, "t2")).unwrap());
    }
    // Even one that would now say something else: its number was applied.
    let mut cleared = event(1, EventKind::RiskCleared, "user:alice");
    cleared.tasks = vec!["t9".into()];
    assert!(!state.apply(&cleared).unwrap());
    assert_eq!(state, before);
}

#[test]
fn an_event_past_the_next_is_a_gap_and_changes_nothing() {
    let mut state = RevocationState::default();
    assert!(matches!(
        state.apply(&event(2, EventKind::TaskEnded, "t2")),
        Err(FeedError::Gap { expected: 1, found: 2 })
    ));
    assert_eq!(state, RevocationState::default());
    assert!(state.apply(&event(1, EventKind::TaskEnded, "t1")).unwrap());
    let before = state.clone();
    assert!(matches!(
        state.apply(&event(5, EventKind::TaskEnded, "t5")),
        Err(FeedError::Gap { expected: 2, found: 5 })
    ));
    assert_eq!(state, before);
    assert_eq!(state.check_task_token(&claims("t5", 0)), Ok(()));
}

#[test]
fn a_heartbeat_makes_the_state_current_only_when_caught_up_and_never_goes_back() {
    let mut state = RevocationState::default();
    assert!(state.observe(Heartbeat { at: 100, head: 0 }));
    assert_eq!(state.current_at(), Some(100));
    assert!(state.apply(&event(1, EventKind::TaskEnded, "t1")).unwrap());
    // The feed is at 2, we are at 1: not current as of 200.
    assert!(!state.observe(Heartbeat { at: 200, head: 2 }));
    assert_eq!(state.current_at(), Some(100));
    assert!(state.observe(Heartbeat { at: 150, head: 1 }));
    assert_eq!(state.current_at(), Some(150));
    // An old heartbeat replayed: caught up, but time stays.
    assert!(state.observe(Heartbeat { at: 120, head: 0 }));
    assert_eq!(state.current_at(), Some(150));
}

#[test]
fn a_blocking_risk_revokes_until_cleared_or_lowered() {
    let alice = claims(TASK, 0);
    let raised = event(1, EventKind::RiskRaised, "user:alice");
    let mut state = applied(std::slice::from_ref(&raised));
    assert_eq!(state.check_task_token(&alice), Err(Revoked::Risk("user:alice".into())));
    // Lowered below the threshold: the same subject, not blocking.
    assert!(state.apply(&RevocationEvent { seq: 2, blocking: false, ..raised.clone() }).unwrap());
    assert_eq!(state.check_task_token(&alice), Ok(()));
    assert!(state.apply(&RevocationEvent { seq: 3, ..raised.clone() }).unwrap());
    assert!(state.check_task_token(&alice).is_err());
    assert!(state.apply(&event(4, EventKind::RiskCleared, "user:alice")).unwrap());
    assert_eq!(state.check_task_token(&alice), Ok(()));
    // A risk that never blocked never revokes.
    let low = applied(&[RevocationEvent { blocking: false, ..raised }]);
    assert_eq!(low.check_task_token(&alice), Ok(()));
}

#[test]
fn risks_on_each_subject_kind_revoke_what_they_name() {
    let alice = claims(TASK, 0);
    let cases = [
        ("user:alice@https://idp.example", Err(Revoked::Risk("user:alice@https://idp.example".into()))),
        ("session:s1", Err(Revoked::Risk("session:s1".into()))),
        (&*format!("connector:{CONNECTOR}"), Err(Revoked::Risk(format!("connector:{CONNECTOR}")))),
        (&*format!("agent:{CONNECTOR}"), Err(Revoked::Risk(format!("agent:{CONNECTOR}")))),
        ("user:bob", Ok(())),
        ("user:alice@https://other-idp.example", Ok(())),
        ("alice", Ok(())),
    ];
    for (subject, expected) in cases {
        let state = applied(&[event(1, EventKind::RiskRaised, subject)]);
        assert_eq!(state.check_task_token(&alice), expected, "{subject}");
    }
    let agent = applied(&[event(1, EventKind::RiskRaised, &format!("agent:{AGENT}"))]);
    assert_eq!(agent.check_workload(AGENT, 0), Err(Revoked::Risk(format!("agent:{AGENT}"))));
}

#[test]
fn a_deleted_entry_revokes_only_what_was_issued_until_the_deletion() {
    // Deleted at 1_001.
    let mut state = applied(&[event(1, EventKind::EntryDeleted, CONNECTOR)]);
    let deleted = Err(Revoked::EntryDeleted(CONNECTOR.into()));
    assert_eq!(state.check_workload(CONNECTOR, 900), deleted);
    assert_eq!(state.check_workload(CONNECTOR, 1_001), deleted);
    assert_eq!(state.check_workload(CONNECTOR, 1_002), Ok(()));
    assert_eq!(state.check_task_token(&claims(TASK, 1_001)), deleted);
    assert_eq!(state.check_task_token(&claims(TASK, 1_002)), Ok(()));
    assert_eq!(state.check_workload("spiffe://example.org/connector/jira", 0), Ok(()));
    // A later event with an earlier time does not move the deletion back.
    assert!(state.apply(&RevocationEvent { at: 500, ..event(2, EventKind::EntryDeleted, CONNECTOR) }).unwrap());
    assert_eq!(state.check_workload(CONNECTOR, 1_001), deleted);
    // Deleted again later (the new entry too): later credentials go as well.
    assert!(state.apply(&RevocationEvent { at: 2_000, ..event(3, EventKind::EntryDeleted, CONNECTOR) }).unwrap());
    assert_eq!(state.check_workload(CONNECTOR, 1_500), deleted);
    assert_eq!(state.check_workload(CONNECTOR, 2_001), Ok(()));
}

#[test]
fn a_snapshot_is_the_state_its_events_make() {
    let at = 5_000;
    let snapshot = Snapshot {
        at,
        as_of: 7,
        ended_tasks: vec!["t1".into()],
        revoked_sessions: vec!["s9".into()],
        revoked_jtis: vec!["j1".into()],
        deleted_entries: vec![CONNECTOR.into()],
        banned_agents: vec![AGENT.into()],
        blocking_risks: vec!["user:bob".into()],
        revoked_keys: vec!["kid-1".into()],
    };
    let from_snapshot = RevocationState::from_snapshot(snapshot);
    assert_eq!((from_snapshot.seq(), from_snapshot.current_at()), (7, Some(at)));
    assert_eq!(from_snapshot.check_key("kid-1"), Err(Revoked::Key("kid-1".into())));
    assert_eq!(from_snapshot.check_key("kid-2"), Ok(()));

    let kinds = [
        (EventKind::TaskEnded, "t1"),
        (EventKind::SessionRevoked, "s9"),
        (EventKind::TokenRevoked, "j1"),
        (EventKind::EntryDeleted, CONNECTOR),
        (EventKind::AgentBanned, AGENT),
        (EventKind::RiskRaised, "user:bob"),
        (EventKind::KeyRevoked, "kid-1"),
    ];
    let events: Vec<_> =
        (1..).zip(kinds).map(|(seq, (kind, subject))| RevocationEvent { at, ..event(seq, kind, subject) }).collect();
    let mut replayed = applied(&events);
    assert!(replayed.observe(Heartbeat { at, head: 7 }));
    assert_eq!(from_snapshot, replayed);

    // The snapshot's time stands in for the deletion time.
    assert!(from_snapshot.check_workload(CONNECTOR, at).is_err());
    assert_eq!(from_snapshot.check_workload(CONNECTOR, at + 1), Ok(()));
    // And the feed continues after it.
    let mut state = from_snapshot;
    assert!(!state.apply(&event(7, EventKind::TaskEnded, "t7")).unwrap());
    assert!(matches!(state.apply(&event(9, EventKind::TaskEnded, "t9")), Err(FeedError::Gap { expected: 8, .. })));
    assert!(state.apply(&event(8, EventKind::TaskEnded, "t8")).unwrap());
    assert_eq!(state.check_task_token(&claims("t8", at + 1)), Err(Revoked::Task("t8".into())));
}

#[test]
fn a_session_revocation_ends_the_tasks_it_lists() {
    let revoked =
        RevocationEvent { tasks: vec!["t1".into(), "t2".into()], ..event(1, EventKind::SessionRevoked, "s1") };
    let state = applied(&[revoked]);
    // In the session: the session is the cause given, listed or not.
    for task in ["t1", "t3"] {
        assert_eq!(state.check_task_token(&claims(task, 0)), Err(Revoked::Session("s1".into())), "{task}");
    }
    // A listed task is ended wherever its token says it runs.
    let mut elsewhere = claims("t2", 0);
    elsewhere.sid = "s2".into();
    assert_eq!(state.check_task_token(&elsewhere), Err(Revoked::Task("t2".into())));
    elsewhere.txn = "t3".into();
    assert_eq!(state.check_task_token(&elsewhere), Ok(()));
}

#[test]
fn the_tasks_of_any_kind_of_event_are_ended() {
    let later = RevocationEvent { tasks: vec!["t1".into()], ..event(1, EventKind::from_name("later"), "x") };
    let ended = RevocationEvent { tasks: vec!["child".into()], ..event(2, EventKind::TaskEnded, "parent") };
    let state = applied(&[later, ended]);
    for task in ["t1", "parent", "child"] {
        assert_eq!(state.check_task_token(&claims(task, 0)), Err(Revoked::Task(task.into())));
    }
    assert_eq!(state.check_workload("x", 0), Ok(()));
}

#[test]
fn event_kinds_read_from_their_names() {
    let kinds = [
        ("task_ended", EventKind::TaskEnded),
        ("session_revoked", EventKind::SessionRevoked),
        ("risk_raised", EventKind::RiskRaised),
        ("risk_cleared", EventKind::RiskCleared),
        ("token_revoked", EventKind::TokenRevoked),
        ("entry_deleted", EventKind::EntryDeleted),
        ("agent_banned", EventKind::AgentBanned),
        ("Task_Ended", EventKind::Other("Task_Ended".into())),
    ];
    for (name, kind) in kinds {
        assert_eq!(EventKind::from_name(name), kind);
    }
}

#[test]
fn a_signed_snapshot_round_trips_into_the_state() {
    let f = Fixture::new();
    let jws = f.snapshot(serde_json::json!({
        "as_of": 4,
        "ended_tasks": [TASK],
        "revoked_sessions": ["s9"],
        "revoked_jtis": ["j1"],
        "deleted_entries": ["spiffe://example.org/connector/jira"],
        "banned_agents": [AGENT],
        "risks": [{"subject": "user:bob", "blocking": true}, {"subject": "user:carol", "blocking": false},
                  {"subject": "user:dave"}],
    }));
    let snapshot = crate::feed::verify_snapshot(&jws, &f.bundle).unwrap();
    // A risk without `blocking` is taken as blocking (fail closed).
    assert_eq!(snapshot.blocking_risks, ["user:bob", "user:dave"]);
    let state = RevocationState::from_snapshot(snapshot);
    assert_eq!((state.seq(), state.current_at()), (4, Some(f.now_secs())));
    assert_eq!(state.check_task_token(&claims(TASK, 0)), Err(Revoked::Task(TASK.into())));
    assert_eq!(state.check_token("j1"), Err(Revoked::Token("j1".into())));
    assert_eq!(state.check_workload(AGENT, 0), Err(Revoked::AgentBanned(AGENT.into())));
    for (user, expected) in [("bob", Err(Revoked::Risk("user:bob".into()))), ("carol", Ok(()))] {
        let mut other = claims("t2", 0);
        other.user.sub = user.into();
        assert_eq!(state.check_task_token(&other), expected, "{user}");
    }
    let jira = "spiffe://example.org/connector/jira";
    assert_eq!(state.check_workload(jira, f.now_secs()), Err(Revoked::EntryDeleted(jira.into())));
    assert_eq!(state.check_workload(jira, f.now_secs() + 1), Ok(()));
}
