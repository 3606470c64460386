//! Tasks: begin, task tokens, delegation and ending — the decisions behind
//! both the admin API and the agents' forwarded Tasks API calls.
//!
//! Every decision, allow or deny, is written to the audit log durably before
//! the caller hears the answer; a deny answers PermissionDenied with the
//! reason an operator will also find in the log.

use std::time::Duration;

use lanyard_ca::task_token::{self, TaskTokenTemplate};
use lanyard_core::{
    Action, Audience, Classification, Entry, SessionId, SpiffeId, Task, TaskId, Tool, User, UserField, from_unix_secs,
    task::{MAX_TASK_TOKEN_TTL, MAX_TASK_TTL},
    unix_secs,
};
use lanyard_policy::{BeginRequest, DelegateRequest, Deny, OpenRisks, RiskLevel, TokenRequest};
use lanyard_proto::{agent, common};
use lanyard_store::{AuditContext, AuditEvent, EntryFilter, Preconditions, Revocation, RiskSubject, StoreError};

use crate::convert::{parse_all, parse_spiffe_id};
use crate::state::State;
use crate::status::ApiError;

/// Most entries considered for one connector SPIFFE ID.
const MAX_ENTRIES_PER_CONNECTOR: usize = 100;

/// A task request, parsed.
pub(crate) struct TaskSpec {
    pub(crate) connector: SpiffeId,
    pub(crate) user: User,
    pub(crate) session: SessionId,
    pub(crate) tools: Vec<Tool>,
    pub(crate) audiences: Vec<Audience>,
    pub(crate) classification: Classification,
    pub(crate) action: Action,
    pub(crate) ttl: Duration,
}

fn parse<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| ApiError::invalid(field, e))
}

impl TaskSpec {
    pub(crate) fn parse(p: &common::TaskSpec, default_ttl: Duration) -> Result<Self, ApiError> {
        let ttl = match p.ttl_seconds {
            0 => default_ttl,
            n => Duration::from_secs(u64::from(n)),
        };
        if ttl > MAX_TASK_TTL {
            return Err(ApiError::invalid("ttl", "a task may last at most 24h"));
        }
        Ok(Self {
            connector: parse_spiffe_id("connector", &p.connector)?,
            user: User { sub: parse::<UserField>("user_sub", &p.user_sub)?, iss: parse("user_iss", &p.user_iss)? },
            session: parse("session", &p.session)?,
            tools: parse_all("tool", &p.tools)?,
            audiences: parse_all("audience", &p.audiences)?,
            classification: parse("classification", &p.classification)?,
            action: parse("action", &p.action)?,
            ttl,
        })
    }
}

/// One identity an agent attested the calling workload to, with the
/// workload's current X.509-SVID for it.
pub(crate) struct CallerIdentity {
    pub(crate) entry: Entry,
    pub(crate) svid_der: Vec<u8>,
}

/// What a decision touched, for its audit record.
fn task_context(task: &Task, agent: Option<&SpiffeId>) -> AuditContext {
    AuditContext {
        connector: Some(task.connector.clone()),
        user: Some(task.user.clone()),
        session: Some(task.session.clone()),
        task: Some(task.id),
        tools: task.tools.clone(),
        action: Some(task.action),
        agent: agent.cloned(),
        ..AuditContext::default()
    }
}

impl State {
    fn event(&self, kind: &str, actor: &str, subject: &str, context: AuditContext) -> AuditEvent {
        AuditEvent { context, ..self.audit(kind, actor, subject, serde_json::json!({})) }
    }

    /// Writes a deny decision to the audit log, then answers with it.
    async fn deny(&self, event: AuditEvent, deny: Deny) -> ApiError {
        let policies = match &deny {
            Deny::PolicyForbids { policies } => policies.clone(),
            _ => Vec::new(),
        };
        self.record_deny(event, deny.to_string(), policies).await
    }

