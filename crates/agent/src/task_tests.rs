//! Every refusal of the task API, over real mTLS against an in-process
//! server: each answers PermissionDenied with its reason, and each is in
//! the audit log as a deny with that same reason.

use std::time::Duration;

use lanyard_ca::csr;
use lanyard_proto::admin::{
    BanAgentRequest, EndTaskRequest as AdminEndTask, GetEntryRequest, QueryAuditRequest, ReportRiskRequest,
    RevokeSessionRequest, RiskSubject, UpdateEntryRequest,
};
use lanyard_proto::agent::{BeginTaskRequest, DelegateTaskRequest, FetchTaskTokenRequest};
use lanyard_proto::common::{Entry, TaskSpec, TaskToken};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{
    CallerIdentity, MintTaskTokenRequest, MintTaskTokensRequest, MintTaskTokensResponse, MintX509SvidsRequest,
    NodeBeginTaskRequest, NodeDelegateTaskRequest, TaskTokenResult, X509SvidRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::testkit::{Fixture, fixture_with, scratch};

const POLICIES: &str = r#"
@id("base") permit(principal, action, resource);
@id("no-forbidden-tool") forbid(principal, action, resource == Lanyard::Tool::"forbidden.tool");
@id("overflow") forbid(principal, action, resource == Lanyard::Tool::"error.tool")
  when { context.time.unix * 9223372036854775807 > 0 };
"#;

const AGENT: &str = "spiffe://example.org/agent/node1";
const AUD: &str = "api.example";

fn id(name: &str) -> String {
    format!("spiffe://example.org/connector/{name}")
}

/// A server with policies, one agent, four registered workloads with SVIDs.
struct World {
    f: Fixture,
    node: NodeClient<Channel>,
    github: CallerIdentity,
    helper: CallerIdentity,
    other: CallerIdentity,
    orchestrator: CallerIdentity,
    _policies: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut lanyard_server::ServerConfig)) -> Self {
        let (policies, dir) = scratch();
        std::fs::write(dir.join("test.cedar"), POLICIES).unwrap();
        let mut f = fixture_with(|c| {
            c.policy_dir = Some(dir);
            tweak(c);
        })
        .await;
        let (node, _) = f.agent("node1").await;
        let connector = |name: &str, tools: &[&str]| Entry {
            spiffe_id: id(name),
            parent_id: AGENT.into(),
            selectors: vec!["unix:uid:1000".into()],
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            audiences: vec![AUD.into()],
            max_classification: "internal".into(),
            delegate_to: vec![id("*")],
            ..Entry::default()
        };
        let github = f.create_entry(connector("github", &["search", "create", "forbidden.tool", "error.tool"])).await;
        let helper = f.create_entry(connector("helper", &["search"])).await;
        let other = f.create_entry(Entry { delegate_to: vec![], ..connector("other", &["search"]) }).await;
        let orchestrator = f
            .create_entry(Entry {
                spiffe_id: "spiffe://example.org/orchestrator".into(),
                parent_id: AGENT.into(),
                selectors: vec!["unix:uid:1000".into()],
                task_authority: true,
                ..Entry::default()
            })
            .await;
        let mut world = Self {
            github: CallerIdentity { entry_id: github.id, svid: vec![] },
            helper: CallerIdentity { entry_id: helper.id, svid: vec![] },
            other: CallerIdentity { entry_id: other.id, svid: vec![] },
            orchestrator: CallerIdentity { entry_id: orchestrator.id, svid: vec![] },
            f,
            node,
            _policies: policies,
        };
        for identity in [&mut world.github, &mut world.helper, &mut world.other, &mut world.orchestrator] {
            let (_, request) = csr::new_key_and_csr().unwrap();
            let req = MintX509SvidsRequest {
                requests: vec![X509SvidRequest { entry_id: identity.entry_id.clone(), csr: request }],
            };
            let reply = world.node.mint_x509_svids(req).await.unwrap().into_inner();
            identity.svid = reply.results[0].svid_chain[0].clone();
        }
        world
    }

    fn spec(tools: &[&str], classification: &str, action: &str, session: &str) -> TaskSpec {
        TaskSpec {
            connector: id("github"),
            user_sub: "alice".into(),
            user_iss: "https://idp.example".into(),
            session: session.into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            audiences: vec![AUD.into()],
            classification: classification.into(),
            action: action.into(),
            ttl_seconds: 600,
        }
    }

    async fn begin_as(&mut self, caller: &CallerIdentity, spec: TaskSpec) -> Result<String, Status> {
        let req =
            NodeBeginTaskRequest { caller: vec![caller.clone()], request: Some(BeginTaskRequest { task: Some(spec) }) };
        Ok(self.node.begin_task(req).await?.into_inner().task_id)
    }

    async fn begin(&mut self, tools: &[&str], action: &str, session: &str) -> String {
        let orchestrator = self.orchestrator.clone();
        self.begin_as(&orchestrator, Self::spec(tools, "internal", action, session)).await.unwrap()
    }

    async fn mint_as(
        &mut self,
        caller: &[CallerIdentity],
        task: &str,
        tools: &[&str],
        audience: &str,
        action: &str,
    ) -> Result<TaskToken, Status> {
        let request = FetchTaskTokenRequest {
            task_id: task.into(),
            audience: audience.into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            action: action.into(),
            ttl_seconds: 0,
        };
        let req = MintTaskTokenRequest { caller: caller.to_vec(), request: Some(request) };
        Ok(self.node.mint_task_token(req).await?.into_inner())
    }

    /// A forwarded request for `github`, as the agent sends it.
    fn request(&self, task: &str, tools: &[&str]) -> MintTaskTokenRequest {
        let request = FetchTaskTokenRequest {
            task_id: task.into(),
            audience: AUD.into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            action: "read".into(),
            ttl_seconds: 0,
        };
        MintTaskTokenRequest { caller: vec![self.github.clone()], request: Some(request) }
    }

    /// Sends `requests` as one batch on a new MintTaskTokens stream: its results.
    async fn mint_batch(&mut self, requests: Vec<MintTaskTokenRequest>) -> Result<Vec<TaskTokenResult>, Status> {
        let batch = MintTaskTokensRequest { requests, batch: 7 };
        let mut answers = self.node.mint_task_tokens(tokio_stream::iter([batch])).await?.into_inner();
        let answer = answers.message().await?.expect("an answer before the stream ends");
        assert_eq!(answer.batch, 7, "the answer names its batch");
        assert!(answers.message().await?.is_none(), "the stream ends once the agent closed its side");
        Ok(answer.results)
    }

    async fn mint(&mut self, task: &str, tools: &[&str]) -> Result<TaskToken, Status> {
        let github = self.github.clone();
        self.mint_as(&[github], task, tools, AUD, "read").await
    }

    async fn delegate(
        &mut self,
        caller: &CallerIdentity,
        task: &str,
        to: &str,
        tools: &[&str],
    ) -> Result<String, Status> {
        let request = DelegateTaskRequest {
            task_id: task.into(),
            to_connector: id(to),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            audiences: vec![],
            ttl_seconds: 0,
        };
        let req = NodeDelegateTaskRequest { caller: vec![caller.clone()], request: Some(request) };
        Ok(self.node.delegate_task(req).await?.into_inner().task_id)
    }

    /// How many audit records of `kind` there are.
    async fn audit_count(&mut self, kind: &str) -> usize {
        let req = QueryAuditRequest { kind: kind.into(), limit: 1000, from_seq: 1, ..Default::default() };
        self.f.admin.query_audit(req).await.unwrap().into_inner().records.len()
    }

    /// The newest audit record of `kind`.
    async fn last_audit(&mut self, kind: &str) -> serde_json::Value {
        let req = QueryAuditRequest { kind: kind.into(), limit: 1000, from_seq: 1, ..Default::default() };
        let records = self.f.admin.query_audit(req).await.unwrap().into_inner().records;
        serde_json::from_str(&records.last().unwrap().json).unwrap()
    }

    /// Checks the refusal and that it is the newest `kind` record, a deny with the same reason.
    async fn assert_refused(&mut self, kind: &str, result: Result<impl std::fmt::Debug, Status>, reason: &str) {
        let status = result.expect_err("must be refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(reason), "{:?} should say {reason:?}", status.message());
        let record = self.last_audit(kind).await;
        let context = &record["event"]["context"];
        assert_eq!(context["decision"], "deny", "{record}");
        assert_eq!(context["reason"].as_str(), Some(status.message()), "{record}");
    }

    async fn update_github(&mut self, change: impl FnOnce(&mut Entry)) {
        let mut entry =
            self.f.admin.get_entry(GetEntryRequest { id: self.github.entry_id.clone() }).await.unwrap().into_inner();
        let expected_revision = entry.revision;
        change(&mut entry);
        self.f.admin.update_entry(UpdateEntryRequest { entry: Some(entry), expected_revision }).await.unwrap();
    }
}

