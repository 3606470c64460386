//! The security invariants of DESIGN.md, each shown refusing: callers get
//! only what their attested selectors match, agents only what they parent,
//! banned agents nothing new; join tokens are single-use, expire and are
//! stored hashed; the Workload API insists on its header; the admin socket
//! is 0600.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use lanyard_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::harness::{
    SVID_TIMEOUT, TestAgent, TestServer, eventually, eventually_async, fetch_jwt, fetch_x509, other_uid, own_selector,
    served_ids, spiffe_id, stderr_lines, wait_served, wait_synced, with_header, workload_client,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_that_no_entry_matches_gets_no_identity_issued() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "nomatch");
    // Only another uid is registered on this agent.
    let not_us = format!("unix:uid:{}", other_uid());
    server.create_entry(&spiffe_id("connector/someone-else"), &agent.spiffe_id(), &[&not_us], &[]);

    let x509 = wait_synced(&agent).await;
    let status = x509.expect_err("a caller no entry matches must get no X.509-SVID");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");

    let status = fetch_jwt(&agent.socket(), "some-tool", None)
        .await
        .expect_err("a caller no entry matches must get no JWT-SVID");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");

    // Asking for the other uid's identity by name changes nothing.
    let status = fetch_jwt(&agent.socket(), "some-tool", Some(&spiffe_id("connector/someone-else")))
        .await
        .expect_err("naming another workload's identity must not get it");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_requires_the_security_header() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "header");
    let id = spiffe_id("connector/header");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    // With the header this caller is served: what follows is about the header alone.
    wait_served(&agent, &id, SVID_TIMEOUT).await;

    let mut client = workload_client(&agent.socket()).await.unwrap();
    for header in [None, Some("false"), Some("1"), Some("TRUE")] {
        fn request<T>(message: T, header: Option<&'static str>) -> tonic::Request<T> {
            let mut req = tonic::Request::new(message);
            if let Some(value) = header {
                req.metadata_mut().insert(lanyard_proto::WORKLOAD_API_HEADER, MetadataValue::from_static(value));
            }
            req
        }
        let x509 = client.fetch_x509svid(request(X509svidRequest {}, header)).await.map(|_| ());
        let jwt = client
            .fetch_jwtsvid(request(
                JwtsvidRequest { audience: vec!["some-tool".into()], spiffe_id: String::new() },
                header,
            ))
            .await
            .map(|_| ());
        let validate = client
            .validate_jwtsvid(request(
                ValidateJwtsvidRequest { audience: "some-tool".into(), svid: "a.b.c".into() },
                header,
            ))
            .await
            .map(|_| ());
        let x509_bundles = client.fetch_x509_bundles(request(X509BundlesRequest {}, header)).await.map(|_| ());
        let jwt_bundles = client.fetch_jwt_bundles(request(JwtBundlesRequest {}, header)).await.map(|_| ());
        for (rpc, result) in [
            ("FetchX509SVID", x509),
            ("FetchJWTSVID", jwt),
            ("ValidateJWTSVID", validate),
            ("FetchX509Bundles", x509_bundles),
            ("FetchJWTBundles", jwt_bundles),
        ] {
            let status = result.expect_err(&format!("{rpc} with header {header:?} must fail"));
            assert_eq!(status.code(), Code::InvalidArgument, "{rpc} with header {header:?}: {status:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_32_audiences_is_invalid_argument() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "audiences");
    let id = spiffe_id("connector/audiences");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &id, SVID_TIMEOUT).await;

    let mut client = workload_client(&agent.socket()).await.unwrap();
    let request = |n: usize| {
        with_header(JwtsvidRequest { audience: (0..n).map(|i| format!("aud-{i}")).collect(), spiffe_id: String::new() })
    };
    let status = client.fetch_jwtsvid(request(33)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let ok = client.fetch_jwtsvid(request(32)).await.unwrap().into_inner();
    assert_eq!(ok.svids.len(), 1);
    assert_eq!(ok.svids[0].spiffe_id, id);
}

#[test]
fn join_token_is_single_use() {
    let server = TestServer::start();
    let token = server.join_token("once", "10m");
    let _first = TestAgent::start_with_token(&server, "once", &token);
    eventually(SVID_TIMEOUT, "the first agent to attest", || {
        let agents = server.agents();
        match agents.iter().any(|a| a["spiffe_id"] == spiffe_id("agent/once")) {
            true => Ok(()),
            false => Err(agents),
        }
    });

    // A second agent, in another data dir, with the same token.
    let second = TestAgent::run_to_exit(&server, &token, Duration::from_secs(20));
    assert!(!second.status.success(), "a reused join token was accepted");
    let lines = stderr_lines(&second);
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains("unknown or already used"), "last stderr line: {last:?}");

    // An agent attested once; no second one appeared.
    let agents = server.agents();
    assert_eq!(agents.len(), 1, "{agents:?}");
}

#[test]
fn unknown_join_token_is_refused() {
    let server = TestServer::start();
    let output = TestAgent::run_to_exit(
        &server,
        "bm90LWEtdG9rZW4tdGhhdC13YXMtZXZlci1pc3N1ZWQtYnktdGhpcw",
        Duration::from_secs(20),
    );
    assert!(!output.status.success(), "an unknown join token was accepted");
    let lines = stderr_lines(&output);
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains("unknown or already used"), "last stderr line: {last:?}");
    assert!(server.agents().is_empty());
}

