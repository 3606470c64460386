//! Cached FetchX509SVID latency through a real agent socket.
//!
//! Starts `lanyard server run` and `lanyard agent run` in a temp dir,
//! registers 1,000 workloads under the agent (one matches this process),
//! holds 1,000 Workload API streams open, then times fresh FetchX509SVID
//! calls (new stream, first message) and prints the percentiles.
//!
//! `cargo bench -p lanyard --bench workload_fetch` (`LANYARD_BENCH_CALLS` to change the count)
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

mod support;

use std::time::{Duration, Instant};

use lanyard_proto::common::Entry;
use lanyard_proto::workload::X509svidRequest;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use support::{Cluster, full_run, own_uid, percentile, workload_request};
use tonic::transport::Channel;

async fn fetch_once(client: &mut SpiffeWorkloadApiClient<Channel>) -> Result<(), tonic::Status> {
    let mut stream = client.fetch_x509svid(workload_request(X509svidRequest {})).await?.into_inner();
    stream.message().await?.map(|_| ()).ok_or_else(|| tonic::Status::unknown("empty stream"))
}

#[tokio::main]
async fn main() {
    let (registered, open_streams, calls) = if full_run() {
        let calls = std::env::var("LANYARD_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
        (1_000u32, 1_000usize, calls)
    } else {
        (20, 10, 50)
    };
    let mut cluster = Cluster::start(&[]).await;
    let uid = own_uid();
    for i in 0..registered {
        let selector_uid = if i == 0 { uid } else { 100_000 + i };
        cluster
            .create(Entry {
                spiffe_id: format!("spiffe://example.org/workload/{i}"),
                parent_id: cluster.agent_id.clone(),
                selectors: vec![format!("unix:uid:{selector_uid}")],
                ..Entry::default()
            })
            .await;
    }
    cluster.start_agent().await;
    let mut client = SpiffeWorkloadApiClient::new(cluster.agent_channel().await);
    let started = Instant::now();
    while fetch_once(&mut client).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "agent never served an SVID");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("agent ready with {registered} registered workloads after {:?}", started.elapsed());

    // Hold streams open, each on its own connection, as connected workloads do.
    let mut held = Vec::with_capacity(open_streams);
    for _ in 0..open_streams {
        let mut c = SpiffeWorkloadApiClient::new(cluster.agent_channel().await);
        let mut s = c.fetch_x509svid(workload_request(X509svidRequest {})).await.expect("open stream").into_inner();
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
