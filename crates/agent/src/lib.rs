//! The Lanyard node agent: `lanyard agent run`.
//!
//! It attests once to the server with a join token (then renews its own
//! SVID), keeps a cache of the registration entries it serves, generates a
//! key for every identity on the node and has the server sign it, rotates
//! those SVIDs at half-life, and serves the SPIFFE Workload API on a Unix
//! socket to processes it attests from the kernel. When the server is away it
//! keeps serving from the cache and reconnects with backoff.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lanyard_agent::AgentError> {
//! use lanyard_agent::{Agent, AgentConfig};
//! let agent = Agent::start(AgentConfig {
//!     data_dir: "/var/lib/lanyard-agent".into(),
//!     servers: vec!["127.0.0.1:8081".into()],
//!     join_token: Some("…".into()),
//!     trust_bundle: Some("/etc/lanyard/ca.pem".into()),
//!     socket: "/run/lanyard/agent.sock".into(),
//!     metrics_listen: None,
//!     workload_rate: 0,
//!     workload_streams: 0,
//! })
//! .await?;
//! agent.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod attest;
mod backoff;
mod cache;
mod config;
mod convert;
mod error;
/// The server-message conversions for the fuzz targets (`--features fuzzing`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod jwt_cache;
mod metrics;
mod mint_batch;
mod node_client;
mod run;
mod supervisor;
mod tasks;
mod uds;
mod workload;

pub use config::AgentConfig;
pub use convert::bundle_from_proto;
pub use error::AgentError;
pub use run::Agent;
pub use workload::NO_IDENTITY;

#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod testkit;
