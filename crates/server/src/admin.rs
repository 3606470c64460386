//! The admin API, on a Unix socket that only the server's user (or root)
//! may use.

use std::sync::Arc;

use lanyard_core::{EntryId, ids, unix_secs};
use lanyard_proto::admin::admin_server::Admin;
use lanyard_proto::admin::{
    Agent, BanAgentRequest, CreateEntryRequest, CreateJoinTokenRequest, CreateJoinTokenResponse, DeleteEntryRequest,
    DeleteEntryResponse, GetBundleRequest, GetEntryRequest, ListAgentsRequest, ListAgentsResponse, ListEntriesRequest,
    ListEntriesResponse, UpdateEntryRequest,
};
use lanyard_proto::common;
use lanyard_store::{AgentRecord, EntryFilter, JoinTokenRecord};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::convert::{
    agent_to_proto, bundle_to_proto, entry_from_proto, entry_to_proto, parse_entry_id, parse_spiffe_id,
};
use crate::limits::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX, MAX_JOIN_TOKEN_TTL};
use crate::state::State;
use crate::status::ApiError;

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
        let record = self.state.store.get_agent(&id).await.map_err(ApiError::from)?;
        let record = record.ok_or_else(|| ApiError::NotFound(format!("agent {id} not found")))?;
        let banned = AgentRecord { banned: true, ..record };
        let audit = self.state.audit("agent.ban", &actor, id.as_str(), serde_json::json!({}));
        self.state.store.put_agent(banned.clone(), Some(audit)).await.map_err(ApiError::from)?;
        // Wake live sync streams so the banned agent's stream ends now.
        self.state.agent_events.send_modify(|n| *n += 1);
        tracing::warn!(agent = %id, "agent banned");
        Ok(Response::new(agent_to_proto(&banned)))
    }

    async fn get_bundle(&self, req: Request<GetBundleRequest>) -> Result<Response<common::Bundle>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(bundle_to_proto(&self.state.keys().bundle)))
    }
}
