//! One test binary for the policy crate's public API.
#![expect(clippy::unwrap_used, reason = "fixtures outside #[test] fns: a failed unwrap is a failed test")]

mod cedar;
mod ceilings;
mod examples;
mod props;
mod support;
