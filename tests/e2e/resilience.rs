//! Behaviour over time and under failure: open streams follow entry changes
//! and SVIDs rotate on them before they expire, the agent serves its cache
//! while the server is away and catches up when it returns, and no
//! acknowledged admin write is lost to a SIGKILL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lanyard_proto::workload::{X509svidRequest, X509svidResponse};

use crate::harness::{
    COMMAND_TIMEOUT, GITHUB, SEARCH, SVID_TIMEOUT, Served, TaskRig, TaskSpec, TestAgent, TestServer, fetch_x509,
    lanyard, own_selector, run, served, spiffe_id, wait_served, with_header, workload_client,
};

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Registers `id` for this process with `--x509-ttl ttl`, waits until it is
/// served, and opens a FetchX509SVID stream; the stream and its first SVID.
async fn stream_short_lived(
    server: &TestServer,
    agent: &TestAgent,
    id: &str,
    ttl: &str,
) -> (tonic::Streaming<X509svidResponse>, Served) {
    server.create_entry(id, &agent.spiffe_id(), &[&own_selector()], &["--x509-ttl", ttl]);
    wait_served(agent, id, SVID_TIMEOUT).await;
    let mut client = workload_client(&agent.socket()).await.unwrap();
    let mut stream = client.fetch_x509svid(with_header(X509svidRequest {})).await.unwrap().into_inner();
    let first = served(&stream.message().await.unwrap().unwrap());
    let first = first.into_iter().find(|s| s.spiffe_id == id).unwrap();
    (stream, first)
}

