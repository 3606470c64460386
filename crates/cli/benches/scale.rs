//! Scale: a store of 100,000 registration entries.
//!
//! 1. Server start: from spawning `lanyard server run` on the store to its
//!    admin API answering (store open, entry indexes loaded, keys loaded).
//! 2. Sync of one change: an agent that holds 1,000 entries; an entry is
//!    created for this process, timed from the admin API's acknowledgement
//!    to the new SVID arriving on this process's Workload API stream (sync,
//!    mint and push), 20 times.
//!
//! `cargo bench -p lanyard --bench scale` (`LANYARD_BENCH_ENTRIES` to change
//! 100,000; smoke runs use 2,000).
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_core::{Classification, Entry, EntryId, Selector};
use lanyard_proto::admin::CreateEntryRequest;
use lanyard_proto::common::Entry as ProtoEntry;
use lanyard_proto::workload::X509svidRequest;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_store::{AuditEvent, SledStore, Store};
use support::{Cluster, full_run, own_uid, percentile, workload_request};
use tokio_stream::StreamExt as _;

/// The agent the benchmark starts (`Cluster` joins as `bench`).
const AGENT: &str = "spiffe://example.org/agent/bench";
/// Entries under the bench agent (not this process's uid: never served to it).
const AGENT_ENTRIES: usize = 1_000;

fn entry(i: usize, parent: &str, uid: u32) -> Entry {
    Entry {
        id: EntryId::parse(&format!("{i:032x}")).expect("id"),
        spiffe_id: format!("spiffe://example.org/connector/c{i}").parse().expect("spiffe id"),
        parent_id: parent.parse().expect("parent"),
        selectors: vec![Selector::Uid(uid)],
        x509_ttl: "1h".parse().expect("ttl"),
        jwt_ttl: "5m".parse().expect("ttl"),
        dns_names: vec![],
        expires_at: None,
        hint: String::new(),
        revision: 0,
        tools: vec![],
        audiences: vec![],
        max_classification: Classification::Public,
        delegate_to: vec![],
        task_authority: false,
    }
}

/// Fills the store at `dir` with `count` entries, `AGENT_ENTRIES` of them the
/// bench agent's, the rest spread over 100 other agents.
fn populate(dir: &std::path::Path, count: usize) {
    // Called from within the benchmark's runtime: a runtime of its own on a thread of its own.
    std::thread::scope(|scope| scope.spawn(|| populate_now(dir, count)).join().expect("populate"));
}

fn populate_now(dir: &std::path::Path, count: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(SledStore::open(dir).expect("store"));
        let other_uid = own_uid() + 1;
        let started = Instant::now();
        let mut writers = Vec::new();
        for w in 0..64 {
            let store = Arc::clone(&store);
            writers.push(tokio::spawn(async move {
                for i in (w..count).step_by(64) {
                    let parent = if i < AGENT_ENTRIES {
                        AGENT.to_owned()
                    } else {
                        format!("spiffe://example.org/agent/n{}", i % 100)
                    };
                    let event =
                        AuditEvent { kind: "entry.create".into(), actor: "bench".into(), ..AuditEvent::default() };
                    store.create_entry(entry(i, &parent, other_uid), event).await.expect("create entry");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        store.flush().await.expect("flush");
        eprintln!("populated {count} entries in {:?}", started.elapsed());
    });
}

#[tokio::main]
async fn main() {
    let count = match full_run() {
        true => std::env::var("LANYARD_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000),
        false => 2_000,
    };
    let changes = if full_run() { 20 } else { 3 };
    let mut cluster = Cluster::start_prepared(&[], |dir| populate(dir, count)).await;
    println!("server start with {count} entries (spawn -> admin API answers): {:?}", cluster.started_in);

    cluster.start_agent().await;
    let mut svids = SpiffeWorkloadApiClient::new(cluster.agent_channel().await);
    // The agent has synced its 1,000 entries when this process's first entry is served.
    let mut samples = Vec::new();
    let mut stream = None;
    for n in 0..=changes {
        let created = cluster
            .admin
            .create_entry(CreateEntryRequest {
                entry: Some(ProtoEntry {
                    spiffe_id: format!("spiffe://example.org/workload/w{n}"),
                    parent_id: AGENT.into(),
                    selectors: vec![format!("unix:uid:{}", own_uid())],
                    ..ProtoEntry::default()
                }),
            })
            .await
            .expect("create entry");
        let acked = Instant::now();
        let spiffe_id = created.into_inner().spiffe_id;
        if stream.is_none() {
            // The first: wait for the agent to come up and serve it, then keep the stream.
            let started = Instant::now();
            loop {
                match svids.fetch_x509svid(workload_request(X509svidRequest {})).await {
                    Ok(s) => {
                        stream = Some(s.into_inner());
                        break;
                    }
                    Err(_) => {
                        assert!(started.elapsed() < Duration::from_secs(60), "agent never served an SVID");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        let stream = stream.as_mut().expect("stream");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("an update within 30 s")
                .expect("stream open")
                .expect("a valid message");
            if message.svids.iter().any(|s| s.spiffe_id == spiffe_id) {
                break;
            }
        }
        if n > 0 {
            samples.push(acked.elapsed());
        }
    }
    samples.sort();
    println!(
        "one entry change -> new SVID on the Workload API stream (agent with {AGENT_ENTRIES} entries, store {count}), \
         {} changes: p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}
