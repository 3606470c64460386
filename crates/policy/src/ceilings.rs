//! The Rust half of every decision: a task never exceeds its connector's
//! registration entry, a token never exceeds its task, a child task never
//! exceeds its parent. These checks run before Cedar and cannot be relaxed by
//! a policy.
//!
//! Each check returns the first failure in a fixed order, so an audit record
//! (and a test) always names the same reason for the same request.

use std::time::Duration;

use lanyard_core::task::{MAX_DELEGATION_DEPTH, MAX_TASK_TTL};
use lanyard_core::{Action, Audience, Classification, Entry, SpiffeId, Task, Tool};
use serde::{Deserialize, Serialize};

use crate::error::Deny;
use crate::risk::{OpenRisks, RiskLevel};

/// Configurable threshold: open risk at or above it denies (default Low = any open risk denies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ceilings {
    /// The lowest open risk level that refuses a request.
    pub risk_threshold: RiskLevel,
}

impl Default for Ceilings {
    fn default() -> Self {
        Self { risk_threshold: RiskLevel::Low }
    }
}

/// Beginning a task (admin or orchestrator): the task's tools ⊆ connector entry tools, audiences ⊆ entry
/// audiences, classification ≤ entry max, ttl ≤ MAX_TASK_TTL, tools non-empty, audiences non-empty, session
/// not revoked, no open risk ≥ threshold. When `orchestrator` is Some(entry) it must have task_authority.
#[derive(Clone, Copy, Debug)]
pub struct BeginRequest<'a> {
    /// The entry of the connector that will serve the task.
    pub connector: &'a Entry,
    /// The orchestrator's entry when a workload begins the task; `None` for an admin.
    pub orchestrator: Option<&'a Entry>,
    /// The task's tools.
    pub tools: &'a [Tool],
    /// The task's audiences.
    pub audiences: &'a [Audience],
    /// The task's classification.
    pub classification: Classification,
    /// How long the task lives.
    pub ttl: Duration,
    /// Whether the user's session is revoked.
    pub session_revoked: bool,
    /// Open risks on the user, connector, agent and session.
    pub risks: OpenRisks,
}

/// A task-token request at the moment it is made.
#[derive(Clone, Copy, Debug)]
pub struct TokenRequest<'a> {
    /// The caller's entry; its `spiffe_id` is the caller identity.
    pub connector: &'a Entry,
    /// The task the token is for.
    pub task: &'a Task,
    /// The tasks it was delegated from, parent first, root last; every one must be active.
    pub ancestors: &'a [Task],
    /// The requested tools (non-empty).
    pub tools: &'a [Tool],
    /// The token's single audience.
    pub audience: &'a Audience,
    /// The requested action.
    pub action: Action,
    /// The node agent that attested the caller.
    pub agent: &'a SpiffeId,
    /// Whether the task's session is revoked.
    pub session_revoked: bool,
    /// Open risks on the user, connector, agent and session.
    pub risks: OpenRisks,
    /// Unix seconds now.
    pub now_unix: u64,
}

/// Delegation: connector A (entry `from`, holding `parent`) starts a child task for connector B (entry `to`).
#[derive(Clone, Copy, Debug)]
pub struct DelegateRequest<'a> {
    /// The task A holds.
    pub parent: &'a Task,
    /// The parent's ancestors, its parent first, root last.
    pub ancestors: &'a [Task],
    /// A's entry (the caller).
    pub from: &'a Entry,
    /// B's entry.
    pub to: &'a Entry,
    /// The child's tools.
    pub tools: &'a [Tool],
    /// The child's audiences.
    pub audiences: &'a [Audience],
    /// How long the child lives.
    pub ttl: Duration,
    /// Whether the session is revoked.
    pub session_revoked: bool,
    /// Open risks on the user, connector (A), agent and session.
    pub risks: OpenRisks,
    /// Unix seconds now.
    pub now_unix: u64,
}

impl Ceilings {
    /// Checks a task begin. Order: task authority, session, risks, TTL, tools (non-empty, within the
    /// entry), audiences (non-empty, within the entry), classification.
    pub fn check_begin(&self, r: &BeginRequest<'_>) -> Result<(), Deny> {
        if r.orchestrator.is_some_and(|o| !o.task_authority) {
            return Err(Deny::NotTaskAuthority);
        }
        self.check_session_and_risks(r.session_revoked, &r.risks)?;
        if r.ttl > MAX_TASK_TTL {
            return Err(Deny::TtlTooLong);
        }
        within(r.tools, None, &r.connector.tools, Deny::NoTools, Deny::ToolOutsideTask, Deny::ToolOutsideEntry)?;
        within(
            r.audiences,
            None,
            &r.connector.audiences,
            Deny::NoAudiences,
            Deny::AudienceNotInTask,
            Deny::AudienceNotInEntry,
        )?;
        classification_within(r.classification, r.connector)
    }

