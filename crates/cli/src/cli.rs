//! The command line, as DESIGN.md's contract spells it.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lanyard_core::{SpiffeId, TrustDomain, Ttl};

/// Workload identity for AI connectors.
#[derive(Parser, Debug)]
#[command(name = "lanyard", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// The issuer.
    #[command(subcommand)]
    Server(ServerCommand),
    /// The node agent, and agents as the server knows them.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Registration entries.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// One-time node bootstrap tokens.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinTokenCommand),
    /// The trust bundle.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// The signing keys: X.509 CA, JWT-SVID and task-token keys.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The server's store: backup and restore.
    #[command(subcommand)]
    Store(StoreCommand),
    /// X.509-SVIDs, as a workload sees them through the agent.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// JWT-SVIDs, as a workload sees them through the agent.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Tasks: one user's request, served by one connector.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Task tokens, as a workload sees them through the agent.
    #[command(subcommand, name = "task-token")]
    TaskToken(TaskTokenCommand),
    /// End-user sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Risk reports on users, connectors, agents or sessions.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Individual tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Start a server and an agent in a temp dir, issue and check SVIDs and a task token, stop.
    Demo,
    /// Load a running agent (and through it the server) with concurrent workloads; print throughput and latency.
    Bench(BenchArgs),
}

impl Command {
    /// The async worker threads this command asks for (`--worker-threads`
    /// of `server run` and `agent run`); `None`: one per core.
    pub(crate) fn worker_threads(&self) -> Option<NonZeroUsize> {
        match self {
            Self::Server(ServerCommand::Run(run)) => run.worker_threads,
            Self::Agent(AgentCommand::Run(run)) => Some(run.worker_threads),
            _ => None,
        }
    }
}

/// `lanyard bench`: this process must be registered as a workload (the agent attests it as itself).
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// An operation to drive; repeatable (default: x509 and jwt, task-token with --task, verify with --bundle-url too).
    #[arg(long = "op", value_enum, value_name = "OP")]
    pub(crate) ops: Vec<crate::loadgen::Op>,
    /// Concurrent simulated workloads, each on its own connection to the agent.
    #[arg(long, default_value_t = 8)]
    pub(crate) workloads: u32,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = lanyard_core::parse_duration)]
    pub(crate) duration: std::time::Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = lanyard_core::parse_duration)]
    pub(crate) warmup: std::time::Duration,
    /// The audience of the JWT-SVIDs and task tokens.
    #[arg(long, default_value = "bench")]
    pub(crate) audience: String,
    /// The task to fetch task tokens for.
    #[arg(long, requires = "tools")]
    pub(crate) task: Option<String>,
    /// A tool for the task tokens; repeatable.
    #[arg(long = "tool", requires = "task")]
    pub(crate) tools: Vec<String>,
    /// The task tokens' action: read, write, delete or execute.
    #[arg(long, default_value = "read")]
    pub(crate) action: String,
    /// The issuer's bundle endpoint, to verify the fetched task tokens against.
    #[arg(long, value_name = "URL")]
    pub(crate) bundle_url: Option<String>,
    /// A steady rate: operations per second of each operation, spread over the
    /// workloads (0: every loop sends its next request as soon as the last returns).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u32,
    /// Also print what each operation did in every period of this length (a
    /// JSON line each with --output json), for long runs.
    #[arg(long, value_parser = lanyard_core::parse_duration, value_name = "DURATION")]
    pub(crate) interval: Option<std::time::Duration>,
    #[command(flatten)]
    pub(crate) socket: WorkloadSocket,
    #[command(flatten)]
    pub(crate) output: OutputArg,
}

