//! The Lanyard issuer: `lanyard server run`.
//!
//! It serves three things:
//! - the **node API** (gRPC over mutual TLS) where agents attest with a join
//!   token, renew their SVID, sync their registration entries and have
//!   workload CSRs and JWT-SVIDs signed;
//! - the **admin API** (gRPC on a 0600 Unix socket) for entries, join tokens,
//!   agents and the bundle;
//! - the **bundle endpoint** (HTTP): the SPIFFE bundle and OIDC discovery;
//! - the audit trail: every credential and every admin change is recorded
//!   durably before the caller hears back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lanyard_server::StartError> {
//! use lanyard_server::{Server, ServerConfig};
//! let config = ServerConfig::new(
//!     "example.org".parse().map_err(|e| lanyard_server::StartError::Config(format!("{e}")))?,
//!     "/var/lib/lanyard".into(),
//!     "/run/lanyard/admin.sock".into(),
//!     "127.0.0.1:8081".parse().map_err(|e| lanyard_server::StartError::Config(format!("{e}")))?,
//! );
//! let server = Server::bind(config).await?;
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod admin;
mod admin_socket;
pub mod audit;
#[doc(hidden)]
pub mod bench;
mod bundle_endpoint;
mod config;
mod convert;
pub mod feed;
/// Request conversions for the fuzz targets (`--features fuzzing`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http_serve;
mod https;
mod kek;
mod key_lifecycle;
mod keys;
mod limits;
mod metrics;
mod node;
mod policy;
mod run;
mod state;
mod status;
mod svid_cache;
mod tasks;
mod tls;

pub use config::{DEFAULT_AGENT_RATE, DEFAULT_MAX_LONG_POLLS, ServerConfig};

/// What a workload that no entry matches is told (the SPIFFE wording).
pub(crate) const NO_IDENTITY: &str = "no identity issued";
pub use run::{Server, StartError, check_config};

#[cfg(test)]
mod tests;
