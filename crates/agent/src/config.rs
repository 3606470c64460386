//! What `lanyard agent run` is told at start.

use std::path::PathBuf;

/// Agent settings (the CLI merges flags and config file; flags win).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where the agent keeps its SVID, key and bundle.
    pub data_dir: PathBuf,
    /// Node API addresses (`host:port`), tried in turn.
    pub servers: Vec<String>,
    /// One-time token for the first start; ignored once attested.
    pub join_token: Option<String>,
    /// PEM CA certificates to trust the server with on the first start.
    pub trust_bundle: Option<PathBuf>,
    /// The Workload API socket path.
    pub socket: PathBuf,
    /// Where to serve `/metrics` and `/healthz` over HTTP, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Workload API requests per second one process may send (twice that
    /// in a burst); 0 for no limit.
    pub workload_rate: u32,
    /// Workload API streams one process may hold open at once; 0 for no limit.
    pub workload_streams: usize,
}
