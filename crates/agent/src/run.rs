//! Agent start-up: attest (or reload the saved identity), then serve the
//! Workload API while the supervisor keeps the cache current.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use lanyard_ca::{bundle, csr, svid};
use lanyard_core::TrustDomain;
use lanyard_proto::agent::tasks_server::TasksServer;
use lanyard_proto::node::AttestRequest;
use lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::cache::Snapshot;
use crate::config::AgentConfig;
use crate::convert::bundle_from_proto;
use crate::identity::{self, AgentIdentity};
use crate::metrics::{self, AgentMetrics};
use crate::mint_batch;
use crate::node_client;
use crate::supervisor::Supervisor;
use crate::workload::{self, WorkloadApi};
use crate::{AgentError, attest, jwt_cache, uds};

/// How long open Workload API streams may keep the agent up after a stop signal.
pub(crate) const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Processes whose request rate is tracked at once (idle ones make room).
pub(crate) const MAX_RATE_LIMITED_PROCESSES: usize = 4096;

/// Largest Workload API request decoded.
pub(crate) const WORKLOAD_MAX_MESSAGE: usize = 64 * 1024;

/// An agent with its identity and socket ready.
pub struct Agent {
    config: AgentConfig,
    td: TrustDomain,
    identity: AgentIdentity,
    roots: Vec<Vec<u8>>,
    listener: UnixListener,
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Agent {
    /// Prepares the data directory, binds the Workload API socket, and
    /// either reloads the saved agent SVID or attests with the join token.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        if config.servers.is_empty() {
            return Err(AgentError::Config("at least one --server is required".into()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(|e| AgentError::DataDir(config.data_dir.clone(), e.to_string()))?;
        let fds = uds::raise_fd_limit();
        tracing::info!(soft = ?fds.current, hard = ?fds.maximum, "open descriptor limit");
        let listener = uds::bind(&config.socket).map_err(|e| AgentError::Socket(config.socket.clone(), e))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics::bind(addr).await.map_err(|e| AgentError::Listen(addr, e))?),
            None => None,
        };
        let roots = initial_roots(&config)?;
        let td = trust_domain_of(&roots)?;
        let saved = AgentIdentity::load(&config.data_dir)?.filter(|id| id.not_after > SystemTime::now());
        let identity = match (saved, &config.join_token) {
            (Some(id), _) => {
                tracing::info!(agent = %id.spiffe_id, "using saved agent SVID");
                id
            }
            (None, Some(token)) => attest_with_token(&config, &td, &roots, token).await?,
            (None, None) => {
                return Err(AgentError::Config(
                    "no valid agent SVID in the data directory and no --join-token to attest with".into(),
                ));
            }
        };
        let roots = match identity::load_bundle(&config.data_dir)? {
            Some(b) => bundle_from_proto(&b)?.x509_authorities,
            None => roots,
        };
        Ok(Self { config, td, identity, roots, listener, metrics_listener })
    }

    /// The agent's SPIFFE ID.
    pub fn spiffe_id(&self) -> &lanyard_core::SpiffeId {
        &self.identity.spiffe_id
    }

