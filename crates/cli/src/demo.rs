//! `lanyard demo`: the whole system in one process tree, in a temp dir,
//! narrated. Builds nothing, downloads nothing, exits 0 when every step
//! worked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanyard_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest, GetBundleRequest};
use lanyard_proto::common::Entry;
use lanyard_proto::workload::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

pub(crate) async fn run() -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("lanyard-demo-").tempdir()?;
    let dir = tmp.path();
    let admin_socket = dir.join("admin.sock");
    let agent_socket = format!("unix://{}", dir.join("agent.sock").display());
    let listen = format!("127.0.0.1:{}", free_port()?);
    println!("Lanyard demo in {}", dir.display());

    step(&format!("Starting the issuer for trust domain {TRUST_DOMAIN} (node API on {listen})"));
    let admin_str = admin_socket.to_str().context("temp path is not UTF-8")?;
    let server_dir = dir.join("server");
    let mut server = Role::spawn(
        "server",
        dir,
        &[
            "server",
            "run",
            "--data-dir",
            path_str(&server_dir)?,
            "--trust-domain",
            TRUST_DOMAIN,
            "--admin-socket",
            admin_str,
            "--listen",
            &listen,
        ],
    )?;
    let mut admin = eventually(Duration::from_secs(15), async || {
        server.check_alive()?;
        let mut c = clients::admin(&admin_socket).await?;
        c.get_bundle(GetBundleRequest {}).await.or_status("bundle")?;
        Ok(c)
    })
    .await?;
    let bundle = lanyard_agent::bundle_from_proto(&admin.get_bundle(GetBundleRequest {}).await.or_status("bundle")?)?;
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, bundle.x509_pem())?;
    println!(
        "    trust bundle: {} CA certificate(s), {} JWT key(s) -> {}",
        bundle.x509_authorities.len(),
        bundle.jwt_authorities.len(),
        ca_pem.display()
    );

    step("Creating a one-time join token for node \"demo-node\"");
    let token = admin
        .create_join_token(CreateJoinTokenRequest { name: "demo-node".into(), ttl_seconds: 600 })
        .await
        .or_status("join token")?;
    println!("    token for {} (single use, expires in 10m)", token.spiffe_id);

    step("Registering this process (by its uid) as a connector, and another uid that is not us");
    let uid = own_uid()?;
    let parent = token.spiffe_id.clone();
    let ours = admin
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{TRUST_DOMAIN}/connector/demo"),
                parent_id: parent.clone(),
                selectors: vec![format!("unix:uid:{uid}")],
                x509_ttl_seconds: 600,
                ..Entry::default()
            }),
        })
        .await
        .or_status("create entry")?;
    let other_uid = if uid == 4242 { 4343 } else { 4242 };
    admin
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{TRUST_DOMAIN}/connector/someone-else"),
                parent_id: parent.clone(),
                selectors: vec![format!("unix:uid:{other_uid}")],
                ..Entry::default()
            }),
        })
        .await
        .or_status("create entry")?;
    println!("    {} <- unix:uid:{uid} (entry {})", ours.spiffe_id, ours.id);
    println!("    spiffe://{TRUST_DOMAIN}/connector/someone-else <- unix:uid:{other_uid}");

    step("Starting the node agent; it attests with the join token");
    let agent_dir = dir.join("agent");
    let mut agent = Role::spawn(
        "agent",
        dir,
        &[
            "agent",
            "run",
            "--data-dir",
            path_str(&agent_dir)?,
            "--server",
            &listen,
            "--join-token",
            &token.token,
            "--trust-bundle",
            path_str(&ca_pem)?,
            "--socket",
            &agent_socket,
        ],
    )?;

    step("Fetching this process's X.509-SVID through the SPIFFE Workload API");
    let x509 = eventually(Duration::from_secs(20), async || {
        agent.check_alive()?;
        fetch_x509(&agent_socket).await
    })
    .await?;
    for svid in &x509.svids {
        let chain = split_der(&svid.x509_svid)?;
        let info = lanyard_ca::svid::verify_chain(
            &chain,
            &bundle.x509_authorities,
            std::time::SystemTime::now(),
            lanyard_ca::svid::Usage::Client,
        )?;
        println!(
            "    got {} (serial {}, expires in {}s); chain verifies against the bundle",
            info.spiffe_id,
            &info.serial[..12],
            info.not_after.duration_since(std::time::SystemTime::now()).unwrap_or_default().as_secs()
        );
    }
    if x509.svids.iter().any(|s| s.spiffe_id.ends_with("someone-else")) {
        bail!("the agent served another uid's identity to this process");
    }
    println!("    spiffe://{TRUST_DOMAIN}/connector/someone-else was not served to us: its selector does not match");

    step("Fetching a JWT-SVID for audience \"demo-tool\" and validating it two ways");
    let mut workload = clients::workload(&agent_socket).await?;
    let jwt = workload
        .fetch_jwtsvid(workload_request(JwtsvidRequest {
            audience: vec!["demo-tool".into()],
            spiffe_id: String::new(),
        }))
        .await
        .or_status("fetch JWT-SVID")?;
    let token = &jwt.svids.first().context("no JWT-SVID")?.svid;
    println!("    token: {}…", &token[..token.len().min(48)]);
    let validated = workload
        .validate_jwtsvid(workload_request(ValidateJwtsvidRequest {
            audience: "demo-tool".into(),
            svid: token.clone(),
        }))
        .await
        .or_status("validate JWT-SVID")?;
    println!("    ValidateJWTSVID (agent): valid, subject {}", validated.spiffe_id);
    let mut jwt_bundles =
        workload.fetch_jwt_bundles(workload_request(JwtBundlesRequest {})).await.or_status("JWT bundles")?;
    let jwks = jwt_bundles.message().await?.context("no JWT bundle")?;
    println!(
        "    JWT bundle for {} fetched ({} bytes of JWKS)",
        bundle.trust_domain.id(),
        jwks.bundles.values().map(Vec::len).sum::<usize>()
    );
    let (sub, _) = lanyard_ca::jwt::validate_jwt_svid(
        token,
        "demo-tool",
        &bundle.trust_domain,
        &bundle.jwt_keys(),
        std::time::SystemTime::now(),
    )?;
    println!("    offline check against the bundle's JWT keys: valid, subject {sub}");
    if lanyard_ca::jwt::validate_jwt_svid(
        token,
        "another-tool",
        &bundle.trust_domain,
        &bundle.jwt_keys(),
        std::time::SystemTime::now(),
    )
    .is_ok()
    {
        bail!("a token for demo-tool was accepted for another-tool");
    }
    println!("    the same token presented to \"another-tool\" is refused: wrong audience");

    step("Stopping the agent and the server");
    let agent_status = agent.stop()?;
    let server_status = server.stop()?;
    println!("    agent exited ({agent_status}), server exited ({server_status})");
    println!("\nDemo complete: every step worked.");
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temp path is not UTF-8")
}

fn own_uid() -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")?.uid())
}
