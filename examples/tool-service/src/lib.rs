//! A "tool" that connectors call: an axum HTTP service behind the
//! `lanyard-verify` layer. It serves `GET /search?q=…` as the tool
//! `github.search` with action `read`, and only to a request bearing a task
//! token that is for this service's audience, grants that tool and action,
//! and is not revoked (task ended, session revoked, risk raised). The
//! handler sees the verified claims — which connector acts, for which user,
//! in which task — and answers with them, as a real tool would log them.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lanyard_verify::{Endpoint, Verifier, VerifierConfig};
//! let verifier = Verifier::start(Endpoint::new("http://127.0.0.1:8443", &[])?, VerifierConfig::default()).await?;
//! let app = lanyard_example_tool_service::router(verifier, "api.github.example");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use axum::extract::Query;
use axum::routing::get;
use axum::{Extension, Json, Router};
use lanyard_verify::{TaskTokenClaims, TaskTokenLayer, Verifier};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Lanyard tool this service is.
pub const TOOL: &str = "github.search";
/// The action a search is.
pub const ACTION: &str = "read";

/// The query of `/search`.
#[derive(Debug, Deserialize)]
pub struct Search {
    /// What to search for.
    #[serde(default)]
    pub q: String,
}

/// The service: `/search` behind the task-token layer, `/healthz` open.
pub fn router(verifier: Verifier, audience: &str) -> Router {
    let search = Router::new()
        .route("/search", get(search))
        .layer(TaskTokenLayer::new(verifier, audience).tool(TOOL).action(ACTION));
    Router::new().route("/healthz", get(|| async { "ok\n" })).merge(search)
}

/// Answers a search, saying who asked: the user and the connector apart.
async fn search(Extension(claims): Extension<TaskTokenClaims>, Query(search): Query<Search>) -> Json<Value> {
    tracing::info!(connector = %claims.sub, user = %claims.user.sub, task = %claims.txn, query = %search.q, "search");
    Json(json!({
        "tool": TOOL,
        "query": search.q,
        "connector": claims.sub,
        "user": claims.user.sub,
        "task": claims.txn,
        "results": [format!("issue #1 matching {:?}", search.q)],
    }))
}
