//! Relying services: `lanyard token verify` and `lanyard-verify` against a
//! real server's bundle endpoint, the revocation feed seen within a second
//! and across a restart, the example tool service and MCP connector, and
//! PyJWT through OIDC discovery.

use std::io::{Read as _, Write as _};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lanyard_verify::{Endpoint, Expect, Revoked, Verifier, VerifierConfig, VerifyError};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use crate::harness::{
    COMMAND_TIMEOUT, CONNECTOR, GITHUB, READ_FILE, SEARCH, SVID_TIMEOUT, TaskRig, TaskSpec, TestServer, UPLOADS,
    b64url, jws_part, lanyard, run, success, wait_served,
};

/// `lanyard token verify --bundle-url <the server's> ARGS`.
fn verify(server: &TestServer, args: &[&str]) -> Output {
    let mut cmd = lanyard();
    cmd.args(["token", "verify", "--bundle-url", &server.bundle_url()]).args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// Asserts `token verify` refused: exit 1, one line, containing `why`.
fn verify_refused(what: &str, output: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{what}: expected exit 1: {stderr}");
    assert!(output.stdout.is_empty(), "{what}: printed claims: {}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: one line: {stderr}");
    assert!(stderr.contains(why), "{what}: expected {why:?} in {stderr}");
}

/// A plain HTTP/1.0 GET of `url` + `path` with optional headers: status and body.
pub(crate) fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// `header.claims` signed ES256 with a fresh key nobody knows.
fn sign_with_stranger(header: &Value, claims: &Value) -> String {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let signature = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(signature.as_ref()))
}

#[test]
fn token_verify_accepts_a_task_token_and_refuses_forgeries_misuse_and_revocation() {
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let url = rig.server.bundle_url();
    let task = rig.begin(&TaskSpec { tools: &[SEARCH, READ_FILE], ..TaskSpec::default() });
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");

    // Accepted: the claims as JSON, `iss` the issuer the discovery document names.
    let out = verify(&rig.server, &["--audience", GITHUB, "--tool", SEARCH, "--action", "read", &token]);
    let claims: Value = serde_json::from_str(&success("token verify", &out)).unwrap();
    assert_eq!((claims["txn"].as_str(), claims["sub"].as_str()), (Some(task.as_str()), Some(CONNECTOR)), "{claims}");
    assert_eq!(claims["iss"], url.as_str(), "{claims}");
    assert_eq!(claims["user"]["sub"], "alice", "{claims}");
    // Also from standard input, and against the `/bundle` URL itself.
    let mut cmd = lanyard();
    cmd.args(["token", "verify", "--bundle-url", &format!("{url}/bundle"), "--audience", GITHUB, "-"]);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    success("token verify from stdin", &child.wait_with_output().unwrap());

    // A bundle file: checked without revocations, and says so.
    let file = rig.server.dir().join("bundle.json");
    std::fs::write(&file, rig.server.admin_ok(&["bundle", "show", "--format", "spiffe"])).unwrap();
    let mut cmd = lanyard();
    cmd.args(["token", "verify", "--bundle", file.to_str().unwrap(), "--audience", GITHUB, "--tool", SEARCH, &token]);
    let out = run(cmd, COMMAND_TIMEOUT);
    success("token verify --bundle FILE", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("revocations were not checked"));

    // Misuse of a genuine token.
    let out = verify(&rig.server, &["--audience", UPLOADS, &token]);
    verify_refused("another audience", &out, "wrong audience");
    let out = verify(&rig.server, &["--audience", GITHUB, "--tool", READ_FILE, &token]);
    verify_refused("a tool the token does not grant", &out, "github.read_file\" is not in the token");
    let out = verify(&rig.server, &["--audience", GITHUB, "--tool", SEARCH, "--action", "write", &token]);
    verify_refused("an action the token does not allow", &out, "action \"write\"");
    let out = verify(&rig.server, &["--audience", GITHUB, "--issuer", "https://elsewhere.example", &token]);
    verify_refused("another issuer", &out, "wrong issuer");
    let jwt_svid = success("jwt fetch", &rig.connector.run(&["jwt", "fetch", "--audience", GITHUB])).trim().to_owned();
    let out = verify(&rig.server, &["--audience", GITHUB, &jwt_svid]);
    verify_refused("a plain JWT-SVID where a task token is required", &out, "not task tokens");
    let out = verify(&rig.server, &["--audience", GITHUB, "--jwt-svid", &jwt_svid]);
    let svid_claims: Value = serde_json::from_str(&success("token verify --jwt-svid", &out)).unwrap();
    assert_eq!(svid_claims["sub"], CONNECTOR);

    // Forgeries.
    let header = jws_part(&token, 0);
    let payload = jws_part(&token, 1);
    let [h, p, s] = <[&str; 3]>::try_from(token.split('.').collect::<Vec<_>>()).unwrap();
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": header["kid"]});
    let alg_none = format!("{}.{p}.", b64url(none_header.to_string().as_bytes()));
    let alg_none_signed = format!("{}.{p}.{s}", b64url(none_header.to_string().as_bytes()));
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]});
    let hs_input = format!("{}.{p}", b64url(hs_header.to_string().as_bytes()));
    let (_, jwks) = http_get(&url, "/keys", &[]);
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks.as_bytes());
    let hs256 = format!("{hs_input}.{}", b64url(ring::hmac::sign(&hmac_key, hs_input.as_bytes()).as_ref()));
    let mut wider = payload.clone();
    wider["scope"] = json!("tool:github.search tool:github.create_issue");
    let tampered = format!("{h}.{}.{s}", b64url(wider.to_string().as_bytes()));
    let unknown_kid = sign_with_stranger(&json!({"alg": "ES256", "typ": "JWT", "kid": "not-a-key"}), &payload);
    let stolen_kid = sign_with_stranger(&header, &payload);
    for (what, forged, why) in [
        ("alg none, no signature", alg_none.as_str(), "malformed"),
        ("alg none with a signature", &alg_none_signed, "unsupported alg \"none\""),
        ("HS256 keyed with the public keys", &hs256, "unsupported alg \"HS256\""),
        ("a payload changed after signing", &tampered, "bad signature"),
        ("an unknown kid", &unknown_kid, "unknown kid"),
        ("a stranger's key under a real kid", &stolen_kid, "bad signature"),
        ("not a JWS", "eyJ.abc", "malformed"),
    ] {
        verify_refused(what, &verify(&rig.server, &["--audience", GITHUB, forged]), why);
    }

    // The task ends: the same genuine token is refused.
    rig.server.admin_ok(&["task", "end", &task]);
    let out = verify(&rig.server, &["--audience", GITHUB, "--tool", SEARCH, &token]);
    verify_refused("a token of an ended task", &out, &format!("revoked: task {task} ended"));

    // Bad invocations: exit non-zero with one line.
    let out = verify(&rig.server, &["--audience", GITHUB, "--bundle", "x.json", &token]);
    assert!(!out.status.success());
    let mut cmd = lanyard();
    cmd.args(["token", "verify", "--bundle-url", "http://127.0.0.1:1", "--audience", GITHUB, &token]);
    let out = run(cmd, COMMAND_TIMEOUT);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "{out:?}");
}