    async fn record_deny(&self, mut event: AuditEvent, reason: String, policies: Vec<String>) -> ApiError {
        event.context.decision = Some("deny".into());
        event.context.reason = Some(reason.clone());
        event.context.policies = policies;
        if let Err(e) = self.store.append_audit(event).await {
            return ApiError::from(e);
        }
        ApiError::PermissionDenied(reason)
    }

    /// The subjects a request's risks are looked up on.
    fn risk_subjects(
        user: &User,
        connector: &SpiffeId,
        agent: Option<&SpiffeId>,
        session: &SessionId,
    ) -> Vec<RiskSubject> {
        let mut subjects = vec![
            RiskSubject::User { sub: user.sub.to_string(), iss: Some(user.iss.to_string()) },
            RiskSubject::Connector(connector.clone()),
            RiskSubject::Session(session.clone()),
        ];
        subjects.extend(agent.cloned().map(RiskSubject::Agent));
        subjects
    }

    /// The highest open risk on each subject a request involves.
    pub(crate) async fn open_risks(
        &self,
        user: &User,
        connector: &SpiffeId,
        agent: Option<&SpiffeId>,
        session: &SessionId,
    ) -> Result<OpenRisks, ApiError> {
        self.open_risks_on(&Self::risk_subjects(user, connector, agent, session)).await
    }

    /// The highest open risk on each of `subjects` (from [`risk_subjects`](Self::risk_subjects)).
    async fn open_risks_on(&self, subjects: &[RiskSubject]) -> Result<OpenRisks, ApiError> {
        let mut risks = OpenRisks::default();
        for record in self.store.open_risks(subjects).await? {
            let Ok(level) = record.level.parse::<RiskLevel>() else {
                return Err(ApiError::Internal(format!("stored risk level {:?}", record.level)));
            };
            let slot = match record.subject {
                RiskSubject::User { .. } => &mut risks.user,
                RiskSubject::Connector(_) => &mut risks.connector,
                RiskSubject::Agent(_) => &mut risks.agent,
                RiskSubject::Session(_) => &mut risks.session,
            };
            *slot = (*slot).max(Some(level));
        }
        Ok(risks)
    }

    async fn entries_for(&self, connector: &SpiffeId) -> Result<Vec<Entry>, ApiError> {
        let filter = EntryFilter { spiffe_id: Some(connector.clone()), parent_id: None };
        Ok(self.store.list_entries(&filter, None, MAX_ENTRIES_PER_CONNECTOR).await?)
    }

    /// The task's ancestors, parent first.
    async fn ancestors(&self, task: &Task) -> Result<Vec<Task>, ApiError> {
        let mut out = Vec::new();
        let mut next = task.parent;
        while let Some(id) = next {
            let parent = self
                .store
                .get_task(&id)
                .await?
                .ok_or_else(|| ApiError::Internal(format!("task {} names a missing parent {id}", task.id)))?;
            next = parent.parent;
            out.push(parent);
            if out.len() > lanyard_core::task::MAX_DELEGATION_DEPTH {
                return Err(ApiError::Internal(format!("task {} has a parent loop", task.id)));
            }
        }
        Ok(out)
    }

