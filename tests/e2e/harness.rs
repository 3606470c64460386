//! Shared helpers: real server and agent processes with guaranteed teardown,
//! bounded command runs, pollers, and a raw Workload API client.
//!
//! Nothing here sleeps for a fixed time where polling works; every wait is
//! bounded and panics with what it was waiting for (and the process logs).

use std::cell::Cell;
use std::fmt::Debug;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{JwtsvidRequest, JwtsvidResponse, X509svidRequest, X509svidResponse};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
/// The trust domain every test server runs.
pub(crate) const TD: &str = "example.org";
/// How long a server or agent may take to come up.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one CLI command may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a workload may wait for its first SVID.
pub(crate) const SVID_TIMEOUT: Duration = Duration::from_secs(20);

/// The uid this test process runs as (whatever uid runs the suite).
pub(crate) fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// A uid that is not ours.
pub(crate) fn other_uid() -> u32 {
    if own_uid() == 4242 { 4343 } else { 4242 }
}

/// The selector that matches this test process.
pub(crate) fn own_selector() -> String {
    format!("unix:uid:{}", own_uid())
}

/// `spiffe://example.org/<path>`.
pub(crate) fn spiffe_id(path: &str) -> String {
    format!("spiffe://{TD}/{path}")
}

/// A `lanyard` command with a clean environment: no ambient sockets, tokens
/// or log settings leak in from the caller's shell.
pub(crate) fn lanyard() -> Command {
    lanyard_at(Path::new(BIN))
}

/// [`lanyard`] run from another path to the same binary (see [`Workload`]).
pub(crate) fn lanyard_at(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    for var in ["LANYARD_ADMIN_SOCKET", "SPIFFE_ENDPOINT_SOCKET", "LANYARD_JOIN_TOKEN", "LANYARD_STORE_URL", "RUST_LOG"]
    {
        cmd.env_remove(var);
    }
    cmd.env("LANYARD_LOG", "info").env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, killing it (and failing the test) after `timeout`.
pub(crate) fn run(mut cmd: Command, timeout: Duration) -> Output {
    let child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = pid_of(&child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            let output = rx.recv().ok().and_then(Result::ok);
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                output.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default()
            );
        }
    }
}

