//! The PostgreSQL store with real processes: two `lanyard server` replicas
//! over one database (`--store-url`), started under
//! `scripts/with-postgres.sh` (as `.ci/run` does). Without
//! `LANYARD_TEST_PG_URL` each test says it was skipped, unless
//! `LANYARD_REQUIRE_PG` is set (CI), where that fails.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lanyard_proto::workload::X509svidRequest;

use crate::harness::{
    CONNECTOR, GITHUB, SEARCH, SVID_TIMEOUT, TaskRig, TaskSpec, TestAgent, TestServer, eventually, eventually_async,
    lanyard, own_selector, refused, spiffe_id, success, task_id, wait_served,
};

/// A new, empty database on the test server, as a `--store-url`.
fn database() -> Option<String> {
    let Ok(admin) = std::env::var("LANYARD_TEST_PG_URL") else {
        assert!(
            std::env::var_os("LANYARD_REQUIRE_PG").is_none(),
            "LANYARD_REQUIRE_PG is set but LANYARD_TEST_PG_URL is not"
        );
        eprintln!("skipped: no LANYARD_TEST_PG_URL (run under scripts/with-postgres.sh)");
        return None;
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("lanyard_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    // Its own thread and runtime: callers may be async tests.
    let create = format!("CREATE DATABASE {name}");
    let server = admin.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&create).await.unwrap();
        });
    })
    .join()
    .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

