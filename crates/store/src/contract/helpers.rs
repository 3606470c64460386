//! Builders and readers the contract tests and the sled-only tests share.

use std::sync::Arc;

use lanyard_core::{
    Action, Classification, EndReason, Entry, EntryId, Selector, SessionId, SpiffeId, Task, TaskId, User,
};
use serde_json::json;

use crate::{AgentRecord, AuditContext, AuditEvent, EntryChanges, RiskRecord, RiskSubject, Store};

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org/{s}")).unwrap()
}

pub(crate) fn eid(s: &str) -> EntryId {
    EntryId::parse(s).unwrap()
}

pub(crate) fn entry(entry_id: &str, parent: &str) -> Entry {
    Entry {
        id: eid(entry_id),
        spiffe_id: id(&format!("connector/{entry_id}")),
        parent_id: id(&format!("agent/{parent}")),
        selectors: vec![Selector::Uid(1000)],
        x509_ttl: "1h".parse().unwrap(),
        jwt_ttl: "5m".parse().unwrap(),
        dns_names: vec![],
        expires_at: None,
        hint: String::new(),
        revision: 0,
        tools: vec![],
        audiences: vec![],
        max_classification: lanyard_core::Classification::Public,
        delegate_to: vec![],
        task_authority: false,
    }
}

pub(crate) fn event(kind: &str) -> AuditEvent {
    AuditEvent {
        at: 1_700_000_000,
        kind: kind.into(),
        actor: "admin:uid=0".into(),
        subject: "test".into(),
        detail: json!({"k": kind}),
        ..AuditEvent::default()
    }
}

pub(crate) fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

pub(crate) fn removed(changes: &EntryChanges) -> Vec<&str> {
    changes.removed.iter().map(EntryId::as_str).collect()
}

pub(crate) async fn audit_count(store: &dyn Store) -> u64 {
    store.verify_audit_chain().await.unwrap().records
}

/// Appends `n` events from `n` concurrent tasks; returns their seqs, sorted.
pub(crate) async fn append_concurrently<S: Store + ?Sized>(store: &Arc<S>, n: usize) -> Vec<u64> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.append_audit(event(&format!("e{i}"))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap().seq);
    }
    seqs.sort_unstable();
    seqs
}

pub(crate) fn tid(n: u8) -> TaskId {
    TaskId::from_bytes([n; 16])
}

pub(crate) fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

/// Task `n` of `connector/<connector>` in `session`, alive from 1000 to 2000.
pub(crate) fn task(n: u8, connector: &str, session: &str, parent: Option<u8>) -> Task {
    Task {
        id: tid(n),
        connector: id(&format!("connector/{connector}")),
        user: User { iss: "https://idp.example".parse().unwrap(), sub: "alice".parse().unwrap() },
        session: sid(session),
        tools: vec!["gh.read".parse().unwrap()],
        audiences: vec!["https://api.example".parse().unwrap()],
        classification: Classification::Internal,
        action: Action::Read,
        created_at: 1000,
        expires_at: 2000,
        ended_at: None,
        end_reason: None,
        parent: parent.map(tid),
        chain: vec![],
        begun_by: "admin:uid=0".into(),
    }
}

pub(crate) fn task_ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

pub(crate) async fn end_state(store: &dyn Store, n: u8) -> (Option<u64>, Option<EndReason>) {
    let t = store.get_task(&tid(n)).await.unwrap().unwrap();
    (t.ended_at, t.end_reason)
}

pub(crate) fn user(sub: &str, iss: Option<&str>) -> RiskSubject {
    RiskSubject::User { sub: sub.into(), iss: iss.map(Into::into) }
}

pub(crate) fn risk(subject: RiskSubject, level: &str) -> RiskRecord {
    RiskRecord {
        subject,
        level: level.into(),
        reason: format!("{level} risk"),
        reported_at: 1_700_000_000,
        reported_by: "admin:uid=0".into(),
    }
}

pub(crate) fn agent(name: &str) -> AgentRecord {
    AgentRecord {
        spiffe_id: id(&format!("agent/{name}")),
        name: name.into(),
        attested_at: 1,
        svid_serial: "01".into(),
        svid_expires_at: 2,
        banned: false,
        last_seen: 3,
        previous_svid: None,
    }
}

/// `(subject, level)` of each record.
pub(crate) fn levels(risks: &[RiskRecord]) -> Vec<(String, &str)> {
    risks.iter().map(|r| (r.subject.to_string(), r.level.as_str())).collect()
}

pub(crate) fn pairs(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(s, l)| ((*s).to_owned(), *l)).collect()
}

pub(crate) fn ctx_event(kind: &str, at: u64, task: u8, sub: &str, connector: &str) -> AuditEvent {
    AuditEvent {
        at,
        context: AuditContext {
            decision: Some("allow".into()),
            policies: vec!["ceilings".into()],
            connector: Some(id(&format!("connector/{connector}"))),
            user: Some(User { iss: "https://idp.example".parse().unwrap(), sub: sub.parse().unwrap() }),
            session: Some(sid("s1")),
            task: Some(tid(task)),
            tools: vec!["gh.read".parse().unwrap()],
            action: Some(Action::Read),
            audience: Some("https://api.example".parse().unwrap()),
            agent: Some(id("agent/n1")),
            jti_hash: Some("00".repeat(32)),
            ..AuditContext::default()
        },
        ..event(kind)
    }
}

pub(crate) fn seqs(records: &[crate::AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

pub(crate) fn blocking() -> Vec<String> {
    ["low", "medium", "high"].map(String::from).to_vec()
}
