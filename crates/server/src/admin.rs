//! The admin API, on a Unix socket that only the server's user (or root)
//! may use.

use std::pin::Pin;
use std::sync::Arc;

use lanyard_core::{Action, Audience, Classification, EntryId, SessionId, TaskId, Tool, User, ids, unix_secs};
use lanyard_policy::{PolicyInput, RiskLevel};
use lanyard_proto::admin::admin_server::Admin;
use lanyard_proto::admin::{
    Agent, AuditRecord, BackupRequest, BackupResponse, BanAgentRequest, BeginTaskResponse, CheckPolicyRequest,
    CheckPolicyResponse, ClearRiskRequest, CreateEntryRequest, CreateJoinTokenRequest, CreateJoinTokenResponse,
    DeleteEntryRequest, DeleteEntryResponse, EndTaskRequest, GetBundleRequest, GetEntryRequest, ListAgentsRequest,
    ListAgentsResponse, ListEntriesRequest, ListEntriesResponse, ListKeysRequest, ListKeysResponse, ListRisksRequest,
    ListRisksResponse, ListTasksRequest, ListTasksResponse, QueryAuditRequest, QueryAuditResponse, ReloadPolicyRequest,
    ReloadPolicyResponse, ReportRiskRequest, Revocation, RevokeKeyRequest, RevokeSessionRequest, RevokeTokenRequest,
    Risk, RotateKeysRequest, TailAuditRequest, UpdateEntryRequest, VerifyAuditRequest, VerifyAuditResponse,
};
use lanyard_proto::common;
use lanyard_store::{
    AuditContext, AuditEvent, AuditFilter, EntryFilter, JoinTokenRecord, RiskRecord, RiskSubject, TaskFilter,
};
use tokio_stream::Stream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::audit::record_to_proto;
use crate::convert::{
    agent_to_proto, bundle_to_proto, entry_from_proto, entry_to_proto, parse_entry_id, parse_spiffe_id,
    revocation_to_proto, secs_i64, task_to_proto,
};
use crate::limits::{AUDIT_QUERY_MAX, LIST_PAGE_DEFAULT, LIST_PAGE_MAX, LIST_TASKS_MAX, MAX_JOIN_TOKEN_TTL};
use crate::state::State;
use crate::status::ApiError;
use crate::tasks::TaskSpec;

/// The admin API service.
pub(crate) struct AdminApi {
    pub(crate) state: Arc<State>,
    /// The uid the server runs as; it and root may administer.
    pub(crate) server_uid: u32,
}