#[tokio::test]
async fn every_token_refusal_is_permission_denied_with_its_reason_and_audited() {
    let mut w = World::new().await;
    let task = w.begin(&["search", "create", "forbidden.tool", "error.tool"], "read", "s1").await;
    let token = w.mint(&task, &["search"]).await.unwrap();
    let allowed = w.last_audit("tasktoken.mint").await;
    assert_eq!(allowed["event"]["context"]["decision"], "allow");
    assert_eq!(allowed["event"]["context"]["jti_hash"], lanyard_ca::task_token::jti_hash(&token.jti));
    assert_eq!(allowed["event"]["context"]["policies"], serde_json::json!(["base"]));
    assert_eq!(allowed["event"]["context"]["connector"], id("github"));
    assert_eq!(allowed["event"]["context"]["user"]["sub"], "alice");

    let narrow = w.begin(&["search"], "read", "s1").await;
    let r = w.mint(&narrow, &["create"]).await;
    w.assert_refused("tasktoken.mint", r, "tool create is not in the task").await;

    let github = w.github.clone();
    let r = w.mint_as(std::slice::from_ref(&github), &task, &["search"], "elsewhere.example", "read").await;
    w.assert_refused("tasktoken.mint", r, "audience elsewhere.example is not in the task").await;

    let r = w.mint_as(std::slice::from_ref(&github), &task, &["search"], AUD, "write").await;
    w.assert_refused("tasktoken.mint", r, "action write is not the task's action read").await;

    let r = w.mint(&task, &["forbidden.tool"]).await;
    w.assert_refused("tasktoken.mint", r, "no-forbidden-tool").await;

    let r = w.mint(&task, &["error.tool"]).await;
    w.assert_refused("tasktoken.mint", r, "policy evaluation failed").await;

    // Bound to another connector: the caller is entitled only to `other`.
    let other = w.other.clone();
    let r = w.mint_as(&[other], &task, &["search"], AUD, "read").await;
    w.assert_refused("tasktoken.mint", r, "the task is bound to").await;

    // Ceilings are read at the moment of the request: narrowing the entry
    // after the task began refuses at once.
    w.update_github(|e| e.tools.retain(|t| t != "create")).await;
    let r = w.mint(&task, &["create"]).await;
    w.assert_refused("tasktoken.mint", r, "tool create is not in the connector's entry").await;
    w.update_github(|e| e.max_classification = "public".into()).await;
    let r = w.mint(&task, &["search"]).await;
    w.assert_refused("tasktoken.mint", r, "classification internal is above the connector's ceiling public").await;
    w.update_github(|e| e.max_classification = "internal".into()).await;

    // Open risk on the user, then cleared.
    let risk = ReportRiskRequest {
        subject: Some(RiskSubject { user_sub: "alice".into(), ..Default::default() }),
        level: String::new(),
        reason: "test".into(),
    };
    w.f.admin.report_risk(risk).await.unwrap();
    let r = w.mint(&task, &["search"]).await;
    w.assert_refused("tasktoken.mint", r, "open high risk on the user").await;
    let clear = lanyard_proto::admin::ClearRiskRequest {
        subject: Some(RiskSubject { user_sub: "alice".into(), ..Default::default() }),
    };
    w.f.admin.clear_risk(clear).await.unwrap();
    w.mint(&task, &["search"]).await.unwrap();

    // Expired: the clock moves past the task's end.
    let short = {
        let orchestrator = w.orchestrator.clone();
        let spec = TaskSpec { ttl_seconds: 60, ..World::spec(&["search"], "internal", "read", "s2") };
        w.begin_as(&orchestrator, spec).await.unwrap()
    };
    *w.f.clock.0.lock().unwrap() += Duration::from_secs(61);
    let r = w.mint(&short, &["search"]).await;
    w.assert_refused("tasktoken.mint", r, "the task has expired").await;

    // Ended, and session revoked.
    w.f.admin.end_task(AdminEndTask { task_id: task.clone() }).await.unwrap();
    let r = w.mint(&task, &["search"]).await;
    w.assert_refused("tasktoken.mint", r, "the task has ended").await;
    let in_session = w.begin(&["search"], "read", "s3").await;
    w.f.admin.revoke_session(RevokeSessionRequest { session: "s3".into() }).await.unwrap();
    let r = w.mint(&in_session, &["search"]).await;
    w.assert_refused("tasktoken.mint", r, "the task has ended").await;
    let orchestrator = w.orchestrator.clone();
    let r = w.begin_as(&orchestrator, World::spec(&["search"], "internal", "read", "s3")).await;
    w.assert_refused("task.begin", r, "the session is revoked").await;
}