/// Where a command that an admin or a workload may run is sent: the admin
/// socket when one is named (flag or LANYARD_ADMIN_SOCKET), else the agent
/// socket when one is named (flag or SPIFFE_ENDPOINT_SOCKET), else the default
/// admin socket.
#[derive(Args, Debug, Clone)]
pub(crate) struct EitherSocket {
    /// The server's admin socket.
    #[arg(long, env = "LANYARD_ADMIN_SOCKET")]
    pub(crate) admin_socket: Option<PathBuf>,
    /// The agent's socket, to act as the calling workload.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub(crate) socket: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCommand {
    /// Begin a task (as an admin, or as a workload with task authority); prints the task id.
    Begin(TaskBegin),
    /// End a task and every task delegated from it.
    End {
        /// Task id.
        id: String,
        #[command(flatten)]
        socket: EitherSocket,
    },
    /// List tasks.
    List {
        /// Only tasks that can still mint.
        #[arg(long)]
        active: bool,
        /// Only this connector's.
        #[arg(long)]
        connector: Option<SpiffeId>,
        /// Only this session's.
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Hand part of a task to another connector (as the task's connector); prints the child id.
    Delegate {
        /// The parent task.
        #[arg(long)]
        task: String,
        /// The connector that will serve the child task.
        #[arg(long)]
        to: SpiffeId,
        /// A tool of the parent's for the child; repeatable.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        /// An audience of the parent's (default: all of them); repeatable.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// How long (default: as long as the parent).
        #[arg(long, value_parser = lanyard_core::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        socket: WorkloadSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Args, Debug)]
pub(crate) struct TaskBegin {
    /// The connector that will serve the task.
    #[arg(long)]
    pub(crate) connector: SpiffeId,
    /// The end user's subject.
    #[arg(long)]
    pub(crate) user_sub: String,
    /// The end user's identity provider.
    #[arg(long)]
    pub(crate) user_iss: String,
    /// The end user's session.
    #[arg(long)]
    pub(crate) session: String,
    /// A tool the task may use; repeatable.
    #[arg(long = "tool", required = true)]
    pub(crate) tools: Vec<String>,
    /// An audience the task may present tokens to; repeatable.
    #[arg(long = "audience", required = true)]
    pub(crate) audiences: Vec<String>,
    /// public, internal, confidential or restricted.
    #[arg(long)]
    pub(crate) classification: String,
    /// read, write, delete or execute.
    #[arg(long)]
    pub(crate) action: String,
    /// How long the task lasts.
    #[arg(long, default_value = "10m", value_parser = lanyard_core::parse_duration)]
    pub(crate) ttl: std::time::Duration,
    #[command(flatten)]
    pub(crate) socket: EitherSocket,
    #[command(flatten)]
    pub(crate) output: OutputArg,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskTokenCommand {
    /// Fetch a task token for this process; prints the JWT.
    Fetch {
        /// Task id.
        #[arg(long)]
        task: String,
        /// The one audience.
        #[arg(long)]
        audience: String,
        /// A tool; repeatable.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        /// read, write, delete or execute.
        #[arg(long)]
        action: String,
        /// Lifetime (at most 5m).
        #[arg(long, value_parser = lanyard_core::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        socket: WorkloadSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SessionCommand {
    /// Revoke a session: its tasks end and no token is minted for it again.
    Revoke {
        /// Session id.
        session: String,
        #[command(flatten)]
        admin: AdminSocket,
    },
}

/// Exactly one subject of a risk report.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct RiskSubjectArgs {
    /// An end user's subject.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// A connector's SPIFFE ID.
    #[arg(long)]
    pub(crate) connector: Option<SpiffeId>,
    /// An agent's SPIFFE ID.
    #[arg(long)]
    pub(crate) agent: Option<SpiffeId>,
    /// A session.
    #[arg(long)]
    pub(crate) session: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RiskCommand {
    /// Report a risk: no token is minted for the subject until it is cleared.
    Report {
        #[command(flatten)]
        subject: RiskSubjectArgs,
        /// With --user: only this issuer's user.
        #[arg(long)]
        user_iss: Option<String>,
        /// low, medium or high.
        #[arg(long, default_value = "high")]
        level: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Clear the open risk on a subject.
    Clear {
        #[command(flatten)]
        subject: RiskSubjectArgs,
        /// With --user: only this issuer's user.
        #[arg(long)]
        user_iss: Option<String>,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// List open risks.
    List {
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Revoke one token by its jti.
    Revoke {
        /// The token's jti (base64url: it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        jti: String,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Check a token as a relying service would: exit 0 and its claims as
    /// JSON, or exit 1 and one line saying which check failed.
    Verify(TokenVerifyArgs),
}

/// `lanyard token verify`.
#[derive(Args, Debug)]
pub(crate) struct TokenVerifyArgs {
    /// The issuer's bundle endpoint (`http(s)://host:port`, or its `/bundle`
    /// URL): bundle and revocation feed are read from it.
    #[arg(long, value_name = "URL", required_unless_present = "bundle", conflicts_with = "bundle")]
    pub(crate) bundle_url: Option<String>,
    /// A SPIFFE bundle file (JSON) instead; revocations are then not checked.
    #[arg(long, value_name = "FILE")]
    pub(crate) bundle: Option<PathBuf>,
    /// This service's audience: `aud` must be exactly this.
    #[arg(long)]
    pub(crate) audience: String,
    /// The tool about to be invoked: the token must grant it.
    #[arg(long)]
    pub(crate) tool: Option<String>,
    /// The action about to be performed: the token must allow it.
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// The expected `iss` (default: the issuer named by the endpoint's OIDC
    /// discovery document, when it has one).
    #[arg(long)]
    pub(crate) issuer: Option<String>,
    /// CA certificate(s), PEM, trusted for an https bundle URL.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The token is a plain JWT-SVID, not a task token.
    #[arg(long)]
    pub(crate) jwt_svid: bool,
    /// The token; `-` reads it from standard input.
    pub(crate) token: String,
}

#[derive(Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
pub(crate) enum PolicyCommand {
    /// Reload --policy DIR; the old set stays if the new one does not validate.
    Reload {
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Evaluate the policies for one request; exit 0 when allowed, 1 when denied.
    Check {
        /// The connector's SPIFFE ID.
        #[arg(long)]
        connector: SpiffeId,
        /// The tool.
        #[arg(long)]
        tool: String,
        /// The end user's subject.
        #[arg(long)]
        user: String,
        /// The end user's identity provider.
        #[arg(long, default_value = "https://idp.example")]
        user_iss: String,
        /// read, write, delete or execute.
        #[arg(long, default_value = "read")]
        action: String,
        /// The audience.
        #[arg(long, default_value = "lanyard-policy-check")]
        audience: String,
        /// public, internal, confidential or restricted.
        #[arg(long, default_value = "internal")]
        classification: String,
        /// The session.
        #[arg(long)]
        session: Option<String>,
        /// Evaluate at this Unix time instead of now.
        #[arg(long)]
        at: Option<i64>,
        #[command(flatten)]
        admin: AdminSocket,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Print the newest records (JSON lines).
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Print matching records (JSON lines).
    Query {
        /// Only this task's.
        #[arg(long)]
        task: Option<String>,
        /// Only this end user's (subject).
        #[arg(long)]
        user: Option<String>,
        /// Only this connector's.
        #[arg(long)]
        connector: Option<SpiffeId>,
        /// Only this recent (e.g. 1h).
        #[arg(long, value_parser = lanyard_core::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only this kind (e.g. tasktoken.mint).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Walk the hash chain and its signed checkpoints; exit 1 naming the first broken record.
    Verify {
        /// Verify a (copy of a) server data directory offline instead of asking the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also require this checkpoint (a JWS kept elsewhere): detects truncation.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Print the newest signed checkpoint, to keep outside the server.
    Checkpoint {
        #[command(flatten)]
        admin: AdminSocket,
    },
}

/// Where the server's admin socket is.
#[derive(Args, Debug, Clone)]
pub(crate) struct AdminSocket {
    /// The server's admin socket.
    #[arg(long, env = "LANYARD_ADMIN_SOCKET", default_value = "/tmp/lanyard/admin.sock")]
    pub(crate) admin_socket: PathBuf,
}

/// Where the agent's Workload API socket is.
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkloadSocket {
    /// The agent's Workload API socket (`unix:///path` or a path).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", default_value = "unix:///tmp/lanyard/agent.sock")]
    pub(crate) socket: String,
}

/// How listings are printed.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct OutputArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ServerCommand {
    /// Run the issuer.
    Run(ServerRun),
    /// Check a configuration (file and flags) without starting anything.
    CheckConfig(ServerRun),
}

#[derive(Args, Debug)]
pub(crate) struct ServerRun {
    /// A TOML file whose keys are these flags' names (`data-dir = "…"`);
    /// flags given here win over it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/lanyard/server")]
    pub(crate) data_dir: PathBuf,
    /// Keep the store in PostgreSQL instead (postgres://user@host:port/db), shared
    /// by every server replica; --data-dir is then unused.
    #[arg(long, env = "LANYARD_STORE_URL", value_name = "URL")]
    pub(crate) store_url: Option<String>,
    /// The trust domain (e.g. example.org).
    #[arg(long)]
    pub(crate) trust_domain: TrustDomain,
    #[command(flatten)]
    pub(crate) admin: AdminSocket,
    /// Node API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub(crate) listen: SocketAddr,
    /// Bundle endpoint address.
    #[arg(long)]
    pub(crate) bundle_listen: Option<SocketAddr>,
    /// The URL relying parties reach the bundle endpoint at (JWT `iss`).
    #[arg(long)]
    pub(crate) public_url: Option<String>,
    /// Serve the bundle endpoint over HTTPS with this certificate chain (PEM;
    /// SPIFFE federation `https_web`).
    #[arg(long, value_name = "FILE", requires = "bundle_tls_key")]
    pub(crate) bundle_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --bundle-tls-cert.
    #[arg(long, value_name = "FILE", requires = "bundle_tls_cert")]
    pub(crate) bundle_tls_key: Option<PathBuf>,
    /// Lifetime of agent SVIDs.
    #[arg(long, default_value = "1h")]
    pub(crate) agent_ttl: Ttl,
    /// An existing CA's certificate (PEM): Lanyard's CAs are issued as its
    /// intermediates, and it anchors the bundle.
    #[arg(long, value_name = "FILE", requires = "upstream_ca_key")]
    pub(crate) upstream_ca_cert: Option<PathBuf>,
    /// The private key (PEM PKCS#8) of --upstream-ca-cert.
    #[arg(long, value_name = "FILE", requires = "upstream_ca_cert")]
    pub(crate) upstream_ca_key: Option<PathBuf>,
    /// Key-encryption key (a 0600 file: 32 bytes raw, hex or base64): every
    /// private signing key in the store is sealed with it (AES-256-GCM).
    #[arg(long, value_name = "FILE", env = "LANYARD_KEK_FILE")]
    pub(crate) kek_file: Option<PathBuf>,
    /// Lifetime of each X.509 CA; a successor is published at half of it and
    /// signs from two thirds.
    #[arg(long, default_value = "24h", value_parser = lanyard_core::parse_duration)]
    pub(crate) ca_ttl: std::time::Duration,
    /// Lifetime of each JWT-SVID and task-token signing key (rotated the same way).
    #[arg(long, default_value = "24h", value_parser = lanyard_core::parse_duration)]
    pub(crate) jwt_key_ttl: std::time::Duration,
    /// Directory of Cedar policies (*.cedar); reloaded on SIGHUP and `lanyard policy reload`.
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// Append a signed checkpoint to the audit log every this many records (0: never).
    #[arg(long, default_value_t = 1000)]
    pub(crate) checkpoint_every: u64,
    /// Node API requests per second one agent may send (twice that in a
    /// burst); over it, ResourceExhausted. 0: no limit.
    #[arg(long, default_value_t = lanyard_server::DEFAULT_AGENT_RATE)]
    pub(crate) agent_rate: u32,
    /// Revocation-feed long-polls held at once; more get 503 and Retry-After. 0: no limit.
    #[arg(long, default_value_t = lanyard_server::DEFAULT_MAX_LONG_POLLS)]
    pub(crate) max_long_polls: usize,
    /// Open risk at or above this level denies tokens: low, medium or high.
    #[arg(long, default_value = "low")]
    pub(crate) risk_threshold: lanyard_policy::RiskLevel,
    /// Log lines as text or JSON (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Threads that serve requests (the store's flusher and blocking work
    /// have their own). Default: one per core.
    #[arg(long, value_name = "N")]
    pub(crate) worker_threads: Option<NonZeroUsize>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
    /// Run the node agent.
    Run(AgentRun),
    /// Check a configuration (file and flags) without starting anything.
    CheckConfig(AgentRun),
    /// List attested agents.
    List {
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Ban an agent: it gets nothing more, not even renewal.
    Ban {
        /// The agent's SPIFFE ID (spiffe://<td>/agent/<name>).
        spiffe_id: SpiffeId,
        #[command(flatten)]
        admin: AdminSocket,
    },
}

#[derive(Args, Debug)]
pub(crate) struct AgentRun {
    /// Workload API requests per second one process may send (twice that in
    /// a burst); over it, ResourceExhausted. 0: no limit.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) workload_rate: u32,
    /// Workload API streams one process may hold open at once; over it,
    /// ResourceExhausted. 0: no limit.
    #[arg(long, default_value_t = 64)]
    pub(crate) workload_streams: usize,
    /// Serve `/metrics` (Prometheus) and `/healthz` over HTTP here.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Log lines as text or JSON (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Threads that serve workloads and talk to the server. One is enough
    /// for about 15,000 task tokens a second and leaves the node's other
    /// cores to its workloads; on the 2-core reference machine it gave a
    /// lower p50 than one per core in alternated runs, the p99 within their spread
    /// (docs/benchmarks.md).
    #[arg(long, value_name = "N", default_value = "1")]
    pub(crate) worker_threads: NonZeroUsize,
    /// A TOML file whose keys are these flags' names (`server = ["…"]`);
    /// flags given here win over it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where the agent keeps its SVID and bundle.
    #[arg(long, default_value = "/var/lib/lanyard/agent")]
    pub(crate) data_dir: PathBuf,
    /// The server's node API (host:port); may be given several times.
    #[arg(long = "server", required = true)]
    pub(crate) servers: Vec<String>,
    /// One-time join token (first start only).
    #[arg(long, env = "LANYARD_JOIN_TOKEN")]
    pub(crate) join_token: Option<String>,
    /// PEM CA certificates to trust the server with on the first start.
    #[arg(long)]
    pub(crate) trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) socket: WorkloadSocket,
}

#[derive(Subcommand, Debug)]
pub(crate) enum EntryCommand {
    /// Register a workload.
    Create(EntryCreate),
    /// List entries.
    List {
        /// Only entries with this parent.
        #[arg(long)]
        parent_id: Option<SpiffeId>,
        /// Only entries with this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<SpiffeId>,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one entry.
    Show {
        /// Entry id.
        id: String,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Change an entry; flags given replace those fields.
    Update(EntryUpdate),
    /// Delete an entry.
    Delete {
        /// Entry id.
        id: String,
        #[command(flatten)]
        admin: AdminSocket,
    },
}

#[derive(Args, Debug)]
pub(crate) struct EntryCreate {
    /// The identity to hand out.
    #[arg(long)]
    pub(crate) spiffe_id: SpiffeId,
    /// The agent allowed to serve it.
    #[arg(long)]
    pub(crate) parent_id: SpiffeId,
    #[command(flatten)]
    pub(crate) fields: EntryFields,
    #[command(flatten)]
    pub(crate) admin: AdminSocket,
    #[command(flatten)]
    pub(crate) output: OutputArg,
}

#[derive(Args, Debug)]
pub(crate) struct EntryUpdate {
    /// Entry id.
    pub(crate) id: String,
    /// New SPIFFE ID.
    #[arg(long)]
    pub(crate) spiffe_id: Option<SpiffeId>,
    /// New parent.
    #[arg(long)]
    pub(crate) parent_id: Option<SpiffeId>,
    #[command(flatten)]
    pub(crate) fields: EntryFields,
    #[command(flatten)]
    pub(crate) admin: AdminSocket,
    #[command(flatten)]
    pub(crate) output: OutputArg,
}

/// Entry fields shared by create and update.
#[derive(Args, Debug)]
pub(crate) struct EntryFields {
    /// A selector the caller must match (unix:uid:1000, unix:path:/usr/bin/x, …); repeatable.
    #[arg(long = "selector")]
    pub(crate) selectors: Vec<lanyard_core::Selector>,
    /// X.509-SVID lifetime.
    #[arg(long)]
    pub(crate) x509_ttl: Option<Ttl>,
    /// JWT-SVID lifetime.
    #[arg(long)]
    pub(crate) jwt_ttl: Option<Ttl>,
    /// Extra DNS SAN; repeatable.
    #[arg(long = "dns-name")]
    pub(crate) dns_names: Vec<String>,
    /// Label handed to the workload with the SVID.
    #[arg(long)]
    pub(crate) hint: Option<String>,
    /// A tool this connector may ever be scoped to; repeatable.
    #[arg(long = "tool")]
    pub(crate) tools: Vec<String>,
    /// An audience it may ever get task tokens for; repeatable.
    #[arg(long = "audience")]
    pub(crate) audiences: Vec<String>,
    /// The most sensitive data its tasks may touch.
    #[arg(long)]
    pub(crate) max_classification: Option<String>,
    /// A connector (SPIFFE ID, or prefix ending in /*) it may delegate to; repeatable.
    #[arg(long = "delegate-to")]
    pub(crate) delegate_to: Vec<String>,
    /// This workload may begin tasks.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) task_authority: Option<bool>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum JoinTokenCommand {
    /// Create a one-time token for an agent; prints the token.
    Create {
        /// The agent's name: it becomes spiffe://<td>/agent/<name>.
        #[arg(long)]
        name: String,
        /// How long the token may be used.
        #[arg(long, default_value = "10m", value_parser = lanyard_core::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CaCommand {
    /// List every signing key with its phase (prepared, active, retired, expired, revoked).
    Show {
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Rotate now: activate the prepared key, or a new one; the old key stays
    /// in the bundle until it expires.
    Rotate {
        /// x509-ca, jwt-svid or task-token (repeatable; default: all three).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke a key (compromised, say): out of the bundle at once; if it was
    /// active, a new key is activated.
    Revoke {
        /// The key's id (JWT kid, or the CA certificate's serial) from `ca show`.
        /// A kid is base64url and may start with `-`.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        admin: AdminSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// How `server run` and `agent run` write their logs.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum StoreCommand {
    /// Back up the running server's store, consistent to one point, into a
    /// new directory on the server's host.
    Backup {
        /// A new or empty directory (made absolute here).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[command(flatten)]
        admin: AdminSocket,
    },
    /// Restore a backup into a new data directory (offline: no server runs
    /// on it); checks the checksums and the whole audit chain.
    Restore {
        /// The backup directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The new data directory (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Copy a sled store (offline: stop its server first) into an empty
    /// PostgreSQL database: every record under the same revisions and
    /// sequence numbers, and the same audit chain, checked.
    Migrate {
        /// The server's data directory.
        #[arg(long, value_name = "DIR")]
        from_data_dir: PathBuf,
        /// The database, as --store-url takes it (postgres://user@host:port/db).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum BundleCommand {
    /// Print the trust bundle.
    Show {
        /// PEM certificates or the SPIFFE bundle JSON.
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        admin: AdminSocket,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub(crate) enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SvidCommand {
    /// Fetch this process's X.509-SVIDs from the agent.
    Fetch {
        /// Write svid.pem, svid_key.pem and bundle.pem into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
        #[command(flatten)]
        socket: WorkloadSocket,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum JwtCommand {
    /// Fetch a JWT-SVID for an audience; prints the token.
    Fetch {
        /// Audience; repeatable.
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Only this identity, when the process has several.
        #[arg(long)]
        spiffe_id: Option<SpiffeId>,
        #[command(flatten)]
        socket: WorkloadSocket,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Validate a JWT-SVID through the agent; prints its claims.
    Validate {
        /// The audience the token must be for.
        #[arg(long)]
        audience: String,
        /// The token.
        token: String,
        #[command(flatten)]
        socket: WorkloadSocket,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn key_ids_and_jtis_may_start_with_a_dash() {
        let cli = Cli::try_parse_from(["lanyard", "ca", "revoke", "-z0r8Dc", "--output", "json"]).unwrap();
        let Command::Ca(CaCommand::Revoke { id, output, .. }) = cli.command else { panic!("not ca revoke") };
        assert_eq!((id.as_str(), output.output), ("-z0r8Dc", Output::Json));
        let cli = Cli::try_parse_from(["lanyard", "token", "revoke", "-abc_DEF"]).unwrap();
        let Command::Token(TokenCommand::Revoke { jti, .. }) = cli.command else { panic!("not token revoke") };
        assert_eq!(jti, "-abc_DEF");
    }

    #[test]
    fn the_agent_runs_on_one_worker_thread_unless_told_and_the_server_on_one_per_core() {
        let threads = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command.worker_threads());
        let agent = ["lanyard", "agent", "run", "--server", "127.0.0.1:8081"];
        assert_eq!(threads(&agent).unwrap(), NonZeroUsize::new(1));
        assert_eq!(threads(&[&agent[..], &["--worker-threads", "3"]].concat()).unwrap(), NonZeroUsize::new(3));
        let server = ["lanyard", "server", "run", "--trust-domain", "example.org"];
        assert_eq!(threads(&server).unwrap(), None);
        assert_eq!(threads(&[&server[..], &["--worker-threads", "2"]].concat()).unwrap(), NonZeroUsize::new(2));
        assert_eq!(threads(&["lanyard", "demo"]).unwrap(), None);
        let zero = threads(&[&server[..], &["--worker-threads", "0"]].concat()).unwrap_err();
        assert!(zero.to_string().contains("--worker-threads"), "{zero}");
    }
}
