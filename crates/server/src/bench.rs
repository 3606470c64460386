//! The task-token mint path in process, without the network: for the
//! benchmark that compares it with raw signing. Not an API.

use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::{X509SvidTemplate, csr};
use lanyard_core::{Entry, EntryId, SpiffeId};
use lanyard_proto::agent::FetchTaskTokenRequest;
use lanyard_proto::common::TaskSpec as WireTaskSpec;

use crate::state::State;
use crate::tasks::{CallerIdentity, TaskSpec};
use crate::{Server, ServerConfig};

/// A server's state with one connector, its SVID and one task, ready to mint.
pub struct MintRig {
    state: Arc<State>,
    agent: SpiffeId,
    caller: Vec<CallerIdentity>,
    request: FetchTaskTokenRequest,
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl MintRig {
    /// Sets up in `dir` (a fresh directory).
    pub async fn new(dir: &std::path::Path) -> Result<Self, String> {
        let config = ServerConfig::new(
            "example.org".parse().map_err(fail)?,
            dir.join("data"),
            dir.join("admin.sock"),
            "127.0.0.1:0".parse().map_err(fail)?,
        );
        let server = Server::bind(config).await.map_err(fail)?;
        let state = Arc::clone(&server.state);
        let agent: SpiffeId = "spiffe://example.org/agent/bench".parse().map_err(fail)?;
        let entry = Entry {
            id: EntryId::parse("bench").map_err(fail)?,
            spiffe_id: "spiffe://example.org/connector/github".parse().map_err(fail)?,
            parent_id: agent.clone(),
            selectors: vec!["unix:uid:1000".parse().map_err(fail)?],
            x509_ttl: lanyard_core::Ttl::ONE_HOUR,
            jwt_ttl: lanyard_core::Ttl::FIVE_MINUTES,
            dns_names: vec![],
            expires_at: None,
            hint: String::new(),
            revision: 0,
            tools: vec!["github.search".parse().map_err(fail)?],
            audiences: vec!["api.github.com".parse().map_err(fail)?],
            max_classification: lanyard_core::Classification::Internal,
            delegate_to: vec![],
            task_authority: false,
        };
        let entry = state
            .store
            .create_entry(entry, state.audit("entry.create", "bench", "", serde_json::json!({})))
            .await
            .map_err(fail)?;
        let (_, request) = csr::new_key_and_csr().map_err(fail)?;
        let template = X509SvidTemplate {
            spiffe_id: entry.spiffe_id.clone(),
            dns_names: vec![],
            ttl: Duration::from_secs(3600),
            public_key: csr::parse_csr(&request).map_err(fail)?,
        };
        let svid = state.keys().x509.sign_svid(&template, state.now()).map_err(fail)?;
        let spec = WireTaskSpec {
            connector: entry.spiffe_id.to_string(),
            user_sub: "alice".into(),
            user_iss: "https://idp.example".into(),
            session: "bench".into(),
            tools: vec!["github.search".into()],
            audiences: vec!["api.github.com".into()],
            classification: "internal".into(),
            action: "read".into(),
            ttl_seconds: 3600,
        };
        let spec = TaskSpec::parse(&spec, Duration::from_secs(600)).map_err(fail)?;
        let task = state.begin_task(spec, "admin:bench", None, None).await.map_err(fail)?;
        let request = FetchTaskTokenRequest {
            task_id: task.id.to_string(),
            audience: "api.github.com".into(),
            tools: vec!["github.search".into()],
            action: "read".into(),
            ttl_seconds: 0,
        };
        Ok(Self { state, agent, caller: vec![CallerIdentity { entry, svid_der: svid.der }], request })
    }

    /// One task token through the whole in-process path: reads, ceilings,
    /// Cedar, SVID check, signing, durable audit record.
    pub async fn mint(&self) -> Result<(), String> {
        self.state.mint_task_token(&self.agent, &self.caller, &self.request).await.map(|_| ()).map_err(fail)
    }

    /// How many group commits (flushes of the store) have run so far.
    pub fn flushes(&self) -> u64 {
        self.state.store.commit_latency().count()
    }
}
