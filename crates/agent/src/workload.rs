//! The SPIFFE Workload API, served on the agent's Unix socket.
//!
//! Every call must carry `workload.spiffe.io: true`. The caller is attested
//! from the kernel on every call; it never names the identity it wants, the
//! attestation decides. A caller no entry matches gets PermissionDenied
//! `no identity issued`; before the first sync every call is Unavailable.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_ca::jwt::{self, MAX_AUDIENCES};
use lanyard_core::{Entry, Selector, SpiffeId, TrustDomain, unix_secs};
use lanyard_proto::node::MintJwtSvidRequest;
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::attest::{self, AttestCache, PeerInfo};
use crate::cache::Snapshot;
use crate::jwt_cache::JwtCache;

/// How long a new stream waits for SVIDs that are being minted.
pub(crate) const FIRST_SVID_WAIT: Duration = Duration::from_secs(10);
/// The answer for a caller that no entry matches (the SPIFFE wording).
pub const NO_IDENTITY: &str = "no identity issued";

/// The Workload API service.
#[derive(Clone)]
pub(crate) struct WorkloadApi {
    pub(crate) td: TrustDomain,
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(crate) client: watch::Receiver<Option<NodeClient<Channel>>>,
    pub(crate) attest_cache: Arc<AttestCache>,
    pub(crate) jwts: Arc<JwtCache>,
    pub(crate) metrics: Arc<crate::metrics::AgentMetrics>,
    /// Requests per process (by PID), when limited.
    pub(crate) limiter: Option<Arc<lanyard_core::rate::RateLimiter<i32>>>,
    /// Streams open per process (by PID), and how many one may hold.
    pub(crate) streams: Arc<StreamSlots>,
    /// Task-token requests on their way to the server.
    pub(crate) mints: crate::mint_batch::MintBatcher,
}

/// Open Workload API streams per process, at most `max` each (0: no limit).
#[derive(Debug, Default)]
pub(crate) struct StreamSlots {
    max: usize,
    open: std::sync::Mutex<HashMap<i32, usize>>,
}

/// One open stream's place; given back when the stream is dropped.
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    pid: i32,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.pid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.pid);
            }
        }
    }
}

impl StreamSlots {
    /// At most `max` streams per process (0: no limit).
    pub(crate) fn new(max: usize) -> Self {
        Self { max, open: std::sync::Mutex::default() }
    }

    /// A place for one more stream of `pid`, unless it holds `max` already.
    fn take(self: &Arc<Self>, pid: i32) -> Result<Option<StreamSlot>, Status> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(pid).or_default();
        if *n >= self.max {
            return Err(Status::resource_exhausted(format!(
                "this process holds {n} Workload API streams already (the agent's --workload-streams)"
            )));
        }
        *n += 1;
        Ok(Some(StreamSlot { slots: Arc::clone(self), pid }))
    }
}

/// Refuses any call without `workload.spiffe.io: true`.
pub(crate) fn require_header(req: Request<()>) -> Result<Request<()>, Status> {
    match req.metadata().get(lanyard_proto::WORKLOAD_API_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(req),
        _ => Err(Status::invalid_argument("security header missing from request")),
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WorkloadApi {
    fn synced(&self) -> Result<Arc<Snapshot>, Status> {
        let snap = Arc::clone(&self.snapshots.borrow());
        if !snap.synced {
            return Err(Status::unavailable("agent has not synced with the server yet"));
        }
        Ok(snap)
    }

    /// Attests the caller; its selectors.
    async fn attest<T>(&self, req: &Request<T>, snap: &Snapshot) -> Result<Vec<Selector>, Status> {
        let peer = req.extensions().get::<Option<PeerInfo>>().and_then(Option::as_ref);
        if let Some(p) = peer {
            tracing::Span::current().record("pid", p.pid).record("uid", p.uid);
            if let Some(limiter) = &self.limiter
                && !limiter.allow(&p.pid, std::time::Instant::now())
            {
                return Err(Status::resource_exhausted(
                    "rate limit: this process sends more than the agent's --workload-rate of requests per second",
                ));
            }
        }
        let attested = if snap.needs_digest() {
            // Hashing an executable can take a while the first time: off the async threads.
            let cache = Arc::clone(&self.attest_cache);
            let peer = peer.cloned();
            tokio::task::spawn_blocking(move || attest::attest(peer.as_ref(), true, &cache))
                .await
                .map_err(|_| Status::internal("attestation task failed"))?
        } else {
            // A handful of small /proc reads: cheaper inline than a thread hop.
            attest::attest(peer, false, &self.attest_cache)
        };
        self.metrics.attested(attested.is_ok());
        attested.map_err(|e| {
            tracing::warn!(error = %e, "caller attestation failed");
            Status::permission_denied(NO_IDENTITY)
        })
    }

    /// The caller's entries; PermissionDenied when there are none.
    fn entitled(snap: &Snapshot, selectors: &[Selector]) -> Result<Vec<Arc<Entry>>, Status> {
        let entries: Vec<_> = snap.matching(selectors, unix_secs(SystemTime::now())).into_iter().cloned().collect();
        if entries.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        Ok(entries)
    }

    /// The caller, attested: the snapshot it was checked against, its
    /// selectors and the entries it is entitled to (never empty).
    pub(crate) async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let snap = self.synced()?;
        let selectors = self.attest(req, &snap).await?;
        let entries = Self::entitled(&snap, &selectors)?;
        Ok(Caller { snap, selectors, entries })
    }

    /// A place for one more stream of the caller's process.
    fn stream_slot<T>(&self, req: &Request<T>) -> Result<Option<StreamSlot>, Status> {
        match req.extensions().get::<Option<PeerInfo>>().and_then(Option::as_ref) {
            Some(peer) => self.streams.take(peer.pid),
            None => Ok(None),
        }
    }

    /// A stream of the trust bundle as `make` renders it, for an entitled caller.
    fn bundle_stream<T, F>(&self, make: F) -> Streamed<T>
    where
        T: Send + 'static,
        F: Fn(&lanyard_ca::TrustBundle) -> Option<T> + Send + 'static,
    {
        stream_updates(self.snapshots.clone(), move |s| {
            let b = s.bundle.as_ref()?;
            Some((make(b)?, vec![b.sequence.to_string()]))
        })
    }

    fn bundle_key(&self) -> String {
        self.td.id().to_string()
    }
}

/// An attested caller.
pub(crate) struct Caller {
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) selectors: Vec<Selector>,
    pub(crate) entries: Vec<Arc<Entry>>,
}

