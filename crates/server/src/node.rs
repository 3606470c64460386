//! The node API: what agents call, over mutual TLS.

use std::pin::Pin;
use std::sync::Arc;

use lanyard_ca::{JwtSvidTemplate, X509SvidTemplate, csr};
use lanyard_core::{Entry, SpiffeId, ids, unix_secs};
use lanyard_proto::node::node_server::Node;
use lanyard_proto::node::{
    self, MintTaskTokenRequest, MintTaskTokensRequest, MintTaskTokensResponse, NodeBeginTaskRequest,
    NodeDelegateTaskRequest, NodeEndTaskRequest,
};
use lanyard_proto::node::{
    AttestRequest, AttestResponse, MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidsRequest,
    MintX509SvidsResponse, RenewAgentRequest, RenewAgentResponse, SyncRequest, SyncResponse, TaskTokenResult,
    X509SvidRequest, X509SvidResult,
};
use lanyard_proto::{agent, common};
use lanyard_store::{AgentRecord, AuditEvent, PreviousSvid};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::convert::{bundle_to_proto, entry_to_proto, parse_entry_id, secs_i64};
use crate::limits::{
    AGENT_RENEWAL_GRACE, MAX_CALLER_IDENTITIES, MAX_STREAM_BATCHES, MAX_TASK_TOKEN_BATCH, MAX_X509_BATCH, SYNC_CHUNK,
};
use crate::metrics::{MintKind, Outcome};
use crate::state::State;
use crate::status::ApiError;
use crate::tasks::{CallerIdentity, TaskSpec};

/// The node API service.
#[derive(Clone)]
pub(crate) struct NodeApi {
    pub(crate) state: Arc<State>,
}

/// An agent that proved who it is with its current SVID.
struct AgentCaller {
    id: SpiffeId,
    record: AgentRecord,
}

impl NodeApi {
    /// Authenticates the caller from its TLS client certificate and charges
    /// the call to its `--agent-rate`.
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<AgentCaller, ApiError> {
        let caller = self.agent_of(&peer_certs(req)?).await?;
        self.charge(&caller.id)?;
        Ok(caller)
    }

