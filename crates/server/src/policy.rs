//! Loading and reloading the Cedar policy set. A reload replaces the set
//! only if the new one loads and validates; otherwise the old set stays.

use std::path::Path;
use std::sync::Arc;

use lanyard_policy::{PolicyEngine, PolicyError};

use crate::state::State;
use crate::status::ApiError;

/// The policies in `dir`, or the permit-all set when there is no directory
/// (the entry ceilings alone decide then).
pub(crate) async fn load(dir: Option<&Path>) -> Result<PolicyEngine, PolicyError> {
    match dir {
        None => Ok(PolicyEngine::permit_all()),
        Some(dir) => {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || PolicyEngine::load_dir(&dir))
                .await
                .unwrap_or_else(|e| Err(PolicyError::Io { path: Default::default(), reason: e.to_string() }))
        }
    }
}

impl State {
    /// Reloads `--policy DIR`; answers the ids now in force.
    pub(crate) async fn reload_policy(&self, actor: &str) -> Result<Vec<String>, ApiError> {
        let Some(dir) = self.config.policy_dir.clone() else {
            return Err(ApiError::InvalidArgument(
                "the server runs without --policy: there is nothing to reload".into(),
            ));
        };
        match load(Some(&dir)).await {
            Ok(engine) => {
                let ids = engine.policy_ids();
                let audit = self.audit(
                    "policy.reload",
                    actor,
                    &dir.display().to_string(),
                    serde_json::json!({ "policies": ids }),
                );
                self.store.append_audit(audit).await?;
                match self.policy.write() {
                    Ok(mut current) => *current = Arc::new(engine),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(engine),
                }
                tracing::info!(policies = ids.len(), dir = %dir.display(), "policies reloaded");
                Ok(ids)
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "policy reload refused; the previous policies stay in force");
                let audit = self.audit(
                    "policy.reload",
                    actor,
                    &dir.display().to_string(),
                    serde_json::json!({ "error": e.to_string() }),
                );
                self.store.append_audit(audit).await?;
                Err(ApiError::InvalidArgument(format!("policies not reloaded, the previous set stays in force: {e}")))
            }
        }
    }
}