#[tokio::test]
async fn begin_refusals_are_audited() {
    let mut w = World::new().await;
    let github = w.github.clone();
    let r = w.begin_as(&github, World::spec(&["search"], "internal", "read", "s")).await;
    w.assert_refused("task.begin", r, "no task authority").await;
    let orchestrator = w.orchestrator.clone();
    let r = w.begin_as(&orchestrator, World::spec(&["deploy"], "internal", "read", "s")).await;
    w.assert_refused("task.begin", r, "tool deploy is not in the connector's entry").await;
    let r = w.begin_as(&orchestrator, World::spec(&["search"], "restricted", "read", "s")).await;
    w.assert_refused("task.begin", r, "above the connector's ceiling").await;
    let spec = TaskSpec { audiences: vec!["elsewhere".into()], ..World::spec(&["search"], "internal", "read", "s") };
    let r = w.begin_as(&orchestrator, spec).await;
    w.assert_refused("task.begin", r, "audience elsewhere is not in the connector's entry").await;
}

#[tokio::test]
async fn delegation_refusals_and_chains() {
    let mut w = World::new().await;
    let root = w.begin(&["search", "create"], "read", "s").await;
    let github = w.github.clone();
    let helper = w.helper.clone();

    // Allowed: github -> helper, and the child's token carries the chain.
    let child = w.delegate(&github, &root, "helper", &["search"]).await.unwrap();
    let token = w.mint_as(std::slice::from_ref(&helper), &child, &["search"], AUD, "read").await.unwrap();
    let payload = token.token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["chain"], serde_json::json!([id("github")]));
    assert_eq!(claims["user"]["sub"], "alice");

    // Not in delegate_to: `other` delegates nowhere.
    let r = w.delegate(&github, &root, "nowhere", &["search"]).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    let other = w.other.clone();
    let r = w.delegate(&other, &root, "helper", &["search"]).await;
    w.assert_refused("task.delegate", r, "the task is bound to").await;

    // A tool outside the parent's.
    let r = w.delegate(&helper, &child, "github", &["create"]).await;
    w.assert_refused("task.delegate", r, "tool create is not in the task").await;

    // Depth: github -> helper -> github -> helper -> github is depth 4; one more is 5.
    let d2 = w.delegate(&helper, &child, "github", &["search"]).await.unwrap();
    let d3 = w.delegate(&github, &d2, "helper", &["search"]).await.unwrap();
    let d4 = w.delegate(&helper, &d3, "github", &["search"]).await.unwrap();
    let r = w.delegate(&github, &d4, "helper", &["search"]).await;
    w.assert_refused("task.delegate", r, "delegation depth 5 exceeds the limit of 4").await;

    // Ending the root ends every descendant.
    let ended = w.f.admin.end_task(AdminEndTask { task_id: root.clone() }).await.unwrap().into_inner();
    assert_eq!(ended.tasks.len(), 5);
    let r = w.mint_as(std::slice::from_ref(&github), &d4, &["search"], AUD, "read").await;
    w.assert_refused("tasktoken.mint", r, "the task has ended").await;
}

