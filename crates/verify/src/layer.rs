//! A `tower` layer that lets through only requests bearing a valid task
//! token for this service, and hands the verified claims to the handler in
//! the request extensions.
//!
//! ```no_run
//! # fn app(verifier: lanyard_verify::Verifier) -> axum::Router {
//! use axum::{Extension, Router, routing::get};
//! use lanyard_verify::{TaskTokenClaims, TaskTokenLayer};
//!
//! async fn search(Extension(claims): Extension<TaskTokenClaims>) -> String {
//!     format!("searching for {} in task {}", claims.user.sub, claims.txn)
//! }
//! Router::new()
//!     .route("/search", get(search))
//!     .layer(TaskTokenLayer::new(verifier, "api.github.com").tool("github.search").action("read"))
//! # }
//! ```
//!
//! Refusals follow RFC 6750: `401` with `WWW-Authenticate: Bearer
//! error="invalid_token"` for a missing, forged, expired or revoked token,
//! `403` with `error="insufficient_scope"` for a token that does not grant
//! the tool or action, and `503` when the verifier's view is stale. The
//! reason is in `error_description`; the body is empty, so any response
//! body type with a `Default` works (axum's and tonic's both do).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};
use tracing::{Instrument, info_span};

use crate::{Expect, Verifier, VerifyError};

/// The DER client certificate a TLS-terminating server saw, put in the
/// request extensions by that server: when present, the token's `cnf` must
/// match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate(pub Vec<u8>);

/// The layer: which audience, tool and action this service expects.
#[derive(Clone, Debug)]
pub struct TaskTokenLayer {
    verifier: Verifier,
    expect: Arc<Expected>,
}

#[derive(Debug)]
struct Expected {
    audience: String,
    tool: Option<String>,
    action: Option<String>,
    require_cnf: bool,
}

impl TaskTokenLayer {
    /// Tokens must be for `audience`.
    pub fn new(verifier: Verifier, audience: impl Into<String>) -> Self {
        let expect = Expected { audience: audience.into(), tool: None, action: None, require_cnf: false };
        Self { verifier, expect: Arc::new(expect) }
    }

    /// ... and grant this tool.
    pub fn tool(self, tool: impl Into<String>) -> Self {
        self.edit(|e| e.tool = Some(tool.into()))
    }

    /// ... with this action.
    pub fn action(self, action: impl Into<String>) -> Self {
        self.edit(|e| e.action = Some(action.into()))
    }

    /// ... and be presented over mTLS with the certificate they are bound
    /// to: a request without a [`PeerCertificate`] is refused.
    pub fn require_cnf(self) -> Self {
        self.edit(|e| e.require_cnf = true)
    }

    fn edit(self, change: impl FnOnce(&mut Expected)) -> Self {
        let mut expect = Arc::try_unwrap(self.expect).unwrap_or_else(|shared| Expected {
            audience: shared.audience.clone(),
            tool: shared.tool.clone(),
            action: shared.action.clone(),
            require_cnf: shared.require_cnf,
        });
        change(&mut expect);
        Self { verifier: self.verifier, expect: Arc::new(expect) }
    }
}

impl<S> Layer<S> for TaskTokenLayer {
    type Service = TaskTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TaskTokenService { inner, verifier: self.verifier.clone(), expect: Arc::clone(&self.expect) }
    }
}

/// The service [`TaskTokenLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct TaskTokenService<S> {
    inner: S,
    verifier: Verifier,
    expect: Arc<Expected>,
}

impl<S> TaskTokenService<S> {
    /// Checks the request's bearer token; the claims on success.
    fn check<B>(&self, request: &Request<B>) -> Result<crate::TaskTokenClaims, Refusal> {
        let token = bearer(request)?;
        let peer = request.extensions().get::<PeerCertificate>();
        if self.expect.require_cnf && peer.is_none() {
            return Err(Refusal::invalid("this service needs the token over mTLS with its bound certificate"));
        }
        let mut expect = Expect::audience(&self.expect.audience);
        expect.tool = self.expect.tool.as_deref();
        expect.action = self.expect.action.as_deref();
        expect.peer_cert_der = peer.map(|p| p.0.as_slice());
        self.verifier.task_token(token, &expect).map_err(Refusal::from)
    }
}

impl<S, B, R> Service<Request<B>> for TaskTokenService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let span = info_span!(
            "verify_task_token",
            audience = %self.expect.audience,
            tool = self.expect.tool.as_deref(),
            task = tracing::field::Empty,
        );
        let checked = span.in_scope(|| self.check(&request));
        match checked {
            Ok(claims) => {
                span.record("task", claims.txn.as_str());
                request.extensions_mut().insert(claims);
                // The clone that was polled ready serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(request).await }.instrument(span))
            }
            Err(refusal) => {
                span.in_scope(|| tracing::info!(status = refusal.status.as_u16(), reason = %refusal.reason, "refused"));
                Box::pin(std::future::ready(Ok(refusal.into_response())))
            }
        }
    }
}

/// A refused request: the status and RFC 6750 error code, and why.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl Refusal {
    fn invalid(reason: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "invalid_token", reason: reason.into() }
    }

    fn into_response<R: Default>(self) -> Response<R> {
        let mut response = Response::new(R::default());
        *response.status_mut() = self.status;
        // Quotes and controls cannot go in a quoted-string: keep it readable.
        let reason: String =
            self.reason.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '\'' } else { c }).collect();
        let challenge = format!("Bearer error=\"{}\", error_description=\"{reason}\"", self.code);
        let value = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer"));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        response
    }
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        let reason = e.to_string();
        match e {
            VerifyError::StaleBundle { .. } | VerifyError::StaleFeed { .. } => {
                Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "temporarily_unavailable", reason }
            }
            VerifyError::ToolNotGranted(_) | VerifyError::ActionNotAllowed(_) => {
                Self { status: StatusCode::FORBIDDEN, code: "insufficient_scope", reason }
            }
            _ => Self::invalid(reason),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer<B>(request: &Request<B>) -> Result<&str, Refusal> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::invalid("one Authorization: Bearer header is required"));
    };
    let value = value.to_str().map_err(|_| Refusal::invalid("Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(Refusal::invalid("Authorization header is not a Bearer token")),
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
