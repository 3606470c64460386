//! `server run` and `agent run`: long-running roles with logs and signals.

use anyhow::Context;
use lanyard_agent::{Agent, AgentConfig};
use lanyard_server::{Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{AgentRun, LogFormat, ServerRun};
use crate::clients::socket_path;

/// Logs to stderr; `LANYARD_LOG` (or `RUST_LOG`) sets the filter, default `info`.
fn init_logging(format: LogFormat) {
    let filter =
        std::env::var("LANYARD_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".to_owned());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match format {
        // One JSON object per line: spans' fields (path, caller, agent, …) included.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

pub(crate) async fn server(args: ServerRun) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let server = Server::bind(server_config(args)).await.context("cannot start the server")?;
    server.serve(terminated()).await.context("server stopped with an error")?;
    Ok(())
}

/// `server check-config`: what the configuration amounts to, or why not.
pub(crate) async fn check_server(args: ServerRun) -> anyhow::Result<()> {
    let source = args.config.as_ref().map_or("flags".to_owned(), |p| p.display().to_string());
    let found = lanyard_server::check_config(&server_config(args))
        .await
        .with_context(|| format!("configuration refused ({source})"))?;
    println!("{source}: OK ({})", found.join("; "));
    Ok(())
}

/// `agent check-config`: what the configuration amounts to, or why not.
pub(crate) fn check_agent(args: AgentRun) -> anyhow::Result<()> {
    let source = args.config.as_ref().map_or("flags".to_owned(), |p| p.display().to_string());
    let socket = socket_path(&args.socket.socket)?;
    let mut found = vec![format!("servers {}", args.servers.join(", ")), format!("socket {}", socket.display())];
    match &args.trust_bundle {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| format!("--trust-bundle {}", path.display()))?;
            let certs = lanyard_ca::bundle::parse_pem(&pem, "CERTIFICATE")
                .with_context(|| format!("--trust-bundle {} is not PEM", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "--trust-bundle {} holds no certificate", path.display());
            found.push(format!("{} trusted CA certificate(s)", certs.len()));
        }
        None => found.push("no --trust-bundle: the data dir must hold a joined identity".to_owned()),
    }
    if args.join_token.is_some() {
        found.push("a join token".to_owned());
    }
    println!("{source}: OK ({})", found.join("; "));
    Ok(())
}

fn server_config(args: ServerRun) -> ServerConfig {
    let mut config = ServerConfig::new(args.trust_domain, args.data_dir, args.admin.admin_socket, args.listen);
    config.store_url = args.store_url;
    config.bundle_listen = args.bundle_listen;
    config.public_url = args.public_url;
    config.bundle_tls = args.bundle_tls_cert.zip(args.bundle_tls_key);
    config.agent_svid_ttl = args.agent_ttl;
    config.ca_ttl = args.ca_ttl;
    config.kek_file = args.kek_file;
    config.agent_rate = args.agent_rate;
    config.max_long_polls = args.max_long_polls;
    config.upstream_ca = args.upstream_ca_cert.zip(args.upstream_ca_key);
    config.jwt_key_ttl = args.jwt_key_ttl;
    config.policy_dir = args.policy;
    config.checkpoint_every = args.checkpoint_every;
    config.risk_threshold = args.risk_threshold;
    config
}

pub(crate) async fn agent(args: AgentRun) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = AgentConfig {
        data_dir: args.data_dir,
        servers: args.servers,
        join_token: args.join_token,
        trust_bundle: args.trust_bundle,
        socket: socket_path(&args.socket.socket)?,
        metrics_listen: args.metrics_listen,
        workload_rate: args.workload_rate,
        workload_streams: args.workload_streams,
    };
    let agent = Agent::start(config).await.context("cannot start the agent")?;
    agent.serve(terminated()).await.context("agent stopped with an error")?;
    Ok(())
}