#[tokio::test]
async fn a_batch_answers_each_request_as_alone_in_order_and_audits_each() {
    let mut w = World::new().await;
    let task = w.begin(&["search", "forbidden.tool"], "read", "s1").await;
    let audited_before = w.audit_count("tasktoken.mint").await;
    let requests = vec![
        w.request(&task, &["search"]),
        w.request(&task, &["create"]),
        MintTaskTokenRequest { request: None, ..w.request(&task, &["search"]) },
        w.request(&task, &["forbidden.tool"]),
        w.request(&task, &["search"]),
    ];
    let results = w.mint_batch(requests).await.unwrap();
    let summary: Vec<_> = results.iter().map(|r| (Code::from_i32(r.code), r.token.is_some())).collect();
    assert_eq!(
        summary,
        [
            (Code::Ok, true),
            (Code::PermissionDenied, false),
            (Code::InvalidArgument, false),
            (Code::PermissionDenied, false),
            (Code::Ok, true)
        ]
    );
    assert!(results[1].error.contains("tool create is not in the task"), "{:?}", results[1].error);
    assert!(results[3].error.contains("no-forbidden-tool"), "{:?}", results[3].error);
    let (first, last) = (results[0].token.as_ref().unwrap(), results[4].token.as_ref().unwrap());
    assert_ne!(first.jti, last.jti, "each is its own token");
    // Two allowed and two refused by policy are audited, each on its own
    // (the request with nothing in it is refused before any decision).
    assert_eq!(w.audit_count("tasktoken.mint").await, audited_before + 4);

    // The stream is ended when a batch is empty or too large.
    for n in [0, 257] {
        let requests = vec![w.request(&task, &["search"]); n];
        let status = w.mint_batch(requests).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{n}: {status:?}");
        assert!(status.message().contains("1-256"), "{status:?}");
    }
}

