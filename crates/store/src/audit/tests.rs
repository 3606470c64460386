//! The audit chain's canonical form, linking and verification, without a store.

use super::*;
use serde_json::json;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        at: 1_700_000_000 + n,
        kind: "entry.create".into(),
        actor: "admin:uid=0".into(),
        subject: format!("e{n}"),
        detail: json!({"z": 1, "a": [true, null, "x\"\n\u{1}"], "m": {"b": 1.5, "a": -2}}),
        ..AuditEvent::default()
    }
}

fn chain(n: u64) -> Vec<AuditRecord> {
    let mut head = ChainHead::GENESIS;
    (1..=n)
        .map(|i| {
            let r = head.next(event(i));
            head = ChainHead::after(&r);
            r
        })
        .collect()
}

#[test]
fn canonical_form_sorts_keys_and_matches_serde_json_escaping() {
    let e = event(1);
    let canon = canonical_event(&e);
    assert_eq!(
        canon,
        r#"{"actor":"admin:uid=0","at":1700000001,"detail":{"a":[true,null,"x\"\n\u0001"],"m":{"a":-2,"b":1.5},"z":1},"kind":"entry.create","subject":"e1"}"#
    );
    // Same value built in another key order hashes the same.
    let mut other = e.clone();
    other.detail = json!({"m": {"a": -2, "b": 1.5}, "z": 1, "a": [true, null, "x\"\n\u{1}"]});
    assert_eq!(canonical_event(&other), canon);
    // And it is JSON that decodes back to the event.
    assert_eq!(serde_json::from_str::<AuditEvent>(&canon).unwrap(), e);
}

fn full_context() -> AuditContext {
    AuditContext {
        decision: Some("deny".into()),
        reason: Some("tool \"x\" outside the task".into()),
        policies: vec!["p2".into(), "p1".into()],
        connector: Some(SpiffeId::parse("spiffe://example.org/connector/gh").unwrap()),
        user: Some(User { iss: "https://idp.example".parse().unwrap(), sub: "alice".parse().unwrap() }),
        session: Some("s-1".parse().unwrap()),
        task: Some(TaskId::from_bytes([7; 16])),
        tools: vec!["gh.read".parse().unwrap(), "gh.list".parse().unwrap()],
        action: Some(Action::Read),
        audience: Some("https://api.example".parse().unwrap()),
        agent: Some(SpiffeId::parse("spiffe://example.org/agent/n1").unwrap()),
        jti_hash: Some("ab".repeat(32)),
    }
}

/// The canonical form of `value`, by the generic writer.
fn canonical_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

