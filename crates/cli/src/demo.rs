//! `lanyard demo`: the whole system in one process tree, in a temp dir,
//! narrated. Builds nothing, downloads nothing, exits 0 when every step
//! worked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::time::SystemTime;

use anyhow::{Context, bail};
use lanyard_ca::svid::{Usage, verify_chain};
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::admin::{
    CreateEntryRequest, CreateJoinTokenRequest, EndTaskRequest as AdminEndTaskRequest, GetBundleRequest,
    QueryAuditRequest, VerifyAuditRequest,
};
use lanyard_proto::agent::tasks_client::TasksClient;
use lanyard_proto::agent::{DelegateTaskRequest, FetchTaskTokenRequest};
use lanyard_proto::common::{Entry, TaskSpec};
use lanyard_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::clients::{self, StatusExt, workload_request};
use crate::workload::{fetch_x509, split_der};

const TRUST_DOMAIN: &str = "example.org";

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Role {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Role {
    fn spawn(name: &'static str, dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("LANYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        Ok(Self { name, child, log })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let last = log.lines().last().unwrap_or("(no output)");
            bail!("the {} exited ({status}): {last}", self.name);
        }
        Ok(())
    }

    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Retries `f` every 50 ms until it succeeds or `timeout` passes.
async fn eventually<T>(timeout: Duration, mut f: impl AsyncFnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What the phases of the demo share.
struct Demo {
    dir: PathBuf,
    listen: String,
    agent_socket: String,
    /// The issuer's bundle endpoint (and `iss`).
    bundle_url: String,
    admin: AdminClient<Channel>,
    bundle: lanyard_ca::TrustBundle,
    uid: u32,
}

fn connector(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/connector/{name}")
}

pub(crate) async fn run() -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("lanyard-demo-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    println!("Lanyard demo in {}", dir.display());
    let (mut demo, mut server) = Demo::start_server(dir).await?;
    let join_token = demo.register().await?;
    let mut agent = demo.start_agent(&join_token)?;
    demo.svids(&mut agent).await?;
    demo.tasks().await?;
    demo.audit().await?;

    step("Stopping the agent and the server");
    let agent_status = agent.stop()?;
    let server_status = server.stop()?;
    println!("    agent exited ({agent_status}), server exited ({server_status})");
    println!("\nDemo complete: every step worked.");
    Ok(())
}

impl Demo {
    async fn start_server(dir: PathBuf) -> anyhow::Result<(Self, Role)> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let bundle_listen = format!("127.0.0.1:{}", free_port()?);
        let bundle_url = format!("http://{bundle_listen}");
        let admin_socket = dir.join("admin.sock");
        step(&format!(
            "Starting the issuer for trust domain {TRUST_DOMAIN} (node API on {listen}, bundle endpoint {bundle_url})"
        ));
        let mut server = Role::spawn(
            "server",
            &dir,
            &[
                "server",
                "run",
                "--data-dir",
                path_str(&dir.join("server"))?,
                "--trust-domain",
                TRUST_DOMAIN,
                "--admin-socket",
                path_str(&admin_socket)?,
                "--listen",
                &listen,
                "--bundle-listen",
                &bundle_listen,
            ],
        )?;
        let mut admin = eventually(Duration::from_secs(15), async || {
            server.check_alive()?;
            let mut c = clients::admin(&admin_socket).await?;
            c.get_bundle(GetBundleRequest {}).await.or_status("bundle")?;
            Ok(c)
        })
        .await?;
        let bundle =
            lanyard_agent::bundle_from_proto(&admin.get_bundle(GetBundleRequest {}).await.or_status("bundle")?)?;
        std::fs::write(dir.join("ca.pem"), bundle.x509_pem())?;
        println!(
            "    trust bundle: {} CA certificate(s), {} JWT key(s) (JWT-SVIDs and task tokens sign with different keys)",
            bundle.x509_authorities.len(),
            bundle.jwt_authorities.len(),
        );
        let agent_socket = format!("unix://{}", dir.join("agent.sock").display());
        Ok((Self { dir, listen, agent_socket, bundle_url, admin, bundle, uid: own_uid()? }, server))
    }

    async fn create(&mut self, entry: Entry) -> anyhow::Result<String> {
        let created =
            self.admin.create_entry(CreateEntryRequest { entry: Some(entry) }).await.or_status("create entry")?;
        Ok(created.id)
    }

    /// A join token, and entries: two connectors for this process, one for another uid.
    async fn register(&mut self) -> anyhow::Result<String> {
        step("Creating a one-time join token for node \"demo-node\"");
        let token = self
            .admin
            .create_join_token(CreateJoinTokenRequest { name: "demo-node".into(), ttl_seconds: 600 })
            .await
            .or_status("join token")?;
        println!("    token for {} (single use, expires in 10m)", token.spiffe_id);

        step("Registering this process (by its uid) as two connectors, and another uid that is not us");
        let parent = token.spiffe_id.clone();
        let ours = |name: &str| Entry {
            spiffe_id: connector(name),
            parent_id: parent.clone(),
            selectors: vec![format!("unix:uid:{}", self.uid)],
            x509_ttl_seconds: 600,
            audiences: vec!["api.github.com".into()],
            max_classification: "internal".into(),
            ..Entry::default()
        };
        let github = Entry {
            tools: vec!["github.search".into(), "github.create_issue".into()],
            delegate_to: vec![connector("summarizer")],
            ..ours("github")
        };
        let summarizer = Entry { tools: vec!["github.search".into()], ..ours("summarizer") };
        let other_uid = if self.uid == 4242 { 4343 } else { 4242 };
        let stranger = Entry {
            spiffe_id: connector("someone-else"),
            parent_id: parent.clone(),
            selectors: vec![format!("unix:uid:{other_uid}")],
            ..Entry::default()
        };
        self.create(github).await?;
        self.create(summarizer).await?;
        self.create(stranger).await?;
        println!(
            "    {} <- unix:uid:{} (tools github.search, github.create_issue; may delegate to summarizer)",
            connector("github"),
            self.uid
        );
        println!("    {} <- unix:uid:{} (tools github.search)", connector("summarizer"), self.uid);
        println!("    {} <- unix:uid:{other_uid}", connector("someone-else"));
        Ok(token.token)
    }

    fn start_agent(&self, join_token: &str) -> anyhow::Result<Role> {
        step("Starting the node agent; it attests with the join token");
        Role::spawn(
            "agent",
            &self.dir,
            &[
                "agent",
                "run",
                "--data-dir",
                path_str(&self.dir.join("agent"))?,
                "--server",
                &self.listen,
                "--join-token",
                join_token,
                "--trust-bundle",
                path_str(&self.dir.join("ca.pem"))?,
                "--socket",
                &self.agent_socket,
            ],
        )
    }

    /// X.509 and JWT-SVIDs through the Workload API, checked against the bundle.
    async fn svids(&mut self, agent: &mut Role) -> anyhow::Result<()> {
        step("Fetching this process's X.509-SVIDs through the SPIFFE Workload API");
        let socket = self.agent_socket.clone();
        let x509 = eventually(Duration::from_secs(20), async || {
            agent.check_alive()?;
            let response = fetch_x509(&socket).await?;
            if response.svids.len() < 2 {
                bail!("still issuing");
            }
            Ok(response)
        })
        .await?;
        for svid in &x509.svids {
            let chain = split_der(&svid.x509_svid)?;
            let info = verify_chain(&chain, &self.bundle.x509_authorities, SystemTime::now(), Usage::Client)?;
            println!(
                "    got {} (serial {}…, expires in {}s); chain verifies against the bundle",
                info.spiffe_id,
                &info.serial[..12],
                info.not_after.duration_since(SystemTime::now()).unwrap_or_default().as_secs()
            );
        }
        if x509.svids.iter().any(|s| s.spiffe_id.ends_with("someone-else")) {
            bail!("the agent served another uid's identity to this process");
        }
        println!("    {} was not served to us: its selector does not match", connector("someone-else"));

        step("Fetching a JWT-SVID for audience \"demo-tool\" and validating it two ways");
        let mut workload = clients::workload(&self.agent_socket).await?;
        let request = JwtsvidRequest { audience: vec!["demo-tool".into()], spiffe_id: connector("github") };
        let jwt = workload.fetch_jwtsvid(workload_request(request)).await.or_status("fetch JWT-SVID")?;
        let token = &jwt.svids.first().context("no JWT-SVID")?.svid;
        println!("    token: {}…", &token[..token.len().min(48)]);
        let validate = ValidateJwtsvidRequest { audience: "demo-tool".into(), svid: token.clone() };
        let validated = workload.validate_jwtsvid(workload_request(validate)).await.or_status("validate JWT-SVID")?;
        println!("    ValidateJWTSVID (agent): valid, subject {}", validated.spiffe_id);
        let (sub, _) = self.validate_offline(token, "demo-tool")?;
        println!("    offline check against the bundle's JWT keys: valid, subject {sub}");
        if self.validate_offline(token, "another-tool").is_ok() {
            bail!("a token for demo-tool was accepted for another-tool");
        }
        println!("    the same token presented to \"another-tool\" is refused: wrong audience");
        Ok(())
    }

    fn validate_offline(
        &self,
        token: &str,
        audience: &str,
    ) -> anyhow::Result<(lanyard_core::SpiffeId, serde_json::Map<String, serde_json::Value>)> {
        let keys = self.bundle.jwt_keys();
        Ok(lanyard_ca::jwt::validate_jwt_svid(token, audience, &self.bundle.trust_domain, &keys, SystemTime::now())?)
    }

    /// A task: begin, token, a refused tool, a delegation, end, refusal after end.
    async fn tasks(&mut self) -> anyhow::Result<()> {
        step("Beginning a task: alice asks the github connector to search (read, internal data, 10 minutes)");
        let spec = TaskSpec {
            connector: connector("github"),
            user_sub: "alice".into(),
            user_iss: "https://idp.example".into(),
            session: "demo-session".into(),
            tools: vec!["github.search".into()],
            audiences: vec!["api.github.com".into()],
            classification: "internal".into(),
            action: "read".into(),
            ttl_seconds: 600,
        };
        let task = self.admin.begin_task(spec).await.or_status("begin task")?.task_id;
        println!("    task {task}");

        step("The connector fetches a task token for github.search");
        let mut tasks = TasksClient::new(clients::agent_channel(&self.agent_socket).await?);
        let token = fetch_task_token(&mut tasks, &task, "github.search").await?;
        let (sub, claims) = self.validate_offline(&token.token, "api.github.com")?;
        println!("    sub   {sub}  (the connector: the machine that acts)");
        println!("    user  {}  (the person it acts for, never folded into sub)", claims["user"]);
        println!("    txn   {}   scope {}", claims["txn"], claims["scope"]);
        println!("    cnf   {}  (bound to the connector's X.509-SVID)", claims["cnf"]);
        println!("    it also passes as a plain JWT-SVID for api.github.com, signed by the task-token key");

        step(&format!("A relying service (lanyard-verify) checks the token through {}", self.bundle_url));
        let endpoint = lanyard_verify::Endpoint::new(&self.bundle_url, &[])?;
        let config = lanyard_verify::VerifierConfig::default().issuer(&self.bundle_url);
        let verifier = lanyard_verify::Verifier::start(endpoint, config).await?;
        let expect = lanyard_verify::Expect::audience("api.github.com").tool("github.search").action("read");
        let verified = verifier.task_token(&token.token, &expect)?;
        println!(
            "    valid: {} acting for {} in task {}…; it follows the revocation feed (at event {})",
            verified.sub,
            verified.user.sub,
            &verified.txn[..8],
            verifier.revocation_seq()
        );
        match verifier
            .task_token(&token.token, &lanyard_verify::Expect::audience("api.github.com").tool("github.create_issue"))
        {
            Ok(_) => bail!("the verifier accepted a tool outside the token"),
            Err(e) => println!("    the same token for github.create_issue: refused: {e}"),
        }

        step("Asking for a tool outside the task: github.create_issue");
        match fetch_task_token(&mut tasks, &task, "github.create_issue").await {
            Ok(_) => bail!("a tool outside the task was granted"),
            Err(e) => println!("    refused: {e}"),
        }

        step("The connector delegates the search to the summarizer (tool chaining allowed by delegate_to)");
        let child = DelegateTaskRequest {
            task_id: task.clone(),
            to_connector: connector("summarizer"),
            tools: vec!["github.search".into()],
            audiences: vec![],
            ttl_seconds: 0,
        };
        let child = tasks.delegate_task(workload_request(child)).await.or_status("delegate task")?.task_id;
        let child_token = fetch_task_token(&mut tasks, &child, "github.search").await?;
        let (sub, claims) = self.validate_offline(&child_token.token, "api.github.com")?;
        println!(
            "    child task {child}: token for {sub}, same user {}, chain {}",
            claims["user"]["sub"], claims["chain"]
        );

        step("Ending the task: it and the delegated task end, and no token is minted for either from now on");
        let ended = self.admin.end_task(AdminEndTaskRequest { task_id: task.clone() }).await.or_status("end task")?;
        println!("    ended {} task(s) (revocation event {})", ended.tasks.len(), ended.seq);
        let acked = Instant::now();
        for id in [&task, &child] {
            match fetch_task_token(&mut tasks, id, "github.search").await {
                Ok(_) => bail!("a token was minted for an ended task"),
                Err(e) => println!("    task {}…: refused: {e}", &id[..8]),
            }
        }

        step("The relying service refuses the token it accepted a moment ago (it has not expired)");
        tokio::time::timeout(Duration::from_secs(1), verifier.wait_for_seq(ended.seq))
            .await
            .context("the verifier did not see the task end within 1 s")?;
        let seen = acked.elapsed();
        match verifier.task_token(&token.token, &expect) {
            Ok(_) => bail!("the verifier still accepts a token of an ended task"),
            Err(e) => println!("    refused: {e} (revocation seen within {} ms of the ack)", seen.as_millis()),
        }
        Ok(())
    }

    async fn audit(&mut self) -> anyhow::Result<()> {
        step("Checking the audit log: every decision is there, chained");
        let query = QueryAuditRequest { kind: "tasktoken.mint".into(), limit: 100, from_seq: 1, ..Default::default() };
        let records = self.admin.query_audit(query).await.or_status("query audit")?.records;
        for r in &records {
            let v: serde_json::Value = serde_json::from_str(&r.json)?;
            let c = &v["event"]["context"];
            println!(
                "    #{:<3} {:<5} {} for {} tools {} {}",
                r.seq,
                c["decision"].as_str().unwrap_or("?"),
                c["connector"].as_str().unwrap_or("?"),
                c["user"]["sub"].as_str().unwrap_or("?"),
                c["tools"],
                c["reason"].as_str().map(|r| format!("({r})")).unwrap_or_default(),
            );
        }
        let report = self.admin.verify_audit(VerifyAuditRequest {}).await.or_status("verify audit")?;
        println!("    audit log verifies: {} records, head {}…", report.records, &report.head[..16]);
        Ok(())
    }
}

async fn fetch_task_token(
    tasks: &mut TasksClient<Channel>,
    task: &str,
    tool: &str,
) -> anyhow::Result<lanyard_proto::common::TaskToken> {
    let request = FetchTaskTokenRequest {
        task_id: task.to_owned(),
        audience: "api.github.com".into(),
        tools: vec![tool.into()],
        action: "read".into(),
        ttl_seconds: 0,
    };
    tasks.fetch_task_token(workload_request(request)).await.or_status("fetch task token")
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temp path is not UTF-8")
}

fn own_uid() -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")?.uid())
}