/// `claims` signed ES256 by `key` under `kid`.
fn sign_as(key: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let signature = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(signature.as_ref()))
}

#[test]
fn token_verify_refuses_bad_times_and_two_audiences_even_when_the_signature_is_good() {
    // A bundle file holding the server's CA and one task-token key of ours,
    // so that tokens with bad claims carry a good signature: the claim
    // checks, not the signature, must refuse them.
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    let genuine = jws_part(&rig.token(&task, GITHUB, &[SEARCH], "read"), 1);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = ring::signature::KeyPair::public_key(&key).as_ref().to_vec();
    let mut bundle: Value =
        serde_json::from_str(&rig.server.admin_ok(&["bundle", "show", "--format", "spiffe"])).unwrap();
    bundle["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        "kid": "e2e-key", "use": "jwt-svid", "lanyard_purpose": "task-token",
    }));
    let file = rig.server.dir().join("bundle-with-our-key.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    let check = |claims: &Value| {
        let mut cmd = lanyard();
        cmd.args(["token", "verify", "--bundle", file.to_str().unwrap(), "--audience", GITHUB]);
        cmd.arg(sign_as(&key, "e2e-key", claims));
        run(cmd, COMMAND_TIMEOUT)
    };
    success("our key's copy of a genuine token", &check(&genuine));
    let now = genuine["iat"].as_u64().unwrap();
    let edits: [(&str, &str, Value); 4] = [
        ("expired", "exp", json!(now - 120)),
        ("not yet valid", "nbf", json!(now + 600)),
        ("issued in the future", "iat", json!(now + 600)),
        ("wrong audience", "aud", json!([GITHUB, UPLOADS])),
    ];
    for (why, claim, value) in edits {
        let mut claims = genuine.clone();
        claims[claim] = value;
        verify_refused(why, &check(&claims), why);
    }
}