/// The X.509 answer for a caller with `selectors`, and a fingerprint of it
/// (serials and bundle sequence) to tell whether anything changed.
fn x509_response(snap: &Snapshot, selectors: &[Selector]) -> Option<(X509svidResponse, Vec<String>)> {
    let bundle = snap.bundle.as_ref()?;
    let bundle_der = bundle.x509_der_concat();
    let mut fingerprint = vec![bundle.sequence.to_string()];
    let svids: Vec<X509svid> = snap
        .matching(selectors, unix_secs(SystemTime::now()))
        .into_iter()
        .filter_map(|e| snap.svids.get(&e.id))
        .map(|s| {
            fingerprint.push(s.serial.clone());
            X509svid {
                spiffe_id: s.spiffe_id.to_string(),
                x509_svid: s.chain_der.clone(),
                x509_svid_key: s.key.clone(),
                bundle: bundle_der.clone(),
                hint: s.hint.clone(),
            }
        })
        .collect();
    if svids.is_empty() {
        return None;
    }
    Some((X509svidResponse { svids, crl: Vec::new(), federated_bundles: HashMap::new() }, fingerprint))
}

/// Sends `make(snapshot)` now and again whenever its fingerprint changes,
/// until the client goes away. `make` answering `None` ends the stream
/// with `no identity issued`.
fn stream_updates<T, F>(mut snapshots: watch::Receiver<Arc<Snapshot>>, make: F) -> Streamed<T>
where
    T: Send + 'static,
    F: Fn(&Snapshot) -> Option<(T, Vec<String>)> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let snap = Arc::clone(&snapshots.borrow_and_update());
            match make(&snap) {
                Some((message, fingerprint)) => {
                    if last.as_ref() != Some(&fingerprint) {
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                        last = Some(fingerprint);
                    }
                }
                None => {
                    let _ = tx.send(Err(Status::permission_denied(NO_IDENTITY))).await;
                    return;
                }
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// `stream`, keeping `slot` taken until it is dropped.
fn holding<T: Send + 'static>(slot: Option<StreamSlot>, stream: Streamed<T>) -> Streamed<T> {
    use tokio_stream::StreamExt as _;
    Box::pin(stream.map(move |item| {
        let _held = &slot;
        item
    }))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let Caller { snap, selectors, .. } = self.caller(&req).await?;
        let slot = self.stream_slot(&req)?;
        // An entry that was just created may still be minting: wait for it.
        let mut snapshots = self.snapshots.clone();
        if x509_response(&snap, &selectors).is_none() {
            let ready = snapshots.wait_for(|s| x509_response(s, &selectors).is_some());
            if tokio::time::timeout(FIRST_SVID_WAIT, ready).await.is_err() {
                return Err(Status::unavailable("SVIDs for this workload are still being issued; retry"));
            }
        }
        Ok(Response::new(holding(slot, stream_updates(snapshots, move |s| x509_response(s, &selectors)))))
    }

    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.caller(&req).await?;
        let slot = self.stream_slot(&req)?;
        let key = self.bundle_key();
        Ok(Response::new(holding(
            slot,
            self.bundle_stream(move |b| {
                let bundles = HashMap::from([(key.clone(), b.x509_der_concat())]);
                Some(X509BundlesResponse { crl: Vec::new(), bundles })
            }),
        )))
    }

    async fn fetch_jwtsvid(&self, req: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        let mut audiences = req.get_ref().audience.clone();
        if audiences.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if audiences.len() > MAX_AUDIENCES {
            return Err(Status::invalid_argument(format!("at most {MAX_AUDIENCES} audiences may be requested")));
        }
        jwt::check_audiences(&audiences).map_err(|e| Status::invalid_argument(e.to_string()))?;
        audiences.sort();
        audiences.dedup();
        let wanted = match req.get_ref().spiffe_id.as_str() {
            "" => None,
            s => Some(SpiffeId::parse(s).map_err(|e| Status::invalid_argument(format!("spiffe_id: {e}")))?),
        };
        let Caller { mut entries, .. } = self.caller(&req).await?;
        if let Some(id) = &wanted {
            entries.retain(|e| &e.spiffe_id == id);
            if entries.is_empty() {
                return Err(Status::permission_denied(NO_IDENTITY));
            }
        }
        let mut svids = Vec::with_capacity(entries.len());
        for entry in entries {
            let token = self.jwt_for(&entry, &audiences).await?;
            svids.push(Jwtsvid { spiffe_id: entry.spiffe_id.to_string(), svid: token, hint: entry.hint.clone() });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.caller(&req).await?;
        let slot = self.stream_slot(&req)?;
        let key = self.bundle_key();
        Ok(Response::new(holding(
            slot,
            self.bundle_stream(move |b| {
                let jwks = serde_json::to_vec(&b.jwt_jwks()).ok()?;
                Some(JwtBundlesResponse { bundles: HashMap::from([(key.clone(), jwks)]) })
            }),
        )))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        if req.get_ref().audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.get_ref().svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let Caller { snap, .. } = self.caller(&req).await?;
        let bundle = snap.bundle.as_ref().ok_or_else(|| Status::unavailable("no trust bundle yet"))?;
        let (sub, claims) = jwt::validate_jwt_svid(
            &req.get_ref().svid,
            &req.get_ref().audience,
            &self.td,
            &bundle.jwt_keys(),
            SystemTime::now(),
        )
        .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
        Ok(Response::new(ValidateJwtsvidResponse { spiffe_id: sub.to_string(), claims: Some(json_struct(claims)) }))
    }
}