/// Stdout of a command that must have succeeded.
pub(crate) fn success(what: &str, output: &Output) -> String {
    assert!(output.status.success(), "{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The non-empty lines a command wrote to stderr.
pub(crate) fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Calls `f` every 100 ms until it answers `Ok` or `timeout` passes; then
/// panics with `what` and the last error.
pub(crate) fn eventually<T, E: Debug>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last error: {e:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// [`eventually`] for async checks.
pub(crate) async fn eventually_async<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last error: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

/// The last `n` lines of a log file.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Spawns a long-running role with stdout and stderr appended to `log`.
fn spawn_role(args: &[&str], log: &Path) -> Child {
    let file = File::options().create(true).append(true).open(log).unwrap();
    lanyard()
        .args(args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start lanyard {args:?}: {e}"))
}

/// Sends SIGTERM and waits up to `timeout` for the exit; SIGKILL after that.
/// Returns the status and whether SIGTERM alone was enough.
fn terminate(child: &mut Child, timeout: Duration) -> (ExitStatus, bool) {
    let _ = kill(pid_of(child), Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    (child.wait().unwrap(), false)
}

fn kill_now(child: &mut Child) -> ExitStatus {
    let _ = child.kill();
    child.wait().unwrap()
}

/// A `lanyard server run` in its own temp dir, on its own port.
pub(crate) struct TestServer {
    dir: TempDir,
    port: u16,
    /// Arguments added to `server run` (on every start).
    extra: Vec<String>,
    /// The bundle endpoint's port, when it has one.
    bundle_port: Option<u16>,
    /// A data directory elsewhere than in `dir` (a restored store).
    data_dir: Option<PathBuf>,
    child: Option<Child>,
    /// Whether a panic message already carried the log tail.
    logged: Cell<bool>,
}

impl TestServer {
    /// Starts a server and waits until its admin socket answers.
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`TestServer::start`] with more `server run` arguments (`--policy DIR`, …).
    pub(crate) fn start_with(extra: &[&str]) -> Self {
        Self::start_opts(extra, false)
    }

    /// [`TestServer::start_with`] and a bundle endpoint on its own port ([`TestServer::bundle_url`]).
    pub(crate) fn start_with_bundle(extra: &[&str]) -> Self {
        Self::start_opts(extra, true)
    }

    /// A server on an existing data directory (a restored backup, say).
    pub(crate) fn start_on(data_dir: PathBuf) -> Self {
        Self::start_opts_on(&[], false, Some(data_dir))
    }

    fn start_opts(extra: &[&str], bundle: bool) -> Self {
        Self::start_opts_on(extra, bundle, None)
    }

    fn start_opts_on(extra: &[&str], bundle: bool, data_dir: Option<PathBuf>) -> Self {
        let dir = tempfile::Builder::new().prefix("lanyard-e2e-").tempdir().unwrap();
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let bundle_port = bundle.then(free_port);
        let port = free_port();
        let mut server = Self { dir, port, extra, bundle_port, data_dir, child: None, logged: Cell::new(false) };
        // The port was free when we looked; a parallel test may take it
        // before the server binds. Then try another.
        for _ in 0..3 {
            server.child = Some(spawn_role(&server.run_args(), &server.log()));
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) if e.contains("cannot listen on") => {
                    server.child = None;
                    server.port = free_port();
                    server.bundle_port = server.bundle_port.map(|_| free_port());
                }
                Err(e) => server.fail(&e),
            }
        }
        server.fail("could not find a free port in 3 attempts")
    }

    fn run_args(&self) -> Vec<&str> {
        let mut args = vec![
            "server",
            "run",
            "--data-dir",
            path_str(&self.data_dir()),
            "--trust-domain",
            TD,
            "--admin-socket",
            path_str(&self.admin_socket()),
            "--listen",
            Box::leak(self.addr().into_boxed_str()),
        ];
        if let Some(port) = self.bundle_port {
            args.extend(["--bundle-listen", Box::leak(format!("127.0.0.1:{port}").into_boxed_str())]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        args
    }

    /// Polls `bundle show` until it succeeds; the error says why not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("server exited ({status}): {}", log_tail(&self.log(), 1)));
            }
            if self.admin(&["bundle", "show"]).status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("server not ready within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with `why` and the tail of the server log.
    pub(crate) fn fail(&self, why: &str) -> ! {
        self.logged.set(true);
        panic!("{why}\n--- server log ({}) ---\n{}", self.log().display(), log_tail(&self.log(), 40))
    }

    /// The temp dir this server (and nothing else) uses.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The store directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| self.dir().join("server"))
    }

    /// The admin socket.
    pub(crate) fn admin_socket(&self) -> PathBuf {
        self.dir().join("admin.sock")
    }

    /// The node API address, `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The bundle endpoint's URL, `http://127.0.0.1:PORT` (also the issuer
    /// unless `--public-url` says otherwise).
    pub(crate) fn bundle_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.bundle_port())
    }

    /// The bundle endpoint's port.
    pub(crate) fn bundle_port(&self) -> u16 {
        self.bundle_port.expect("started without a bundle endpoint")
    }

    /// The server's log (stdout and stderr, across restarts).
    pub(crate) fn log(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    /// Runs `lanyard ARGS --admin-socket <ours>`.
    pub(crate) fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = lanyard();
        cmd.args(args).arg("--admin-socket").arg(self.admin_socket());
        run(cmd, COMMAND_TIMEOUT)
    }

    /// [`TestServer::admin`] that must succeed; its stdout.
    pub(crate) fn admin_ok(&self, args: &[&str]) -> String {
        let output = self.admin(args);
        if !output.status.success() {
            self.fail(&format!(
                "lanyard {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        String::from_utf8(output.stdout).unwrap()
    }

    /// The trust bundle as PEM.
    pub(crate) fn bundle_pem(&self) -> String {
        self.admin_ok(&["bundle", "show"])
    }

    /// A join token for agent `name`, valid for `ttl` (`10m`, `1s`, …).
    pub(crate) fn join_token(&self, name: &str, ttl: &str) -> String {
        self.admin_ok(&["join-token", "create", "--name", name, "--ttl", ttl]).trim().to_owned()
    }

    /// Registers an entry; its id.
    pub(crate) fn create_entry(&self, spiffe_id: &str, parent_id: &str, selectors: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["entry", "create", "--spiffe-id", spiffe_id, "--parent-id", parent_id];
        for s in selectors {
            args.extend(["--selector", s]);
        }
        args.extend(extra);
        args.extend(["--output", "json"]);
        let json: serde_json::Value = serde_json::from_str(&self.admin_ok(&args)).unwrap();
        json["id"].as_str().unwrap().to_owned()
    }

    /// Every entry, as `entry list --output json` prints them.
    pub(crate) fn entries(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.admin_ok(&["entry", "list", "--output", "json"])).unwrap()
    }

    /// Every agent, as `agent list --output json` prints them.
    pub(crate) fn agents(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.admin_ok(&["agent", "list", "--output", "json"])).unwrap()
    }

    /// SIGTERM, and waits (bounded) for a clean exit.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let (status, graceful) = terminate(&mut child, Duration::from_secs(15));
        if !graceful {
            self.fail("server did not exit within 15s of SIGTERM");
        }
        status
    }

    /// Sends `signal` to the running server.
    pub(crate) fn signal(&self, signal: Signal) {
        kill(pid_of(self.child.as_ref().expect("server is not running")), signal).unwrap();
    }

    /// `audit query ARGS` (JSON lines), one value per record.
    pub(crate) fn audit_query(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let args = [&["audit", "query", "--limit", "100000"], args].concat();
        self.admin_ok(&args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        kill_now(&mut child);
    }

    /// Starts the server again on the same dir, port and admin socket.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.child = Some(spawn_role(&self.run_args(), &self.log()));
        if let Err(e) = self.wait_ready() {
            self.fail(&format!("restart: {e}"));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
        if std::thread::panicking() && !self.logged.get() {
            eprintln!("--- server log ({}) ---\n{}", self.log().display(), log_tail(&self.log(), 40));
        }
    }
}

/// A `lanyard agent run` in its own temp dir, attested to a [`TestServer`].
pub(crate) struct TestAgent {
    dir: TempDir,
    name: String,
    child: Option<Child>,
    /// Whether a panic message already carried the log tail.
    logged: Cell<bool>,
}

impl TestAgent {
    /// Creates a join token for `name`, starts the agent with it and waits
    /// until its Workload API socket exists.
    pub(crate) fn start(server: &TestServer, name: &str) -> Self {
        let token = server.join_token(name, "10m");
        Self::start_with_token(server, name, &token)
    }

    /// Starts an agent with a given token.
    ///
    /// The token is passed as `--join-token=TOKEN`: tokens are base64url and
    /// one in 64 starts with `-`, which the `--join-token TOKEN` form cannot
    /// take (see `cli::join_token_starting_with_a_dash_is_accepted`).
    pub(crate) fn start_with_token(server: &TestServer, name: &str, token: &str) -> Self {
        Self::start_with_token_args(server, name, &[format!("--join-token={token}")])
    }

    /// Starts an agent with `token_args` giving the join token; waits until
    /// its socket exists.
    pub(crate) fn start_with_token_args(server: &TestServer, name: &str, token_args: &[String]) -> Self {
        let mut agent = Self::prepare(server, name);
        let mut args = agent.run_args(server);
        args.extend_from_slice(token_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agent.child = Some(spawn_role(&args, &agent.log()));
        let deadline = Instant::now() + START_TIMEOUT;
        while !agent.socket().exists() {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                agent.fail(&format!("agent exited ({status})"));
            }
            if Instant::now() >= deadline {
                agent.fail("agent socket did not appear");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// Runs `lanyard agent run` with `token` in a fresh dir and expects it to
    /// exit (it must fail to attest) within `timeout`; its output.
    pub(crate) fn run_to_exit(server: &TestServer, token: &str, timeout: Duration) -> Output {
        let agent = Self::prepare(server, "expected-to-exit");
        let mut cmd = lanyard();
        cmd.args(agent.run_args(server)).arg(format!("--join-token={token}"));
        run(cmd, timeout)
    }

    fn prepare(server: &TestServer, name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("lanyard-e2e-agent-").tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), server.bundle_pem()).unwrap();
        Self { dir, name: name.to_owned(), child: None, logged: Cell::new(false) }
    }

    /// `agent run` arguments, without the join token.
    fn run_args(&self, server: &TestServer) -> Vec<String> {
        [
            "agent",
            "run",
            "--data-dir",
            path_str(&self.dir.path().join("data")),
            "--server",
            &server.addr(),
            "--trust-bundle",
            path_str(&self.dir.path().join("ca.pem")),
            "--socket",
            &self.endpoint(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Panics with `why` and the tail of the agent log.
    pub(crate) fn fail(&self, why: &str) -> ! {
        self.logged.set(true);
        panic!("{why}\n--- agent {} log ({}) ---\n{}", self.name, self.log().display(), log_tail(&self.log(), 40))
    }

    /// The agent's SPIFFE ID, `spiffe://example.org/agent/<name>`.
    pub(crate) fn spiffe_id(&self) -> String {
        spiffe_id(&format!("agent/{}", self.name))
    }

    /// The Workload API socket path.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The Workload API endpoint, `unix:///…/agent.sock`.
    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The agent's log.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
        if std::thread::panicking() && !self.logged.get() {
            eprintln!("--- agent {} log ({}) ---\n{}", self.name, self.log().display(), log_tail(&self.log(), 40));
        }
    }
}

fn path_str(p: &Path) -> &'static str {
    // Test paths live as long as the test; leaking a few short strings keeps
    // argument lists simple.
    Box::leak(p.to_str().unwrap().to_owned().into_boxed_str())
}

/// A raw Workload API client over the agent's Unix socket (no header added).
pub(crate) async fn workload_client(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, Status> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect: {e}")))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// A request carrying `workload.spiffe.io: true`.
pub(crate) fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(lanyard_proto::WORKLOAD_API_HEADER, tonic::metadata::MetadataValue::from_static("true"));
    req
}

/// The first message of a FetchX509SVID stream (bounded: the agent may hold
/// a new stream up to 10 s while SVIDs are being minted).
pub(crate) async fn fetch_x509(socket: &Path) -> Result<X509svidResponse, Status> {
    let call = async {
        let mut client = workload_client(socket).await?;
        let mut stream = client.fetch_x509svid(with_header(X509svidRequest {})).await?.into_inner();
        stream.message().await?.ok_or_else(|| Status::unknown("stream ended without a message"))
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 15s")))
}

/// FetchJWTSVID for `audience` (and optionally one SPIFFE ID), bounded.
pub(crate) async fn fetch_jwt(
    socket: &Path,
    audience: &str,
    spiffe_id: Option<&str>,
) -> Result<JwtsvidResponse, Status> {
    let call = async {
        let mut client = workload_client(socket).await?;
        let request =
            JwtsvidRequest { audience: vec![audience.to_owned()], spiffe_id: spiffe_id.unwrap_or_default().to_owned() };
        Ok(client.fetch_jwtsvid(with_header(request)).await?.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 15s")))
}

/// What one X.509-SVID in a Workload API answer certifies.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub(crate) spiffe_id: String,
    pub(crate) leaf: lanyard_ca::svid::SvidInfo,
}

/// Parses every SVID of a FetchX509SVID answer (through the `spiffe` crate's
/// parser, which checks the chain and key encodings), inspects its leaf, and
/// checks the key is the leaf's and the bundle is there.
pub(crate) fn served(response: &X509svidResponse) -> Vec<Served> {
    response
        .svids
        .iter()
        .map(|s| {
            let parsed = spiffe::X509Svid::parse_from_der(&s.x509_svid, &s.x509_svid_key)
                .unwrap_or_else(|e| panic!("agent served an unparsable SVID: {e}"));
            let leaf = lanyard_ca::svid::inspect_leaf(parsed.leaf().as_bytes()).unwrap();
            assert_eq!(leaf.spiffe_id.as_str(), s.spiffe_id, "leaf URI SAN");
            assert!(key_certified_by(&leaf, &s.x509_svid_key), "the served key is the one the leaf certifies");
            assert!(!s.bundle.is_empty(), "the bundle is never empty");
            Served { spiffe_id: s.spiffe_id.clone(), leaf }
        })
        .collect()
}

/// The SPIFFE IDs served to this process right now.
pub(crate) async fn served_ids(socket: &Path) -> Result<Vec<String>, Status> {
    let response = fetch_x509(socket).await?;
    Ok(served(&response).into_iter().map(|s| s.spiffe_id).collect())
}

/// Polls until the agent serves `spiffe_id` to this process; that SVID.
pub(crate) async fn wait_served(agent: &TestAgent, spiffe_id: &str, timeout: Duration) -> Served {
    let socket = agent.socket();
    eventually_async(timeout, &format!("{spiffe_id} to be served"), async || {
        let response = fetch_x509(&socket).await?;
        served(&response)
            .into_iter()
            .find(|s| s.spiffe_id == spiffe_id)
            .ok_or_else(|| Status::not_found("not among the served SVIDs"))
    })
    .await
}

/// Polls until the agent has synced (answers something other than Unavailable).
pub(crate) async fn wait_synced(agent: &TestAgent) -> Result<X509svidResponse, Status> {
    let socket = agent.socket();
    eventually_async(SVID_TIMEOUT, "the agent to sync", async || match fetch_x509(&socket).await {
        Err(s) if s.code() == Code::Unavailable => Err(s),
        other => Ok(other),
    })
    .await
}

/// Whether the PKCS#8 key `pkcs8` is the one `leaf` certifies. P-256 keys in
/// PKCS#8 (as ring and rcgen write them) carry their public point; the leaf's
/// SubjectPublicKeyInfo ends with the same 65-byte uncompressed point.
pub(crate) fn key_certified_by(leaf: &lanyard_ca::svid::SvidInfo, pkcs8: &[u8]) -> bool {
    let spki = &leaf.spki_der;
    let point = &spki[spki.len().saturating_sub(65)..];
    point.len() == 65 && point[0] == 0x04 && pkcs8.windows(65).any(|w| w == point)
}

/// Copies a directory tree (a stopped server's store, say).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// SHA-256.
pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpadded base64url.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Segment `i` (0 header, 1 claims) of a compact JWS, as JSON.
pub(crate) fn jws_part(token: &str, i: usize) -> serde_json::Value {
    use base64::Engine;
    let segment = token.trim().split('.').nth(i).unwrap_or_else(|| panic!("{token:?} has no segment {i}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Asserts a refusal: exit non-zero, `permission denied` and `why` on
/// stderr; that stderr.
pub(crate) fn refused(what: &str, output: &Output, why: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{what} was allowed: {}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("permission denied") && stderr.contains(why), "{what}: expected {why:?}, got {stderr}");
    stderr
}

/// The binary under test at a path of its own (a hard link, else a copy):
/// the agent tells processes apart by their executable's path, so each of
/// these is a workload that `unix:path:` selectors can name separately.
/// Its commands go to one agent's socket.
pub(crate) struct Workload {
    path: PathBuf,
    endpoint: String,
}

impl Workload {
    /// `dir/name`, talking to `agent`.
    pub(crate) fn new(dir: &Path, name: &str, agent: &TestAgent) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // The agent sees the resolved path (/proc/PID/exe).
        let path = std::fs::canonicalize(dir).unwrap().join(name);
        if std::fs::hard_link(BIN, &path).is_err() {
            // Another file system. `cp` writes it, not this process: a write
            // handle of ours could leak into a concurrently spawned child and
            // make executing the copy fail with ETXTBSY.
            let status = Command::new("cp").arg(BIN).arg(&path).status().unwrap();
            assert!(status.success(), "cannot copy {BIN} to {}", path.display());
        }
        Self { path, endpoint: agent.endpoint() }
    }

    /// The selector that matches this workload and no other.
    pub(crate) fn selector(&self) -> String {
        format!("unix:path:{}", self.path.display())
    }

    /// `lanyard ARGS --socket <agent>` run from this path.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut cmd = lanyard_at(&self.path);
        cmd.args(args).arg("--socket").arg(&self.endpoint);
        run(cmd, COMMAND_TIMEOUT)
    }

    /// Polls `svid fetch` until the agent serves `spiffe_id` to this workload.
    pub(crate) fn wait_served(&self, spiffe_id: &str) {
        eventually(SVID_TIMEOUT, &format!("{spiffe_id} to be served to {}", self.path.display()), || {
            let output = self.run(&["svid", "fetch", "--output", "json"]);
            let stdout = String::from_utf8_lossy(&output.stdout);
            match output.status.success() && stdout.contains(&format!("\"{spiffe_id}\"")) {
                true => Ok(()),
                false => Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr))),
            }
        })
    }

    /// `task-token fetch` for `task`.
    pub(crate) fn fetch_token(&self, task: &str, audience: &str, tools: &[&str], action: &str) -> Output {
        let mut args = vec!["task-token", "fetch", "--task", task, "--audience", audience, "--action", action];
        for tool in tools {
            args.extend(["--tool", tool]);
        }
        self.run(&args)
    }
}

/// The connector every task rig registers.
pub(crate) const CONNECTOR: &str = "spiffe://example.org/connector/github";
/// The orchestrator (task authority) every task rig registers.
pub(crate) const ORCHESTRATOR: &str = "spiffe://example.org/orchestrator/host";
/// Tools in the connector's entry.
pub(crate) const SEARCH: &str = "github.search";
pub(crate) const READ_FILE: &str = "github.read_file";
pub(crate) const CREATE_ISSUE: &str = "github.create_issue";
/// Audiences in the connector's entry.
pub(crate) const GITHUB: &str = "api.github.com";
pub(crate) const UPLOADS: &str = "uploads.github.com";

/// A server, an agent, and two workloads on it: an orchestrator (task
/// authority, nothing else) and a connector (tools {search, read_file,
/// create_issue}, audiences {api, uploads}, at most `internal` data), each
/// matched by its own executable path and both served before `start` returns.
pub(crate) struct TaskRig {
    pub(crate) server: TestServer,
    pub(crate) agent: TestAgent,
    pub(crate) orchestrator: Workload,
    pub(crate) connector: Workload,
}

impl TaskRig {
    /// `server_args` go to `server run`, `connector_args` to the connector's `entry create`.
    pub(crate) fn start(server_args: &[&str], connector_args: &[&str]) -> Self {
        Self::on(TestServer::start_with(server_args), connector_args, &[])
    }

    /// [`TaskRig::start`] with the server's bundle endpoint on.
    pub(crate) fn start_with_bundle(server_args: &[&str], connector_args: &[&str]) -> Self {
        Self::on(TestServer::start_with_bundle(server_args), connector_args, &[])
    }

    /// [`TaskRig::start`] with more `agent run` arguments.
    pub(crate) fn start_with_agent_args(agent_args: &[String]) -> Self {
        Self::on(TestServer::start(), &[], agent_args)
    }

    fn on(server: TestServer, connector_args: &[&str], agent_args: &[String]) -> Self {
        let token = server.join_token("node1", "10m");
        let agent_args = [&[format!("--join-token={token}")], agent_args].concat();
        let agent = TestAgent::start_with_token_args(&server, "node1", &agent_args);
        let orchestrator = Workload::new(&server.dir().join("bin"), "orchestrator", &agent);
        let connector = Workload::new(&server.dir().join("bin"), "connector", &agent);
        server.create_entry(ORCHESTRATOR, &agent.spiffe_id(), &[&orchestrator.selector()], &["--task-authority"]);
        #[rustfmt::skip]
        let ceilings = [
            "--tool", SEARCH, "--tool", READ_FILE, "--tool", CREATE_ISSUE,
            "--audience", GITHUB, "--audience", UPLOADS, "--max-classification", "internal",
        ];
        let extra = [&ceilings[..], connector_args].concat();
        server.create_entry(CONNECTOR, &agent.spiffe_id(), &[&connector.selector()], &extra);
        orchestrator.wait_served(ORCHESTRATOR);
        connector.wait_served(CONNECTOR);
        Self { server, agent, orchestrator, connector }
    }

    /// Another workload (binary path) on the rig's agent.
    pub(crate) fn workload(&self, name: &str) -> Workload {
        Workload::new(&self.server.dir().join("bin"), name, &self.agent)
    }

    /// Begins `spec` as the orchestrator workload; the task id.
    pub(crate) fn begin(&self, spec: &TaskSpec<'_>) -> String {
        task_id("task begin (as the orchestrator)", &self.orchestrator.run(&spec.args()))
    }

    /// The connector's task token for `task`, which must be granted.
    pub(crate) fn token(&self, task: &str, audience: &str, tools: &[&str], action: &str) -> String {
        let output = self.connector.fetch_token(task, audience, tools, action);
        if !output.status.success() {
            self.server.fail(&format!(
                "task-token fetch {task} {audience} {tools:?} {action} refused: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert_eq!(token.split('.').count(), 3, "a compact JWS: {token}");
        token
    }
}

/// A task to begin: `TaskSpec { session: "s2", ..TaskSpec::default() }`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskSpec<'a> {
    pub(crate) connector: &'a str,
    pub(crate) user: &'a str,
    pub(crate) session: &'a str,
    pub(crate) tools: &'a [&'a str],
    pub(crate) audiences: &'a [&'a str],
    pub(crate) classification: &'a str,
    pub(crate) action: &'a str,
    pub(crate) ttl: &'a str,
}

impl Default for TaskSpec<'static> {
    /// alice (at https://idp.example) reads internal data with github.search
    /// at api.github.com, in session S, for 10 minutes.
    fn default() -> Self {
        Self {
            connector: CONNECTOR,
            user: "alice",
            session: "S",
            tools: &[SEARCH],
            audiences: &[GITHUB],
            classification: "internal",
            action: "read",
            ttl: "10m",
        }
    }
}

impl TaskSpec<'_> {
    /// `task begin … --output json`.
    pub(crate) fn args(&self) -> Vec<&str> {
        let mut args = vec!["task", "begin", "--connector", self.connector, "--user-sub", self.user];
        args.extend(["--user-iss", "https://idp.example", "--session", self.session]);
        for tool in self.tools {
            args.extend(["--tool", tool]);
        }
        for audience in self.audiences {
            args.extend(["--audience", audience]);
        }
        args.extend(["--classification", self.classification, "--action", self.action]);
        args.extend(["--ttl", self.ttl, "--output", "json"]);
        args
    }
}

/// The `task_id` of a successful `task begin --output json`.
pub(crate) fn task_id(what: &str, output: &Output) -> String {
    let json: serde_json::Value = serde_json::from_str(&success(what, output)).unwrap();
    let id = json["task_id"].as_str().unwrap_or_else(|| panic!("{what}: no task_id in {json}")).to_owned();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "task id {id:?} is not 128 bits of hex");
    id
}
