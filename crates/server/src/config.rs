//! What `lanyard server run` is told at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lanyard_core::{TrustDomain, Ttl};

/// Server settings, from flags or a config file (flags win; the CLI merges them).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The trust domain every identity belongs to.
    pub trust_domain: TrustDomain,
    /// Where the sled store lives (unused with `store_url`).
    pub data_dir: PathBuf,
    /// A PostgreSQL store shared by every replica (`postgres://…`) instead
    /// of the sled store in `data_dir`.
    pub store_url: Option<String>,
    /// The admin API's Unix socket, created 0600.
    pub admin_socket: PathBuf,
    /// The node API (mTLS) listen address.
    pub listen: SocketAddr,
    /// The bundle endpoint listen address.
    pub bundle_listen: Option<SocketAddr>,
    /// The URL relying parties reach the bundle endpoint at; JWT `iss`.
    pub public_url: Option<String>,
    /// PEM certificate chain and key: serve the bundle endpoint over HTTPS.
    pub bundle_tls: Option<(PathBuf, PathBuf)>,
    /// Lifetime of each X.509 CA; a successor is prepared at half of it.
    pub ca_ttl: Duration,
    /// Lifetime of each JWT-SVID and task-token key; rotated the same way.
    pub jwt_key_ttl: Duration,
    /// PEM certificate and key of an existing CA: Lanyard's CAs are issued
    /// as its intermediates.
    pub upstream_ca: Option<(PathBuf, PathBuf)>,
    /// Node API requests per second one agent may send (twice that in a
    /// burst); 0 for no limit.
    pub agent_rate: u32,
    /// Revocation-feed long-polls held at once; more are told to retry
    /// (503 with Retry-After). 0 for no limit.
    pub max_long_polls: usize,
    /// How long a bundle-endpoint client has to send its request headers.
    pub header_read_timeout: Duration,
    /// A file holding the key-encryption key that seals private keys at rest.
    pub kek_file: Option<PathBuf>,
    /// Lifetime of agent SVIDs.
    pub agent_svid_ttl: Ttl,
    /// X.509-SVID lifetime for entries that do not set one.
    pub default_x509_ttl: Ttl,
    /// JWT-SVID lifetime for entries that do not set one.
    pub default_jwt_ttl: Ttl,
    /// Directory of `*.cedar` policies; without one, the entry ceilings alone decide.
    pub policy_dir: Option<PathBuf>,
    /// Open risk at or above this level denies (default: any open risk).
    pub risk_threshold: lanyard_policy::RiskLevel,
    /// Lifetime of tasks that do not ask for one.
    pub default_task_ttl: Duration,
    /// A signed checkpoint is appended to the audit log every this many records.
    pub checkpoint_every: u64,
}

/// Node API requests per second per agent by default: far above what one
/// node's workloads need (a benchmark drives about 7,500), a bound on a
/// compromised agent.
pub const DEFAULT_AGENT_RATE: u32 = 20_000;

/// Revocation-feed long-polls held at once by default: each is a small task
/// and a watch receiver, so this bounds memory, not threads.
pub const DEFAULT_MAX_LONG_POLLS: usize = 10_000;

impl ServerConfig {
    /// Defaults for everything but the trust domain and the paths.
    pub fn new(trust_domain: TrustDomain, data_dir: PathBuf, admin_socket: PathBuf, listen: SocketAddr) -> Self {
        Self {
            trust_domain,
            data_dir,
            store_url: None,
            admin_socket,
            listen,
            bundle_listen: None,
            public_url: None,
            bundle_tls: None,
            ca_ttl: Duration::from_secs(86_400),
            jwt_key_ttl: Duration::from_secs(86_400),
            upstream_ca: None,
            agent_rate: DEFAULT_AGENT_RATE,
            max_long_polls: DEFAULT_MAX_LONG_POLLS,
            header_read_timeout: crate::http_serve::HEADER_READ_TIMEOUT,
            kek_file: None,
            agent_svid_ttl: Ttl::ONE_HOUR,
            default_x509_ttl: Ttl::ONE_HOUR,
            default_jwt_ttl: Ttl::FIVE_MINUTES,
            policy_dir: None,
            risk_threshold: lanyard_policy::RiskLevel::Low,
            default_task_ttl: Duration::from_secs(600),
            checkpoint_every: 1000,
        }
    }

    pub(crate) fn lifetimes(&self) -> crate::keys::Lifetimes {
        crate::keys::Lifetimes { x509: self.ca_ttl, jwt: self.jwt_key_ttl }
    }
}