impl AdminApi {
    /// Checks the caller's uid from the kernel (SO_PEERCRED) — a second line
    /// of defence behind the socket's 0600 mode — and names it for the audit log.
    fn authorize<T>(&self, req: &Request<T>) -> Result<String, ApiError> {
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid())
            .ok_or_else(|| ApiError::PermissionDenied("caller credentials unavailable".into()))?;
        if uid != self.server_uid && uid != 0 {
            return Err(ApiError::PermissionDenied(format!("uid {uid} may not administer this server")));
        }
        let actor = format!("admin:uid={uid}");
        tracing::Span::current().record("caller", actor.as_str());
        Ok(actor)
    }

    fn new_entry_id() -> Result<EntryId, ApiError> {
        let bytes = lanyard_ca::rand::bytes::<16>().map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(EntryId::from_random(bytes))
    }

    fn check_entry(&self, entry: &mut lanyard_core::Entry) -> Result<(), ApiError> {
        entry.check(&self.state.td).map_err(|e| ApiError::InvalidArgument(e.to_string()))
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_entry(&self, req: Request<CreateEntryRequest>) -> Result<Response<common::Entry>, Status> {
        let actor = self.authorize(&req)?;
        let proto = req.into_inner().entry.ok_or_else(|| ApiError::invalid("entry", "missing"))?;
        let mut entry = entry_from_proto(proto, Self::new_entry_id()?, self.state.ttl_defaults())?;
        self.check_entry(&mut entry)?;
        // Refuse an exact duplicate (same identity, parent and selectors), as SPIRE does.
        let filter = EntryFilter { spiffe_id: Some(entry.spiffe_id.clone()), parent_id: Some(entry.parent_id.clone()) };
        let existing = self.state.store.list_entries(&filter, None, LIST_PAGE_MAX).await.map_err(ApiError::from)?;
        if let Some(dup) = existing.iter().find(|e| e.selectors == entry.selectors) {
            return Err(ApiError::AlreadyExists(format!(
                "entry {} already gives {} to these selectors under {}",
                dup.id, dup.spiffe_id, dup.parent_id
            ))
            .into());
        }
        let audit = self.state.audit(
            "entry.create",
            &actor,
            entry.spiffe_id.as_str(),
            serde_json::json!({ "entry_id": entry.id.as_str(), "parent_id": entry.parent_id.as_str() }),
        );
        let stored = self.state.store.create_entry(entry, audit).await.map_err(ApiError::from)?;
        tracing::info!(entry = %stored.id, spiffe_id = %stored.spiffe_id, "entry created");
        Ok(Response::new(entry_to_proto(&stored)))
    }

    async fn get_entry(&self, req: Request<GetEntryRequest>) -> Result<Response<common::Entry>, Status> {
        self.authorize(&req)?;
        let id = parse_entry_id(&req.get_ref().id)?;
        let entry = self.state.store.get_entry(&id).await.map_err(ApiError::from)?;
        let entry = entry.ok_or_else(|| ApiError::NotFound(format!("entry {id} not found")))?;
        Ok(Response::new(entry_to_proto(&entry)))
    }

    async fn list_entries(&self, req: Request<ListEntriesRequest>) -> Result<Response<ListEntriesResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let optional_id = |field: &str, s: &str| -> Result<_, ApiError> {
            if s.is_empty() { Ok(None) } else { parse_spiffe_id(field, s).map(Some) }
        };
        let filter = EntryFilter {
            parent_id: optional_id("parent_id", &req.parent_id)?,
            spiffe_id: optional_id("spiffe_id", &req.spiffe_id)?,
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(EntryId::parse(&req.page_token).map_err(|e| ApiError::invalid("page_token", e))?)
        };
        let limit = match req.page_size {
            0 => LIST_PAGE_DEFAULT,
            n => usize::try_from(n).unwrap_or(LIST_PAGE_MAX).min(LIST_PAGE_MAX),
        };
        let entries = self.state.store.list_entries(&filter, after.as_ref(), limit).await.map_err(ApiError::from)?;
        let next_page_token = match entries.last() {
            Some(last) if entries.len() == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListEntriesResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_entry(&self, req: Request<UpdateEntryRequest>) -> Result<Response<common::Entry>, Status> {
        let actor = self.authorize(&req)?;
        let req = req.into_inner();
        let proto = req.entry.ok_or_else(|| ApiError::invalid("entry", "missing"))?;
        let id = parse_entry_id(&proto.id)?;
        let mut entry = entry_from_proto(proto, id, self.state.ttl_defaults())?;
        self.check_entry(&mut entry)?;
        let audit = self.state.audit(
            "entry.update",
            &actor,
            entry.spiffe_id.as_str(),
            serde_json::json!({ "entry_id": entry.id.as_str(), "expected_revision": req.expected_revision }),
        );
        let stored =
            self.state.store.update_entry(entry, req.expected_revision, audit).await.map_err(ApiError::from)?;
        Ok(Response::new(entry_to_proto(&stored)))
    }

    async fn delete_entry(&self, req: Request<DeleteEntryRequest>) -> Result<Response<DeleteEntryResponse>, Status> {
        let actor = self.authorize(&req)?;
        let id = parse_entry_id(&req.get_ref().id)?;
        let audit =
            self.state.audit("entry.delete", &actor, id.as_str(), serde_json::json!({ "entry_id": id.as_str() }));
        self.state.store.delete_entry(&id, audit).await.map_err(ApiError::from)?;
        Ok(Response::new(DeleteEntryResponse {}))
    }

    async fn create_join_token(
        &self,
        req: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let actor = self.authorize(&req)?;
        let req = req.into_inner();
        let id = ids::agent_id(&self.state.td, &req.name).map_err(|e| ApiError::invalid("name", e))?;
        let ttl = std::time::Duration::from_secs(u64::from(req.ttl_seconds));
        if ttl.is_zero() || ttl > MAX_JOIN_TOKEN_TTL {
            return Err(ApiError::invalid("ttl", "must be between 1s and 7d").into());
        }
        // A banned agent cannot come back under its old name.
        if self.state.store.get_agent(&id).await.map_err(ApiError::from)?.is_some_and(|a| a.banned) {
            return Err(ApiError::PermissionDenied(format!("agent {id} is banned; choose another name")).into());
        }
        let secret = lanyard_ca::rand::bytes::<32>().map_err(|e| ApiError::Internal(e.to_string()))?;
        // Hex, so a token never starts with '-' and reads as a flag.
        let token = lanyard_core::hex::encode(&secret);
        let hash = lanyard_store::hash_join_token(&token);
        let now = unix_secs(self.state.now());
        let record = JoinTokenRecord { name: req.name.clone(), created_at: now, expires_at: now + ttl.as_secs() };
        let audit = self.state.audit(
            "jointoken.create",
            &actor,
            id.as_str(),
            serde_json::json!({ "expires_at": record.expires_at }),
        );
        let expires_at = record.expires_at;
        self.state.store.create_join_token(hash, record, audit).await.map_err(ApiError::from)?;
        Ok(Response::new(CreateJoinTokenResponse {
            token,
            spiffe_id: id.to_string(),
            expires_at: crate::convert::secs_i64(expires_at),
        }))
    }

    async fn list_agents(&self, req: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        self.authorize(&req)?;
        let agents = self.state.store.list_agents().await.map_err(ApiError::from)?;
        Ok(Response::new(ListAgentsResponse { agents: agents.iter().map(agent_to_proto).collect() }))
    }

    async fn ban_agent(&self, req: Request<BanAgentRequest>) -> Result<Response<Agent>, Status> {
        let actor = self.authorize(&req)?;
        let id = parse_spiffe_id("spiffe_id", &req.get_ref().spiffe_id)?;
        let audit = AuditEvent {
            context: AuditContext { agent: Some(id.clone()), ..AuditContext::default() },
            ..self.state.audit("agent.ban", &actor, id.as_str(), serde_json::json!({}))
        };
        let banned =
            self.state.store.ban_agent(&id, unix_secs(self.state.now()), audit).await.map_err(ApiError::from)?;
        // Wake live sync streams so the banned agent's stream ends now.
        self.state.agent_events.send_modify(|n| *n += 1);
        tracing::warn!(agent = %id, "agent banned");
        Ok(Response::new(agent_to_proto(&banned)))
    }

    async fn get_bundle(&self, req: Request<GetBundleRequest>) -> Result<Response<common::Bundle>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(bundle_to_proto(&self.state.keys().bundle)))
    }

    async fn backup(&self, req: Request<BackupRequest>) -> Result<Response<BackupResponse>, Status> {
        let actor = self.authorize(&req)?;
        let path = std::path::PathBuf::from(&req.get_ref().path);
        if !path.is_absolute() {
            return Err(ApiError::InvalidArgument(format!("backup path {} must be absolute", path.display())).into());
        }
        let manifest = self.state.store.backup(&path).await.map_err(|e| match e {
            // Not empty, not writable: the caller's to fix.
            lanyard_store::StoreError::Corrupt(m) => ApiError::InvalidArgument(m),
            lanyard_store::StoreError::Io(io) => ApiError::InvalidArgument(format!("{}: {io}", path.display())),
            other => ApiError::from(other),
        })?;
        let detail = serde_json::json!({
            "path": path.display().to_string(),
            "records": manifest.records,
            "audit_records": manifest.audit_records,
            "records_sha256": manifest.records_sha256,
            "audit_sha256": manifest.audit_sha256,
        });
        let event = self.state.audit("store.backup", &actor, &path.display().to_string(), detail);
        self.state.store.append_audit(event).await.map_err(ApiError::from)?;
        tracing::info!(path = %path.display(), records = manifest.records, "store backed up");
        Ok(Response::new(BackupResponse {
            records: manifest.records,
            audit_records: manifest.audit_records,
            records_sha256: manifest.records_sha256,
            audit_sha256: manifest.audit_sha256,
        }))
    }

    async fn list_keys(&self, req: Request<ListKeysRequest>) -> Result<Response<ListKeysResponse>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(crate::keys::list(&self.state).await.map_err(internal)?))
    }

    async fn rotate_keys(&self, req: Request<RotateKeysRequest>) -> Result<Response<ListKeysResponse>, Status> {
        let actor = self.authorize(&req)?;
        let kinds = match req.get_ref().kinds.as_slice() {
            [] => crate::key_lifecycle::KINDS.to_vec(),
            names => names
                .iter()
                .map(|n| {
                    crate::keys::parse_kind(n).ok_or_else(|| {
                        ApiError::InvalidArgument(format!("kind {n:?}: expected x509-ca, jwt-svid or task-token"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let state = &self.state;
        let _serial = state.key_ops.lock().await;
        for kind in kinds {
            crate::keys::rotate_now(state.store.as_ref(), state.key_context(), kind, state.now(), &actor)
                .await
                .map_err(internal)?;
        }
        crate::keys::refresh(state).await.map_err(internal)?;
        Ok(Response::new(crate::keys::list(state).await.map_err(internal)?))
    }

    async fn revoke_key(&self, req: Request<RevokeKeyRequest>) -> Result<Response<ListKeysResponse>, Status> {
        let actor = self.authorize(&req)?;
        let state = &self.state;
        let _serial = state.key_ops.lock().await;
        crate::keys::revoke(state.store.as_ref(), &req.get_ref().id, state.now(), &actor).await.map_err(
            |e| match e {
                crate::keys::RevokeError::NotFound(_) => ApiError::NotFound(e.to_string()),
                crate::keys::RevokeError::AlreadyRevoked(_) => ApiError::InvalidArgument(e.to_string()),
                crate::keys::RevokeError::Store(e) => internal(e),
            },
        )?;
        // Out of the bundle now, and a new active key if that one was.
        crate::keys::refresh(state).await.map_err(internal)?;
        Ok(Response::new(crate::keys::list(state).await.map_err(internal)?))
    }

    async fn begin_task(&self, req: Request<common::TaskSpec>) -> Result<Response<BeginTaskResponse>, Status> {
        let actor = self.authorize(&req)?;
        let spec = TaskSpec::parse(req.get_ref(), self.state.config.default_task_ttl)?;
        let task = self.state.begin_task(spec, &actor, None, None).await?;
        Ok(Response::new(BeginTaskResponse { task_id: task.id.to_string(), expires_at: secs_i64(task.expires_at) }))
    }

    async fn end_task(&self, req: Request<EndTaskRequest>) -> Result<Response<Revocation>, Status> {
        let actor = self.authorize(&req)?;
        let revocation = self.state.end_task(&actor, None, &req.get_ref().task_id).await?;
        Ok(Response::new(revocation_to_proto(&revocation)))
    }

    async fn list_tasks(&self, req: Request<ListTasksRequest>) -> Result<Response<ListTasksResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let filter = TaskFilter {
            active_at: req.active_only.then(|| unix_secs(self.state.now())),
            connector: optional(&req.connector, |s| parse_spiffe_id("connector", s))?,
            session: optional(&req.session, |s| s.parse().map_err(|e| ApiError::invalid("session", e)))?,
        };
        let limit = match req.limit {
            0 => LIST_TASKS_MAX,
            n => usize::try_from(n).unwrap_or(LIST_TASKS_MAX).min(LIST_TASKS_MAX),
        };
        let tasks = self.state.store.list_tasks(&filter, limit).await.map_err(ApiError::from)?;
        Ok(Response::new(ListTasksResponse { tasks: tasks.iter().map(task_to_proto).collect() }))
    }

    async fn revoke_session(&self, req: Request<RevokeSessionRequest>) -> Result<Response<Revocation>, Status> {
        let actor = self.authorize(&req)?;
        let session: SessionId = req.get_ref().session.parse().map_err(|e| ApiError::invalid("session", e))?;
        let audit = AuditEvent {
            context: AuditContext { session: Some(session.clone()), ..AuditContext::default() },
            ..self.state.audit("session.revoke", &actor, session.as_str(), serde_json::json!({}))
        };
        let revocation = self
            .state
            .store
            .revoke_session(&session, unix_secs(self.state.now()), audit)
            .await
            .map_err(ApiError::from)?;
        tracing::warn!(session = %session, tasks = revocation.tasks.len(), "session revoked");
        Ok(Response::new(revocation_to_proto(&revocation)))
    }

    async fn report_risk(&self, req: Request<ReportRiskRequest>) -> Result<Response<Revocation>, Status> {
        let actor = self.authorize(&req)?;
        let req = req.into_inner();
        let subject = risk_subject(req.subject.as_ref())?;
        let level = match req.level.as_str() {
            "" => RiskLevel::High,
            s => s.parse().map_err(|e| ApiError::invalid("level", e))?,
        };
        let now = unix_secs(self.state.now());
        let record = RiskRecord {
            subject: subject.clone(),
            level: level.to_string(),
            reason: req.reason,
            reported_at: now,
            reported_by: actor.clone(),
        };
        let detail = serde_json::json!({ "level": level.to_string(), "reason": record.reason });
        let audit = AuditEvent {
            context: risk_context(&subject),
            ..self.state.audit("risk.report", &actor, &subject.to_string(), detail)
        };
        let revocation = self.state.store.report_risk(record, audit).await.map_err(ApiError::from)?;
        tracing::warn!(subject = %subject, level = %level, "risk reported");
        Ok(Response::new(revocation_to_proto(&revocation)))
    }

    async fn clear_risk(&self, req: Request<ClearRiskRequest>) -> Result<Response<Revocation>, Status> {
        let actor = self.authorize(&req)?;
        let subject = risk_subject(req.get_ref().subject.as_ref())?;
        let audit = AuditEvent {
            context: risk_context(&subject),
            ..self.state.audit("risk.clear", &actor, &subject.to_string(), serde_json::json!({}))
        };
        let revocation =
            self.state.store.clear_risk(&subject, unix_secs(self.state.now()), audit).await.map_err(ApiError::from)?;
        Ok(Response::new(revocation_to_proto(&revocation)))
    }

    async fn list_risks(&self, req: Request<ListRisksRequest>) -> Result<Response<ListRisksResponse>, Status> {
        self.authorize(&req)?;
        let risks = self.state.store.list_risks().await.map_err(ApiError::from)?;
        Ok(Response::new(ListRisksResponse {
            risks: risks
                .iter()
                .map(|r| Risk {
                    subject: r.subject.to_string(),
                    level: r.level.clone(),
                    reason: r.reason.clone(),
                    reported_at: secs_i64(r.reported_at),
                    reported_by: r.reported_by.clone(),
                })
                .collect(),
        }))
    }

    async fn revoke_token(&self, req: Request<RevokeTokenRequest>) -> Result<Response<Revocation>, Status> {
        let actor = self.authorize(&req)?;
        let jti = req.get_ref().jti.trim();
        if jti.is_empty()
            || jti.len() > 128
            || !jti.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::invalid("jti", "must be 1-128 base64url characters").into());
        }
        let audit = AuditEvent {
            context: AuditContext { jti_hash: Some(lanyard_ca::task_token::jti_hash(jti)), ..AuditContext::default() },
            ..self.state.audit("token.revoke", &actor, "", serde_json::json!({}))
        };
        let revocation =
            self.state.store.revoke_token(jti, unix_secs(self.state.now()), audit).await.map_err(ApiError::from)?;
        Ok(Response::new(revocation_to_proto(&revocation)))
    }

    async fn reload_policy(&self, req: Request<ReloadPolicyRequest>) -> Result<Response<ReloadPolicyResponse>, Status> {
        let actor = self.authorize(&req)?;
        let ids = self.state.reload_policy(&actor).await?;
        Ok(Response::new(ReloadPolicyResponse { policies: ids }))
    }

    async fn check_policy(&self, req: Request<CheckPolicyRequest>) -> Result<Response<CheckPolicyResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let connector = parse_spiffe_id("connector", &r.connector)?;
        let tool: Tool = r.tool.parse().map_err(|e| ApiError::invalid("tool", e))?;
        let user = User {
            sub: r.user_sub.parse().map_err(|e| ApiError::invalid("user_sub", e))?,
            iss: r.user_iss.parse().map_err(|e| ApiError::invalid("user_iss", e))?,
        };
        let action: Action = r.action.parse().map_err(|e| ApiError::invalid("action", e))?;
        let audience: Audience = r.audience.parse().map_err(|e| ApiError::invalid("audience", e))?;
        let classification: Classification =
            r.classification.parse().map_err(|e| ApiError::invalid("classification", e))?;
        let session: SessionId = if r.session.is_empty() { "policy-check".parse() } else { r.session.parse() }
            .map_err(|e| ApiError::invalid("session", e))?;
        let now_unix = match u64::try_from(r.at) {
            Ok(0) | Err(_) => unix_secs(self.state.now()),
            Ok(t) => t,
        };
        let agent = lanyard_core::ids::server_id(&self.state.td);
        let input = PolicyInput {
            connector: &connector,
            tool: &tool,
            action,
            user: &user,
            audience: &audience,
            classification,
            session: &session,
            task: TaskId::from_bytes([0; 16]),
            agent: &agent,
            chain_depth: 0,
            risk: None,
            now_unix,
        };
        let decision = self.state.policy().evaluate(&input);
        let reason = if decision.allowed {
            String::new()
        } else if !decision.errors.is_empty() {
            format!("policy evaluation failed (a failure denies): {}", decision.errors.join("; "))
        } else if decision.policies.is_empty() {
            "no policy permits it".into()
        } else {
            "forbidden by policy".into()
        };
        Ok(Response::new(CheckPolicyResponse { allowed: decision.allowed, policies: decision.policies, reason }))
    }

    type TailAuditStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send>>;

    async fn tail_audit(&self, req: Request<TailAuditRequest>) -> Result<Response<Self::TailAuditStream>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let state = Arc::clone(&self.state);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut heads = state.store.subscribe_audit();
            let mut shutdown = state.shutdown.subscribe();
            let head = *heads.borrow_and_update();
            let mut next = head.saturating_sub(u64::from(req.last)) + 1;
            loop {
                match state.store.audit_range(next, 500).await {
                    Ok(records) => {
                        for r in &records {
                            if tx.send(Ok(record_to_proto(r))).await.is_err() {
                                return;
                            }
                            next = r.seq + 1;
                        }
                        if records.len() == 500 {
                            continue;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                }
                if !req.follow {
                    return;
                }
                tokio::select! {
                    r = heads.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn query_audit(&self, req: Request<QueryAuditRequest>) -> Result<Response<QueryAuditResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let filter = AuditFilter {
            task: optional(&r.task, |s| s.parse().map_err(|e| ApiError::invalid("task", e)))?,
            user_sub: (!r.user.is_empty()).then(|| r.user.clone()),
            connector: optional(&r.connector, |s| parse_spiffe_id("connector", s))?,
            since: u64::try_from(r.since).ok().filter(|t| *t > 0),
            kind: (!r.kind.is_empty()).then(|| r.kind.clone()),
        };
        let limit = match r.limit {
            0 => AUDIT_QUERY_MAX,
            n => usize::try_from(n).unwrap_or(AUDIT_QUERY_MAX).min(AUDIT_QUERY_MAX),
        };
        let records = self.state.store.query_audit(&filter, r.from_seq.max(1), limit).await.map_err(ApiError::from)?;
        Ok(Response::new(QueryAuditResponse { records: records.iter().map(record_to_proto).collect() }))
    }

    async fn verify_audit(&self, req: Request<VerifyAuditRequest>) -> Result<Response<VerifyAuditResponse>, Status> {
        self.authorize(&req)?;
        let keys = crate::audit::store_checkpoint_keys(self.state.store.as_ref()).await.map_err(ApiError::from)?;
        let report = crate::audit::verify_audit(self.state.store.as_ref(), &keys)
            .await
            .map_err(|e| ApiError::Aborted(e.to_string()))?;
        Ok(Response::new(VerifyAuditResponse {
            records: report.records,
            head: lanyard_core::hex::encode(&report.head),
            checkpoint: report.checkpoint.unwrap_or_default(),
        }))
    }
}

/// Parses a field that may be left empty.
fn optional<T>(value: &str, parse: impl FnOnce(&str) -> Result<T, ApiError>) -> Result<Option<T>, ApiError> {
    if value.is_empty() { Ok(None) } else { parse(value).map(Some) }
}

/// Exactly one subject of a risk report.
pub(crate) fn risk_subject(subject: Option<&lanyard_proto::admin::RiskSubject>) -> Result<RiskSubject, ApiError> {
    let s = subject.ok_or_else(|| ApiError::invalid("subject", "missing"))?;
    let given = [&s.user_sub, &s.connector, &s.agent, &s.session].iter().filter(|v| !v.is_empty()).count();
    if given != 1 {
        return Err(ApiError::invalid("subject", "name exactly one of user, connector, agent, session"));
    }
    if !s.user_sub.is_empty() {
        let sub: lanyard_core::UserField = s.user_sub.parse().map_err(|e| ApiError::invalid("user", e))?;
        let iss = optional(&s.user_iss, |v| {
            v.parse::<lanyard_core::UserField>().map_err(|e| ApiError::invalid("user_iss", e))
        })?;
        return Ok(RiskSubject::User { sub: sub.to_string(), iss: iss.map(|i| i.to_string()) });
    }
    if !s.connector.is_empty() {
        return parse_spiffe_id("connector", &s.connector).map(RiskSubject::Connector);
    }
    if !s.agent.is_empty() {
        return parse_spiffe_id("agent", &s.agent).map(RiskSubject::Agent);
    }
    s.session.parse().map(RiskSubject::Session).map_err(|e| ApiError::invalid("session", e))
}

/// The structured fields of a risk's audit record: the subject in the field
/// of its kind, so that queries by user, connector or agent find it. A user
/// reported for every issuer is recorded with issuer `*`.
fn risk_context(subject: &RiskSubject) -> AuditContext {
    let mut context = AuditContext::default();
    match subject {
        RiskSubject::User { sub, iss } => {
            if let (Ok(sub), Ok(iss)) = (sub.parse(), iss.as_deref().unwrap_or("*").parse()) {
                context.user = Some(User { sub, iss });
            }
        }
        RiskSubject::Connector(id) => context.connector = Some(id.clone()),
        RiskSubject::Agent(id) => context.agent = Some(id.clone()),
        RiskSubject::Session(s) => context.session = Some(s.clone()),
    }
    context
}

/// A key operation that failed on our side: logged, answered as Internal.
fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}
