//! A server and an agent as real processes in a temp dir, for the benchmarks.
// Every bench compiles this module on its own and uses part of it.
#![allow(dead_code, reason = "shared by benches that each use some of it")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest, GetBundleRequest};
use lanyard_proto::common::Entry;
use tonic::transport::{Channel, Endpoint};

/// The connector the task-token benchmarks register.
pub(crate) const CONNECTOR: &str = "spiffe://example.org/connector/github";

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Killed {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(args)
        .env("LANYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lanyard");
    Killed(child)
}

/// A channel over a Unix socket.
async fn uds_channel(path: PathBuf) -> Option<Channel> {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .ok()
}

/// Waits (up to 30 s) until the socket accepts connections.
pub(crate) async fn wait_channel(path: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = uds_channel(path.to_path_buf()).await {
            return c;
        }
        assert!(Instant::now() < deadline, "{} never came up", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The uid of this process.
pub(crate) fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").expect("proc").uid()
}

/// A running server and agent.
pub(crate) struct Cluster {
    _tmp: tempfile::TempDir,
    _server: Killed,
    _agent: Option<Killed>,
    dir: PathBuf,
    listen: String,
    join_token: String,
    /// The agent's SPIFFE ID: the parent of entries.
    pub(crate) agent_id: String,
    /// The admin API.
    pub(crate) admin: AdminClient<Channel>,
    /// The agent's socket path.
    pub(crate) agent_socket: PathBuf,
    /// From spawning the server to its admin API answering.
    pub(crate) started_in: Duration,
}

impl Cluster {
    /// Starts the server; register entries, then [`Cluster::start_agent`].
    pub(crate) async fn start(server_args: &[&str]) -> Self {
        Self::start_prepared(server_args, |_| ()).await
    }

    /// [`Cluster::start`], after `prepare` has had the (not yet created)
    /// store directory, e.g. to fill a store before the server opens it.
    pub(crate) async fn start_prepared(server_args: &[&str], prepare: impl FnOnce(&Path)) -> Self {
        let tmp = tempfile::Builder::new().prefix("lanyard-bench-").tempdir().expect("temp dir");
        // LANYARD_BENCH_KEEP=1 keeps the directory (logs, store) for a look afterwards.
        let tmp = if std::env::var_os("LANYARD_BENCH_KEEP").is_some() {
            let kept = tmp.keep();
            eprintln!("keeping {}", kept.display());
            tempfile::Builder::new().prefix("lanyard-bench-unused-").tempdir_in(&kept).expect("temp dir")
        } else {
            tmp
        };
        let dir = tmp
            .path()
            .parent()
            .filter(|_| std::env::var_os("LANYARD_BENCH_KEEP").is_some())
            .map_or_else(|| tmp.path().to_path_buf(), std::path::Path::to_path_buf);
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let listen = format!("127.0.0.1:{port}");
        let admin_path = dir.join("admin.sock");
        let data = dir.join("server");
        let mut args = vec![
            "server",
            "run",
            "--data-dir",
            data.to_str().expect("utf8"),
            "--trust-domain",
            "example.org",
            "--admin-socket",
            admin_path.to_str().expect("utf8"),
            "--listen",
            &listen,
        ];
        args.extend_from_slice(server_args);
        prepare(&data);
        let spawned = Instant::now();
        let server = spawn(&dir, "server", &args);
        let mut admin = AdminClient::new(wait_channel(&admin_path).await);
        let bundle = loop {
            match admin.get_bundle(GetBundleRequest {}).await {
                Ok(b) => break lanyard_agent::bundle_from_proto(&b.into_inner()).expect("bundle"),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let started_in = spawned.elapsed();
        std::fs::write(dir.join("ca.pem"), bundle.x509_pem()).expect("write ca");
        let token = admin
            .create_join_token(CreateJoinTokenRequest { name: "bench".into(), ttl_seconds: 600 })
            .await
            .expect("join token")
            .into_inner();
        let agent_socket = dir.join("agent.sock");
        Self {
            _tmp: tmp,
            _server: server,
            _agent: None,
            dir,
            listen,
            join_token: token.token,
            agent_id: token.spiffe_id,
            admin,
            agent_socket,
            started_in,
        }
    }

    /// Registers an entry.
    pub(crate) async fn create(&mut self, entry: Entry) {
        self.admin.create_entry(CreateEntryRequest { entry: Some(entry) }).await.expect("create entry");
    }

    /// Registers this process (by uid) as the github connector, with the
    /// ceilings the task-token benchmarks use.
    pub(crate) async fn create_connector(&mut self) {
        let entry = Entry {
            spiffe_id: CONNECTOR.into(),
            parent_id: self.agent_id.clone(),
            selectors: vec![format!("unix:uid:{}", own_uid())],
            tools: vec!["github.search".into()],
            audiences: vec!["api.github.com".into()],
            max_classification: "internal".into(),
            ..Entry::default()
        };
        self.create(entry).await;
    }

    /// Starts the agent.
    pub(crate) async fn start_agent(&mut self) {
        let dir = self.dir.clone();
        let agent = spawn(
            &dir,
            "agent",
            &[
                "agent",
                "run",
                "--data-dir",
                dir.join("agent").to_str().expect("utf8"),
                "--server",
                &self.listen,
                "--join-token",
                &self.join_token,
                "--trust-bundle",
                dir.join("ca.pem").to_str().expect("utf8"),
                "--socket",
                &format!("unix://{}", self.agent_socket.display()),
                // Benchmarks are one process driving the agent as hard as it can.
                "--workload-rate",
                "0",
            ],
        );
        self._agent = Some(agent);
    }

    /// A new connection to the agent's socket.
    pub(crate) async fn agent_channel(&self) -> Channel {
        wait_channel(&self.agent_socket).await
    }
}

/// A request with the `workload.spiffe.io: true` header.
pub(crate) fn workload_request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    r
}

/// The `p`-quantile of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Whether `cargo bench` (full sizes) rather than `cargo test --benches` (smoke) runs us.
pub(crate) fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}