/// Longest a call that needs the server waits for a connection to it: the
/// agent reconnects at once after renewing its own SVID, and while it does a
/// call must not go out over the old connection (the server refuses a
/// superseded agent SVID).
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl WorkloadApi {
    /// The connection to the server, waiting up to [`CONNECT_WAIT`] while
    /// there is none.
    pub(crate) async fn server_client(&self) -> Result<NodeClient<Channel>, Status> {
        connected(self.client.clone()).await
    }

    /// A JWT-SVID for `entry`: cached if still fresh, else minted by the server.
    async fn jwt_for(&self, entry: &Entry, audiences: &[String]) -> Result<String, Status> {
        let now = unix_secs(SystemTime::now());
        if let Some(token) = self.jwts.get(&entry.id, entry.revision, audiences, now) {
            return Ok(token);
        }
        let mut client = self.server_client().await?;
        let reply = client
            .mint_jwt_svid(MintJwtSvidRequest { entry_id: entry.id.to_string(), audience: audiences.to_vec() })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => Status::invalid_argument(s.message().to_owned()),
                tonic::Code::PermissionDenied => Status::permission_denied(NO_IDENTITY),
                _ => Status::unavailable(format!("server could not mint the JWT-SVID: {}", s.message())),
            })?
            .into_inner();
        let expires_at = u64::try_from(reply.expires_at).unwrap_or(0);
        self.jwts.put(&entry.id, entry.revision, audiences, reply.token.clone(), now, expires_at);
        Ok(reply.token)
    }
}

/// The connection to the server in `client`, waiting up to [`CONNECT_WAIT`]
/// while there is none.
pub(crate) async fn connected(
    mut client: watch::Receiver<Option<NodeClient<Channel>>>,
) -> Result<NodeClient<Channel>, Status> {
    match tokio::time::timeout(CONNECT_WAIT, client.wait_for(Option::is_some)).await {
        Ok(Ok(client)) => client.clone().ok_or_else(|| Status::unavailable("the server is unreachable; retry")),
        _ => Err(Status::unavailable("the server is unreachable; retry")),
    }
}

/// JSON object to `google.protobuf.Struct`.
fn json_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect() }
}

fn json_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(json_value).collect() })
        }
        serde_json::Value::Object(o) => Kind::StructValue(json_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
