//! Status mapping shared by every Lanyard gRPC server.
//!
//! tonic answers a request it cannot decode with `Internal` (garbage bytes)
//! or `OutOfRange` (over the message-size limit), before any handler runs.
//! Both are the caller's fault, and Lanyard's contract is that bad input
//! gets `InvalidArgument`; [`bad_input_is_invalid_argument`] rewrites those
//! answers on the way out. Handlers never return `OutOfRange`, and their own
//! `Internal` answers never say "failed to decode", so nothing else changes.

use tonic::codegen::http;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const INTERNAL: &[u8] = b"13";
const OUT_OF_RANGE: &[u8] = b"11";
const INVALID_ARGUMENT: &str = "3";

/// Rewrites decode and size-limit failures to `InvalidArgument`; use with
/// `tower::util::MapResponseLayer` on a tonic server.
pub fn bad_input_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let status = headers.get(GRPC_STATUS).map(http::HeaderValue::as_bytes);
    let message = headers.get(GRPC_MESSAGE).map(http::HeaderValue::as_bytes).unwrap_or_default();
    let decode_failure = status == Some(INTERNAL)
        && (message.starts_with(b"failed to decode") || message.starts_with(b"failed%20to%20decode"));
    if status == Some(OUT_OF_RANGE) || decode_failure {
        headers.insert(GRPC_STATUS, http::HeaderValue::from_static(INVALID_ARGUMENT));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut().insert(GRPC_STATUS, http::HeaderValue::from_static(status));
        r.headers_mut().insert(GRPC_MESSAGE, http::HeaderValue::from_static(message));
        r
    }

    fn status_of(r: &http::Response<()>) -> &[u8] {
        r.headers().get(GRPC_STATUS).map(http::HeaderValue::as_bytes).unwrap_or_default()
    }

    #[test]
    fn rewrites_only_bad_input() {
        let r = bad_input_is_invalid_argument(response("11", "Error,%20decoded%20message%20length%20too%20large"));
        assert_eq!(status_of(&r), b"3");
        let r = bad_input_is_invalid_argument(response("13", "failed%20to%20decode%20Protobuf%20message"));
        assert_eq!(status_of(&r), b"3");
        let r = bad_input_is_invalid_argument(response("13", "internal%20error"));
        assert_eq!(status_of(&r), b"13");
        let r = bad_input_is_invalid_argument(response("7", "no%20identity%20issued"));
        assert_eq!(status_of(&r), b"7");
        let r = bad_input_is_invalid_argument(http::Response::new(()));
        assert!(r.headers().get(GRPC_STATUS).is_none());
    }
}