    /// The agent presenting `certs` (already chain-checked by rustls at the
    /// handshake): an agent SVID still valid now, of a known, unbanned
    /// agent, and the newest one issued to it (or the one before, for
    /// [`AGENT_RENEWAL_GRACE`] after a renewal). Checked again for every
    /// batch of a stream, which may outlive a ban, a renewal or the SVID.
    async fn agent_of(&self, certs: &[CertificateDer<'static>]) -> Result<AgentCaller, ApiError> {
        let leaf = certs.first().ok_or_else(|| ApiError::Unauthenticated("empty client certificate chain".into()))?;
        let info = self.state.agent_leaves.inspect(leaf).map_err(|e| ApiError::PermissionDenied(e.to_string()))?;
        if ids::agent_name(&self.state.td, &info.spiffe_id).is_none() {
            return Err(ApiError::PermissionDenied(format!("{} is not an agent", info.spiffe_id)));
        }
        tracing::Span::current().record("caller", info.spiffe_id.as_str());
        let now = self.state.now();
        if info.not_after <= now {
            return Err(ApiError::Unauthenticated("agent SVID has expired; reconnect with a renewed one".into()));
        }
        let record = self
            .state
            .store
            .get_agent(&info.spiffe_id)
            .await?
            .ok_or_else(|| ApiError::PermissionDenied("unknown agent".into()))?;
        if record.banned {
            return Err(ApiError::PermissionDenied("agent is banned".into()));
        }
        let previous =
            record.previous_svid.as_ref().is_some_and(|p| p.serial == info.serial && unix_secs(now) < p.accepted_until);
        if record.svid_serial != info.serial && !previous {
            return Err(ApiError::PermissionDenied(
                "agent SVID has been superseded; reconnect with the newest one".into(),
            ));
        }
        Ok(AgentCaller { id: info.spiffe_id, record })
    }

    /// Counts one request against the agent's `--agent-rate`.
    fn charge(&self, agent: &SpiffeId) -> Result<(), ApiError> {
        match &self.state.agent_limiter {
            Some(limiter) if !limiter.allow(agent, std::time::Instant::now()) => {
                Err(ApiError::ResourceExhausted("rate limit: this agent is over the server's --agent-rate".into()))
            }
            _ => Ok(()),
        }
    }

    /// Signs an agent SVID for the key in `csr_der`; with the chain to present
    /// (the leaf, and the CA when it is an upstream CA's intermediate).
    fn sign_agent_svid(
        &self,
        id: &SpiffeId,
        csr_der: &[u8],
    ) -> Result<(lanyard_ca::SignedCert, Vec<Vec<u8>>), ApiError> {
        let template = X509SvidTemplate {
            spiffe_id: id.clone(),
            dns_names: Vec::new(),
            ttl: self.state.config.agent_svid_ttl.as_duration(),
            public_key: csr::parse_csr(csr_der)?,
        };
        let keys = self.state.keys();
        let signed = keys.x509.sign_svid(&template, self.state.now())?;
        let chain = keys.x509.chain(signed.der.clone());
        Ok((signed, chain))
    }

    /// Looks up an entry the caller may serve: it exists, names the caller as
    /// parent, and has not expired.
    async fn served_entry(&self, caller: &AgentCaller, entry_id: &str) -> Result<Entry, ApiError> {
        let id = parse_entry_id(entry_id)?;
        let entry = self.state.store.get_entry(&id).await?;
        match entry {
            Some(e) if e.parent_id == caller.id && !e.is_expired(unix_secs(self.state.now())) => Ok(e),
            // The same answer whether absent, someone else's or expired: an
            // agent learns nothing about entries it does not serve.
            _ => Err(ApiError::PermissionDenied(format!("entry {id} is not served by this agent"))),
        }
    }

    /// The identities the agent attested a workload to: entries it serves,
    /// each with the workload's current SVID for it.
    async fn caller_identities(
        &self,
        caller: &AgentCaller,
        identities: &[node::CallerIdentity],
    ) -> Result<Vec<CallerIdentity>, ApiError> {
        if identities.is_empty() || identities.len() > MAX_CALLER_IDENTITIES {
            return Err(ApiError::invalid("caller", format!("must name 1-{MAX_CALLER_IDENTITIES} identities")));
        }
        let mut out = Vec::with_capacity(identities.len());
        for identity in identities {
            let entry = self.served_entry(caller, &identity.entry_id).await?;
            out.push(CallerIdentity { entry, svid_der: identity.svid.clone() });
        }
        Ok(out)
    }

    /// Mints one X.509-SVID: its chain, and the audit record to make durable first.
    async fn mint_x509(
        &self,
        caller: &AgentCaller,
        req: &X509SvidRequest,
    ) -> Result<(Vec<Vec<u8>>, AuditEvent), ApiError> {
        let entry = self.served_entry(caller, &req.entry_id).await?;
        let template = X509SvidTemplate {
            spiffe_id: entry.spiffe_id.clone(),
            dns_names: entry.dns_names.clone(),
            ttl: entry.x509_ttl.as_duration(),
            public_key: csr::parse_csr(&req.csr)?,
        };
        let keys = self.state.keys();
        let signed = keys.x509.sign_svid(&template, self.state.now())?;
        let audit = self.state.audit(
            "x509svid.mint",
            caller.id.as_str(),
            entry.spiffe_id.as_str(),
            serde_json::json!({
                "entry_id": entry.id.as_str(),
                "serial": signed.serial,
                "not_after": unix_secs(signed.not_after),
            }),
        );
        Ok((keys.x509.chain(signed.der), audit))
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncResponse, Status>> + Send>>;
type MintStream = Pin<Box<dyn Stream<Item = Result<MintTaskTokensResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeApi {
    async fn attest(&self, req: Request<AttestRequest>) -> Result<Response<AttestResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.attest_inner(req).await;
        self.state.metrics.mint(MintKind::AgentSvid, Outcome::of(&result), 1, started.elapsed());
        Ok(result?)
    }

    async fn renew_agent(&self, req: Request<RenewAgentRequest>) -> Result<Response<RenewAgentResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.renew_agent_inner(req).await;
        self.state.metrics.mint(MintKind::AgentSvid, Outcome::of(&result), 1, started.elapsed());
        Ok(result?)
    }

    type SyncEntriesStream = SyncStream;

    async fn sync_entries(&self, req: Request<SyncRequest>) -> Result<Response<SyncStream>, Status> {
        let caller = self.authenticate(&req).await?;
        let since = req.get_ref().since_revision;
        let (tx, rx) = mpsc::channel(4);
        let state = Arc::clone(&self.state);
        let span = tracing::info_span!("sync", agent = %caller.id);
        tokio::spawn(sync_loop(state, caller.id, since, tx).instrument(span));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn mint_x509_svids(
        &self,
        req: Request<MintX509SvidsRequest>,
    ) -> Result<Response<MintX509SvidsResponse>, Status> {
        let started = std::time::Instant::now();
        let _on_its_way = self.state.store.write_intent();
        let caller = self.authenticate(&req).await.inspect_err(|e| {
            self.state.metrics.mint(MintKind::X509Svid, Outcome::of_error(e), 1, started.elapsed());
        })?;
        let requests = &req.get_ref().requests;
        if requests.is_empty() || requests.len() > MAX_X509_BATCH {
            return Err(ApiError::invalid("requests", format!("must hold 1-{MAX_X509_BATCH} CSRs")).into());
        }
        let mut results = Vec::with_capacity(requests.len());
        let mut audits = Vec::new();
        for r in requests {
            match self.mint_x509(&caller, r).await {
                Ok((chain, audit)) => {
                    audits.push(audit);
                    results.push(X509SvidResult {
                        entry_id: r.entry_id.clone(),
                        svid_chain: chain,
                        error: String::new(),
                    });
                }
                // Our failures fail the call (the agent retries it, maybe elsewhere); the
                // request's own are answered per CSR.
                Err(e @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => return Err(e.into()),
                Err(e) => results.push(X509SvidResult {
                    entry_id: r.entry_id.clone(),
                    svid_chain: Vec::new(),
                    error: e.to_string(),
                }),
            }
        }
        // INVARIANT: no credential leaves before its audit record is durable.
        self.state.store.append_audit_batch(audits).await.map_err(ApiError::from)?;
        let refused = results.iter().filter(|r| !r.error.is_empty()).count() as u64;
        let metrics = &self.state.metrics;
        metrics.mint(MintKind::X509Svid, Outcome::Ok, results.len() as u64 - refused, started.elapsed());
        if refused > 0 {
            metrics.mint(MintKind::X509Svid, Outcome::Denied, refused, started.elapsed());
        }
        Ok(Response::new(MintX509SvidsResponse { results }))
    }

    async fn mint_jwt_svid(&self, req: Request<MintJwtSvidRequest>) -> Result<Response<MintJwtSvidResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.mint_jwt_svid_inner(req).await;
        self.state.metrics.mint(MintKind::JwtSvid, Outcome::of(&result), 1, started.elapsed());
        Ok(result?)
    }

    async fn begin_task(
        &self,
        req: Request<NodeBeginTaskRequest>,
    ) -> Result<Response<agent::BeginTaskResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let req = req.into_inner();
        let identities = self.caller_identities(&caller, &req.caller).await?;
        let spec = req.request.and_then(|r| r.task).ok_or_else(|| ApiError::invalid("task", "missing"))?;
        let spec = TaskSpec::parse(&spec, self.state.config.default_task_ttl)?;
        // The workload begins tasks as an identity that has task authority.
        let orchestrator = identities
            .iter()
            .find(|c| c.entry.task_authority)
            .or_else(|| identities.first())
            .ok_or_else(|| ApiError::PermissionDenied(crate::NO_IDENTITY.into()))?;
        let task = self
            .state
            .begin_task(spec, orchestrator.entry.spiffe_id.as_str(), Some(&orchestrator.entry), Some(&caller.id))
            .await?;
        Ok(Response::new(agent::BeginTaskResponse {
            task_id: task.id.to_string(),
            expires_at: secs_i64(task.expires_at),
        }))
    }

    async fn mint_task_token(&self, req: Request<MintTaskTokenRequest>) -> Result<Response<common::TaskToken>, Status> {
        let started = std::time::Instant::now();
        let result = self.mint_task_token_inner(req).await;
        self.state.metrics.mint(MintKind::TaskToken, Outcome::of(&result), 1, started.elapsed());
        Ok(result?)
    }

    type MintTaskTokensStream = MintStream;

    async fn mint_task_tokens(
        &self,
        req: Request<Streaming<MintTaskTokensRequest>>,
    ) -> Result<Response<MintStream>, Status> {
        let certs = peer_certs(&req)?;
        // Refused at the open too, so a stranger learns nothing from a stream
        // that only fails at its first batch.
        let caller = self.agent_of(&certs).await?;
        let (tx, rx) = mpsc::channel(MAX_STREAM_BATCHES);
        let span = tracing::info_span!("task_tokens", agent = %caller.id);
        tokio::spawn(self.clone().serve_mint_stream(certs, req.into_inner(), tx).instrument(span));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delegate_task(
        &self,
        req: Request<NodeDelegateTaskRequest>,
    ) -> Result<Response<agent::DelegateTaskResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let req = req.into_inner();
        let identities = self.caller_identities(&caller, &req.caller).await?;
        let request = req.request.ok_or_else(|| ApiError::invalid("request", "missing"))?;
        let child = self.state.delegate_task(&caller.id, &identities, &request).await?;
        Ok(Response::new(agent::DelegateTaskResponse {
            task_id: child.id.to_string(),
            expires_at: secs_i64(child.expires_at),
        }))
    }

    async fn end_task(&self, req: Request<NodeEndTaskRequest>) -> Result<Response<agent::EndTaskResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let req = req.into_inner();
        let identities = self.caller_identities(&caller, &req.caller).await?;
        let request = req.request.ok_or_else(|| ApiError::invalid("request", "missing"))?;
        let actor = identities.first().map_or_else(|| caller.id.to_string(), |c| c.entry.spiffe_id.to_string());
        let revocation = self.state.end_task(&actor, Some(&identities), &request.task_id).await?;
        Ok(Response::new(agent::EndTaskResponse { ended: revocation.tasks.iter().map(ToString::to_string).collect() }))
    }
}

