//! Start-up, serving and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::{Clock, SystemClock};
use lanyard_proto::admin::admin_server::AdminServer;
use lanyard_proto::node::node_server::NodeServer;
use lanyard_proto::status::bad_input_is_invalid_argument;
use lanyard_store::{PgStore, SledStore, Store, StoreError};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::body::Body;
use tonic::codegen::http;
use tower::util::MapResponseLayer;

use crate::admin::AdminApi;
use crate::admin_socket;
use crate::config::ServerConfig;
use crate::keys;
use crate::limits::{ADMIN_MAX_MESSAGE, NODE_MAX_MESSAGE, TLS_HANDSHAKE_TIMEOUT};
use crate::node::NodeApi;
use crate::state::State;
use crate::tls::{self, ServerCert};

/// Why the server could not start; each says which part and why, in one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is invalid.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The store could not be opened (locked by another process, newer schema, …).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Keys could not be loaded or generated.
    #[error("keys: {0}")]
    Keys(String),
    /// The admin socket could not be created.
    #[error("admin socket {path}: {1}", path = .0.display())]
    AdminSocket(PathBuf, String),
    /// The node API could not listen.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// A server failed while running.
    #[error("serving: {0}")]
    Serve(String),
}

impl From<lanyard_ca::CaError> for StartError {
    fn from(e: lanyard_ca::CaError) -> Self {
        Self::Keys(e.to_string())
    }
}

/// The shortest key lifetime accepted (tests use a few seconds; production days).
const MIN_KEY_LIFETIME: Duration = Duration::from_secs(6);

/// What [`check`] loaded on the way.
struct Checked {
    kek: Option<crate::kek::Kek>,
    upstream: Option<lanyard_ca::UpstreamCa>,
}

/// The checks that need no store and no socket: URLs, lifetimes, the KEK
/// file, the bundle endpoint's certificate and key.
fn check(config: &ServerConfig) -> Result<Checked, StartError> {
    if let Some(url) = &config.public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(StartError::Config(format!("--public-url {url:?} must start with http:// or https://")));
    }
    if config.ca_ttl < MIN_KEY_LIFETIME || config.jwt_key_ttl < MIN_KEY_LIFETIME {
        return Err(StartError::Config(format!(
            "key lifetimes must be at least {}s: rotation needs time to publish a key before it signs",
            MIN_KEY_LIFETIME.as_secs()
        )));
    }
    let kek = match &config.kek_file {
        Some(path) => Some(crate::kek::Kek::from_file(path).map_err(|e| StartError::Config(e.to_string()))?),
        None => None,
    };
    if let Some((cert, key)) = &config.bundle_tls {
        crate::https::load_tls(cert, key)?;
    }
    let upstream = match &config.upstream_ca {
        Some((cert, key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))
            };
            let upstream = lanyard_ca::UpstreamCa::from_pem(&read(cert)?, &read(key)?)
                .map_err(|e| StartError::Config(format!("--upstream-ca-cert/--upstream-ca-key: {e}")))?;
            Some(upstream)
        }
        None => None,
    };
    Ok(Checked { kek, upstream })
}

/// Checks a configuration without starting anything (`server check-config`):
/// everything [`Server::bind`] checks before it opens the store and binds,
/// and the policies load. Says what it found on success.
pub async fn check_config(config: &ServerConfig) -> Result<Vec<String>, StartError> {
    let Checked { kek, upstream } = check(config)?;
    let policy = crate::policy::load(config.policy_dir.as_deref())
        .await
        .map_err(|e| StartError::Config(format!("--policy: {e}")))?;
    let mut found = vec![
        format!("trust domain {}", config.trust_domain),
        format!("node API on {}", config.listen),
        match &config.store_url {
            Some(url) => format!(
                "store: {}",
                PgStore::describe(url).map_err(|e| StartError::Config(format!("--store-url: {e}")))?
            ),
            None => format!("store in {}", config.data_dir.display()),
        },
    ];
    if let Some(addr) = config.bundle_listen {
        let scheme = if config.bundle_tls.is_some() { "https" } else { "http" };
        found.push(format!("bundle endpoint on {scheme}://{addr}"));
    }
    if upstream.is_some() {
        found.push("CAs issued as intermediates of the upstream CA".to_owned());
    }
    found.push(match kek {
        Some(_) => "private keys sealed with the KEK".to_owned(),
        None => "no KEK: private keys stored unencrypted".to_owned(),
    });
    found.push(format!("{} Cedar polic{}", policy.len(), if policy.len() == 1 { "y" } else { "ies" }));
    Ok(found)
}

/// A server with its store open and its sockets bound, ready to serve.
pub struct Server {
    pub(crate) state: Arc<State>,
    node_listener: TcpListener,
    admin_listener: UnixListener,
    bundle_listener: Option<TcpListener>,
    bundle_tls: Option<Arc<rustls::ServerConfig>>,
    server_cert: Arc<ServerCert>,
    server_cert_not_after: std::time::SystemTime,
}

