//! Cached FetchX509SVID latency through a real agent socket.
//!
//! Starts `lanyard server run` and `lanyard agent run` in a temp dir,
//! registers 1,000 workloads under the agent (one matches this process),
//! holds 1,000 Workload API streams open, then times fresh FetchX509SVID
//! calls (new stream, first message) and prints the percentiles.
//!
//! `cargo bench -p lanyard --bench workload_fetch` (`LANYARD_BENCH_CALLS` to change the count)
#![allow(
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "a benchmark: failures stop it loudly; criterion macros generate undocumented items"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest, GetBundleRequest};
use lanyard_proto::common::Entry;
use lanyard_proto::workload::X509svidRequest;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint};

/// Sizes of a run: `cargo bench` passes `--bench` and gets the full one;
/// `cargo test --benches` gets a quick smoke run that keeps the bench working.
struct Sizes {
    registered: u32,
    open_streams: usize,
    calls: usize,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        let calls = std::env::var("LANYARD_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
        Sizes { registered: 1_000, open_streams: 1_000, calls }
    } else {
        Sizes { registered: 20, open_streams: 10, calls: 50 }
    }
}

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

async fn uds_channel(path: PathBuf) -> Option<Channel> {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .ok()
}

async fn wait_channel(path: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = uds_channel(path.to_path_buf()).await {
            return c;
        }
        assert!(Instant::now() < deadline, "{} never came up", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request() -> tonic::Request<X509svidRequest> {
    let mut r = tonic::Request::new(X509svidRequest {});
    r.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    r
}

async fn fetch_once(client: &mut SpiffeWorkloadApiClient<Channel>) -> Result<(), tonic::Status> {
    let mut stream = client.fetch_x509svid(request()).await?.into_inner();
    stream.message().await?.map(|_| ()).ok_or_else(|| tonic::Status::unknown("empty stream"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let Sizes { registered, open_streams, calls } = sizes();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let admin_path = dir.join("admin.sock");
    let _server = spawn(
        dir,
        "server",
        &[
            "server",
            "run",
            "--data-dir",
            dir.join("server").to_str().expect("utf8"),
            "--trust-domain",
            "example.org",
            "--admin-socket",
            admin_path.to_str().expect("utf8"),
            "--listen",
            &listen,
        ],
    );
    let mut admin = AdminClient::new(wait_channel(&admin_path).await);
    let bundle = loop {
        match admin.get_bundle(GetBundleRequest {}).await {
            Ok(b) => break lanyard_agent::bundle_from_proto(&b.into_inner()).expect("bundle"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, bundle.x509_pem()).expect("write ca");
    let token = admin
        .create_join_token(CreateJoinTokenRequest { name: "bench".into(), ttl_seconds: 600 })
        .await
        .expect("join token")
        .into_inner();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").expect("proc").uid()
    };
    for i in 0..registered {
        let selector_uid = if i == 0 { uid } else { 100_000 + i };
        admin
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://example.org/workload/{i}"),
                    parent_id: token.spiffe_id.clone(),
                    selectors: vec![format!("unix:uid:{selector_uid}")],
                    ..Entry::default()
                }),
            })
            .await
            .expect("create entry");
    }
    let agent_sock = dir.join("agent.sock");
    let _agent = spawn(
        dir,
        "agent",
        &[
            "agent",
            "run",
            "--data-dir",
            dir.join("agent").to_str().expect("utf8"),
            "--server",
            &listen,
            "--join-token",
            &token.token,
            "--trust-bundle",
            ca.to_str().expect("utf8"),
            "--socket",
            &format!("unix://{}", agent_sock.display()),
        ],
    );
    let mut client = SpiffeWorkloadApiClient::new(wait_channel(&agent_sock).await);
    let started = Instant::now();
    while fetch_once(&mut client).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "agent never served an SVID");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("agent ready with {registered} registered workloads after {:?}", started.elapsed());

    // Hold streams open, each on its own connection, as connected workloads do.
    let mut held = Vec::with_capacity(open_streams);
    for _ in 0..open_streams {
        let mut c = SpiffeWorkloadApiClient::new(wait_channel(&agent_sock).await);
        let mut s = c.fetch_x509svid(request()).await.expect("open stream").into_inner();
        s.message().await.expect("first message");
        held.push((c, s));
    }
    println!("{open_streams} Workload API streams open");

    for _ in 0..calls.min(200) {
        fetch_once(&mut client).await.expect("warm-up fetch");
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        fetch_once(&mut client).await.expect("fetch");
        samples.push(t.elapsed());
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "FetchX509SVID (cached, new stream, first message), {calls} calls: mean {:?} p50 {:?} p95 {:?} p99 {:?} max {:?}",
        total / calls as u32,
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    drop(held);
}
