use super::*;

use std::convert::Infallible;
use std::time::SystemTime;

use tower::{ServiceExt as _, service_fn};

use crate::revocation::{RevocationState, Snapshot};
use crate::testkit::{AUDIENCE, Fixture, TASK, TOOL};
use crate::{FetchedBundle, TaskTokenClaims};

/// A fixture at the real clock, which [`Verifier::task_token`] reads.
fn fixture() -> Fixture {
    Fixture::at(SystemTime::now())
}

/// The inner service: says it was called, and for which task.
async fn handler(request: Request<()>) -> Result<Response<String>, Infallible> {
    let task = request.extensions().get::<TaskTokenClaims>().map_or("none", |c| c.txn.as_str());
    Ok(Response::new(format!("called for task {task}")))
}

fn request(authorization: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().uri("/search");
    if let Some(value) = authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(()).unwrap()
}

fn bearer(token: &str) -> Request<()> {
    request(Some(&format!("Bearer {token}")))
}

async fn send(layer: &TaskTokenLayer, request: Request<()>) -> Response<String> {
    layer.layer(service_fn(handler)).oneshot(request).await.unwrap()
}

fn challenge(response: &Response<String>) -> &str {
    response.headers().get(header::WWW_AUTHENTICATE).unwrap().to_str().unwrap()
}

