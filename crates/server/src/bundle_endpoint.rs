//! The trust bundle endpoint (HTTP): what relying parties fetch to check
//! Lanyard credentials with nothing but a URL.
//!
//! - `GET /bundle`: the SPIFFE bundle (JWKS with `x509-svid` and `jwt-svid` keys);
//! - `GET /.well-known/openid-configuration` and `GET /keys`: OIDC discovery, so
//!   ordinary JWT libraries verify JWT-SVIDs from the issuer URL alone;
//! - `GET /v1/revocations?after=SEQ&wait=SECONDS` and `/v1/revocations/snapshot`:
//!   the revocation feed ([`crate::feed`]);
//! - `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`.
//!
//! Responses carry an `ETag` (the bundle sequence) and `Cache-Control`, so
//! pollers revalidate cheaply.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lanyard_core::metrics::{CONTENT_TYPE, Exposition};
use serde_json::json;

use crate::state::State;

/// The endpoint's routes over the server state.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/bundle", get(bundle))
        .route("/keys", get(keys))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/v1/revocations", get(revocations))
        .route("/v1/revocations/snapshot", get(snapshot))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// A JSON body with the bundle's cache headers, or 304 when the caller has it.
/// The ETag is a digest of the body itself, so any change is a new tag.
fn cached_json(state: &State, request: &HeaderMap, body: String) -> Response {
    let keys = state.keys();
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let etag = format!("\"{}\"", lanyard_core::hex::encode(&digest.as_ref()[..16]));
    let max_age = keys.bundle.refresh_hint.as_secs() / 2;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    if request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, body).into_response()
}

async fn bundle(AxumState(state): AxumState<Arc<State>>, request: HeaderMap) -> Response {
    match state.keys().bundle.spiffe_json() {
        Ok(body) => cached_json(&state, &request, body),
        Err(e) => internal(&e),
    }
}

async fn keys(AxumState(state): AxumState<Arc<State>>, request: HeaderMap) -> Response {
    let keys: Result<Vec<_>, _> =
        state.keys().bundle.jwt_authorities.iter().map(|k| k.jwk_with_purpose("sig")).collect();
    match keys.and_then(|keys| serde_json::to_string(&json!({ "keys": keys }))) {
        Ok(body) => cached_json(&state, &request, body),
        Err(e) => internal(&e),
    }
}

async fn discovery(AxumState(state): AxumState<Arc<State>>) -> Response {
    let Some(issuer) = state.config.public_url.as_deref() else {
        return (StatusCode::NOT_FOUND, "no --public-url configured\n").into_response();
    };
    let issuer = issuer.trim_end_matches('/');
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// `after` and `wait` of a feed request.
#[derive(serde::Deserialize)]
struct FeedQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

async fn revocations(
    AxumState(state): AxumState<Arc<State>>,
    query: Result<axum::extract::Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return (StatusCode::BAD_REQUEST, "after and wait must be whole numbers\n").into_response();
    };
    let wait = std::time::Duration::from_secs(query.wait);
    if wait > crate::feed::MAX_WAIT {
        return (StatusCode::BAD_REQUEST, "wait must be at most 60 seconds\n").into_response();
    }
    let limit = state.config.max_long_polls;
    if !wait.is_zero() && limit > 0 && state.metrics.feed_waiting() >= limit {
        // Not an empty answer at once: a follower would ask again at once.
        let headers = [(header::RETRY_AFTER, "1")];
        return (StatusCode::SERVICE_UNAVAILABLE, headers, "too many long-polls waiting; retry\n").into_response();
    }
    match state.feed(query.after, wait).await {
        Ok(page) => json_response(&page),
        Err(e) => internal(&e),
    }
}

async fn snapshot(AxumState(state): AxumState<Arc<State>>) -> Response {
    match state.snapshot().await {
        Ok(jws) => json_response(&json!({ "snapshot": jws })),
        Err(e) => internal(&e),
    }
}

fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => {
            ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
        }
        Err(e) => internal(&e),
    }
}

/// Tasks counted for `lanyard_active_tasks`, at most (a scrape scans them).
const ACTIVE_TASKS_SCAN: usize = 100_000;

/// Prometheus text: what the server did, and where its sequences stand.
async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let keys = state.keys();
    let filter =
        lanyard_store::TaskFilter { active_at: Some(lanyard_core::unix_secs(state.now())), ..Default::default() };
    let active_tasks = match state.store.list_tasks(&filter, ACTIVE_TASKS_SCAN).await {
        Ok(tasks) => tasks.len(),
        Err(e) => return internal(&e),
    };
    let gauges = [
        ("lanyard_bundle_sequence", "Sequence number of the trust bundle.", keys.bundle.sequence),
        ("lanyard_entry_revision", "Newest durable registration-entry revision.", state.store.revision()),
        (
            "lanyard_revocation_sequence",
            "Newest durable revocation event (revocations so far).",
            state.store.revocation_seq(),
        ),
        ("lanyard_audit_head", "Newest durable audit record.", state.store.audit_head()),
        ("lanyard_active_tasks", "Tasks running now (counted up to 100,000).", active_tasks as u64),
    ];
    let mut e = Exposition::default();
    for (name, help, value) in gauges {
        e.family(name, "gauge", help).sample(name, &[], value);
    }
    state.metrics.render(&mut e);
    let name = "lanyard_store_commit_duration_seconds";
    e.family(name, "histogram", "Group commits of the store: one fsync of the audit log and a tree flush.").histogram(
        name,
        &[],
        state.store.commit_latency(),
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], e.finish()).into_response()
}

async fn ready(AxumState(state): AxumState<Arc<State>>) -> Response {
    // Ready when the store answers.
    match state.store.list_keys().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "bundle endpoint failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}
