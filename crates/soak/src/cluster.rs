//! A real server and agent in a temporary directory, set up as
//! `scripts/bench-e2e.sh` does: this uid registered as a connector with task
//! ceilings, and a task begun for it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::SoakError;

const TRUST_DOMAIN: &str = "example.org";
/// The connector's tool and audience.
pub(crate) const TOOL: &str = "soak.search";
pub(crate) const AUDIENCE: &str = "soak.example";
/// How long the server and agent get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server and agent; both are stopped (SIGTERM, then SIGKILL)
/// and the directory removed when dropped.
pub(crate) struct Cluster {
    lanyard: PathBuf,
    dir: tempfile::TempDir,
    server: Child,
    /// Started once the server has handed out a join token.
    agent: Option<Child>,
    /// The agent's Workload API socket, `unix://…`.
    pub(crate) socket: String,
    /// The bundle endpoint, `http://…`.
    pub(crate) bundle_url: String,
    /// The task the load fetches tokens for.
    pub(crate) task: String,
}

impl Cluster {
    /// Starts both with `lanyard`; the connector's X.509-SVIDs live
    /// `x509_ttl` (so that the agent rotates them during the run).
    pub(crate) fn start(lanyard: &Path, x509_ttl: &str) -> Result<Self, SoakError> {
        let dir = tempfile::Builder::new().prefix("lanyard-soak.").tempdir()?;
        let d = dir.path();
        let listen = format!("127.0.0.1:{}", free_port()?);
        let bundle_listen = format!("127.0.0.1:{}", free_port()?);
        let admin = d.join("admin.sock");
        let server = spawn(
            lanyard,
            d,
            "server",
            &[
                "server",
                "run",
                "--data-dir",
                &path_str(&d.join("server"))?,
                "--trust-domain",
                TRUST_DOMAIN,
                "--admin-socket",
                &path_str(&admin)?,
                "--listen",
                &listen,
                "--bundle-listen",
                &bundle_listen,
            ],
        )?;
        let socket = format!("unix://{}", path_str(&d.join("agent.sock"))?);
        let mut cluster = Self {
            lanyard: lanyard.to_path_buf(),
            dir,
            server,
            agent: None,
            socket,
            bundle_url: format!("http://{bundle_listen}"),
            task: String::new(),
        };
        let admin_socket = path_str(&admin)?;
        let ca = cluster.retry("the server's bundle", &["bundle", "show", "--admin-socket", &admin_socket])?;
        let ca_file = cluster.dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca)?;
        let token = cluster.admin(&["join-token", "create", "--name", "soak"])?;
        cluster.agent = Some(spawn(
            lanyard,
            cluster.dir.path(),
            "agent",
            &[
                "agent",
                "run",
                "--data-dir",
                &path_str(&cluster.dir.path().join("agent"))?,
                "--server",
                &listen,
                &format!("--join-token={token}"),
                "--trust-bundle",
                &path_str(&ca_file)?,
                "--socket",
                &cluster.socket,
                "--workload-rate",
                "0",
            ],
        )?);
        let connector = format!("spiffe://{TRUST_DOMAIN}/connector/soak");
        let uid = current_uid().ok_or_else(|| SoakError::Setup("cannot read this process's uid".to_owned()))?;
        cluster.admin(&[
            "entry",
            "create",
            "--spiffe-id",
            &connector,
            "--parent-id",
            &format!("spiffe://{TRUST_DOMAIN}/agent/soak"),
            "--selector",
            &format!("unix:uid:{uid}"),
            "--tool",
            TOOL,
            "--audience",
            AUDIENCE,
            "--max-classification",
            "internal",
            "--x509-ttl",
            x509_ttl,
        ])?;
        let socket = cluster.socket.clone();
        cluster.retry("an X.509-SVID from the agent", &["svid", "fetch", "--socket", &socket])?;
        cluster.task = cluster.admin(&[
            "task",
            "begin",
            "--connector",
            &connector,
            "--user-sub",
            "alice",
            "--user-iss",
            "https://idp.example",
            "--session",
            "soak",
            "--tool",
            TOOL,
            "--audience",
            AUDIENCE,
            "--classification",
            "internal",
            "--action",
            "read",
            "--ttl",
            "24h",
        ])?;
        Ok(cluster)
    }

    /// The server's process id.
    pub(crate) fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// The agent's process id (0 before it started).
    pub(crate) fn agent_pid(&self) -> u32 {
        self.agent.as_ref().map_or(0, Child::id)
    }

    /// The server's data directory.
    pub(crate) fn store_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// A new log file `<name>.log` in the directory.
    pub(crate) fn log_file(&self, name: &str) -> Result<std::fs::File, SoakError> {
        Ok(std::fs::File::create(self.dir.path().join(format!("{name}.log")))?)
    }

    /// The last lines of `<name>.log`.
    pub(crate) fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = format!("--- {name}.log (last lines)\n");
        for line in &lines[lines.len().saturating_sub(10)..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The last lines of the server's and the agent's logs, for a failure.
    pub(crate) fn log_tails(&self) -> String {
        self.log_tail("server") + &self.log_tail("agent")
    }

    /// Which of the two has exited, if either has.
    pub(crate) fn exited(&mut self) -> Option<&'static str> {
        if !matches!(self.server.try_wait(), Ok(None)) {
            return Some("server");
        }
        match self.agent.as_mut().map(Child::try_wait) {
            Some(Ok(None)) | None => None,
            Some(_) => Some("agent"),
        }
    }

    /// Runs an admin command (on the server's admin socket); its standard output, trimmed.
    fn admin(&self, args: &[&str]) -> Result<String, SoakError> {
        let admin = path_str(&self.dir.path().join("admin.sock"))?;
        self.lanyard(&[args, &["--admin-socket", &admin]].concat())
    }

    /// Runs `lanyard args`; its standard output, trimmed, or why it failed.
    fn lanyard(&self, args: &[&str]) -> Result<String, SoakError> {
        let out = Command::new(&self.lanyard).args(args).env_remove("LANYARD_ADMIN_SOCKET").output()?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(SoakError::Setup(format!("lanyard {}: {why}", args.join(" "))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `lanyard args` until it succeeds, for at most [`START_TIMEOUT`].
    fn retry(&mut self, what: &str, args: &[&str]) -> Result<String, SoakError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.lanyard(args) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() >= deadline || self.exited().is_some() => {
                    return Err(SoakError::Setup(format!("no {what}: {e}\n{}", self.log_tails())));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.as_mut() {
            stop(agent);
        }
        stop(&mut self.server);
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(lanyard: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<Child, SoakError> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Ok(Command::new(lanyard)
        .args(args)
        .env("LANYARD_LOG", std::env::var("LANYARD_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("LANYARD_ADMIN_SOCKET")
        .env_remove("LANYARD_JOIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

fn free_port() -> Result<u16, SoakError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn path_str(path: &Path) -> Result<String, SoakError> {
    path.to_str().map(str::to_owned).ok_or_else(|| SoakError::Setup(format!("{} is not UTF-8", path.display())))
}

/// This process's real uid, from `/proc/self/status`.
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}
