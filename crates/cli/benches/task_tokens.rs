//! Task tokens end to end: workload -> agent (Unix socket) -> server (mTLS)
//! -> back, with attestation, ceilings, Cedar, signing and a durable audit
//! record on every one.
//!
//! 1. Saturation: many concurrent callers for a while; tokens per second.
//! 2. Latency at half that rate (or at `LANYARD_BENCH_RATE`), open loop (a
//!    request is sent on schedule whether or not earlier ones came back).
//!
//! `cargo bench -p lanyard --bench task_tokens`
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

mod support;

/// The load generator shares the 2 cores with the agent and server: it uses
/// the allocator `lanyard` (and so `lanyard bench`) uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lanyard_proto::agent::FetchTaskTokenRequest;
use lanyard_proto::agent::tasks_client::TasksClient;
use lanyard_proto::common::TaskSpec;
use lanyard_proto::workload::X509svidRequest;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use support::{CONNECTOR, Cluster, full_run, percentile, workload_request};
use tonic::transport::Channel;

/// Client connections to the agent (`LANYARD_BENCH_CONNECTIONS`).
fn connections() -> usize {
    env_or("LANYARD_BENCH_CONNECTIONS", 8)
}

/// Requests in flight per connection when saturating (`LANYARD_BENCH_IN_FLIGHT`).
fn in_flight() -> usize {
    env_or("LANYARD_BENCH_IN_FLIGHT", 8)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn request(task: &str) -> tonic::Request<FetchTaskTokenRequest> {
    workload_request(FetchTaskTokenRequest {
        task_id: task.to_owned(),
        audience: "api.github.com".into(),
        tools: vec!["github.search".into()],
        action: "read".into(),
        ttl_seconds: 0,
    })
}

async fn setup() -> (Cluster, String) {
    let mut cluster = Cluster::start(&[]).await;
    cluster.create_connector().await;
    cluster.start_agent().await;
    let mut svids = SpiffeWorkloadApiClient::new(cluster.agent_channel().await);
    let started = Instant::now();
    while svids.fetch_x509svid(workload_request(X509svidRequest {})).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "agent never served an SVID");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec = TaskSpec {
        connector: CONNECTOR.into(),
        user_sub: "alice".into(),
        user_iss: "https://idp.example".into(),
        session: "bench".into(),
        tools: vec!["github.search".into()],
        audiences: vec!["api.github.com".into()],
        classification: "internal".into(),
        action: "read".into(),
        ttl_seconds: 3600,
    };
    let task = cluster.admin.begin_task(spec).await.expect("begin task").into_inner().task_id;
    (cluster, task)
}

/// Closed loop: every worker sends its next request as soon as the last returns.
async fn saturate(clients: &[TasksClient<Channel>], task: &str, run_for: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for client in clients {
        for _ in 0..in_flight() {
            let (mut client, done, stop, task) =
                (client.clone(), Arc::clone(&done), Arc::clone(&stop), task.to_owned());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    client.fetch_task_token(request(&task)).await.expect("task token");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    tokio::time::sleep(run_for / 5).await; // warm-up
    let before = done.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(run_for).await;
    let count = done.load(Ordering::Relaxed) - before;
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    count as f64 / elapsed.as_secs_f64()
}

/// Open loop at `rate` per second for `run_for`: requests go out on schedule
/// whether or not earlier ones returned.
async fn at_rate(clients: &[TasksClient<Channel>], task: &str, rate: f64, run_for: Duration) -> Vec<Duration> {
    let total = (rate * run_for.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + interval * u32::try_from(i).expect("count");
        tokio::time::sleep_until(scheduled.into()).await;
        let mut client = clients[i % clients.len()].clone();
        let task = task.to_owned();
        handles.push(tokio::spawn(async move {
            // Timed from the send: tokio's timer has 1 ms resolution, and the
            // schedule's lateness is the load generator's, not the system's.
            let sent = Instant::now();
            client.fetch_task_token(request(&task)).await.expect("task token");
            sent.elapsed()
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for h in handles {
        samples.push(h.await.expect("request"));
    }
    samples.sort();
    samples
}

#[tokio::main]
async fn main() {
    let run_for = if full_run() { Duration::from_secs(10) } else { Duration::from_millis(500) };
    let (cluster, task) = setup().await;
    let mut clients = Vec::new();
    for _ in 0..connections() {
        clients.push(TasksClient::new(cluster.agent_channel().await));
    }
    let rate = saturate(&clients, &task, run_for).await;
    println!(
        "task tokens, saturated ({} connections x {} in flight, {:?}): {rate:.0}/s",
        connections(),
        in_flight(),
        run_for
    );
    // LANYARD_BENCH_RATE fixes the open-loop rate, e.g. at half the
    // 10,000/s target whatever this run's saturation was.
    let (open_rate, which) = match env_or("LANYARD_BENCH_RATE", 0) {
        0 => ((rate / 2.0).max(10.0), "half of saturation"),
        fixed => (fixed as f64, "LANYARD_BENCH_RATE"),
    };
    let samples = at_rate(&clients, &task, open_rate, run_for).await;
    println!(
        "task tokens at {open_rate:.0}/s ({which}), {} requests: p50 {:?} p95 {:?} p99 {:?} max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}