    /// Checks a task-token request. Order: task ended, expired, ancestors (active, same user), connector
    /// bound to the task, session, risks (user, connector, agent, session), tools (non-empty, each in the
    /// task then in the entry), audience (task, then entry), action, classification.
    pub fn check_token(&self, r: &TokenRequest<'_>) -> Result<(), Deny> {
        check_chain(r.task, r.ancestors, r.now_unix)?;
        if r.connector.spiffe_id != r.task.connector {
            return Err(Deny::WrongConnector { task: r.task.connector.clone(), caller: r.connector.spiffe_id.clone() });
        }
        self.check_session_and_risks(r.session_revoked, &r.risks)?;
        within(
            r.tools,
            Some(&r.task.tools),
            &r.connector.tools,
            Deny::NoTools,
            Deny::ToolOutsideTask,
            Deny::ToolOutsideEntry,
        )?;
        if !r.task.audiences.contains(r.audience) {
            return Err(Deny::AudienceNotInTask(r.audience.clone()));
        }
        if !r.connector.audiences.contains(r.audience) {
            return Err(Deny::AudienceNotInEntry(r.audience.clone()));
        }
        if r.action != r.task.action {
            return Err(Deny::ActionNotInTask { requested: r.action, task: r.task.action });
        }
        classification_within(r.task.classification, r.connector)
    }

    /// Checks a delegation. Order: parent (and its ancestors) active, caller bound to the parent,
    /// session, risks, `delegate_to`, depth, tools (non-empty, in the parent, in B's entry),
    /// audiences (likewise), classification against B's entry, lifetime.
    pub fn check_delegate(&self, r: &DelegateRequest<'_>) -> Result<(), Deny> {
        check_chain(r.parent, r.ancestors, r.now_unix)?;
        if r.from.spiffe_id != r.parent.connector {
            return Err(Deny::WrongConnector { task: r.parent.connector.clone(), caller: r.from.spiffe_id.clone() });
        }
        self.check_session_and_risks(r.session_revoked, &r.risks)?;
        if !r.from.delegate_to.iter().any(|p| p.matches(&r.to.spiffe_id)) {
            return Err(Deny::DelegateNotAllowed(r.to.spiffe_id.clone()));
        }
        let depth = r.parent.depth().saturating_add(1);
        if depth > MAX_DELEGATION_DEPTH {
            return Err(Deny::DepthExceeded { depth });
        }
        within(
            r.tools,
            Some(&r.parent.tools),
            &r.to.tools,
            Deny::NoTools,
            Deny::ToolOutsideTask,
            Deny::ToolOutsideEntry,
        )?;
        within(
            r.audiences,
            Some(&r.parent.audiences),
            &r.to.audiences,
            Deny::NoAudiences,
            Deny::AudienceNotInTask,
            Deny::AudienceNotInEntry,
        )?;
        classification_within(r.parent.classification, r.to)?;
        // Round a sub-second remainder up: the child may end at the parent's second, never after.
        let ttl_secs = r.ttl.as_secs().saturating_add(u64::from(r.ttl.subsec_nanos() > 0));
        if r.ttl > MAX_TASK_TTL || r.now_unix.saturating_add(ttl_secs) > r.parent.expires_at {
            return Err(Deny::TtlTooLong);
        }
        Ok(())
    }

    fn check_session_and_risks(&self, session_revoked: bool, risks: &OpenRisks) -> Result<(), Deny> {
        if session_revoked {
            return Err(Deny::SessionRevoked);
        }
        for (subject, level) in risks.by_subject() {
            if let Some(level) = level.filter(|l| *l >= self.risk_threshold) {
                return Err(Deny::OpenRisk { subject, level });
            }
        }
        Ok(())
    }
}

/// The task is active, every ancestor is active, and the chain keeps one user.
fn check_chain(task: &Task, ancestors: &[Task], now_unix: u64) -> Result<(), Deny> {
    if task.ended_at.is_some() {
        return Err(Deny::TaskEnded);
    }
    if !task.is_active(now_unix) {
        return Err(Deny::TaskExpired);
    }
    if let Some(a) = ancestors.iter().find(|a| !a.is_active(now_unix)) {
        return Err(Deny::AncestorEnded(a.id));
    }
    if ancestors.iter().any(|a| a.user != task.user) {
        return Err(Deny::UserMismatch);
    }
    Ok(())
}

/// `requested` is non-empty, and each item is in `scope` (the task or parent,
/// when there is one) and then in `ceiling` (the entry).
fn within<T: PartialEq + Clone>(
    requested: &[T],
    scope: Option<&[T]>,
    ceiling: &[T],
    empty: Deny,
    outside_scope: fn(T) -> Deny,
    outside_ceiling: fn(T) -> Deny,
) -> Result<(), Deny> {
    if requested.is_empty() {
        return Err(empty);
    }
    for item in requested {
        if scope.is_some_and(|s| !s.contains(item)) {
            return Err(outside_scope(item.clone()));
        }
        if !ceiling.contains(item) {
            return Err(outside_ceiling(item.clone()));
        }
    }
    Ok(())
}

fn classification_within(requested: Classification, entry: &Entry) -> Result<(), Deny> {
    if requested > entry.max_classification {
        return Err(Deny::ClassificationAboveCeiling { requested, ceiling: entry.max_classification });
    }
    Ok(())
}