#[test]
fn expired_join_token_is_refused() {
    let server = TestServer::start();
    let token = server.join_token("late", "1s");
    // Waiting for time to pass is the point here, so this is a sleep, not a poll.
    std::thread::sleep(Duration::from_millis(2100));
    let output = TestAgent::run_to_exit(&server, &token, Duration::from_secs(20));
    assert!(!output.status.success(), "an expired join token was accepted");
    let lines = stderr_lines(&output);
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains("expired"), "last stderr line: {last:?}");
    assert!(server.agents().is_empty(), "no agent was attested");
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn join_tokens_are_stored_hashed() {
    let server = TestServer::start();
    let name = "hashed-node-7f3a";
    let token = server.join_token(name, "10m");
    // The write is acknowledged only once durable, so it is on disk now.
    let files: Vec<Vec<u8>> = files_under(&server.data_dir()).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(
        files.iter().any(|f| contains(f, name.as_bytes())),
        "the token record (with its agent name) should be readable on disk"
    );
    assert!(
        !files.iter().any(|f| contains(f, token.as_bytes())),
        "the join token is stored in clear text in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_agent_gets_no_new_svids() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "tobeban");
    let socket = agent.socket();

    // Before the ban, a newly created entry is served.
    let before = spiffe_id("connector/before-ban");
    server.create_entry(&before, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &before, SVID_TIMEOUT).await;
    // ... and JWT-SVIDs are minted for it.
    fetch_jwt(&socket, "pre-ban-tool", None).await.unwrap();

    let out = server.admin_ok(&["agent", "ban", &agent.spiffe_id()]);
    assert!(out.contains(&agent.spiffe_id()), "{out}");
    let agents = server.agents();
    let record = agents
        .iter()
        .find(|a| a["spiffe_id"] == agent.spiffe_id())
        .unwrap_or_else(|| panic!("agent not listed: {agents:?}"));
    assert_eq!(record["banned"], true, "{record}");
    // Its name cannot be given a new join token.
    let out = server.admin(&["join-token", "create", "--name", "tobeban", "--ttl", "10m"]);
    assert!(!out.status.success(), "a join token for a banned agent's name");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is banned"), "{out:?}");

    // After the ban, a new entry for the same caller is never served.
    let after = spiffe_id("connector/after-ban");
    server.create_entry(&after, &agent.spiffe_id(), &[&own_selector()], &[]);
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        if let Ok(ids) = served_ids(&socket).await {
            assert!(!ids.contains(&after), "a banned agent served an entry created after the ban");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nor can it get a JWT-SVID minted (an audience it never asked for, so
    // nothing can come from its cache).
    let refused = fetch_jwt(&socket, "post-ban-tool", Some(&before)).await;
    assert!(refused.is_err(), "a banned agent got a new JWT-SVID minted: {refused:?}");
    let refused = fetch_jwt(&socket, "post-ban-tool", Some(&after)).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_never_serves_entries_parented_by_another_agent() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "this-node");
    // Created first: an entry for our uid under another agent...
    let foreign = spiffe_id("connector/foreign");
    server.create_entry(&foreign, &spiffe_id("agent/other"), &[&own_selector()], &[]);
    // ... then one under ours. Once ours is served the agent has synced past
    // the foreign one.
    let ours = spiffe_id("connector/ours");
    let ours_entry = server.create_entry(&ours, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &ours, SVID_TIMEOUT).await;

    let ids = served_ids(&agent.socket()).await.unwrap();
    assert_eq!(ids, vec![ours.clone()], "only this agent's entry is served");
    let jwt = fetch_jwt(&agent.socket(), "some-tool", None).await.unwrap();
    let jwt_ids: Vec<_> = jwt.svids.iter().map(|s| s.spiffe_id.clone()).collect();
    assert_eq!(jwt_ids, vec![ours]);
    let status = fetch_jwt(&agent.socket(), "some-tool", Some(&foreign))
        .await
        .expect_err("another agent's identity must not be served");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");

    // With no entry of its own left, the caller gets nothing at all.
    server.admin_ok(&["entry", "delete", &ours_entry]);
    let status = eventually_async(SVID_TIMEOUT, "the deletion to reach the agent", async || {
        match fetch_x509(&agent.socket()).await {
            Ok(r) => Err(r.svids.len()),
            Err(s) => Ok(s),
        }
    })
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");
}

#[test]
fn admin_socket_is_owner_only() {
    let server = TestServer::start();
    let meta = std::fs::symlink_metadata(server.admin_socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "admin socket mode is {:o}",
        meta.permissions().mode() & 0o777
    );
    // No staging directory is left next to it.
    let leftovers: Vec<_> = std::fs::read_dir(server.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".lanyard-admin"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A connection to the agent's `socket` made by a `python3` process, and
/// relayed to a socket of ours: the agent sees that process as the caller.
/// With `exit`, the process that connected forks and exits at once, leaving
/// a child to relay; otherwise it relays itself and stays alive.
fn connection_made_by_another_process(
    socket: &Path,
    relay: &Path,
    exit: bool,
) -> (std::os::unix::net::UnixStream, std::process::Child) {
    let script = "import os,socket,sys,threading\n\
                  s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n\
                  if sys.argv[3]=='exit' and os.fork()!=0: os._exit(0)\n\
                  l=socket.socket(socket.AF_UNIX); l.bind(sys.argv[2]); l.listen(1); c,_=l.accept()\n\
                  def pump(a,b):\n\
                  \x20 while True:\n\
                  \x20   d=a.recv(65536)\n\
                  \x20   if not d: break\n\
                  \x20   b.sendall(d)\n\
                  threading.Thread(target=pump,args=(s,c),daemon=True).start(); pump(c,s)\n";
    let child = std::process::Command::new("python3")
        .args(["-c", script, socket.to_str().unwrap(), relay.to_str().unwrap(), if exit { "exit" } else { "stay" }])
        .spawn()
        .unwrap();
    let stream =
        eventually(Duration::from_secs(10), "the relay socket", || std::os::unix::net::UnixStream::connect(relay));
    (stream, child)
}

/// FetchX509SVID over an already-connected socket.
async fn fetch_x509_over(stream: std::os::unix::net::UnixStream) -> Result<(), tonic::Status> {
    stream.set_nonblocking(true).unwrap();
    let stream = std::sync::Mutex::new(Some(tokio::net::UnixStream::from_std(stream).unwrap()));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = stream.lock().unwrap().take();
            async move {
                let stream = stream.ok_or_else(|| std::io::Error::other("used once"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    let mut client = lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel);
    let mut stream = client.fetch_x509svid(with_header(X509svidRequest {})).await?.into_inner();
    stream.message().await?.map(drop).ok_or_else(|| tonic::Status::unknown("no message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_process_has_exited_gets_no_identity() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("import socket; socket.send_fds")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIPPED: python3 with socket.send_fds is needed to make a connection in another process");
        return;
    }
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "exited");
    let id = spiffe_id("connector/by-uid");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &id, SVID_TIMEOUT).await;

    let dir = tempfile::tempdir().unwrap();
    // Control: the process that connected is alive (same uid): served.
    let (stream, mut alive) = connection_made_by_another_process(&agent.socket(), &dir.path().join("a"), false);
    fetch_x509_over(stream).await.expect("a live caller with a matching uid is served");
    alive.wait().unwrap();

    // The process that connected exits before the call (its child relays):
    // the agent cannot attest it — and a process that later reuses its PID
    // started after the connection, which the agent also refuses — so
    // nothing is served.
    let (stream, mut gone) = connection_made_by_another_process(&agent.socket(), &dir.path().join("b"), true);
    assert!(gone.wait().unwrap().success());
    let refused = fetch_x509_over(stream).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains(lanyard_agent::NO_IDENTITY), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_over_its_rate_is_told_to_slow_down_and_then_served_again() {
    let server = TestServer::start();
    let token = server.join_token("limited", "10m");
    let args = ["--join-token".to_owned(), token, "--workload-rate".to_owned(), "5".to_owned()];
    let agent = TestAgent::start_with_token_args(&server, "limited", &args);
    let id = spiffe_id("connector/limited");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    let socket = agent.socket();
    // Served once the entry arrives (the polling itself may hit the limit).
    eventually_async(SVID_TIMEOUT, "the first JWT-SVID", async || fetch_jwt(&socket, "a", None).await).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A burst of 30 from this one process: the first ten (2 s of rate) pass,
    // then ResourceExhausted.
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(fetch_jwt(&socket, "a", None).await.err().map(|e| e.code()));
    }
    let passed = codes.iter().filter(|c| c.is_none()).count();
    let limited = codes.iter().filter(|c| **c == Some(Code::ResourceExhausted)).count();
    assert!((8..=12).contains(&passed), "{passed} of 30 passed: {codes:?}");
    assert_eq!(passed + limited, 30, "refusals are ResourceExhausted: {codes:?}");
    // A second later there are tokens again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fetch_jwt(&socket, "a", None).await.expect("served again after a pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_may_hold_only_so_many_workload_api_streams() {
    let server = TestServer::start();
    let token = server.join_token("streams", "10m");
    let args = ["--join-token".to_owned(), token, "--workload-streams".to_owned(), "2".to_owned()];
    let agent = TestAgent::start_with_token_args(&server, "streams", &args);
    let id = spiffe_id("connector/streams");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    wait_served(&agent, &id, SVID_TIMEOUT).await;
    let socket = agent.socket();
    let open = async || -> Result<tonic::Streaming<lanyard_proto::workload::X509BundlesResponse>, tonic::Status> {
        let mut client = workload_client(&socket).await?;
        let mut stream = client.fetch_x509_bundles(with_header(X509BundlesRequest {})).await?.into_inner();
        stream.message().await?;
        Ok(stream)
    };
    let first = open().await.unwrap();
    let _second = open().await.unwrap();
    let third = open().await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("--workload-streams"), "{third:?}");
    // Closing one gives its place back.
    drop(first);
    eventually_async(Duration::from_secs(5), "a stream after one was closed", async || open().await).await;
}
