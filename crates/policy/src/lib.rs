//! Request-time decisions for Lanyard: may this connector, at this moment,
//! get a token (or begin or delegate a task) for these tools?
//!
//! Two layers, in order:
//!
//! 1. **Ceilings** ([`Ceilings`]), plain Rust: the task is active and bound
//!    to the caller, tools ⊆ task ⊆ entry, the audience is allowed, the
//!    classification is within the entry, no session revocation or open risk.
//!    No policy can relax these.
//! 2. **Cedar** ([`PolicyEngine`]): a policy set validated in strict mode
//!    against [`SCHEMA`], asked once per requested tool with the connector as
//!    principal and the user, audience, classification, risk and time in the
//!    context. Any evaluation error denies.
//!
//! [`decide`] runs both for a task token. The crate is pure: no clock reads
//! (`now_unix` is an input) and no IO except [`PolicyEngine::load_dir`].
//!
//! ```
//! use lanyard_core::{Action, Classification, SpiffeId, TaskId, User};
//! use lanyard_policy::{PolicyEngine, PolicyInput};
//!
//! let engine = PolicyEngine::from_source(
//!     "writers",
//!     r#"
//!     permit (principal, action, resource);
//!     @id("writers-only")
//!     forbid (principal, action == Lanyard::Action::"write", resource)
//!     unless { context.user.sub == "alice" };
//!     "#,
//! )?;
//! assert_eq!(engine.policy_ids(), ["writers.0", "writers-only"]);
//!
//! let connector: SpiffeId = "spiffe://example.org/connector/github".parse()?;
//! let agent: SpiffeId = "spiffe://example.org/agent/node1".parse()?;
//! let user = User { iss: "https://idp.example".parse()?, sub: "mallory".parse()? };
//! let decision = engine.evaluate(&PolicyInput {
//!     connector: &connector,
//!     tool: &"github.create_issue".parse()?,
//!     action: Action::Write,
//!     user: &user,
//!     audience: &"api.github.com".parse()?,
//!     classification: Classification::Internal,
//!     session: &"s1".parse()?,
//!     task: TaskId::from_bytes([7; 16]),
//!     agent: &agent,
//!     chain_depth: 0,
//!     risk: None,
//!     now_unix: 1_700_000_000,
//! });
//! assert!(!decision.allowed);
//! assert_eq!(decision.policies, ["writers-only"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cedar;
mod ceilings;
mod context_memo;
mod decide;
mod error;
mod risk;
mod time;

pub use cedar::{DEFAULT_PERMIT_ID, Decision, PolicyEngine, PolicyInput, SCHEMA};
pub use ceilings::{BeginRequest, Ceilings, DelegateRequest, TokenRequest};
pub use decide::decide;
pub use error::{Deny, PolicyError, RiskLevelError};
pub use risk::{OpenRisks, RiskLevel, RiskSubjectKind};