/// Reads the stream until it carries an SVID for `id` with another serial
/// than `first`, or until `first` expires; that SVID and when it arrived.
async fn next_rotation(
    agent: &TestAgent,
    stream: &mut tonic::Streaming<X509svidResponse>,
    id: &str,
    first: &Served,
) -> (Served, SystemTime) {
    let until_expiry = first.leaf.not_after.duration_since(SystemTime::now()).unwrap_or_default();
    let rotated = tokio::time::timeout(until_expiry, async {
        loop {
            let message = stream.message().await.unwrap().expect("the stream stays open");
            if let Some(s) = served(&message).into_iter().find(|s| s.spiffe_id == id)
                && s.leaf.serial != first.leaf.serial
            {
                return (s, SystemTime::now());
            }
        }
    })
    .await;
    rotated.unwrap_or_else(|_| {
        agent.fail(&format!("no rotated SVID before the first expired (notAfter {:.0})", secs(first.leaf.not_after)))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_stream_receives_rotated_svid_before_expiry() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "rotator");
    let id = spiffe_id("connector/short-lived");
    let (mut stream, first) = stream_short_lived(&server, &agent, &id, "20s").await;
    let issued = first.leaf.not_after - Duration::from_secs(20);
    assert!(first.leaf.not_before <= issued, "20s TTL: {:?}", first.leaf);

    let (second, arrived) = next_rotation(&agent, &mut stream, &id, &first).await;
    assert!(arrived < first.leaf.not_after, "rotated before expiry");
    assert_eq!(second.spiffe_id, id);
    assert!(second.leaf.not_after > first.leaf.not_after, "the new SVID outlives the old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_rotate_at_half_their_ttl() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "halflife");
    let id = spiffe_id("connector/ten-seconds");
    // 10s is the shortest TTL an entry may have.
    let (mut stream, first) = stream_short_lived(&server, &agent, &id, "10s").await;
    // notAfter = issue + TTL in whole seconds: at or before the real issue time.
    let issued = first.leaf.not_after - Duration::from_secs(10);

    let mut rotations = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(8);
    while let Ok(Some(message)) =
        tokio::time::timeout(watch_until.saturating_duration_since(Instant::now()), stream.message())
            .await
            .map(Result::unwrap)
    {
        let now = SystemTime::now();
        for s in served(&message).into_iter().filter(|s| s.spiffe_id == id) {
            if s.leaf.serial != first.leaf.serial && !rotations.iter().any(|(serial, _)| *serial == s.leaf.serial) {
                rotations.push((s.leaf.serial, now));
            }
        }
    }
    let first_rotation = rotations.first().map(|(_, at)| secs(*at) - secs(issued));
    // Half of the TTL (5s), moved by at most 10% of it (1s) of jitter; 1s of
    // slack for whole-second timestamps and 2s for scheduling, late only.
    assert!(
        first_rotation.is_some_and(|t| (4.0..=9.0).contains(&t)) && rotations.len() <= 2,
        "first rotation {first_rotation:?}s after issue (expected 5s ±1s); {} rotations in 8s (expected at most 2)",
        rotations.len()
    );
}

/// Reads the stream until its served SPIFFE IDs (sorted) equal `want`.
async fn until_ids(agent: &TestAgent, stream: &mut tonic::Streaming<X509svidResponse>, want: &[&str]) {
    let reached = tokio::time::timeout(SVID_TIMEOUT, async {
        loop {
            let message = stream.message().await.unwrap().expect("the stream stays open");
            let mut ids: Vec<_> = served(&message).into_iter().map(|s| s.spiffe_id).collect();
            ids.sort();
            if ids == want {
                return;
            }
        }
    })
    .await;
    if reached.is_err() {
        agent.fail(&format!("the stream never carried exactly {want:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_stream_reports_entry_changes() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "changes");
    let a = spiffe_id("connector/a");
    let b = spiffe_id("connector/b");
    let a_entry = server.create_entry(&a, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &a, SVID_TIMEOUT).await;

    let mut client = workload_client(&agent.socket()).await.unwrap();
    let mut stream = client.fetch_x509svid(with_header(X509svidRequest {})).await.unwrap().into_inner();
    until_ids(&agent, &mut stream, &[&a]).await;
    // A new entry arrives on the open stream, with the old one...
    server.create_entry(&b, &agent.spiffe_id(), &[&own_selector()], &[]);
    until_ids(&agent, &mut stream, &[&a, &b]).await;
    // ... and a deleted one leaves it.
    server.admin_ok(&["entry", "delete", &a_entry]);
    until_ids(&agent, &mut stream, &[&b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_cache_during_server_outage_and_catches_up() {
    let mut server = TestServer::start();
    let agent = TestAgent::start(&server, "outage");
    let id = spiffe_id("connector/steady");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    let before = wait_served(&agent, &id, SVID_TIMEOUT).await;

    let stopping = Instant::now();
    let status = server.stop();
    eprintln!("server stopped {:?} after SIGTERM", stopping.elapsed());
    assert!(status.success(), "server exit on SIGTERM: {status}");
    // The server is gone; the agent still answers, from its cache, the same SVID.
    let during = fetch_x509(&agent.socket())
        .await
        .unwrap_or_else(|s| agent.fail(&format!("no answer during the outage: {s:?}")));
    let during = served(&during);
    assert_eq!(during.len(), 1);
    assert_eq!(during[0].spiffe_id, id);
    assert_eq!(during[0].leaf.serial, before.leaf.serial, "same SVID");

    server.restart();
    let new_id = spiffe_id("connector/after-outage");
    server.create_entry(&new_id, &agent.spiffe_id(), &[&own_selector()], &[]);
    let started = Instant::now();
    wait_served(&agent, &new_id, Duration::from_secs(15)).await;
    eprintln!("new entry served {:?} after the restart", started.elapsed());
    // The old identity is still there too.
    let ids: Vec<_> = served(&fetch_x509(&agent.socket()).await.unwrap()).into_iter().map(|s| s.spiffe_id).collect();
    assert!(ids.contains(&id) && ids.contains(&new_id), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_promptly_on_sigterm_with_an_agent_connected() {
    let mut server = TestServer::start();
    let agent = TestAgent::start(&server, "connected");
    let id = spiffe_id("connector/connected");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &id, SVID_TIMEOUT).await;

    let stopping = Instant::now();
    let status = server.stop();
    let took = stopping.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "the server took {took:?} to stop on SIGTERM");
}

#[test]
fn server_stops_promptly_on_sigterm_with_a_task_token_stream_open() {
    // The agent keeps its MintTaskTokens stream open after the first token;
    // a graceful stop must end it rather than wait for the agent.
    let mut rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");
    let stopping = Instant::now();
    let status = rig.server.stop();
    let took = stopping.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "the server took {took:?} to stop on SIGTERM");
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let mut server = TestServer::start();
    let admin_socket = server.admin_socket();
    let stop = Arc::new(AtomicBool::new(false));
    let parent = spiffe_id("agent/burst");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let admin_socket = admin_socket.clone();
            let parent = parent.clone();
            std::thread::spawn(move || {
                let mut acknowledged = BTreeMap::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = spiffe_id(&format!("burst/w{w}-{i}"));
                    let mut cmd = lanyard();
                    cmd.args(["entry", "create", "--spiffe-id", &id, "--parent-id"])
                        .arg(&parent)
                        .args(["--selector", &format!("unix:uid:{}", 10_000 + i)])
                        .args(["--output", "json", "--admin-socket"])
                        .arg(&admin_socket);
                    let output = run(cmd, COMMAND_TIMEOUT);
                    if output.status.success() {
                        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
                        acknowledged.insert(json["id"].as_str().unwrap().to_owned(), id);
                    }
                    i += 1;
                }
                acknowledged
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1000));
    server.kill();
    // Let every in-flight create finish (they fail now), then stop the loops.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: BTreeMap<String, String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acknowledged.len() >= 4, "the burst should have had some creates acknowledged: {}", acknowledged.len());

    server.restart();
    let stored: BTreeMap<String, String> = server
        .entries()
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["spiffe_id"].as_str().unwrap().to_owned()))
        .collect();
    let lost: Vec<_> = acknowledged.iter().filter(|(id, sid)| stored.get(*id) != Some(sid)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged entries lost after SIGKILL: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    eprintln!("{} acknowledged, {} stored after restart", acknowledged.len(), stored.len());
}