impl Server {
    /// Opens the store (`config.store_url`, else `config.data_dir`), loads or creates the keys and
    /// binds both APIs. Fails fast, with a message naming the culprit.
    pub async fn bind(config: ServerConfig) -> Result<Self, StartError> {
        Self::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Server::bind`], with an injected clock.
    pub async fn bind_with_clock(mut config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let Checked { kek, upstream } = check(&config)?;
        let store: Arc<dyn Store> = match &config.store_url {
            Some(url) => Arc::new(PgStore::connect(url).await?),
            None => Arc::new(SledStore::open(&config.data_dir)?),
        };
        let td = config.trust_domain.clone();
        keys::seal_at_rest(store.as_ref(), kek.as_ref(), clock.now()).await?;
        let context =
            keys::KeyContext { td: &td, lifetimes: config.lifetimes(), kek: kek.as_ref(), upstream: upstream.as_ref() };
        let keys = keys::reconcile(store.as_ref(), context, clock.now()).await?;
        let (server_cert, server_cert_not_after) = ServerCert::new(&keys.x509, &td, clock.now())?;
        let node_listener = TcpListener::bind(config.listen).await.map_err(|e| StartError::Listen(config.listen, e))?;
        let bundle_listener = match config.bundle_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| StartError::Listen(addr, e))?),
            None => None,
        };
        let bundle_tls = match &config.bundle_tls {
            Some((cert, key)) => Some(crate::https::load_tls(cert, key)?),
            None => None,
        };
        if let (Some(listener), None) = (&bundle_listener, &config.public_url) {
            let addr = listener.local_addr().map_err(|e| StartError::Listen(config.listen, e))?;
            let scheme = if bundle_tls.is_some() { "https" } else { "http" };
            config.public_url = Some(format!("{scheme}://{addr}"));
        }
        let admin_listener = admin_socket::bind_private(&config.admin_socket)?;
        let policy = crate::policy::load(config.policy_dir.as_deref())
            .await
            .map_err(|e| StartError::Config(format!("--policy: {e}")))?;
        let ceilings = lanyard_policy::Ceilings { risk_threshold: config.risk_threshold };
        let config_agent_rate = config.agent_rate;
        let state = Arc::new(State {
            td,
            store,
            keys: watch::Sender::new(Arc::new(keys)),
            clock,
            config,
            agent_events: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            policy: std::sync::RwLock::new(Arc::new(policy)),
            ceilings,
            svid_cache: crate::svid_cache::SvidCache::default(),
            agent_leaves: crate::svid_cache::LeafCache::default(),
            key_ops: tokio::sync::Mutex::new(()),
            kek,
            metrics: crate::metrics::Metrics::default(),
            upstream,
            agent_limiter: (config_agent_rate > 0).then(|| {
                lanyard_core::rate::RateLimiter::new(lanyard_core::rate::Rate::per_second(config_agent_rate), 65_536)
            }),
        });
        Ok(Self {
            state,
            node_listener,
            admin_listener,
            bundle_listener,
            bundle_tls,
            server_cert: Arc::new(server_cert),
            server_cert_not_after,
        })
    }

    /// The node API's bound address (useful when listening on port 0).
    pub fn node_addr(&self) -> Result<SocketAddr, std::io::Error> {
        self.node_listener.local_addr()
    }

    /// The bundle endpoint's bound address, when it is on.
    pub fn bundle_addr(&self) -> Result<Option<SocketAddr>, std::io::Error> {
        self.bundle_listener.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// The current trust bundle as PEM, e.g. for an agent's `--trust-bundle`.
    pub fn bundle_pem(&self) -> String {
        self.state.keys().bundle.x509_pem()
    }

    /// Serves until `shutdown` resolves, then drains and flushes the store.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let roots = self.state.keys().bundle.x509_authorities.clone();
        let tls_config = Arc::new(tls::server_config(Arc::clone(&self.server_cert), &roots)?);
        let (acceptors, acceptor_rx) = watch::channel(TlsAcceptor::from(tls_config));

        let node =
            NodeServer::new(NodeApi { state: Arc::clone(&self.state) }).max_decoding_message_size(NODE_MAX_MESSAGE);
        let incoming = tls_incoming(self.node_listener, acceptor_rx);
        // gRPC health, for load balancers and orchestrators: SERVING once
        // bound, NOT_SERVING when shutting down. Needs no client certificate.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NodeServer<NodeApi>>().await;
        let node_task = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(bad_input_layer())
                .trace_fn(|req| tracing::info_span!("node", path = %req.uri().path(), caller = tracing::field::Empty))
                .add_service(node)
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
        );

        let admin = AdminServer::new(AdminApi { state: Arc::clone(&self.state), server_uid: admin_socket::own_uid() })
            .max_decoding_message_size(ADMIN_MAX_MESSAGE);
        let admin_task = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(bad_input_layer())
                .trace_fn(|req| tracing::info_span!("admin", path = %req.uri().path(), caller = tracing::field::Empty))
                .add_service(admin)
                .serve_with_incoming_shutdown(UnixListenerStream::new(self.admin_listener), stopped(stop_rx.clone())),
        );

        let bundle_task = match (self.bundle_listener, self.bundle_tls) {
            (Some(listener), None) => {
                let app = crate::bundle_endpoint::router(Arc::clone(&self.state));
                let header_timeout = self.state.config.header_read_timeout;
                Some(tokio::spawn(crate::http_serve::serve(listener, app, header_timeout, stop_rx.clone())))
            }
            (Some(listener), Some(tls)) => {
                let listener = crate::https::TlsListener::new(listener, tls)
                    .map_err(|e| StartError::Serve(format!("bundle endpoint: {e}")))?;
                let app = crate::bundle_endpoint::router(Arc::clone(&self.state));
                let header_timeout = self.state.config.header_read_timeout;
                Some(tokio::spawn(crate::http_serve::serve(listener, app, header_timeout, stop_rx.clone())))
            }
            (None, _) => None,
        };

        let checkpoint_task =
            tokio::spawn(crate::audit::checkpoint_loop(Arc::clone(&self.state), self.state.config.checkpoint_every));
        let reload_task = tokio::spawn(reload_on_sighup(Arc::clone(&self.state)));

        let renew_task = tokio::spawn(follow_keys(
            Arc::clone(&self.state),
            Arc::clone(&self.server_cert),
            self.server_cert_not_after,
            acceptors,
        ));
        let rotate_task = tokio::spawn(crate::keys::rotate_loop(Arc::clone(&self.state)));

        tracing::info!(
            trust_domain = %self.state.td,
            node_api = %self.state.config.listen,
            admin_socket = %self.state.config.admin_socket.display(),
            bundle_endpoint = self.state.config.public_url.as_deref().unwrap_or("off"),
            "lanyard server ready"
        );
        shutdown.await;
        tracing::info!("shutting down");
        health.set_not_serving::<NodeServer<NodeApi>>().await;
        let _ = stop_tx.send(true);
        self.state.shutdown.send_replace(true);
        renew_task.abort();
        rotate_task.abort();
        checkpoint_task.abort();
        reload_task.abort();
        let drain = async {
            let _ = node_task.await;
            let _ = admin_task.await;
            if let Some(task) = bundle_task {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
            tracing::warn!("connections did not drain within 10s");
        }
        self.state.store.flush().await?;
        let _ = std::fs::remove_file(&self.state.config.admin_socket);
        Ok(())
    }
}

/// Answers undecodable or oversized requests with InvalidArgument.
fn bad_input_layer() -> MapResponseLayer<fn(http::Response<Body>) -> http::Response<Body>> {
    MapResponseLayer::new(bad_input_is_invalid_argument::<Body>)
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop,
/// so one slow client cannot hold up the others.
fn tls_incoming(
    listener: TcpListener,
    acceptors: watch::Receiver<TlsAcceptor>,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small gRPC frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            // The trust anchors for client certificates follow the bundle.
            let acceptor = acceptors.borrow().clone();
            let handshakes = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = handshakes.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Reloads the policies on SIGHUP.
async fn reload_on_sighup(state: Arc<State>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use `lanyard policy reload`");
        return;
    };
    while hangups.recv().await.is_some() {
        // Errors are logged and audited by reload_policy; the old set stays.
        let _ = state.reload_policy("signal:SIGHUP").await;
    }
}

/// Follows key changes for the node API: a new active CA re-issues the
/// server's certificate at once, and a changed set of CAs rebuilds the TLS
/// configuration that checks agents' certificates. Between changes, the
/// certificate is renewed at half its (possibly CA-capped) lifetime.
async fn follow_keys(
    state: Arc<State>,
    cert: Arc<ServerCert>,
    mut not_after: std::time::SystemTime,
    acceptors: watch::Sender<TlsAcceptor>,
) {
    let mut keys = state.keys.subscribe();
    let (mut ca_id, mut roots) = {
        let k = keys.borrow_and_update();
        (k.active_x509_id().to_owned(), k.bundle.x509_authorities.clone())
    };
    let mut issued = state.now();
    loop {
        let half = not_after.duration_since(issued).unwrap_or_default() / 2;
        let due = (issued + half).duration_since(state.now()).unwrap_or_default();
        let renew = tokio::select! {
            () = tokio::time::sleep(due.max(Duration::from_secs(1))) => true,
            changed = keys.changed() => {
                if changed.is_err() {
                    return;
                }
                let k = Arc::clone(&keys.borrow_and_update());
                if k.bundle.x509_authorities != roots {
                    roots = k.bundle.x509_authorities.clone();
                    match tls::server_config(Arc::clone(&cert), &roots) {
                        Ok(config) => {
                            acceptors.send_replace(TlsAcceptor::from(Arc::new(config)));
                            tracing::info!(authorities = roots.len(), "node API trust anchors updated");
                        }
                        Err(e) => tracing::error!(error = %e, "cannot rebuild the node API TLS configuration"),
                    }
                }
                let new_ca = k.active_x509_id() != ca_id;
                ca_id = k.active_x509_id().to_owned();
                new_ca
            }
        };
        if !renew {
            continue;
        }
        let now = state.now();
        match cert.renew(&state.keys().x509, &state.td, now) {
            Ok(t) => (issued, not_after) = (now, t),
            Err(e) => {
                tracing::error!(error = %e, "server certificate renewal failed; retrying in 30s");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}