#[test]
fn token_verify_over_https_trusts_only_the_given_ca() {
    let certs = tempfile::tempdir().unwrap();
    let write_cert = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let (cert_path, key_path) =
            (certs.path().join(format!("{name}.pem")), certs.path().join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path.to_str().unwrap().to_owned(), key_path.to_str().unwrap().to_owned())
    };
    let (cert, key) = write_cert("endpoint");
    let (other_ca, _) = write_cert("other");
    let rig = TaskRig::start_with_bundle(&["--bundle-tls-cert", &cert, "--bundle-tls-key", &key], &[]);
    let task = rig.begin(&TaskSpec::default());
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");
    let url = format!("https://localhost:{}", rig.server.bundle_port());
    let verify_https = |extra: &[&str]| {
        let mut cmd = lanyard();
        cmd.args(["token", "verify", "--bundle-url", &url, "--audience", GITHUB]).args(extra).arg(&token);
        run(cmd, COMMAND_TIMEOUT)
    };
    let claims: Value =
        serde_json::from_str(&success("token verify over https", &verify_https(&["--ca", &cert]))).unwrap();
    assert_eq!(claims["txn"], task.as_str());
    assert!(claims["iss"].as_str().unwrap().starts_with("https://"), "{claims}");
    for (what, extra, why) in [
        ("no CA given", &[][..], "no system roots are trusted"),
        ("another CA", &["--ca", other_ca.as_str()][..], "TLS"),
    ] {
        let out = verify_https(extra);
        assert!(!out.status.success(), "{what}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains(why), "{what}: expected {why:?} in {stderr}");
    }
}

/// Polls `check` every millisecond until it passes; how long that took, or
/// `None` after `limit`.
pub(crate) fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