#[test]
fn replicas_share_entries_tasks_and_revocations_through_one_database() {
    let Some(url) = database() else { return };
    // Replica A, with the agent and its workloads; replica B on the same database.
    let rig = TaskRig::start(&["--store-url", &url], &[]);
    let b = TestServer::start_with(&["--store-url", &url]);
    assert!(b.entries().iter().any(|e| e["spiffe_id"] == CONNECTOR), "B lists what A wrote: {:?}", b.entries());

    // A task begun on B; its tokens minted through the agent on A.
    let task = task_id("task begin on B", &b.admin(&TaskSpec::default().args()));
    rig.token(&task, GITHUB, &[SEARCH], "read");
    // Ended on B: A refuses the next mint at once.
    b.admin_ok(&["task", "end", &task]);
    refused(
        "a token after task end on the other replica",
        &rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read"),
        "the task has ended",
    );

    // An entry created on B reaches the agent attested to A (revision sync through NOTIFY).
    let extra = spiffe_id("connector/from-b");
    b.create_entry(&extra, &rig.agent.spiffe_id(), &[&own_selector()], &[]);
    eventually(SVID_TIMEOUT, "the entry created on B to be served by A's agent", || {
        let out =
            lanyard().args(["svid", "fetch", "--output", "json", "--socket", &rig.agent.endpoint()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(&extra) { Ok(()) } else { Err(text) }
    });

    // One audit chain, whichever replica wrote; it verifies through either.
    for server in [&rig.server, &b] {
        let out = server.admin(&["audit", "verify"]);
        success("audit verify", &out);
    }
    let kinds: Vec<String> =
        b.audit_query(&[]).iter().map(|r| r["event"]["kind"].as_str().unwrap_or_default().to_owned()).collect();
    for kind in ["entry.create", "task.begin", "tasktoken.mint", "task.end", "x509svid.mint"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn a_join_token_raced_on_two_replicas_attests_exactly_one_agent() {
    let Some(url) = database() else { return };
    let a = TestServer::start_with(&["--store-url", &url]);
    let b = TestServer::start_with(&["--store-url", &url]);
    let token = a.join_token("racer", "10m");
    // Two agents started at once, one on each replica, with the one token.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, a.bundle_pem()).unwrap();
    let mut racers: Vec<std::process::Child> = [&a, &b]
        .iter()
        .enumerate()
        .map(|(n, server)| {
            let data = dir.path().join(format!("agent{n}"));
            let socket = format!("unix://{}", dir.path().join(format!("agent{n}.sock")).display());
            lanyard()
                .args(["agent", "run", "--data-dir", data.to_str().unwrap(), "--server", &server.addr()])
                .args(["--trust-bundle", ca.to_str().unwrap(), "--socket", &socket, &format!("--join-token={token}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let (loser, status) = eventually(SVID_TIMEOUT, "one of the two agents to be refused", || {
        for (n, racer) in racers.iter_mut().enumerate() {
            if let Some(status) = racer.try_wait().unwrap() {
                return Ok((n, status));
            }
        }
        Err("both still running")
    });
    assert!(!status.success(), "the loser exits refused");
    assert!(racers[1 - loser].try_wait().unwrap().is_none(), "the winner attested and keeps running");
    for racer in &mut racers {
        let _ = racer.kill();
        let _ = racer.wait();
    }
    assert_eq!(a.agents().len(), 1, "{:?}", a.agents());
}

#[test]
fn a_server_restarted_on_its_database_keeps_everything() {
    let Some(url) = database() else { return };
    let mut server = TestServer::start_with(&["--store-url", &url]);
    let agent = TestAgent::start(&server, "node1");
    let id = spiffe_id("connector/kept");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    let before = server.admin_ok(&["bundle", "show"]);
    server.kill();
    server.restart();
    assert!(server.entries().iter().any(|e| e["spiffe_id"] == id.as_str()), "{:?}", server.entries());
    assert_eq!(server.admin_ok(&["bundle", "show"]), before, "the same CA after a restart");
    success("audit verify", &server.admin(&["audit", "verify"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_another_replica_when_its_replica_dies() {
    let Some(url) = database() else { return };
    let mut a = TestServer::start_with(&["--store-url", &url]);
    let b = TestServer::start_with(&["--store-url", &url]);
    // Attested through A; B is its second server. SVIDs live 20 s, so they rotate while A is down.
    let token = a.join_token("node1", "10m");
    let agent =
        TestAgent::start_with_token_args(&a, "node1", &[format!("--join-token={token}"), "--server".into(), b.addr()]);
    let first = spiffe_id("connector/first");
    a.create_entry(&first, &agent.spiffe_id(), &[&own_selector()], &["--x509-ttl", "20s"]);
    let served = wait_served(&agent, &first, SVID_TIMEOUT).await;
    let mut stream = crate::harness::workload_client(&agent.socket())
        .await
        .unwrap()
        .fetch_x509svid(crate::harness::with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();

    a.kill();
    // An entry created on B after A died reaches the agent: it moved to B.
    let second = spiffe_id("connector/second");
    b.create_entry(&second, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &second, SVID_TIMEOUT).await;
    // The stream opened before A died is still open and carries the rotated SVID.
    let rotated = eventually_async(Duration::from_secs(30), "a rotated SVID on the open stream", async || {
        let message = stream.message().await.map_err(|s| s.to_string())?.ok_or("the stream ended")?;
        let now = crate::harness::served(&message).into_iter().find(|s| s.spiffe_id == first).ok_or("no first SVID")?;
        if now.leaf.serial != served.leaf.serial { Ok(now.leaf.serial) } else { Err("not rotated yet".to_owned()) }
    })
    .await;
    assert_ne!(rotated, served.leaf.serial);
}

#[test]
fn a_populated_sled_store_migrates_with_its_audit_chain() {
    let Some(url) = database() else { return };
    // A sled server with entries, an agent, a task, an ended task and a revoked token.
    let rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");
    let ended = rig.begin(&TaskSpec { session: "S2", ..TaskSpec::default() });
    rig.server.admin_ok(&["task", "end", &ended]);
    rig.server.admin_ok(&["token", "revoke", "some-jti"]);
    let entries = rig.server.admin_ok(&["entry", "list", "--output", "json"]);
    let tasks = rig.server.admin_ok(&["task", "list", "--output", "json"]);
    let bundle = rig.server.admin_ok(&["bundle", "show"]);
    let TaskRig { mut server, agent, .. } = rig;
    drop(agent);
    server.stop();

    let migrate =
        || lanyard().args(["store", "migrate", "--from-data-dir"]).arg(server.data_dir()).args(["--to", &url]).output();
    let said = success("store migrate", &migrate().unwrap());
    assert!(said.contains("the audit chain verifies"), "{said}");
    // Into a database that already holds a store: refused, one line.
    let again = migrate().unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists") && stderr.lines().count() == 1, "{stderr}");

    // A server on the database: the same entries, tasks and CA; the chain verifies; the revocations are there.
    let pg = TestServer::start_with(&["--store-url", &url]);
    assert_eq!(pg.admin_ok(&["entry", "list", "--output", "json"]), entries);
    assert_eq!(pg.admin_ok(&["task", "list", "--output", "json"]), tasks);
    assert_eq!(pg.admin_ok(&["bundle", "show"]), bundle);
    success("audit verify", &pg.admin(&["audit", "verify"]));
    let kinds: Vec<String> =
        pg.audit_query(&[]).iter().map(|r| r["event"]["kind"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(kinds.iter().any(|k| k == "token.revoke") && kinds.iter().any(|k| k == "task.end"), "{kinds:?}");
    // The migrated task still mints under the migrated keys and policies' state: it was begun on sled.
    let out = pg.admin(&["task", "end", &task]);
    success("task end on the migrated store", &out);
}

#[test]
fn every_token_returned_before_a_replica_is_sigkilled_has_its_audit_record() {
    let Some(url) = database() else { return };
    crate::audit::tokens_returned_before_sigkill_are_audited(TaskRig::start(&["--store-url", &url], &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_on_one_replica_refuses_within_a_second_of_a_revocation_on_the_other() {
    let Some(url) = database() else { return };
    let rig = TaskRig::start_with_bundle(&["--store-url", &url], &[]);
    let b = TestServer::start_with(&["--store-url", &url]);
    let verifier = crate::verify::start_verifier(&rig.server).await;
    let expect = lanyard_verify::Expect::audience(GITHUB).tool(SEARCH).action("read");
    let task = rig.begin(&TaskSpec::default());
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");
    verifier.task_token(&token, &expect).unwrap();
    // Ended on B; the verifier follows A's feed, which hears of it through NOTIFY.
    b.admin_ok(&["task", "end", &task]);
    let refused = crate::verify::time_until(Duration::from_secs(1), || verifier.task_token(&token, &expect).is_err());
    assert!(refused.is_some(), "A's verifier still accepts the token 1 s after B acknowledged the end");
}
