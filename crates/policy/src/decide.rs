//! The whole task-token decision.

use crate::cedar::{Decision, PolicyEngine, PolicyInput};
use crate::ceilings::{Ceilings, TokenRequest};
use crate::error::Deny;

/// The whole token decision: ceilings, then Cedar for every requested tool (all must allow). Ok(Decision)
/// with allowed=true, or Err(Deny) — Cedar denials become Deny::PolicyForbids{policies} and evaluation
/// errors Deny::PolicyError.
///
/// The returned decision's `policies` are the determining policies of every tool, in the order first
/// seen. A tool whose evaluation errors is a [`Deny::PolicyError`] even when some forbid also applied:
/// the errors are what an operator must fix.
pub fn decide(ceilings: &Ceilings, engine: &PolicyEngine, r: &TokenRequest<'_>) -> Result<Decision, Deny> {
    ceilings.check_token(r)?;
    let mut policies: Vec<String> = Vec::new();
    for tool in r.tools {
        let input = PolicyInput {
            connector: &r.connector.spiffe_id,
            tool,
            action: r.action,
            user: &r.task.user,
            audience: r.audience,
            classification: r.task.classification,
            session: &r.task.session,
            task: r.task.id,
            agent: r.agent,
            chain_depth: r.task.depth(),
            risk: r.risks.highest(),
            now_unix: r.now_unix,
        };
        let decision = engine.evaluate(&input);
        if !decision.errors.is_empty() {
            return Err(Deny::PolicyError(decision.errors.join("; ")));
        }
        if !decision.allowed {
            return Err(Deny::PolicyForbids { policies: decision.policies });
        }
        for id in decision.policies {
            if !policies.contains(&id) {
                policies.push(id);
            }
        }
    }
    Ok(Decision { allowed: true, policies, errors: Vec::new() })
}
