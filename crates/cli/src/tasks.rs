//! Task, task-token, session, risk, token and policy commands.

use anyhow::bail;
use lanyard_proto::admin::{
    CheckPolicyRequest, ClearRiskRequest, EndTaskRequest as AdminEndTask, ListRisksRequest, ListTasksRequest,
    ReloadPolicyRequest, ReportRiskRequest, Revocation, RevokeSessionRequest, RevokeTokenRequest, RiskSubject,
};
use lanyard_proto::agent::tasks_client::TasksClient;
use lanyard_proto::agent::{BeginTaskRequest, DelegateTaskRequest, EndTaskRequest, FetchTaskTokenRequest};
use lanyard_proto::common::TaskSpec;
use serde_json::json;

use crate::cli::{
    AdminSocket, EitherSocket, Output, PolicyCommand, RiskCommand, RiskSubjectArgs, SessionCommand, TaskBegin,
    TaskCommand, TaskTokenCommand,
};
use crate::clients::{self, StatusExt, workload_request};

/// Where an admin-or-workload command goes.
enum Target {
    Admin(std::path::PathBuf),
    Workload(String),
}

fn target(s: EitherSocket) -> Target {
    match (s.admin_socket, s.socket) {
        (Some(admin), _) => Target::Admin(admin),
        (None, Some(socket)) => Target::Workload(socket),
        (None, None) => Target::Admin("/tmp/lanyard/admin.sock".into()),
    }
}

async fn tasks_client(socket: &str) -> anyhow::Result<TasksClient<tonic::transport::Channel>> {
    Ok(TasksClient::new(clients::agent_channel(socket).await?))
}

fn secs(d: std::time::Duration) -> anyhow::Result<u32> {
    u32::try_from(d.as_secs()).map_err(|_| anyhow::anyhow!("duration is too long"))
}

pub(crate) async fn task(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Begin(args) => begin(args).await,
        TaskCommand::End { id, socket } => {
            let ended = match target(socket) {
                Target::Admin(path) => {
                    let mut admin = clients::admin(&path).await?;
                    admin.end_task(AdminEndTask { task_id: id.clone() }).await.or_status("end task")?.tasks
                }
                Target::Workload(socket) => {
                    let mut tasks = tasks_client(&socket).await?;
                    let req = workload_request(EndTaskRequest { task_id: id.clone() });
                    tasks.end_task(req).await.or_status("end task")?.ended
                }
            };
            println!("ended task {id} ({} task(s) in all)", ended.len());
            Ok(())
        }
        TaskCommand::List { active, connector, session, admin, output } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let req = ListTasksRequest {
                active_only: active,
                connector: connector.map(|c| c.to_string()).unwrap_or_default(),
                session: session.unwrap_or_default(),
                limit: 0,
            };
            let tasks = client.list_tasks(req).await.or_status("list tasks")?.tasks;
            let rows: Vec<_> = tasks.iter().map(task_json).collect();
            match output.output {
                Output::Json => println!("{}", serde_json::Value::Array(rows)),
                Output::Text => {
                    if tasks.is_empty() {
                        println!("no tasks");
                    }
                    for t in &tasks {
                        let spec = t.spec.clone().unwrap_or_default();
                        let state = if t.ended_at != 0 { t.end_reason.as_str() } else { "active" };
                        println!(
                            "{}  {}  user {}  tools {}  {}",
                            t.id,
                            spec.connector,
                            spec.user_sub,
                            spec.tools.join(","),
                            state
                        );
                    }
                }
            }
            Ok(())
        }
        TaskCommand::Delegate { task, to, tools, audiences, ttl, socket, output } => {
            let mut client = tasks_client(&socket.socket).await?;
            let req = DelegateTaskRequest {
                task_id: task,
                to_connector: to.to_string(),
                tools,
                audiences,
                ttl_seconds: ttl.map(secs).transpose()?.unwrap_or(0),
            };
            let child = client.delegate_task(workload_request(req)).await.or_status("delegate task")?;
            match output.output {
                Output::Json => println!("{}", json!({ "task_id": child.task_id, "expires_at": child.expires_at })),
                Output::Text => println!("{}", child.task_id),
            }
            Ok(())
        }
    }
}

fn task_json(t: &lanyard_proto::common::Task) -> serde_json::Value {
    let spec = t.spec.clone().unwrap_or_default();
    json!({
        "task_id": t.id,
        "connector": spec.connector,
        "user": { "sub": spec.user_sub, "iss": spec.user_iss },
        "session": spec.session,
        "tools": spec.tools,
        "audiences": spec.audiences,
        "classification": spec.classification,
        "action": spec.action,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "ended_at": (t.ended_at != 0).then_some(t.ended_at),
        "end_reason": (!t.end_reason.is_empty()).then_some(&t.end_reason),
        "parent": (!t.parent.is_empty()).then_some(&t.parent),
        "chain": t.chain,
        "begun_by": t.begun_by,
    })
}

async fn begin(args: TaskBegin) -> anyhow::Result<()> {
    let spec = TaskSpec {
        connector: args.connector.to_string(),
        user_sub: args.user_sub,
        user_iss: args.user_iss,
        session: args.session,
        tools: args.tools,
        audiences: args.audiences,
        classification: args.classification,
        action: args.action,
        ttl_seconds: secs(args.ttl)?,
    };
    let (task_id, expires_at) = match target(args.socket) {
        Target::Admin(path) => {
            let mut admin = clients::admin(&path).await?;
            let r = admin.begin_task(spec).await.or_status("begin task")?;
            (r.task_id, r.expires_at)
        }
        Target::Workload(socket) => {
            let mut tasks = tasks_client(&socket).await?;
            let r = tasks
                .begin_task(workload_request(BeginTaskRequest { task: Some(spec) }))
                .await
                .or_status("begin task")?;
            (r.task_id, r.expires_at)
        }
    };
    match args.output.output {
        Output::Json => println!("{}", json!({ "task_id": task_id, "expires_at": expires_at })),
        Output::Text => println!("{task_id}"),
    }
    Ok(())
}

