//! The command line, as DESIGN.md's contract spells it.

use std::net::SocketAddr;
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
    /// X.509-SVIDs, as a workload sees them through the agent.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// JWT-SVIDs, as a workload sees them through the agent.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Start a server and an agent in a temp dir, issue and check SVIDs, stop.
    Demo,
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
}

#[derive(Args, Debug)]
pub(crate) struct ServerRun {
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/lanyard/server")]
    pub(crate) data_dir: PathBuf,
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
    /// Lifetime of agent SVIDs.
    #[arg(long, default_value = "1h")]
    pub(crate) agent_ttl: Ttl,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
    /// Run the node agent.
    Run(AgentRun),
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