/// The response is a refusal with this status and RFC 6750 error, and the
/// handler never ran.
fn assert_refused(response: &Response<String>, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    let challenge = challenge(response);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(&format!("error=\"{code}\"")), "{challenge}");
    assert!(challenge.contains("error_description=\""), "{challenge}");
    assert_eq!(response.body(), "");
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_claims() {
    let f = fixture();
    let layer = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).action("read");
    let response = send(&layer, bearer(&f.task_token())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), &format!("called for task {TASK}"));
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    // The scheme is case-insensitive; spaces around the token are trimmed.
    let response = send(&layer, request(Some(&format!("bearer  {} ", f.task_token())))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_or_unusable_authorization_header_is_an_invalid_token() {
    let f = fixture();
    let layer = TaskTokenLayer::new(f.verifier(), AUDIENCE);
    let token = f.task_token();
    let cases =
        [request(None), request(Some(&format!("Basic {token}"))), request(Some("Bearer")), request(Some("Bearer  "))];
    for request in cases {
        assert_refused(&send(&layer, request).await, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let mut two = bearer(&token);
    two.headers_mut().append(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    assert_refused(&send(&layer, two).await, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn forged_expired_or_foreign_tokens_are_invalid() {
    let f = fixture();
    let layer = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL);
    let mut expired = f.task_claims();
    expired["exp"] = serde_json::json!(f.now_secs() - 60);
    let stranger = lanyard_jose::SigningKey::generate().unwrap().sign_claims("JWT", &f.task_claims()).unwrap();
    for token in [f.sign_task_claims(&expired), stranger, f.jwt_svid_token(&[AUDIENCE]), "x.y.z".into()] {
        assert_refused(&send(&layer, bearer(&token)).await, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let elsewhere = TaskTokenLayer::new(f.verifier(), "api.other.example");
    assert_refused(&send(&elsewhere, bearer(&f.task_token())).await, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn a_tool_or_action_outside_the_token_is_insufficient_scope() {
    let f = fixture();
    let token = f.task_token();
    let wrong_tool = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool("github.delete_repo");
    let response = send(&wrong_tool, bearer(&token)).await;
    assert_refused(&response, StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(challenge(&response).contains("github.delete_repo"), "{}", challenge(&response));
    let wrong_action = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).action("write");
    assert_refused(&send(&wrong_action, bearer(&token)).await, StatusCode::FORBIDDEN, "insufficient_scope");
}

#[tokio::test]
async fn a_stale_feed_is_unavailable() {
    let f = fixture();
    let token = f.task_token();
    let never_heard = Verifier::fixed(f.fetched(), Some(RevocationState::default()), f.config.clone());
    let old = RevocationState::from_snapshot(Snapshot { at: f.now_secs() - 31, ..Snapshot::default() });
    let too_old = Verifier::fixed(f.fetched(), Some(old), f.config.clone());
    let no_feed = Verifier::fixed(f.fetched(), None, f.config.clone());
    for verifier in [never_heard, too_old, no_feed] {
        let layer = TaskTokenLayer::new(verifier, AUDIENCE).tool(TOOL);
        let response = send(&layer, bearer(&token)).await;
        assert_refused(&response, StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        assert!(challenge(&response).contains("stale view"), "{}", challenge(&response));
    }
    // A stale bundle too.
    let old_bundle = FetchedBundle::new(f.bundle.clone(), f.now - std::time::Duration::from_secs(3601));
    let verifier = Verifier::fixed(old_bundle, Some(f.revocations.clone()), f.config.clone());
    let layer = TaskTokenLayer::new(verifier, AUDIENCE);
    assert_refused(&send(&layer, bearer(&token)).await, StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
}

#[tokio::test]
async fn a_revoked_token_is_invalid() {
    let f = fixture();
    let ended = Snapshot { at: f.now_secs(), as_of: 1, ended_tasks: vec![TASK.into()], ..Snapshot::default() };
    let verifier = Verifier::fixed(f.fetched(), Some(RevocationState::from_snapshot(ended)), f.config.clone());
    let response = send(&TaskTokenLayer::new(verifier, AUDIENCE).tool(TOOL), bearer(&f.task_token())).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "invalid_token");
    assert!(challenge(&response).contains(&format!("revoked: task {TASK} ended")), "{}", challenge(&response));
}

#[tokio::test]
async fn require_cnf_needs_the_bound_peer_certificate() {
    let f = fixture();
    let layer = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).require_cnf();
    let token = f.task_token();
    assert_refused(&send(&layer, bearer(&token)).await, StatusCode::UNAUTHORIZED, "invalid_token");

    let mut bound = bearer(&token);
    bound.extensions_mut().insert(PeerCertificate(f.svid.clone()));
    let response = send(&layer, bound).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), &format!("called for task {TASK}"));

    let mut other = bearer(&token);
    other.extensions_mut().insert(PeerCertificate(f.sign_svid(crate::testkit::CONNECTOR)));
    assert_refused(&send(&layer, other).await, StatusCode::UNAUTHORIZED, "invalid_token");
    // Without require_cnf, a presented certificate is still checked.
    let lax = TaskTokenLayer::new(f.verifier(), AUDIENCE);
    let mut other = bearer(&token);
    other.extensions_mut().insert(PeerCertificate(f.sign_svid(crate::testkit::CONNECTOR)));
    assert_refused(&send(&lax, other).await, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn changing_a_cloned_layer_leaves_the_original_as_it_was() {
    let f = fixture();
    let base = TaskTokenLayer::new(f.verifier(), AUDIENCE);
    let strict = base.clone().tool("github.delete_repo");
    let token = f.task_token();
    assert_eq!(send(&base, bearer(&token)).await.status(), StatusCode::OK);
    assert_eq!(send(&strict, bearer(&token)).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn one_service_serves_many_requests() {
    let f = fixture();
    let mut service = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).layer(service_fn(handler));
    for (token, status) in [(f.task_token(), StatusCode::OK), ("x.y.z".into(), StatusCode::UNAUTHORIZED)] {
        for _ in 0..2 {
            let response = service.ready().await.unwrap().call(bearer(&token)).await.unwrap();
            assert_eq!(response.status(), status);
        }
    }
}

#[tokio::test]
async fn an_axum_handler_extracts_the_claims() {
    use axum::routing::get;
    use axum::{Extension, Router};

    async fn search(Extension(claims): Extension<TaskTokenClaims>) -> String {
        format!("{} for {}", claims.txn, claims.user.sub)
    }
    let f = fixture();
    let app = Router::new()
        .route("/search", get(search))
        .layer(TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).action("read"));
    let request = |auth: Option<String>| {
        let mut builder = Request::builder().uri("/search");
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    };
    let response = app.clone().oneshot(request(Some(format!("Bearer {}", f.task_token())))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert_eq!(body, format!("{TASK} for alice").as_bytes());

    let response = app.oneshot(request(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn the_layer_wraps_a_tonic_service_with_tonic_bodies() {
    // A gRPC service: tonic's body on both sides; refusals map to
    // Unauthenticated on the client (HTTP 401).
    let f = fixture();
    let grpc = service_fn(|request: Request<tonic::body::Body>| async move {
        let task = request.extensions().get::<TaskTokenClaims>().map(|c| c.txn.clone());
        let mut response = Response::new(tonic::body::Body::empty());
        response.headers_mut().insert("x-task", task.unwrap_or_default().parse().unwrap());
        Ok::<_, Infallible>(response)
    });
    let service = TaskTokenLayer::new(f.verifier(), AUDIENCE).tool(TOOL).layer(grpc);
    let call = |authorization: Option<String>| {
        let mut builder = Request::builder().uri("/lanyard.tool.v1.Tool/Search");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(tonic::body::Body::empty()).unwrap()
    };
    let ok = service.clone().oneshot(call(Some(format!("Bearer {}", f.task_token())))).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["x-task"], TASK);
    let refused = service.oneshot(call(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("x-task").is_none(), "the inner service never ran");
}
