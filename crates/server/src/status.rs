//! The one place errors become gRPC statuses.
//!
//! InvalidArgument carries the reason so the caller can fix its request;
//! PermissionDenied and NotFound say what was refused but leak nothing
//! internal; anything unexpected is logged here, once, and answered as
//! Internal without detail.

use lanyard_ca::CaError;
use lanyard_store::StoreError;
use tonic::Status;

/// An API failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is malformed; retrying it unchanged will fail again.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller is not allowed this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// An optimistic-concurrency check failed; re-read and retry.
    #[error("{0}")]
    Aborted(String),
    /// The caller presented no usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is over its rate limit; it may retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request cannot work with this server's setup; the message says
    /// what to use instead.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database is away; the caller may retry, here or at another
    /// replica. The detail goes to the log only.
    #[error("the store is unavailable")]
    Unavailable(String),
    /// Something broke on our side; the detail goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn invalid(field: &str, err: impl std::fmt::Display) -> Self {
        Self::InvalidArgument(format!("{field}: {err}"))
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::Aborted(m) => Status::aborted(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "the store is unavailable");
                Status::unavailable("the store is unavailable; retry")
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                Status::internal("internal error")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict { expected, actual } => Self::Aborted(format!(
                "entry changed since it was read (revision {actual}, expected {expected}); read it again"
            )),
            StoreError::AlreadyExists(what) => Self::AlreadyExists(format!("{what} already exists")),
            // A revocation won a race with this write: refuse, as the check would have.
            StoreError::Revoked(why) => Self::PermissionDenied(why),
            StoreError::Unsupported(why) => Self::FailedPrecondition(why),
            StoreError::Postgres(detail) => Self::Unavailable(detail),
            other => Self::Internal(format!("store: {other}")),
        }
    }
}

impl From<CaError> for ApiError {
    fn from(err: CaError) -> Self {
        match err {
            CaError::MalformedCsr(_) | CaError::CsrSignature | CaError::UnsupportedKey => Self::invalid("csr", err),
            CaError::BadAudience(m) => Self::invalid("audience", m),
            other => Self::Internal(format!("ca: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_unavailable_without_detail_and_unsupported_says_why() {
        let status = Status::from(ApiError::from(StoreError::Postgres("08006: connection refused to 10.0.0.5".into())));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("10.0.0.5"), "{status:?}");
        let status = Status::from(ApiError::from(StoreError::Unsupported("use pg_dump".into())));
        assert_eq!((status.code(), status.message()), (tonic::Code::FailedPrecondition, "use pg_dump"));
        let status = Status::from(ApiError::from(StoreError::Closed));
        assert_eq!((status.code(), status.message()), (tonic::Code::Internal, "internal error"));
    }
}