    fn new_task_id() -> Result<TaskId, ApiError> {
        lanyard_ca::rand::bytes::<16>().map(TaskId::from_bytes).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Begins a task for `spec`. `orchestrator` is the beginner's entry when a
    /// workload begins it (it must have task_authority); `None` for an admin.
    pub(crate) async fn begin_task(
        &self,
        spec: TaskSpec,
        begun_by: &str,
        orchestrator: Option<&Entry>,
        agent: Option<&SpiffeId>,
    ) -> Result<Task, ApiError> {
        let now = unix_secs(self.now());
        let task = Task {
            id: Self::new_task_id()?,
            connector: spec.connector.clone(),
            user: spec.user.clone(),
            session: spec.session.clone(),
            tools: spec.tools.clone(),
            audiences: spec.audiences.clone(),
            classification: spec.classification,
            action: spec.action,
            created_at: now,
            expires_at: now + spec.ttl.as_secs(),
            ended_at: None,
            end_reason: None,
            parent: None,
            chain: Vec::new(),
            begun_by: begun_by.to_owned(),
        };
        let event = self.event("task.begin", begun_by, task.id.to_string().as_str(), task_context(&task, agent));
        let session_revoked = self.store.is_session_revoked(&spec.session).await?;
        let risks = self.open_risks(&spec.user, &spec.connector, agent, &spec.session).await?;
        let entries = self.entries_for(&spec.connector).await?;
        if entries.is_empty() {
            return Err(ApiError::invalid("connector", format!("{} has no registration entry", spec.connector)));
        }
        // Any one of the connector's entries whose ceilings admit the task will do.
        let mut first_deny = None;
        for entry in &entries {
            let request = BeginRequest {
                connector: entry,
                orchestrator,
                tools: &spec.tools,
                audiences: &spec.audiences,
                classification: spec.classification,
                ttl: spec.ttl,
                session_revoked,
                risks,
            };
            match self.ceilings.check_begin(&request) {
                Ok(()) => {
                    first_deny = None;
                    break;
                }
                Err(deny) => {
                    first_deny.get_or_insert(deny);
                }
            }
        }
        if let Some(deny) = first_deny {
            return Err(self.deny(event, deny).await);
        }
        let mut event = event;
        event.context.decision = Some("allow".into());
        let stored = self.store.create_task(task, event).await?;
        tracing::info!(task = %stored.id, connector = %stored.connector, user = %stored.user.sub, "task begun");
        Ok(stored)
    }

    /// Mints a task token for a workload the agent attested to `caller`.
    pub(crate) async fn mint_task_token(
        &self,
        agent: &SpiffeId,
        caller: &[CallerIdentity],
        req: &agent::FetchTaskTokenRequest,
    ) -> Result<common::TaskToken, ApiError> {
        let _on_its_way = self.store.write_intent();
        let task_id: TaskId = parse("task_id", &req.task_id)?;
        let audience: Audience = parse("audience", &req.audience)?;
        let tools: Vec<Tool> = parse_all("tool", &req.tools)?;
        let action: Action = parse("action", &req.action)?;
        let ttl = match req.ttl_seconds {
            0 => MAX_TASK_TOKEN_TTL,
            n => Duration::from_secs(u64::from(n)),
        };
        if ttl > MAX_TASK_TOKEN_TTL {
            return Err(ApiError::invalid("ttl", "a task token lasts at most 5m"));
        }
        let first = caller.first().ok_or_else(|| ApiError::PermissionDenied(crate::NO_IDENTITY.into()))?;
        // Read before the task, session and risks: if the feed is still here
        // when the record is written, the store need not read them again.
        let checked_at_revocation = self.store.revocation_seq();
        let Some(task) = self.store.get_task(&task_id).await? else {
            let context = AuditContext { task: Some(task_id), agent: Some(agent.clone()), ..AuditContext::default() };
            let event = self.event("tasktoken.mint", first.entry.spiffe_id.as_str(), "", context);
            return Err(self.record_deny(event, format!("task {task_id} is unknown"), Vec::new()).await);
        };
        let ancestors = self.ancestors(&task).await?;
        // The caller acts as the task's connector, if it is entitled to it.
        let identity = caller.iter().find(|c| c.entry.spiffe_id == task.connector).unwrap_or(first);
        let mint_event = |tools: &[Tool], audience: &Audience| {
            let mut context = task_context(&task, Some(agent));
            context.tools = tools.to_vec();
            context.action = Some(action);
            context.audience = Some(audience.clone());
            self.event("tasktoken.mint", identity.entry.spiffe_id.as_str(), task.id.to_string().as_str(), context)
        };
        let event = mint_event(&tools, &audience);

        let now = self.now();
        let session_revoked = self.store.is_session_revoked(&task.session).await?;
        let subjects = Self::risk_subjects(&task.user, &task.connector, Some(agent), &task.session);
        let risks = self.open_risks_on(&subjects).await?;
        let request = TokenRequest {
            connector: &identity.entry,
            task: &task,
            ancestors: &ancestors,
            tools: &tools,
            audience: &audience,
            action,
            agent,
            session_revoked,
            risks,
            now_unix: unix_secs(now),
        };
        let decision = match lanyard_policy::decide(&self.ceilings, &self.policy(), &request) {
            Ok(decision) => decision,
            Err(deny) => {
                self.metrics.decision(false);
                return Err(self.deny(event, deny).await);
            }
        };
        self.metrics.decision(true);
        // The token is bound to the SVID the workload holds now, and ends no later.
        let keys = self.keys();
        let svid = self
            .svid_cache
            .verify(&identity.svid_der, &keys.bundle.x509_authorities, keys.bundle.sequence, now)
            .map_err(|e| ApiError::invalid("svid", e))?;
        if svid.info.spiffe_id != identity.entry.spiffe_id {
            return Err(ApiError::invalid("svid", "the SVID is for another identity"));
        }
        let ends = std::iter::once(&task).chain(&ancestors).map(|t| from_unix_secs(t.expires_at));
        let expires_at = ends.chain([now + ttl, svid.info.not_after]).min().unwrap_or(now);
        let template = TaskTokenTemplate {
            issuer: self.config.public_url.clone(),
            connector: task.connector.clone(),
            audience,
            task: task.id,
            tools,
            action,
            classification: task.classification,
            user: task.user.clone(),
            session: task.session.clone(),
            chain: task.chain.clone(),
            cnf_x5t_s256: task_token::x5t_s256_of_digest(&svid.sha256),
            expires_at,
        };
        let signed = keys.task_tokens.sign_task_token(&template, now).map_err(ApiError::from)?;
        let mut event = event;
        event.context.decision = Some("allow".into());
        event.context.policies = decision.policies;
        event.context.jti_hash = Some(task_token::jti_hash(&signed.jti));
        event.detail = serde_json::json!({ "exp": unix_secs(signed.expires_at), "kid": keys.task_tokens.kid() });
        // INVARIANT: no token leaves before its audit record is durable, and
        // the record is written only if no revocation got in since the checks
        // above (the store checks again under the lock revocations take).
        let pre = Preconditions {
            tasks: std::iter::once(&task).chain(&ancestors).map(|t| t.id).collect(),
            now: unix_secs(now),
            session: Some(task.session.clone()),
            risks: subjects,
            blocking_levels: RiskLevel::ALL
                .into_iter()
                .filter(|l| *l >= self.ceilings.risk_threshold)
                .map(|l| l.to_string())
                .collect(),
            checked_at_revocation: Some(checked_at_revocation),
        };
        match self.store.append_audit_if(event, pre).await {
            Ok(_) => {}
            Err(StoreError::Revoked(reason)) => {
                let event = mint_event(&template.tools, &template.audience);
                return Err(self.record_deny(event, reason, Vec::new()).await);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(common::TaskToken {
            token: signed.token,
            expires_at: crate::convert::secs_i64(unix_secs(signed.expires_at)),
            spiffe_id: task.connector.to_string(),
            jti: signed.jti,
        })
    }

    /// Starts a child task of `req.task_id` for another connector.
    pub(crate) async fn delegate_task(
        &self,
        agent: &SpiffeId,
        caller: &[CallerIdentity],
        req: &agent::DelegateTaskRequest,
    ) -> Result<Task, ApiError> {
        let parent_id: TaskId = parse("task_id", &req.task_id)?;
        let to: SpiffeId = parse_spiffe_id("to_connector", &req.to_connector)?;
        let tools: Vec<Tool> = parse_all("tool", &req.tools)?;
        let first = caller.first().ok_or_else(|| ApiError::PermissionDenied(crate::NO_IDENTITY.into()))?;
        let parent = self
            .store
            .get_task(&parent_id)
            .await?
            .ok_or_else(|| ApiError::PermissionDenied(format!("task {parent_id} is unknown")))?;
        let audiences: Vec<Audience> =
            if req.audiences.is_empty() { parent.audiences.clone() } else { parse_all("audience", &req.audiences)? };
        let now = unix_secs(self.now());
        let ttl = match req.ttl_seconds {
            0 => Duration::from_secs(parent.expires_at.saturating_sub(now)),
            n => Duration::from_secs(u64::from(n)),
        };
        let ancestors = self.ancestors(&parent).await?;
        let from = caller.iter().find(|c| c.entry.spiffe_id == parent.connector).unwrap_or(first);
        let child = Task {
            id: Self::new_task_id()?,
            connector: to.clone(),
            tools: tools.clone(),
            audiences: audiences.clone(),
            created_at: now,
            expires_at: now + ttl.as_secs(),
            ended_at: None,
            end_reason: None,
            parent: Some(parent.id),
            chain: parent.chain.iter().cloned().chain([from.entry.spiffe_id.clone()]).collect(),
            begun_by: from.entry.spiffe_id.to_string(),
            ..parent.clone()
        };
        let context = task_context(&child, Some(agent));
        let event = self.event("task.delegate", from.entry.spiffe_id.as_str(), child.id.to_string().as_str(), context);
        let targets = self.entries_for(&to).await?;
        let session_revoked = self.store.is_session_revoked(&parent.session).await?;
        let risks = self.open_risks(&parent.user, &to, Some(agent), &parent.session).await?;
        let mut verdict = Err(Deny::DelegateNotAllowed(to.clone()));
        for target in &targets {
            let request = DelegateRequest {
                parent: &parent,
                ancestors: &ancestors,
                from: &from.entry,
                to: target,
                tools: &tools,
                audiences: &audiences,
                ttl,
                session_revoked,
                risks,
                now_unix: now,
            };
            verdict = self.ceilings.check_delegate(&request);
            if verdict.is_ok() {
                break;
            }
        }
        if let Err(deny) = verdict {
            return Err(self.deny(event, deny).await);
        }
        let mut event = event;
        event.context.decision = Some("allow".into());
        let stored = self.store.create_task(child, event).await?;
        tracing::info!(task = %stored.id, parent = %parent.id, to = %to, "task delegated");
        Ok(stored)
    }

    /// Ends a task and its descendants. A workload may end a task it began,
    /// serves, or that was delegated from one it serves; `caller` is `None`
    /// for an admin.
    pub(crate) async fn end_task(
        &self,
        actor: &str,
        caller: Option<&[CallerIdentity]>,
        id: &str,
    ) -> Result<Revocation, ApiError> {
        let id: TaskId = parse("task_id", id)?;
        let task = self.store.get_task(&id).await?.ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?;
        if let Some(caller) = caller {
            let ancestors = self.ancestors(&task).await?;
            let involved: Vec<String> = std::iter::once(&task)
                .chain(&ancestors)
                .flat_map(|t| [t.connector.to_string(), t.begun_by.clone()])
                .collect();
            if !caller.iter().any(|c| involved.iter().any(|i| i == c.entry.spiffe_id.as_str())) {
                return Err(ApiError::PermissionDenied(format!("task {id} is not yours to end")));
            }
        }
        let event = self.event("task.end", actor, id.to_string().as_str(), task_context(&task, None));
        let revocation = self.store.end_task(&id, unix_secs(self.now()), event).await?;
        tracing::info!(task = %id, ended = revocation.tasks.len(), "task ended");
        Ok(revocation)
    }
}