    /// Serves the Workload API until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AgentError> {
        let metrics = Arc::new(AgentMetrics::default());
        let metrics_task = self.metrics_listener.map(|listener| {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(listener, metrics).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            })
        });
        let (publish, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let (client_tx, client_rx) = watch::channel(None);
        let supervisor = Supervisor {
            servers: self.config.servers.clone(),
            data_dir: self.config.data_dir.clone(),
            td: self.td.clone(),
            identity: self.identity,
            roots: self.roots,
            snapshot: Snapshot::default(),
            publish,
            client: client_tx,
            server_index: 0,
            retry_at: None,
            remint: std::collections::HashSet::new(),
            renew_now: false,
            metrics: Arc::clone(&metrics),
        };
        let supervisor_task = tokio::spawn(supervisor.run());
        let api = WorkloadApi {
            td: self.td,
            snapshots,
            client: client_rx.clone(),
            attest_cache: Arc::new(attest::AttestCache::default()),
            jwts: Arc::new(jwt_cache::JwtCache::default()),
            metrics: Arc::clone(&metrics),
            limiter: (self.config.workload_rate > 0).then(|| {
                let rate = lanyard_core::rate::Rate::per_second(self.config.workload_rate);
                Arc::new(lanyard_core::rate::RateLimiter::new(rate, MAX_RATE_LIMITED_PROCESSES))
            }),
            streams: Arc::new(workload::StreamSlots::new(self.config.workload_streams)),
            mints: mint_batch::MintBatcher::start(client_rx.clone(), Arc::clone(&metrics)),
        };
        let tasks = TasksServer::new(api.clone()).max_decoding_message_size(WORKLOAD_MAX_MESSAGE);
        let service = SpiffeWorkloadApiServer::new(api).max_decoding_message_size(WORKLOAD_MAX_MESSAGE);
        tracing::info!(socket = %self.config.socket.display(), "workload API ready");
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(metrics::CallMetricsLayer(metrics))
                .layer(tower::util::MapResponseLayer::new(
                    lanyard_proto::status::bad_input_is_invalid_argument::<tonic::body::Body>,
                ))
                .trace_fn(|req| {
                    tracing::info_span!(
                        "workload",
                        path = %req.uri().path(),
                        pid = tracing::field::Empty,
                        uid = tracing::field::Empty
                    )
                })
                .add_service(tonic::service::interceptor::InterceptedService::new(service, workload::require_header))
                .add_service(tonic::service::interceptor::InterceptedService::new(tasks, workload::require_header))
                .serve_with_incoming_shutdown(uds::incoming(self.listener), async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                }),
        );
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // Workload API streams stay open as long as their clients do; give
        // them a moment, then go regardless.
        let result = match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(result)) => result.map_err(|e| AgentError::Serve(node_client::error_chain(&e))),
            Ok(Err(e)) => Err(AgentError::Serve(e.to_string())),
            Err(_) => Ok(()),
        };
        supervisor_task.abort();
        if let Some(task) = metrics_task {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.config.socket);
        result
    }
}

/// The CAs to trust the server with before the first sync: the bundle saved
/// in the data directory, else the operator's `--trust-bundle` file.
fn initial_roots(config: &AgentConfig) -> Result<Vec<Vec<u8>>, AgentError> {
    if let Some(saved) = identity::load_bundle(&config.data_dir)? {
        return Ok(bundle_from_proto(&saved)?.x509_authorities);
    }
    let path = config
        .trust_bundle
        .as_deref()
        .ok_or_else(|| AgentError::Config("--trust-bundle is required on the first start".into()))?;
    read_pem_bundle(path)
}

fn read_pem_bundle(path: &Path) -> Result<Vec<Vec<u8>>, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::DataDir(path.to_path_buf(), e.to_string()))?;
    let certs =
        bundle::parse_pem(&text, "CERTIFICATE").map_err(|e| AgentError::DataDir(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(AgentError::Config(format!("{} holds no PEM certificates", path.display())));
    }
    Ok(certs)
}

/// The trust domain named in the CA certificates' URI SAN.
fn trust_domain_of(roots: &[Vec<u8>]) -> Result<TrustDomain, AgentError> {
    roots
        .iter()
        .find_map(|der| svid::ca_trust_domain(der))
        .ok_or_else(|| AgentError::Config("trust bundle CA names no SPIFFE trust domain".into()))
}

/// Attests with a join token against each server in turn.
async fn attest_with_token(
    config: &AgentConfig,
    td: &TrustDomain,
    roots: &[Vec<u8>],
    token: &str,
) -> Result<AgentIdentity, AgentError> {
    let (key, request) = csr::new_key_and_csr().map_err(|e| AgentError::Keys(e.to_string()))?;
    let mut last_error = None;
    for server in &config.servers {
        let mut client = match node_client::connect(server, td, roots, None).await {
            Ok(c) => c,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let reply = client
            .attest(AttestRequest { join_token: token.to_owned(), csr: request.clone() })
            .await
            .map_err(|s| AgentError::Rpc("attest", s))?
            .into_inner();
        let bundle_proto = reply.bundle.ok_or_else(|| AgentError::Protocol("attest answer has no bundle".into()))?;
        let bundle = bundle_from_proto(&bundle_proto)?;
        let identity = AgentIdentity::new(reply.svid_chain, key)?;
        svid::verify_chain(&identity.chain, &bundle.x509_authorities, SystemTime::now(), svid::Usage::Client)
            .map_err(|e| AgentError::Protocol(format!("agent SVID: {e}")))?;
        identity.save(&config.data_dir)?;
        identity::save_bundle(&config.data_dir, &bundle_proto)?;
        tracing::info!(agent = %identity.spiffe_id, %server, "attested with join token");
        return Ok(identity);
    }
    Err(last_error.unwrap_or_else(|| AgentError::Config("no server to attest with".into())))
}