pub(crate) fn start_verifier(server: &TestServer) -> impl Future<Output = Verifier> {
    let url = server.bundle_url();
    async move {
        let endpoint = Endpoint::new(&url, &[]).unwrap();
        Verifier::start(endpoint, VerifierConfig::default().issuer(url)).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_refuses_within_a_second_of_task_end_session_revoke_and_risk_report() {
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let verifier = start_verifier(&rig.server).await;
    let expect = Expect::audience(GITHUB).tool(SEARCH).action("read");
    let specs = [
        TaskSpec { user: "alice", session: "s-alice", ..TaskSpec::default() },
        TaskSpec { user: "bob", session: "s-bob", ..TaskSpec::default() },
        TaskSpec { user: "carol", session: "s-carol", ..TaskSpec::default() },
    ];
    let tasks: Vec<String> = specs.iter().map(|spec| rig.begin(spec)).collect();
    let tokens: Vec<String> = tasks.iter().map(|task| rig.token(task, GITHUB, &[SEARCH], "read")).collect();
    for token in &tokens {
        verifier.task_token(token, &expect).unwrap();
    }

    type IsExpected = fn(&VerifyError) -> bool;
    let revocations: [(&[&str], IsExpected); 3] = [
        (&["task", "end", &tasks[0]], |e| matches!(e, VerifyError::Revoked(Revoked::Task(_)))),
        (&["session", "revoke", "s-bob"], |e| matches!(e, VerifyError::Revoked(Revoked::Session(_)))),
        (
            &["risk", "report", "--user", "carol", "--level", "high"],
            |e| matches!(e, VerifyError::Revoked(Revoked::Risk(s)) if s.starts_with("user:carol")),
        ),
    ];
    for ((command, is_expected), token) in revocations.into_iter().zip(&tokens) {
        rig.server.admin_ok(command);
        // From the acknowledgement of the revocation to the verifier refusing.
        let refused = time_until(Duration::from_secs(1), || verifier.task_token(token, &expect).is_err());
        assert!(refused.is_some(), "{command:?}: the verifier still accepts the token 1 s after the ack");
        let error = verifier.task_token(token, &expect).unwrap_err();
        assert!(is_expected(&error), "{command:?}: refused for another reason: {error}");
    }
    assert_eq!(verifier.revocation_seq(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_survives_a_restart_and_followers_see_every_event() {
    let mut rig = TaskRig::start_with_bundle(&[], &[]);
    let url = rig.server.bundle_url();
    let expect = Expect::audience(GITHUB);
    let verifier = start_verifier(&rig.server).await;
    let tasks: Vec<String> = (0..3).map(|_| rig.begin(&TaskSpec::default())).collect();
    let tokens: Vec<String> = tasks.iter().map(|task| rig.token(task, GITHUB, &[SEARCH], "read")).collect();

    rig.server.admin_ok(&["task", "end", &tasks[0]]);
    tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(1)).await.unwrap();
    let (_, before) = http_get(&url, "/v1/revocations?after=0", &[]);
    let before: Value = serde_json::from_str(&before).unwrap();

    rig.server.stop();
    rig.server.restart();
    // The verifier keeps its view through the outage and reconnects; the
    // feed continues from where it was.
    rig.server.admin_ok(&["task", "end", &tasks[1]]);
    rig.server.admin_ok(&["task", "end", &tasks[2]]);
    tokio::time::timeout(Duration::from_secs(15), verifier.wait_for_seq(3)).await.unwrap();
    for (token, task) in tokens.iter().zip(&tasks) {
        let error = verifier.task_token(token, &expect).unwrap_err();
        assert_eq!(error, VerifyError::Revoked(Revoked::Task(task.clone())));
    }

    // A follower reading from the start sees every event in order, the old
    // ones unchanged.
    let (status, after) = http_get(&url, "/v1/revocations?after=0", &[]);
    assert_eq!(status, 200);
    let page = lanyard_verify::parse_page(after.as_bytes(), &verifier.bundle().bundle).unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let subjects: Vec<&str> = page.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, tasks.iter().map(String::as_str).collect::<Vec<_>>());
    let after: Value = serde_json::from_str(&after).unwrap();
    // (ECDSA signatures differ on each signing; the signed claims do not.)
    let claims = |page: &Value| jws_part(page["events"][0].as_str().unwrap(), 1);
    assert_eq!(claims(&after), claims(&before), "event 1 is the same event after the restart");
    // One reconnecting from event 1 gets exactly what it missed.
    let (_, missed) = http_get(&url, "/v1/revocations?after=1", &[]);
    let missed = lanyard_verify::parse_page(missed.as_bytes(), &verifier.bundle().bundle).unwrap();
    assert_eq!(missed.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    // A verifier started now (from the snapshot) refuses all three.
    let fresh = start_verifier(&rig.server).await;
    assert_eq!(fresh.revocation_seq(), 3);
    for token in &tokens {
        assert!(matches!(fresh.task_token(token, &expect), Err(VerifyError::Revoked(Revoked::Task(_)))));
    }
}

/// Reads one JSON-RPC message (a line) from the MCP server.
async fn read_message(reader: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Value {
    use tokio::io::AsyncBufReadExt as _;
    let mut line = String::new();
    tokio::time::timeout(COMMAND_TIMEOUT, reader.read_line(&mut line)).await.unwrap().unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_connector_calls_the_tool_service_with_a_fresh_task_token_per_call() {
    use rmcp::ServiceExt as _;
    use tokio::io::AsyncWriteExt as _;

    let rig = TaskRig::start_with_bundle(&[], &[]);
    // This test process runs the connector: it is registered as the
    // connector identity by its own executable path.
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let ceilings = ["--tool", SEARCH, "--tool", READ_FILE, "--audience", GITHUB, "--max-classification", "internal"];
    rig.server.create_entry(CONNECTOR, &rig.agent.spiffe_id(), &[&format!("unix:path:{}", me.display())], &ceilings);
    wait_served(&rig.agent, CONNECTOR, SVID_TIMEOUT).await;

    // The tool service, behind lanyard-verify.
    let verifier = start_verifier(&rig.server).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tool_url = format!("http://{}", listener.local_addr().unwrap());
    let app = lanyard_example_tool_service::router(verifier, GITHUB);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The MCP connector, spoken to over an in-memory pipe as an MCP host would.
    let connector =
        lanyard_example_mcp_connector::Connector::new(rig.agent.socket(), tool_url.parse().unwrap(), GITHUB.to_owned());
    let (host, server_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Ok(running) = connector.serve(tokio::io::split(server_io)).await {
            let _ = running.waiting().await;
        }
    });
    let (reader, mut writer) = tokio::io::split(host);
    let mut reader = tokio::io::BufReader::new(reader);
    let mut send = async |message: Value| {
        writer.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    };
    send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e-host", "version": "1"}}}))
    .await;
    let init = read_message(&mut reader).await;
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;

    let task = rig.begin(&TaskSpec::default());
    let call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "search_issues", "arguments": {"task": task, "query": "flaky test"}}})
    };
    send(call(2)).await;
    let answer = read_message(&mut reader).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    let body: Value = serde_json::from_str(text).unwrap();
    // The tool saw the connector and the user apart, and the task.
    assert_eq!(body["connector"], CONNECTOR, "{body}");
    assert_eq!(body["user"], "alice", "{body}");
    assert_eq!(body["task"], task.as_str(), "{body}");
    assert_eq!(body["query"], "flaky test", "{body}");

    // The tool service refuses tokens for another audience, another tool, a revoked task.
    let other =
        rig.begin(&TaskSpec { tools: &[SEARCH, READ_FILE], audiences: &[GITHUB, UPLOADS], ..TaskSpec::default() });
    let for_uploads = rig.token(&other, UPLOADS, &[SEARCH], "read");
    let read_file_only = rig.token(&other, GITHUB, &[READ_FILE], "read");
    let search = rig.token(&other, GITHUB, &[SEARCH], "read");
    let get = |token: &str| {
        let bearer = format!("Bearer {token}");
        http_get(&tool_url, "/search?q=x", &[("Authorization", &bearer)])
    };
    assert_eq!(get(&search).0, 200);
    assert_eq!(get(&for_uploads).0, 401, "a token for another audience");
    assert_eq!(get(&read_file_only).0, 403, "a token for another tool");
    assert_eq!(http_get(&tool_url, "/search?q=x", &[]).0, 401, "no token");
    rig.server.admin_ok(&["task", "end", &other]);
    let refused = time_until(Duration::from_secs(1), || get(&search).0 == 401);
    assert!(refused.is_some(), "the tool service still accepts a token of an ended task");

    // The task ends: the connector's next call gets no token, so no tool call.
    rig.server.admin_ok(&["task", "end", &task]);
    send(call(3)).await;
    let answer = read_message(&mut reader).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("Lanyard refused") && text.contains("ended"), "{text}");
}