pub(crate) async fn task_token(cmd: TaskTokenCommand) -> anyhow::Result<()> {
    let TaskTokenCommand::Fetch { task, audience, tools, action, ttl, socket, output } = cmd;
    let mut client = tasks_client(&socket.socket).await?;
    let req = FetchTaskTokenRequest {
        task_id: task,
        audience,
        tools,
        action,
        ttl_seconds: ttl.map(secs).transpose()?.unwrap_or(0),
    };
    let token = client.fetch_task_token(workload_request(req)).await.or_status("fetch task token")?;
    match output.output {
        Output::Json => println!(
            "{}",
            json!({ "token": token.token, "spiffe_id": token.spiffe_id, "jti": token.jti, "expires_at": token.expires_at })
        ),
        Output::Text => println!("{}", token.token),
    }
    Ok(())
}

fn print_revocation(what: &str, r: &Revocation) {
    if r.tasks.is_empty() {
        println!("{what} (revocation {})", r.seq);
    } else {
        println!("{what} (revocation {}; ended {} task(s): {})", r.seq, r.tasks.len(), r.tasks.join(", "));
    }
}

pub(crate) async fn session(cmd: SessionCommand) -> anyhow::Result<()> {
    let SessionCommand::Revoke { session, admin } = cmd;
    let mut client = clients::admin(&admin.admin_socket).await?;
    let r =
        client.revoke_session(RevokeSessionRequest { session: session.clone() }).await.or_status("revoke session")?;
    print_revocation(&format!("revoked session {session}"), &r);
    Ok(())
}

fn risk_subject(s: RiskSubjectArgs, user_iss: Option<String>) -> anyhow::Result<RiskSubject> {
    if user_iss.is_some() && s.user.is_none() {
        bail!("--user-iss goes with --user");
    }
    Ok(RiskSubject {
        user_sub: s.user.unwrap_or_default(),
        user_iss: user_iss.unwrap_or_default(),
        connector: s.connector.map(|c| c.to_string()).unwrap_or_default(),
        agent: s.agent.map(|a| a.to_string()).unwrap_or_default(),
        session: s.session.unwrap_or_default(),
    })
}

pub(crate) async fn risk(cmd: RiskCommand) -> anyhow::Result<()> {
    match cmd {
        RiskCommand::Report { subject, user_iss, level, reason, admin } => {
            let subject = risk_subject(subject, user_iss)?;
            let mut client = clients::admin(&admin.admin_socket).await?;
            let r = client
                .report_risk(ReportRiskRequest { subject: Some(subject), level, reason })
                .await
                .or_status("report risk")?;
            print_revocation(&format!("risk reported on {}", r.subject), &r);
        }
        RiskCommand::Clear { subject, user_iss, admin } => {
            let subject = risk_subject(subject, user_iss)?;
            let mut client = clients::admin(&admin.admin_socket).await?;
            let r = client.clear_risk(ClearRiskRequest { subject: Some(subject) }).await.or_status("clear risk")?;
            print_revocation(&format!("risk cleared on {}", r.subject), &r);
        }
        RiskCommand::List { admin, output } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let risks = client.list_risks(ListRisksRequest {}).await.or_status("list risks")?.risks;
            match output.output {
                Output::Json => {
                    let rows: Vec<_> = risks
                        .iter()
                        .map(|r| {
                            json!({
                                "subject": r.subject, "level": r.level, "reason": r.reason,
                                "reported_at": r.reported_at, "reported_by": r.reported_by,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                }
                Output::Text => {
                    if risks.is_empty() {
                        println!("no open risks");
                    }
                    for r in &risks {
                        println!("{}  {}  {}", r.subject, r.level, r.reason);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `lanyard token revoke JTI`.
pub(crate) async fn revoke_token(jti: String, admin: AdminSocket) -> anyhow::Result<()> {
    let mut client = clients::admin(&admin.admin_socket).await?;
    let r = client.revoke_token(RevokeTokenRequest { jti: jti.clone() }).await.or_status("revoke token")?;
    print_revocation(&format!("revoked token {jti}"), &r);
    Ok(())
}

/// Runs a policy command; `Ok(false)` means a check came out deny.
pub(crate) async fn policy(cmd: PolicyCommand) -> anyhow::Result<bool> {
    match cmd {
        PolicyCommand::Reload { admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let r = client.reload_policy(ReloadPolicyRequest {}).await.or_status("reload policy")?;
            println!(
                "{} polic{} in force: {}",
                r.policies.len(),
                if r.policies.len() == 1 { "y" } else { "ies" },
                r.policies.join(", ")
            );
            Ok(true)
        }
        PolicyCommand::Check {
            connector,
            tool,
            user,
            user_iss,
            action,
            audience,
            classification,
            session,
            at,
            admin,
        } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let req = CheckPolicyRequest {
                connector: connector.to_string(),
                tool,
                user_sub: user,
                user_iss,
                action,
                audience,
                classification,
                session: session.unwrap_or_default(),
                at: at.unwrap_or(0),
            };
            let r = client.check_policy(req).await.or_status("check policy")?;
            let policies = if r.policies.is_empty() { "none".to_owned() } else { r.policies.join(", ") };
            if r.allowed {
                println!("allow (determining policies: {policies})");
            } else {
                println!("deny: {} (determining policies: {policies})", r.reason);
            }
            Ok(r.allowed)
        }
    }
}