/// Streams the agent's entry changes until it disconnects or is banned.
async fn sync_loop(state: Arc<State>, agent: SpiffeId, mut since: u64, tx: mpsc::Sender<Result<SyncResponse, Status>>) {
    let mut revisions = state.store.subscribe_revision();
    let mut agent_events = state.agent_events.subscribe();
    let mut keys = state.keys.subscribe();
    let mut shutdown = state.shutdown.subscribe();
    let mut sent_bundle = None;
    loop {
        revisions.borrow_and_update();
        agent_events.borrow_and_update();
        let bundle = keys.borrow_and_update().bundle.clone();
        match next_sync_messages(&state, &agent, since, &bundle, &mut sent_bundle).await {
            Ok((messages, revision)) => {
                for m in messages {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                since = revision;
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
        tokio::select! {
            r = revisions.changed() => if r.is_err() { return },
            r = agent_events.changed() => if r.is_err() { return },
            r = keys.changed() => if r.is_err() { return },
            () = tx.closed() => return,
            r = shutdown.changed() => {
                let stopping = r.is_err() || *shutdown.borrow();
                if stopping {
                    // The agent reconnects (to this server once it is back, or another).
                    let _ = tx.send(Err(Status::unavailable("server is shutting down"))).await;
                    return;
                }
            }
        }
    }
}

/// The messages that bring an agent at `since` up to date, chunked.
async fn next_sync_messages(
    state: &State,
    agent: &SpiffeId,
    since: u64,
    bundle: &lanyard_ca::TrustBundle,
    sent_bundle: &mut Option<u64>,
) -> Result<(Vec<SyncResponse>, u64), ApiError> {
    match state.store.get_agent(agent).await? {
        Some(r) if !r.banned => {}
        _ => return Err(ApiError::PermissionDenied("agent is banned".into())),
    }
    let changes = state.store.entry_changes(agent, since).await?;
    let bundle_changed = *sent_bundle != Some(bundle.sequence);
    if changes.upserted.is_empty() && changes.removed.is_empty() && !changes.snapshot && !bundle_changed {
        return Ok((Vec::new(), changes.revision));
    }
    let upserted = changes.upserted.iter().map(entry_to_proto).collect();
    let removed = changes.removed.iter().map(ToString::to_string).collect();
    let mut messages = chunk_sync(upserted, removed);
    // Only the first message starts a snapshot; only the last completes it.
    messages[0].snapshot = changes.snapshot;
    let count = messages.len();
    for (i, m) in messages.iter_mut().enumerate() {
        m.more = i + 1 < count;
        m.revision = changes.revision;
    }
    if bundle_changed {
        messages[0].bundle = Some(bundle_to_proto(bundle));
        *sent_bundle = Some(bundle.sequence);
    }
    Ok((messages, changes.revision))
}

/// Largest encoded sync message the server means to send: a quarter of
/// gRPC's 4 MiB default, whatever the entries hold.
pub(crate) const SYNC_MESSAGE_BUDGET: usize = 1 << 20;

/// Splits entries and removals into messages of at most [`SYNC_CHUNK`]
/// entries and about [`SYNC_MESSAGE_BUDGET`] bytes each (a single entry
/// larger than that goes alone); always at least one message.
pub(crate) fn chunk_sync(upserted: Vec<common::Entry>, removed: Vec<String>) -> Vec<SyncResponse> {
    use prost::Message as _;
    // Field tag and length prefix of each repeated element, at most.
    const OVERHEAD: usize = 6;
    let mut messages = Vec::new();
    let mut current = SyncResponse::default();
    let mut size = 0;
    let mut flush = |current: &mut SyncResponse, size: &mut usize| {
        messages.push(std::mem::take(current));
        *size = 0;
    };
    for entry in upserted {
        let len = entry.encoded_len() + OVERHEAD;
        if !current.upserted.is_empty() && (current.upserted.len() >= SYNC_CHUNK || size + len > SYNC_MESSAGE_BUDGET) {
            flush(&mut current, &mut size);
        }
        size += len;
        current.upserted.push(entry);
    }
    for id in removed {
        let len = id.len() + OVERHEAD;
        if size + len > SYNC_MESSAGE_BUDGET {
            flush(&mut current, &mut size);
        }
        size += len;
        current.removed.push(id);
    }
    flush(&mut current, &mut size);
    messages
}

/// The bodies of the minting RPCs, which the trait methods time and count.
impl NodeApi {
    async fn attest_inner(&self, req: Request<AttestRequest>) -> Result<Response<AttestResponse>, ApiError> {
        let req = req.into_inner();
        // Check the CSR before spending the token on a request that cannot succeed.
        csr::parse_csr(&req.csr).map_err(ApiError::from)?;
        if req.join_token.is_empty() || req.join_token.len() > 256 {
            return Err(ApiError::invalid("join_token", "must be 1-256 characters"));
        }
        let hash = lanyard_store::hash_join_token(&req.join_token);
        let now = self.state.now();
        let consumed = self
            .state
            .store
            .consume_join_token(hash, self.state.audit("jointoken.consume", "anonymous", "", serde_json::json!({})))
            .await
            .map_err(ApiError::from)?;
        let token =
            consumed.ok_or_else(|| ApiError::PermissionDenied("join token is unknown or already used".into()))?;
        if unix_secs(now) >= token.expires_at {
            return Err(ApiError::PermissionDenied("join token has expired".into()));
        }
        let id = ids::agent_id(&self.state.td, &token.name)
            .map_err(|e| ApiError::Internal(format!("stored agent name: {e}")))?;
        tracing::Span::current().record("caller", id.as_str());
        if let Some(existing) = self.state.store.get_agent(&id).await.map_err(ApiError::from)?
            && existing.banned
        {
            return Err(ApiError::PermissionDenied("agent is banned".into()));
        }
        let (signed, chain) = self.sign_agent_svid(&id, &req.csr)?;
        let record = AgentRecord {
            spiffe_id: id.clone(),
            name: token.name.clone(),
            attested_at: unix_secs(now),
            svid_serial: signed.serial.clone(),
            svid_expires_at: unix_secs(signed.not_after),
            banned: false,
            last_seen: unix_secs(now),
            previous_svid: None,
        };
        let audit = self.state.audit(
            "agent.attest",
            id.as_str(),
            id.as_str(),
            serde_json::json!({ "serial": signed.serial, "method": "join_token" }),
        );
        self.state.store.put_agent(record, Some(audit)).await.map_err(ApiError::from)?;
        tracing::info!(agent = %id, "agent attested");
        Ok(Response::new(AttestResponse {
            spiffe_id: id.to_string(),
            svid_chain: chain,
            bundle: Some(bundle_to_proto(&self.state.keys().bundle)),
        }))
    }

    async fn renew_agent_inner(
        &self,
        req: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, ApiError> {
        let caller = self.authenticate(&req).await?;
        let (signed, chain) = self.sign_agent_svid(&caller.id, &req.get_ref().csr)?;
        let now = self.state.now();
        // Calls still out on the agent's old connection finish with the old
        // SVID; any older one is refused at once.
        let previous = PreviousSvid {
            serial: caller.record.svid_serial.clone(),
            accepted_until: unix_secs(now + AGENT_RENEWAL_GRACE).min(caller.record.svid_expires_at),
        };
        let audit = self.state.audit(
            "agent.renew",
            caller.id.as_str(),
            caller.id.as_str(),
            serde_json::json!({ "serial": signed.serial, "previous": previous.serial, "previous_accepted_until": previous.accepted_until }),
        );
        let record = AgentRecord {
            svid_serial: signed.serial.clone(),
            svid_expires_at: unix_secs(signed.not_after),
            last_seen: unix_secs(now),
            previous_svid: Some(previous),
            ..caller.record
        };
        self.state.store.put_agent(record, Some(audit)).await.map_err(ApiError::from)?;
        Ok(Response::new(RenewAgentResponse { svid_chain: chain }))
    }

    async fn mint_jwt_svid_inner(
        &self,
        req: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, ApiError> {
        let _on_its_way = self.state.store.write_intent();
        let caller = self.authenticate(&req).await?;
        let req = req.into_inner();
        let entry = self.served_entry(&caller, &req.entry_id).await?;
        let template = JwtSvidTemplate {
            spiffe_id: entry.spiffe_id.clone(),
            audiences: req.audience,
            ttl: entry.jwt_ttl.as_duration(),
            issuer: self.state.config.public_url.clone(),
        };
        let keys = self.state.keys();
        let (token, exp) = keys.jwt.sign_svid(&template, self.state.now()).map_err(ApiError::from)?;
        let audit = self.state.audit(
            "jwtsvid.mint",
            caller.id.as_str(),
            entry.spiffe_id.as_str(),
            serde_json::json!({
                "entry_id": entry.id.as_str(),
                "aud": template.audiences,
                "kid": keys.jwt.kid(),
                "exp": unix_secs(exp),
            }),
        );
        self.state.store.append_audit(audit).await.map_err(ApiError::from)?;
        Ok(Response::new(MintJwtSvidResponse { token, expires_at: secs_i64(unix_secs(exp)) }))
    }

    async fn mint_task_token_inner(
        &self,
        req: Request<MintTaskTokenRequest>,
    ) -> Result<Response<common::TaskToken>, ApiError> {
        let caller = self.authenticate(&req).await?;
        Ok(Response::new(self.mint_one_task_token(&caller, req.into_inner()).await?))
    }

    /// One request of a streamed batch from `caller`: charged against its
    /// rate, then [`mint_one_task_token`](Self::mint_one_task_token), counted
    /// in the mint metrics from `started` (when the batch arrived).
    async fn mint_counted(
        &self,
        caller: &AgentCaller,
        request: MintTaskTokenRequest,
        started: std::time::Instant,
    ) -> Result<common::TaskToken, ApiError> {
        let result = match self.charge(&caller.id) {
            Ok(()) => self.mint_one_task_token(caller, request).await,
            Err(e) => Err(e),
        };
        self.state.metrics.mint(MintKind::TaskToken, Outcome::of(&result), 1, started.elapsed());
        result
    }

    /// Answers the batches of one MintTaskTokens stream until the agent
    /// closes it, the server shuts down, or a batch ends it (see the proto).
    /// Every batch taken is answered before the stream ends.
    async fn serve_mint_stream(
        self,
        certs: Arc<Vec<CertificateDer<'static>>>,
        mut batches: Streaming<MintTaskTokensRequest>,
        answers: mpsc::Sender<Result<MintTaskTokensResponse, Status>>,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_STREAM_BATCHES));
        let mut shutdown = self.state.shutdown.subscribe();
        let end = loop {
            let next = tokio::select! {
                next = batches.message() => next,
                _ = shutdown.wait_for(|stopping| *stopping) => {
                    break Some(Status::unavailable("server is shutting down"));
                }
            };
            // An error here is the agent's side of the stream failing: there
            // is no one to tell.
            let Ok(Some(batch)) = next else { break None };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break None };
            let started = std::time::Instant::now();
            let n = batch.requests.len();
            let caller = match self.agent_of(&certs).await {
                Ok(caller) => caller,
                Err(e) => {
                    self.state.metrics.mint(MintKind::TaskToken, Outcome::of_error(&e), n as u64, started.elapsed());
                    break Some(e.into());
                }
            };
            if n == 0 || n > MAX_TASK_TOKEN_BATCH {
                break Some(
                    ApiError::invalid("requests", format!("must hold 1-{MAX_TASK_TOKEN_BATCH} requests")).into(),
                );
            }
            let (api, answers, batch_no) = (self.clone(), answers.clone(), batch.batch);
            let answer = async move {
                let results = api.mint_batch(caller, batch.requests, started).await;
                let _ = answers.send(Ok(MintTaskTokensResponse { results, batch: batch_no })).await;
                drop(slot);
            };
            tokio::spawn(answer.instrument(tracing::info_span!("batch", batch = batch_no, n)));
        };
        // Wait for every batch taken to be answered, then say why it ended.
        let _ = slots.acquire_many(MAX_STREAM_BATCHES as u32).await;
        if let Some(status) = end {
            let _ = answers.send(Err(status)).await;
        }
    }

    /// One batch's results, in order. Each but the first is minted on its own
    /// task, so one batch uses every core; the first is minted here while
    /// they run (a batch of one, the usual case below saturation, costs no
    /// further task). Each is charged, decided, signed and audited as if it
    /// had come alone.
    async fn mint_batch(
        &self,
        caller: AgentCaller,
        requests: Vec<MintTaskTokenRequest>,
        started: std::time::Instant,
    ) -> Vec<TaskTokenResult> {
        let caller = Arc::new(caller);
        let mut requests = requests.into_iter();
        let first = requests.next();
        let rest: Vec<_> = requests
            .map(|request| {
                let (api, caller) = (self.clone(), Arc::clone(&caller));
                let mint = async move { api.mint_counted(&caller, request, started).await };
                tokio::spawn(mint.instrument(tracing::Span::current()))
            })
            .collect();
        let mut results = Vec::with_capacity(rest.len() + 1);
        if let Some(request) = first {
            results.push(result_of(self.mint_counted(&caller, request, started).await));
        }
        for mint in rest {
            let result = mint.await.map_err(|e| ApiError::Internal(format!("a mint failed: {e}")));
            results.push(result_of(result.and_then(|r| r)));
        }
        results
    }

    async fn mint_one_task_token(
        &self,
        caller: &AgentCaller,
        req: MintTaskTokenRequest,
    ) -> Result<common::TaskToken, ApiError> {
        let identities = self.caller_identities(caller, &req.caller).await?;
        let request = req.request.ok_or_else(|| ApiError::invalid("request", "missing"))?;
        self.state.mint_task_token(&caller.id, &identities, &request).await
    }
}

/// The certificate chain the caller presented in the TLS handshake.
fn peer_certs<T>(req: &Request<T>) -> Result<Arc<Vec<CertificateDer<'static>>>, ApiError> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or_else(|| ApiError::Unauthenticated("an agent SVID (TLS client certificate) is required".into()))
}

/// One mint's outcome as a batch answer carries it.
fn result_of(result: Result<common::TaskToken, ApiError>) -> TaskTokenResult {
    match result {
        Ok(token) => TaskTokenResult { token: Some(token), code: 0, error: String::new() },
        Err(e) => {
            let status = Status::from(e);
            TaskTokenResult { token: None, code: status.code() as i32, error: status.message().to_owned() }
        }
    }
}