#[test]
fn pyjwt_verifies_a_task_token_through_oidc_discovery_alone() {
    let probe = Command::new("python3").args(["-c", "import jwt, cryptography"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3 with PyJWT[crypto] is not installed (.ci/run installs it)");
        return;
    }
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python-verify/verify.py");
    let python = |args: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.arg(script).args(args);
        run(cmd, COMMAND_TIMEOUT)
    };
    let url = rig.server.bundle_url();
    let out = python(&[&url, GITHUB, &token, SEARCH]);
    let claims: Value = serde_json::from_str(&success("verify.py", &out)).unwrap();
    assert_eq!(claims["txn"], task.as_str(), "{claims}");
    for (what, args) in [
        ("another audience", [url.as_str(), UPLOADS, &token, SEARCH]),
        ("another tool", [url.as_str(), GITHUB, &token, READ_FILE]),
    ] {
        let out = python(&args);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("refused:"), "{what}: {out:?}");
    }
    let jwt_svid = success("jwt fetch", &rig.connector.run(&["jwt", "fetch", "--audience", GITHUB])).trim().to_owned();
    let out = python(&[&url, GITHUB, &jwt_svid]);
    assert_eq!(out.status.code(), Some(1), "a plain JWT-SVID: {out:?}");
}

#[test]
fn metrics_count_mints_denials_decisions_and_commits() {
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");
    rig.token(&task, GITHUB, &[SEARCH], "read");
    let refused = rig.connector.fetch_token(&task, GITHUB, &[READ_FILE], "read");
    assert!(!refused.status.success(), "a tool outside the task");
    let (status, text) = http_get(&rig.server.bundle_url(), "/metrics", &[]);
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("{series} missing from\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("lanyard_mints_total{kind=\"task_token\",result=\"ok\"}"), 2.0);
    assert_eq!(value("lanyard_mints_total{kind=\"task_token\",result=\"denied\"}"), 1.0);
    assert_eq!(value("lanyard_policy_decisions_total{result=\"allow\"}"), 2.0);
    assert!(value("lanyard_mints_total{kind=\"x509_svid\",result=\"ok\"}") >= 2.0, "the two workloads' SVIDs");
    assert!(value("lanyard_mints_total{kind=\"agent_svid\",result=\"ok\"}") >= 1.0, "the agent's");
    assert_eq!(value("lanyard_mint_duration_seconds_count{kind=\"task_token\"}"), 3.0);
    assert!(value("lanyard_store_commit_duration_seconds_count") >= 1.0);
    assert_eq!(value("lanyard_active_tasks"), 1.0);
    rig.server.admin_ok(&["task", "end", &task]);
    let (_, text) = http_get(&rig.server.bundle_url(), "/metrics", &[]);
    assert!(text.lines().any(|l| l == "lanyard_active_tasks 0"), "{text}");
}