/// A MintTaskTokens stream the test writes batches into.
struct OpenStream {
    batches: tokio::sync::mpsc::Sender<MintTaskTokensRequest>,
    answers: tonic::Streaming<MintTaskTokensResponse>,
}

impl OpenStream {
    async fn open(w: &mut World) -> Self {
        let (batches, rx) = tokio::sync::mpsc::channel(8);
        let answers =
            w.node.mint_task_tokens(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        Self { batches, answers }
    }

    /// A world with a task and a stream that has minted one token (batch 1).
    async fn minting() -> (World, String, Self) {
        let mut w = World::new().await;
        let task = w.begin(&["search"], "read", "s1").await;
        let mut stream = Self::open(&mut w).await;
        stream.send(1, vec![w.request(&task, &["search"])]).await;
        assert_eq!(Code::from_i32(stream.answers(1).await[&1][0].code), Code::Ok);
        (w, task, stream)
    }

    async fn send(&self, batch: u64, requests: Vec<MintTaskTokenRequest>) {
        self.batches.send(MintTaskTokensRequest { requests, batch }).await.unwrap();
    }

    /// The next `n` answers, by batch number.
    async fn answers(&mut self, n: usize) -> std::collections::BTreeMap<u64, Vec<TaskTokenResult>> {
        let mut out = std::collections::BTreeMap::new();
        for _ in 0..n {
            let answer = self.answers.message().await.unwrap().expect("an answer");
            assert!(out.insert(answer.batch, answer.results).is_none(), "batch {} answered twice", answer.batch);
        }
        out
    }
}

#[tokio::test]
async fn one_stream_answers_each_batch_by_its_number() {
    let mut w = World::new().await;
    let task = w.begin(&["search"], "read", "s1").await;
    let mut stream = OpenStream::open(&mut w).await;
    stream.send(1, vec![w.request(&task, &["search"]); 3]).await;
    stream.send(2, vec![w.request(&task, &["create"])]).await;
    stream.send(3, vec![w.request(&task, &["search"])]).await;
    let answers = stream.answers(3).await;
    let codes = |b: u64| answers[&b].iter().map(|r| Code::from_i32(r.code)).collect::<Vec<_>>();
    assert_eq!(codes(1), [Code::Ok; 3]);
    assert_eq!(codes(2), [Code::PermissionDenied]);
    assert_eq!(codes(3), [Code::Ok]);
    // Closing the agent's side ends the stream cleanly.
    drop(stream.batches);
    assert!(stream.answers.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_outlives_neither_a_ban_nor_the_agent_svid() {
    // Each batch authenticates the agent again: a stream opened before the
    // ban, or while the agent's SVID was valid, mints nothing after.
    let (mut w, task, mut stream) = OpenStream::minting().await;
    let minted = w.audit_count("tasktoken.mint").await;
    w.f.admin.ban_agent(BanAgentRequest { spiffe_id: AGENT.into() }).await.unwrap();
    stream.send(2, vec![w.request(&task, &["search"])]).await;
    let status = stream.answers.message().await.expect_err("the stream ends");
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "agent is banned"));
    assert_eq!(w.audit_count("tasktoken.mint").await, minted, "nothing decided for a banned agent");

    let (w, task, mut stream) = OpenStream::minting().await;
    // The agent SVID lives an hour; the TLS connection would live on.
    *w.f.clock.0.lock().unwrap() += Duration::from_secs(3601);
    stream.send(2, vec![w.request(&task, &["search"])]).await;
    let status = stream.answers.message().await.expect_err("the stream ends");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("agent SVID has expired"), "{status:?}");
}

