//! End-to-end tests: real `lanyard server run` and `lanyard agent run`
//! processes, driven through the admin CLI and the SPIFFE Workload API.
//!
//! One test binary with modules, sharing the helpers in [`harness`] (one link
//! step; see rustls `rustls-test/tests/api.rs`):
//!
//! - [`spiffe_client`]: the unmodified crates.io `spiffe` client against our agent;
//! - [`security`]: the security invariants of DESIGN.md, each shown refusing;
//! - [`resilience`]: rotation, server outage, SIGKILL durability;
//! - [`rotation`]: signing key rotation across real processes, `ca rotate` and `ca revoke`;
//! - [`cli`]: the command-line contract (errors on one line, files written);
//! - [`loadgen`]: `lanyard bench` against a real server and agent;
//! - [`deploy`]: deploy/ against the binary: the Kubernetes configs pass check-config; paths, ports,
//!   probes and the Containerfile agree with them;
//! - [`torture`]: SIGKILL at random moments under mixed load, again and again;
//! - [`soak`]: the soak tool in a short run (`just soak` runs it for 30 minutes);
//! - [`tasks`]: orchestrator and connector workloads, task tokens, refusals, delegation;
//! - [`policy`]: Cedar policies through `--policy`, `policy check` and reloads;
//! - [`postgres`]: two server replicas over one PostgreSQL database (`--store-url`);
//! - [`audit`]: audit records, tamper and truncation detection, mints across SIGKILL;
//! - [`verify`]: `token verify`, lanyard-verify following the feed, the example tool
//!   service and MCP connector, PyJWT through discovery.
//!
//! Every test starts its own server and agent in its own temp dir on its own
//! port, so tests run in parallel; every child process is killed when its
//! handle drops, also when a test panics, and a failing test prints the tail
//! of the logs of the processes it started. The binary under test is the
//! `lanyard` built from this package (`CARGO_BIN_EXE_lanyard`).

// clippy.toml lets `#[test]` functions unwrap and panic; the helpers they
// share are test code as well, and a failed unwrap is a failed test.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap or panic is a failed test with a line number"
)]

mod audit;
mod cli;
mod deploy;
mod harness;
mod loadgen;
mod policy;
mod postgres;
mod resilience;
mod rotation;
mod security;
mod soak;
mod spiffe_client;
mod tasks;
mod torture;
mod verify;
