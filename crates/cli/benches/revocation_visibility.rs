//! Revocation visibility: from the acknowledgement of `task end` at the
//! issuer to a `lanyard-verify` verifier (following the revocation feed over
//! HTTP long-poll) refusing a token of that task. Real server and agent
//! processes; the verifier runs in this process.
//!
//! `cargo bench -p lanyard --bench revocation_visibility` (1,000 revocations;
//! `LANYARD_BENCH_REVOCATIONS` to change).
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

mod support;

use std::time::{Duration, Instant};

use lanyard_proto::admin::EndTaskRequest as AdminEndTaskRequest;
use lanyard_proto::agent::FetchTaskTokenRequest;
use lanyard_proto::agent::tasks_client::TasksClient;
use lanyard_proto::common::TaskSpec;
use lanyard_verify::{Endpoint, Expect, Revoked, Verifier, VerifierConfig, VerifyError};
use support::{CONNECTOR, Cluster, full_run, percentile, workload_request};

fn spec(i: usize) -> TaskSpec {
    TaskSpec {
        connector: CONNECTOR.into(),
        user_sub: format!("user-{i}"),
        user_iss: "https://idp.example".into(),
        session: format!("session-{i}"),
        tools: vec!["github.search".into()],
        audiences: vec!["api.github.com".into()],
        classification: "internal".into(),
        action: "read".into(),
        ttl_seconds: 3600,
    }
}

#[tokio::main]
async fn main() {
    let count = match full_run() {
        true => std::env::var("LANYARD_BENCH_REVOCATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        false => 20,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let bundle_listen = format!("127.0.0.1:{port}");
    let mut cluster = Cluster::start(&["--bundle-listen", &bundle_listen]).await;
    cluster.create_connector().await;
    cluster.start_agent().await;
    let mut tasks = TasksClient::new(cluster.agent_channel().await);

    // Tasks and one token each, all accepted before any ends.
    let mut issued = Vec::with_capacity(count);
    for i in 0..count {
        let task = cluster.admin.begin_task(spec(i)).await.expect("begin task").into_inner().task_id;
        let request = FetchTaskTokenRequest {
            task_id: task.clone(),
            audience: "api.github.com".into(),
            tools: vec!["github.search".into()],
            action: "read".into(),
            ttl_seconds: 0,
        };
        let started = Instant::now();
        let token = loop {
            match tasks.fetch_task_token(workload_request(request.clone())).await {
                Ok(token) => break token.into_inner().token,
                // The agent may still be fetching its first SVID.
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("task token: {e}"),
            }
        };
        issued.push((task, token));
    }
    let url = format!("http://{bundle_listen}");
    let verifier = Verifier::start(Endpoint::new(&url, &[]).expect("url"), VerifierConfig::default().issuer(&url))
        .await
        .expect("verifier");
    let expect = Expect::audience("api.github.com").tool("github.search");
    for (_, token) in &issued {
        verifier.task_token(token, &expect).expect("accepted before the task ends");
    }

    let mut samples = Vec::with_capacity(count);
    for (task, token) in &issued {
        let ended = cluster.admin.end_task(AdminEndTaskRequest { task_id: task.clone() }).await.expect("end task");
        let acked = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), verifier.wait_for_seq(ended.into_inner().seq))
            .await
            .expect("the verifier did not see the revocation within 10 s");
        match verifier.task_token(token, &expect) {
            Err(VerifyError::Revoked(Revoked::Task(t))) if t == *task => samples.push(acked.elapsed()),
            other => panic!("task {task} ended but the verifier says {other:?}"),
        }
    }
    samples.sort();
    println!(
        "revocation visible to a verifier (task end ack -> refused), {} revocations: p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}
