//! Owned fixtures that lend out the borrowed request types.

use std::path::PathBuf;
use std::time::Duration;

use lanyard_core::{
    Action, Audience, Classification, DelegatePattern, Entry, EntryId, SpiffeId, Task, TaskId, Tool, User,
};
use lanyard_policy::{BeginRequest, DelegateRequest, OpenRisks, TokenRequest};

/// Monday 2024-01-01 14:00:00 UTC.
pub(crate) const NOW: u64 = 1_704_117_600;
/// One day.
pub(crate) const DAY: u64 = 86_400;

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(crate) fn tool(s: &str) -> Tool {
    Tool::parse(s).unwrap()
}

pub(crate) fn aud(s: &str) -> Audience {
    Audience::parse(s).unwrap()
}

pub(crate) fn tools(names: &[&str]) -> Vec<Tool> {
    names.iter().map(|n| tool(n)).collect()
}

pub(crate) fn user(sub: &str) -> User {
    User { iss: "https://idp.example".parse().unwrap(), sub: sub.parse().unwrap() }
}

pub(crate) const GITHUB: &str = "spiffe://example.org/connector/github";
pub(crate) const JIRA: &str = "spiffe://example.org/connector/jira";
pub(crate) const AGENT: &str = "spiffe://example.org/agent/node1";

pub(crate) fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// A connector entry with two tools, one audience and a `confidential` ceiling.
pub(crate) fn entry(spiffe_id: &str) -> Entry {
    Entry {
        id: EntryId::parse("e1").unwrap(),
        spiffe_id: id(spiffe_id),
        parent_id: id(AGENT),
        selectors: vec!["unix:uid:1000".parse().unwrap()],
        x509_ttl: "1h".parse().unwrap(),
        jwt_ttl: "5m".parse().unwrap(),
        dns_names: vec![],
        expires_at: None,
        hint: String::new(),
        revision: 1,
        tools: tools(&["github.search", "github.create_issue"]),
        audiences: vec![aud("api.github.com")],
        max_classification: Classification::Confidential,
        delegate_to: vec![],
        task_authority: false,
    }
}

/// A root task for alice, begun a minute ago, ending in ten.
pub(crate) fn task(connector: &str, seed: u8) -> Task {
    Task {
        id: TaskId::from_bytes([seed; 16]),
        connector: id(connector),
        user: user("alice"),
        session: "s1".parse().unwrap(),
        tools: tools(&["github.search", "github.create_issue"]),
        audiences: vec![aud("api.github.com")],
        classification: Classification::Internal,
        action: Action::Read,
        created_at: NOW - 60,
        expires_at: NOW + 600,
        ended_at: None,
        end_reason: None,
        parent: None,
        chain: vec![],
        begun_by: "admin:uid=0".into(),
    }
}

pub(crate) struct TokenCase {
    pub(crate) entry: Entry,
    pub(crate) task: Task,
    pub(crate) ancestors: Vec<Task>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) audience: Audience,
    pub(crate) action: Action,
    pub(crate) agent: SpiffeId,
    pub(crate) session_revoked: bool,
    pub(crate) risks: OpenRisks,
    pub(crate) now: u64,
}

impl TokenCase {
    /// A request every ceiling allows: one tool of the task, its audience and action.
    pub(crate) fn new() -> Self {
        Self {
            entry: entry(GITHUB),
            task: task(GITHUB, 1),
            ancestors: vec![],
            tools: tools(&["github.search"]),
            audience: aud("api.github.com"),
            action: Action::Read,
            agent: id(AGENT),
            session_revoked: false,
            risks: OpenRisks::default(),
            now: NOW,
        }
    }

    pub(crate) fn request(&self) -> TokenRequest<'_> {
        TokenRequest {
            connector: &self.entry,
            task: &self.task,
            ancestors: &self.ancestors,
            tools: &self.tools,
            audience: &self.audience,
            action: self.action,
            agent: &self.agent,
            session_revoked: self.session_revoked,
            risks: self.risks,
            now_unix: self.now,
        }
    }
}

pub(crate) struct BeginCase {
    pub(crate) connector: Entry,
    pub(crate) orchestrator: Option<Entry>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) audiences: Vec<Audience>,
    pub(crate) classification: Classification,
    pub(crate) ttl: Duration,
    pub(crate) session_revoked: bool,
    pub(crate) risks: OpenRisks,
}

impl BeginCase {
    /// An orchestrator with task authority begins a task within the connector's ceilings.
    pub(crate) fn new() -> Self {
        let mut orchestrator = entry("spiffe://example.org/orchestrator");
        orchestrator.task_authority = true;
        Self {
            connector: entry(GITHUB),
            orchestrator: Some(orchestrator),
            tools: tools(&["github.search"]),
            audiences: vec![aud("api.github.com")],
            classification: Classification::Internal,
            ttl: Duration::from_secs(600),
            session_revoked: false,
            risks: OpenRisks::default(),
        }
    }

    pub(crate) fn request(&self) -> BeginRequest<'_> {
        BeginRequest {
            connector: &self.connector,
            orchestrator: self.orchestrator.as_ref(),
            tools: &self.tools,
            audiences: &self.audiences,
            classification: self.classification,
            ttl: self.ttl,
            session_revoked: self.session_revoked,
            risks: self.risks,
        }
    }
}

pub(crate) struct DelegateCase {
    pub(crate) parent: Task,
    pub(crate) ancestors: Vec<Task>,
    pub(crate) from: Entry,
    pub(crate) to: Entry,
    pub(crate) tools: Vec<Tool>,
    pub(crate) audiences: Vec<Audience>,
    pub(crate) ttl: Duration,
    pub(crate) session_revoked: bool,
    pub(crate) risks: OpenRisks,
    pub(crate) now: u64,
}

impl DelegateCase {
    /// github (holding a root task) hands `github.search` to jira for five minutes.
    pub(crate) fn new() -> Self {
        let mut from = entry(GITHUB);
        from.delegate_to = vec![DelegatePattern::parse(JIRA).unwrap()];
        Self {
            parent: task(GITHUB, 1),
            ancestors: vec![],
            from,
            to: entry(JIRA),
            tools: tools(&["github.search"]),
            audiences: vec![aud("api.github.com")],
            ttl: Duration::from_secs(300),
            session_revoked: false,
            risks: OpenRisks::default(),
            now: NOW,
        }
    }

    pub(crate) fn request(&self) -> DelegateRequest<'_> {
        DelegateRequest {
            parent: &self.parent,
            ancestors: &self.ancestors,
            from: &self.from,
            to: &self.to,
            tools: &self.tools,
            audiences: &self.audiences,
            ttl: self.ttl,
            session_revoked: self.session_revoked,
            risks: self.risks,
            now_unix: self.now,
        }
    }
}

/// A chain of `depth` delegations ending at a task for `connector`: (task, ancestors parent-first).
pub(crate) fn chain(connector: &str, depth: usize) -> (Task, Vec<Task>) {
    let mut tasks: Vec<Task> = Vec::new();
    for d in 0..=depth {
        let mut t = task(connector, d as u8 + 10);
        t.chain = (0..d).map(|i| id(&format!("spiffe://example.org/connector/c{i}"))).collect();
        t.parent = tasks.last().map(|p| p.id);
        tasks.push(t);
    }
    let leaf = tasks.pop().unwrap();
    tasks.reverse();
    (leaf, tasks)
}