#[tokio::test]
async fn a_graceful_stop_ends_an_open_stream_without_waiting_for_the_agent() {
    let (mut w, _, mut stream) = OpenStream::minting().await;
    // The test keeps its side open, as an agent between batches does.
    w.f.stop_server();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.answers.message()).await;
    let status = ended.expect("the stream ends at once").expect_err("with a status");
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "server is shutting down"));
}

#[tokio::test]
async fn the_agent_moves_to_a_new_stream_when_its_connection_changes_and_fails_over_cleanly() {
    let mut w = World::new().await;
    let task = w.begin(&["search"], "read", "s1").await;
    let (client, watched) = tokio::sync::watch::channel(Some(w.node.clone()));
    let metrics = std::sync::Arc::new(crate::metrics::AgentMetrics::default());
    let batcher = crate::mint_batch::MintBatcher::start(watched, std::sync::Arc::clone(&metrics));
    let request = w.request(&task, &["search"]);
    batcher.mint(request.clone()).await.unwrap();

    // Over another agent's connection the same request is not this agent's
    // to make: the refusal shows the batch went on a new stream there.
    let (other, _) = w.f.agent("node2").await;
    client.send_replace(Some(other));
    let status = batcher.mint(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("is not served by this agent"), "{status:?}");
    client.send_replace(Some(w.node.clone()));
    batcher.mint(request.clone()).await.unwrap();
    // Many at once still each get their own answer.
    let mut many = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (batcher, request) = (batcher.clone(), request.clone());
        many.spawn(async move { batcher.mint(request).await });
    }
    let answers = many.join_all().await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(metrics.task_token_batched.get(), 43);

    // With the server gone, requests fail rather than wait.
    w.f.stop_server();
    let failed = tokio::time::timeout(Duration::from_secs(15), batcher.mint(request.clone())).await;
    let status = failed.expect("an answer, not a wait").unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_batch_is_charged_per_request_against_the_agent_rate() {
    // 10 requests a second, a burst of 20: once the bucket is full again, a
    // batch of 30 gets 20 tokens (21 if one drips in meanwhile), not 30.
    let mut w = World::with(|c| c.agent_rate = 10).await;
    let task = w.begin(&["search"], "read", "s1").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let requests = vec![w.request(&task, &["search"]); 30];
    let results = w.mint_batch(requests).await.unwrap();
    let codes: Vec<_> = results.iter().map(|r| Code::from_i32(r.code)).collect();
    let allowed = codes.iter().filter(|c| **c == Code::Ok).count();
    assert!((20..=21).contains(&allowed), "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Code::ResourceExhausted).count(), 30 - allowed, "{codes:?}");
    assert!(results.iter().any(|r| r.error.contains("--agent-rate")), "{results:?}");
}