#[test]
fn context_canonical_form_is_serde_json_with_sorted_keys() {
    let full = full_context();
    let mut partials = vec![AuditContext::default(), full.clone()];
    // Each field alone, so that every member is checked in isolation.
    let only = |f: fn(&mut AuditContext, &AuditContext)| {
        let mut c = AuditContext::default();
        f(&mut c, &full);
        c
    };
    partials.push(only(|c, f| c.user = f.user.clone()));
    partials.push(only(|c, f| c.tools = f.tools.clone()));
    partials.push(only(|c, f| c.task = f.task));
    partials.push(only(|c, f| c.jti_hash = f.jti_hash.clone()));
    partials.push(only(|c, f| {
        c.policies = f.policies.clone();
        c.action = f.action;
    }));
    for ctx in partials {
        let mut hand = String::new();
        write_context(&ctx, &mut hand);
        let generic = canonical_value(&serde_json::to_value(&ctx).unwrap());
        assert_eq!(hand, generic, "{ctx:?}");
        assert_eq!(serde_json::from_str::<AuditContext>(&hand).unwrap(), ctx);
    }
    let e = AuditEvent { context: full, ..event(1) };
    let canon = canonical_event(&e);
    assert!(
        canon.starts_with(r#"{"actor":"admin:uid=0","at":1700000001,"context":{"action":"read","agent":"#),
        "{canon}"
    );
    assert!(canon.contains(r#""tools":["gh.read","gh.list"],"user":{"iss":"https://idp.example","sub":"alice"}}"#));
    assert_eq!(serde_json::from_str::<AuditEvent>(&canon).unwrap(), e);
    assert_eq!(canon, canonical_value(&serde_json::to_value(&e).unwrap()));
}

#[test]
fn an_empty_context_is_left_out_and_a_set_one_is_hashed() {
    let plain = event(1);
    assert!(!serde_json::to_string(&plain).unwrap().contains("context"));
    let with_user =
        AuditEvent { context: AuditContext { user: full_context().user, ..Default::default() }, ..event(1) };
    assert_ne!(chain_hash(&GENESIS_HASH, 1, &plain), chain_hash(&GENESIS_HASH, 1, &with_user));
    let mut other_user = with_user.clone();
    if let Some(u) = &mut other_user.context.user {
        u.sub = "bob".parse().unwrap();
    }
    assert_ne!(chain_hash(&GENESIS_HASH, 1, &with_user), chain_hash(&GENESIS_HASH, 1, &other_user));
    // Connector and user stay apart: the same string in the other field hashes differently.
    let id = SpiffeId::parse("spiffe://example.org/x").unwrap();
    let as_connector = AuditContext { connector: Some(id.clone()), ..Default::default() };
    let as_agent = AuditContext { agent: Some(id), ..Default::default() };
    assert_ne!(
        chain_hash(&GENESIS_HASH, 1, &AuditEvent { context: as_connector, ..event(1) }),
        chain_hash(&GENESIS_HASH, 1, &AuditEvent { context: as_agent, ..event(1) })
    );
}

#[test]
fn filters_match_context_fields() {
    let e = AuditEvent { context: full_context(), ..event(5) };
    let task = TaskId::from_bytes([7; 16]);
    assert!(AuditFilter::default().matches(&e));
    assert!(AuditFilter { task: Some(task), user_sub: Some("alice".into()), ..Default::default() }.matches(&e));
    assert!(!AuditFilter { task: Some(TaskId::from_bytes([8; 16])), ..Default::default() }.matches(&e));
    assert!(!AuditFilter { user_sub: Some("https://idp.example".into()), ..Default::default() }.matches(&e));
    assert!(AuditFilter { since: Some(e.at), kind: Some("entry.create".into()), ..Default::default() }.matches(&e));
    assert!(!AuditFilter { since: Some(e.at + 1), ..Default::default() }.matches(&e));
    assert!(!AuditFilter { kind: Some("entry".into()), ..Default::default() }.matches(&e));
    let connector = full_context().connector;
    assert!(AuditFilter { connector: connector.clone(), ..Default::default() }.matches(&e));
    assert!(!AuditFilter { connector, ..Default::default() }.matches(&event(5)));
}

#[test]
fn records_link_and_verify() {
    let records = chain(3);
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    assert_eq!(records[1].prev_hash, records[0].hash);
    let mut walker = ChainWalker::new();
    for r in &records {
        walker.check(r.seq, serde_json::to_value(r).unwrap()).unwrap();
    }
    let report = walker.finish(3).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(report.head, records[2].hash);
}

#[test]
fn hashes_are_hex_in_json() {
    let r = &chain(1)[0];
    let v = serde_json::to_value(r).unwrap();
    assert_eq!(v["prev_hash"], json!("0".repeat(64)));
    assert_eq!(serde_json::from_value::<AuditRecord>(v).unwrap(), *r);
}

fn broken_at(records: &[AuditRecord], keys: &[u64], bodies: &[Vec<u8>]) -> (u64, String) {
    let mut walker = ChainWalker::new();
    for (k, b) in keys.iter().zip(bodies) {
        // An undecodable line is refused by the log reader, before the walker.
        let Ok(value) = serde_json::from_slice(b) else {
            return (*k, "record does not decode".into());
        };
        if let Err(StoreError::ChainBroken { seq, reason }) = walker.check(*k, value) {
            return (seq, reason);
        }
    }
    match walker.finish(records.len() as u64) {
        Err(StoreError::ChainBroken { seq, reason }) => (seq, reason),
        other => panic!("chain verified: {other:?}"),
    }
}

#[test]
fn each_kind_of_tampering_is_caught() {
    let records = chain(3);
    let bodies: Vec<Vec<u8>> = records.iter().map(|r| serde_json::to_vec(r).unwrap()).collect();

    let mut edited = records[1].clone();
    edited.event.actor = "mallory".into();
    let mut b = bodies.clone();
    b[1] = serde_json::to_vec(&edited).unwrap();
    let (seq, reason) = broken_at(&records, &[1, 2, 3], &b);
    assert_eq!((seq, reason.contains("hash does not match")), (2, true));

    // Re-hashing the edited record moves the break to the next link.
    edited.hash = chain_hash(&edited.prev_hash, 2, &edited.event);
    b[1] = serde_json::to_vec(&edited).unwrap();
    let (seq, reason) = broken_at(&records, &[1, 2, 3], &b);
    assert_eq!((seq, reason.contains("prev_hash")), (3, true));

    let (seq, _) = broken_at(&records, &[1, 3], &[bodies[0].clone(), bodies[2].clone()]);
    assert_eq!(seq, 2, "gap");
    let (seq, _) = broken_at(&records, &[1, 2], &bodies[..2]);
    assert_eq!(seq, 3, "truncated tail");
    let (seq, _) = broken_at(&records, &[1], &[b"{".to_vec()]);
    assert_eq!(seq, 1, "undecodable");
    let (seq, _) = broken_at(&records, &[1, 2], &[bodies[0].clone(), bodies[2].clone()]);
    assert_eq!(seq, 2, "record under the wrong key");

    // Members serde would skip are not covered by the hash: refused.
    let mut b = bodies.clone();
    let mut v: Value = serde_json::from_slice(&b[1]).unwrap();
    v["event"]["admin"] = json!(true);
    b[1] = serde_json::to_vec(&v).unwrap();
    let (seq, reason) = broken_at(&records, &[1, 2, 3], &b);
    assert_eq!((seq, reason.contains("does not cover")), (2, true), "{reason}");
}

#[test]
fn fields_added_inside_the_context_are_caught() {
    let mut head = ChainHead::GENESIS;
    let record = head.next(AuditEvent { context: full_context(), ..event(1) });
    head = ChainHead::after(&record);
    let mut v = serde_json::to_value(&record).unwrap();
    v["event"]["context"]["user"]["role"] = json!("admin");
    let mut walker = ChainWalker::new();
    let err = walker.check(1, v.clone()).unwrap_err();
    assert!(matches!(&err, StoreError::ChainBroken { seq: 1, reason } if reason.contains("does not cover")), "{err}");
    // The untouched record verifies.
    let mut walker = ChainWalker::new();
    walker.check(1, serde_json::to_value(&record).unwrap()).unwrap();
    assert_eq!(walker.finish(1).unwrap().head, head.hash);
}
