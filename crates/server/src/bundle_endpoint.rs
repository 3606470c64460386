//! The trust bundle endpoint (HTTP): what relying parties fetch to check
//! Lanyard credentials with nothing but a URL.
//!
//! - `GET /bundle`: the SPIFFE bundle (JWKS with `x509-svid` and `jwt-svid` keys);
//! - `GET /.well-known/openid-configuration` and `GET /keys`: OIDC discovery, so
//!   ordinary JWT libraries verify JWT-SVIDs from the issuer URL alone;
//! - `GET /healthz`, `GET /readyz`.
//!
//! Responses carry an `ETag` (the bundle sequence) and `Cache-Control`, so
//! pollers revalidate cheaply.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::State;

/// The endpoint's routes over the server state.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/bundle", get(bundle))
        .route("/keys", get(keys))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// A JSON body with the bundle's cache headers, or 304 when the caller has it.
fn cached_json(state: &State, request: &HeaderMap, body: String) -> Response {
    let keys = state.keys();
    let etag = format!("\"{}\"", keys.bundle.sequence);
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
    let keys: Vec<_> = state.keys().bundle.jwt_authorities.iter().map(|k| k.key.to_jwk(Some("sig"))).collect();
    match serde_json::to_string(&json!({ "keys": keys })) {
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
