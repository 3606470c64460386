//! Refusals and load errors.

use std::path::PathBuf;

use lanyard_core::task::MAX_DELEGATION_DEPTH;
use lanyard_core::{Action, Audience, Classification, SpiffeId, TaskId, Tool};

use crate::risk::{RiskLevel, RiskSubjectKind};

/// Why a request is refused. Display is the reason an operator reads in the audit log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Deny {
    /// A requested tool (or a child task's tool) is not one of the task's (the parent's) tools.
    #[error("tool {0} is not in the task")]
    ToolOutsideTask(Tool),
    /// A tool is not in the connector's entry ceiling; the entry was narrowed after the task began.
    #[error("tool {0} is not in the connector's entry")]
    ToolOutsideEntry(Tool),
    /// The request names no tool.
    #[error("the request names no tool")]
    NoTools,
    /// A task (or child task) is begun without any audience.
    #[error("the request names no audience")]
    NoAudiences,
    /// The audience is not one of the task's (the parent's) audiences.
    #[error("audience {0} is not in the task")]
    AudienceNotInTask(Audience),
    /// The audience is not in the connector's entry ceiling.
    #[error("audience {0} is not in the connector's entry")]
    AudienceNotInEntry(Audience),
    /// The task's data is more sensitive than the connector's entry allows.
    #[error("classification {requested} is above the connector's ceiling {ceiling}")]
    ClassificationAboveCeiling {
        /// The task's classification.
        requested: Classification,
        /// The entry's `max_classification`.
        ceiling: Classification,
    },
    /// The token asks for another action than the one the task was begun for.
    #[error("action {requested} is not the task's action {task}")]
    ActionNotInTask {
        /// What the request asks for.
        requested: Action,
        /// What the task allows.
        task: Action,
    },
    /// The task was ended (by its orchestrator, an admin, an ancestor or a session revocation).
    #[error("the task has ended")]
    TaskEnded,
    /// The task outlived its TTL.
    #[error("the task has expired")]
    TaskExpired,
    /// A task this one was delegated from has ended or expired.
    #[error("ancestor task {0} is no longer active")]
    AncestorEnded(TaskId),
    /// The caller is not the connector the task is bound to.
    #[error("the task is bound to {task}, not to the caller {caller}")]
    WrongConnector {
        /// The task's connector.
        task: SpiffeId,
        /// Who asked.
        caller: SpiffeId,
    },
    /// The user's session was revoked.
    #[error("the session is revoked")]
    SessionRevoked,
    /// A risk report at or above the threshold is open on one of the subjects.
    #[error("open {level} risk on the {subject}")]
    OpenRisk {
        /// Which subject the report is about.
        subject: RiskSubjectKind,
        /// The highest open level on it.
        level: RiskLevel,
    },
    /// A workload without `task_authority` tried to begin a task.
    #[error("the caller's entry has no task authority")]
    NotTaskAuthority,
    /// The delegate matches none of the delegating connector's `delegate_to` patterns.
    #[error("{0} is not in the delegating connector's delegate_to")]
    DelegateNotAllowed(SpiffeId),
    /// The child task would be deeper than [`MAX_DELEGATION_DEPTH`].
    #[error("delegation depth {depth} exceeds the limit of {MAX_DELEGATION_DEPTH}")]
    DepthExceeded {
        /// The depth the child would have.
        depth: usize,
    },
    /// A task TTL above 24 h, or a child task that would outlive its parent.
    #[error("the requested lifetime is too long (24h at most, never past the parent task's end)")]
    TtlTooLong,
    /// The task chain mixes end users; a child must keep its parent's user.
    #[error("a delegated task must keep its parent's user")]
    UserMismatch,
    /// Cedar said no: the determining policy ids (empty when no permit applied = default deny).
    #[error("{}", forbids(.policies))]
    PolicyForbids {
        /// The forbid policies that applied; empty for a default deny.
        policies: Vec<String>,
    },
    /// A policy failed to evaluate; any evaluation error denies.
    #[error("policy evaluation failed: {0}")]
    PolicyError(String),
}

fn forbids(policies: &[String]) -> String {
    if policies.is_empty() {
        "no policy permits the request (default deny)".to_owned()
    } else {
        format!("forbidden by policy {}", policies.join(", "))
    }
}

/// Why a policy set is refused. The old set stays in force when a reload fails.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The directory or a file in it could not be read.
    #[error("cannot read {}: {reason}", .path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A file is not valid Cedar; `reason` carries the line and column.
    #[error("cannot parse {file}: {reason}")]
    Parse {
        /// The file (or source name) at fault.
        file: String,
        /// Every parse error, with its line and column.
        reason: String,
    },
    /// Policies that do not type-check against [`crate::SCHEMA`], each reason naming its policy id.
    #[error("policies do not validate against the schema: {}", .reasons.join("; "))]
    Validation {
        /// One line per problem, starting with the policy id.
        reasons: Vec<String>,
    },
    /// The directory holds no `.cedar` file, or the files hold no policy.
    #[error("no cedar policies in {}", .0.display())]
    NoPolicies(PathBuf),
    /// Two policies have the same id (an `@id` repeated, or clashing with a generated one).
    #[error("duplicate policy id {0:?}")]
    Duplicate(String),
    /// The built-in schema does not parse: a bug in this crate.
    #[error("the built-in cedar schema is invalid: {0}")]
    Schema(String),
}

/// A risk level that is not `low`, `medium` or `high`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("risk level must be low, medium or high, not {0:?}")]
pub struct RiskLevelError(pub String);
