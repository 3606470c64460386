//! Errors of the agent.

use std::path::PathBuf;

/// Why the agent could not start, or lost its server for a while.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A setting is missing or invalid.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A file in the data directory could not be read or written.
    #[error("data directory file {path}: {1}", path = .0.display())]
    DataDir(PathBuf, String),
    /// TLS could not be set up.
    #[error("tls: {0}")]
    Tls(String),
    /// The server could not be reached.
    #[error("cannot connect to server {0}: {1}")]
    Connect(String, String),
    /// The server refused or failed a call.
    #[error("{0} call failed: {1}")]
    Rpc(&'static str, tonic::Status),
    /// The server sent something that does not parse or does not check out.
    #[error("unexpected answer from server: {0}")]
    Protocol(String),
    /// Key generation failed.
    #[error("keys: {0}")]
    Keys(String),
    /// The Workload API socket could not be created.
    #[error("workload API socket {path}: {1}", path = .0.display())]
    Socket(PathBuf, std::io::Error),
    /// The metrics listener could not bind.
    #[error("cannot listen on {0} (--metrics-listen): {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    /// The Workload API server failed.
    #[error("serving: {0}")]
    Serve(String),
}
