//! The command-line contract: `lanyard demo` works, bad input and failed
//! starts exit non-zero with one line saying why, and `svid fetch --write`
//! writes the files a TLS library needs with the right modes.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use crate::harness::{
    COMMAND_TIMEOUT, SVID_TIMEOUT, TD, TestAgent, TestServer, eventually, free_port, key_certified_by, lanyard,
    other_uid, own_selector, own_uid, run, spiffe_id, stderr_lines, success,
};

/// Asserts a failed command: non-zero exit and exactly one line on stderr; that line.
fn one_line_failure(what: &str, output: &Output) -> String {
    assert!(!output.status.success(), "{what} succeeded");
    let lines = stderr_lines(output);
    assert_eq!(lines.len(), 1, "{what}: stderr is not one line: {lines:#?}");
    lines[0].clone()
}

#[test]
fn demo_runs_to_completion() {
    let mut cmd = lanyard();
    cmd.arg("demo");
    let output = run(cmd, Duration::from_secs(90));
    let stdout = success("lanyard demo", &output);
    assert!(stdout.contains("Demo complete"), "{stdout}");
}

#[test]
fn entry_create_refuses_a_malformed_spiffe_id() {
    let server = TestServer::start();
    let output = server.admin(&[
        "entry",
        "create",
        "--spiffe-id",
        "not-a-spiffe-id",
        "--parent-id",
        &spiffe_id("agent/node1"),
        "--selector",
        "unix:uid:1000",
    ]);
    assert!(!output.status.success());
    let lines = stderr_lines(&output);
    assert!(lines[0].contains("not-a-spiffe-id") && lines[0].contains("spiffe://"), "{lines:#?}");
    assert!(server.entries().is_empty(), "nothing was created");
}

#[test]
fn usage_errors_print_one_line() {
    let mut cmd = lanyard();
    cmd.args([
        "entry",
        "create",
        "--spiffe-id",
        "not-a-spiffe-id",
        "--parent-id",
        "spiffe://example.org/agent/node1",
        "--selector",
        "unix:uid:1000",
        "--admin-socket",
        "/nonexistent/admin.sock",
    ]);
    let line = one_line_failure("entry create with a bad SPIFFE ID", &run(cmd, COMMAND_TIMEOUT));
    assert!(line.contains("not-a-spiffe-id"), "{line}");
}

#[test]
fn entry_create_refuses_a_reserved_id() {
    let server = TestServer::start();
    let output = server.admin(&[
        "entry",
        "create",
        "--spiffe-id",
        &spiffe_id("agent/x"),
        "--parent-id",
        &spiffe_id("agent/node1"),
        "--selector",
        &own_selector(),
    ]);
    let line = one_line_failure("entry create with a reserved ID", &output);
    assert!(line.contains("invalid argument"), "{line}");
    assert!(line.contains("reserved"), "{line}");
    assert!(server.entries().is_empty(), "nothing was created");
}

#[test]
fn entry_show_of_an_unknown_id_fails() {
    let server = TestServer::start();
    let line = one_line_failure(
        "entry show of an unknown id",
        &server.admin(&["entry", "show", "00112233445566778899aabbccddeeff"]),
    );
    assert!(line.contains("not found"), "{line}");
}

#[test]
fn server_run_on_a_taken_port_fails_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lanyard();
    cmd.args(["server", "run", "--trust-domain", TD, "--listen", &addr])
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"));
    let output = run(cmd, COMMAND_TIMEOUT);
    assert!(!output.status.success(), "the server started on a taken port");
    // Log lines may precede it; the failure itself is one line, the last.
    let lines = stderr_lines(&output);
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("lanyard:")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert_eq!(Some(errors[0]), lines.last(), "{lines:#?}");
    assert!(errors[0].contains(&addr), "{}", errors[0]);
    assert!(!dir.path().join("admin.sock").exists());
}

#[test]
fn second_server_on_the_same_store_fails() {
    let server = TestServer::start();
    let mut cmd = lanyard();
    cmd.args(["server", "run", "--trust-domain", TD])
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("--admin-socket")
        .arg(server.dir().join("second-admin.sock"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    let output = run(cmd, COMMAND_TIMEOUT);
    let lines = stderr_lines(&output);
    assert!(!output.status.success(), "two servers opened one store");
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("lanyard:")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert_eq!(Some(errors[0]), lines.last(), "{lines:#?}");
    assert!(errors[0].contains("in use"), "{}", errors[0]);
    // The first server is unaffected.
    server.bundle_pem();
}

#[test]
fn svid_fetch_writes_pem_files() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "writer");
    let id = spiffe_id("connector/writer");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("svid");

    eventually(SVID_TIMEOUT, "svid fetch --write to succeed", || {
        let mut cmd = lanyard();
        cmd.args(["svid", "fetch", "--socket", &agent.endpoint(), "--write"]).arg(&target);
        let output = run(cmd, COMMAND_TIMEOUT);
        match output.status.success() {
            true => Ok(output),
            false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        }
    });

    let read = |name: &str| std::fs::read_to_string(target.join(name)).unwrap();
    let mode = |name: &str| std::fs::metadata(target.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("svid_key.pem"), 0o600, "private key mode");

    let chain = lanyard_ca::bundle::parse_pem(&read("svid.pem"), "CERTIFICATE").unwrap();
    assert!(!chain.is_empty(), "svid.pem holds the chain");
    let leaf = lanyard_ca::svid::inspect_leaf(&chain[0]).unwrap();
    assert_eq!(leaf.spiffe_id.as_str(), id);

    let keys = lanyard_ca::bundle::parse_pem(&read("svid_key.pem"), "PRIVATE KEY").unwrap();
    assert_eq!(keys.len(), 1, "svid_key.pem holds one PKCS#8 key");
    assert!(key_certified_by(&leaf, &keys[0]), "svid_key.pem is the key svid.pem certifies");
    let svid = spiffe::X509Svid::parse_from_der(&chain.concat(), &keys[0])
        .expect("svid.pem and svid_key.pem form a valid X509-SVID");
    assert_eq!(svid.spiffe_id().to_string(), id);

    let bundle = lanyard_ca::bundle::parse_pem(&read("bundle.pem"), "CERTIFICATE").unwrap();
    let server_bundle = lanyard_ca::bundle::parse_pem(&server.bundle_pem(), "CERTIFICATE").unwrap();
    assert!(!bundle.is_empty());
    assert_eq!(bundle, server_bundle, "bundle.pem is the trust bundle");
}

#[test]
fn join_tokens_work_in_the_documented_form() {
    let server = TestServer::start();
    // Tokens are 256-bit hex: never starting with '-', so `--join-token TOKEN`
    // cannot be mistaken for a flag.
    for i in 0..20 {
        let token = server.join_token(&format!("probe-{i}"), "10m");
        assert_eq!(token.len(), 64, "{token:?}");
        assert!(token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{token:?}");
    }
    let name = "documented";
    let token = server.join_token(name, "10m");
    // The documented form: `--join-token TOKEN`, as `join-token create` printed it.
    let agent = TestAgent::start_with_token_args(&server, name, &["--join-token".to_owned(), token]);
    eventually(SVID_TIMEOUT, "the agent to attest", || {
        let agents = server.agents();
        match agents.iter().any(|a| a["spiffe_id"] == agent.spiffe_id()) {
            true => Ok(()),
            false => Err(agents),
        }
    });
}

#[test]
fn config_files_set_flags_flags_win_and_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bundle_port = free_port();
    let file = dir.path().join("lanyard-server.toml");
    std::fs::write(
        &file,
        format!(
            "# set by the file\nbundle-listen = \"127.0.0.1:{bundle_port}\"\npublic-url = \"https://lanyard.test\"\n\
             listen = \"127.0.0.1:1\"\ntrust-domain = \"example.org\"\n"
        ),
    )
    .unwrap();
    // A real server: the harness's --listen/--trust-domain flags win over the
    // file's; the file's bundle endpoint and public URL are used.
    let server = TestServer::start_with(&["--config", file.to_str().unwrap()]);
    let (status, body) =
        crate::verify::http_get(&format!("http://127.0.0.1:{bundle_port}"), "/.well-known/openid-configuration", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"issuer\":\"https://lanyard.test\""), "{body}");
    drop(server);

    // check-config: OK with a summary, or one line naming the file and key.
    let check = |text: &str, extra: &[&str]| {
        std::fs::write(&file, text).unwrap();
        let mut cmd = lanyard();
        cmd.args(["server", "check-config", "--config", file.to_str().unwrap()]).args(extra);
        run(cmd, COMMAND_TIMEOUT)
    };
    let data = dir.path().join("data");
    let base = format!("data-dir = \"{}\"\ntrust-domain = \"example.org\"\n", data.display());
    let out = check(&base, &[]);
    assert!(success("check-config", &out).contains("OK (trust domain example.org"));
    assert!(!data.exists(), "check-config starts nothing and creates no store");
    let file_name = file.to_str().unwrap();
    for (text, why) in [
        (format!("{base}listen-on = \"x\"\n"), "(line 3): unknown key `listen-on`".to_owned()),
        (format!("{base}ca-ttl = \"soon\"\n"), "key `ca-ttl`: invalid value 'soon'".to_owned()),
        (format!("{base}ca-ttl = \"1s\"\n"), "key lifetimes must be at least 6s".to_owned()),
        (format!("{base}kek-file = \"/nonexistent/kek\"\n"), "kek-file /nonexistent/kek: cannot read it".to_owned()),
        (format!("{base}[server]\n"), "key `server`".to_owned()),
    ] {
        let out = check(&text, &[]);
        let line = one_line_failure(&format!("config {why}"), &out);
        assert!(line.contains(why.as_str()), "expected {why:?}: {line}");
        assert!(line.contains(file_name), "names the file: {line}");
    }
    // A flag wins over a bad value in the file.
    let out = check(&format!("{base}ca-ttl = \"1s\"\n"), &["--ca-ttl", "1h"]);
    success("a flag over the file", &out);

    // The agent reads its own keys, not the server's.
    std::fs::write(&file, "server = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n").unwrap();
    let mut cmd = lanyard();
    cmd.args(["agent", "check-config", "--config", file.to_str().unwrap()]);
    let out = success("agent check-config", &run(cmd, COMMAND_TIMEOUT));
    assert!(out.contains("servers 127.0.0.1:1, 127.0.0.1:2"), "{out}");
    std::fs::write(&file, "trust-domain = \"example.org\"\n").unwrap();
    let mut cmd = lanyard();
    cmd.args(["agent", "check-config", "--config", file.to_str().unwrap(), "--server", "x:1"]);
    one_line_failure("a server key in an agent file", &run(cmd, COMMAND_TIMEOUT));
}

#[test]
fn the_example_configs_in_deploy_are_valid() {
    // Every key is known and every value parses; the paths that must exist
    // on a real host are pointed elsewhere by flags (which win).
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek");
    std::fs::write(&kek, [7u8; 32]).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let mut cmd = lanyard();
    cmd.args(["server", "check-config", "--config", &format!("{deploy}/lanyard-server.toml")])
        .args(["--kek-file", kek.to_str().unwrap(), "--policy", policies])
        .args(["--bundle-tls-cert", cert_path.to_str().unwrap(), "--bundle-tls-key", key_path.to_str().unwrap()]);
    let out = success("check-config of deploy/lanyard-server.toml", &run(cmd, COMMAND_TIMEOUT));
    assert!(out.contains("sealed with the KEK") && out.contains("https://0.0.0.0:8443"), "{out}");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, cert.pem()).unwrap();
    let mut cmd = lanyard();
    cmd.args(["agent", "check-config", "--config", &format!("{deploy}/lanyard-agent.toml")])
        .args(["--trust-bundle", bundle.to_str().unwrap()]);
    let out = success("check-config of deploy/lanyard-agent.toml", &run(cmd, COMMAND_TIMEOUT));
    assert!(out.contains("servers lanyard.example.org:8081"), "{out}");
}

#[test]
fn a_backup_of_a_running_server_restores_to_a_store_with_everything() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "node1");
    for name in ["a", "b", "c"] {
        server.create_entry(&spiffe_id(&format!("connector/{name}")), &agent.spiffe_id(), &[&own_selector()], &[]);
    }
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("backup-1");
    let out = success("store backup", &server.admin(&["store", "backup", "--to", to.to_str().unwrap()]));
    assert!(out.contains("audit records"), "{out}");
    // Into an occupied directory: refused in one line.
    one_line_failure(
        "a second backup into the same directory",
        &server.admin(&["store", "backup", "--to", to.to_str().unwrap()]),
    );
    let audited = server.audit_query(&["--kind", "store.backup"]);
    assert_eq!(audited.len(), 1, "the backup is audited: {audited:?}");

    let restored = backups.path().join("restored");
    let mut cmd = lanyard();
    cmd.args(["store", "restore", "--from", to.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    let out = success("store restore", &run(cmd, COMMAND_TIMEOUT));
    assert!(out.contains("the audit chain verifies"), "{out}");
    let mut cmd = lanyard();
    cmd.args(["audit", "verify", "--data-dir", restored.to_str().unwrap()]);
    assert!(success("audit verify of the restored store", &run(cmd, COMMAND_TIMEOUT)).contains("audit log verifies"));

    // A server on the restored store has every entry, agent and key.
    let original_entries = server.entries();
    let original_bundle = server.bundle_pem();
    let again = TestServer::start_on(restored);
    assert_eq!(again.entries(), original_entries);
    assert_eq!(again.bundle_pem(), original_bundle, "the same CA");
    assert_eq!(again.agents().len(), 1);
    // A damaged backup is refused.
    let mut log = std::fs::read(to.join("audit.log")).unwrap();
    log[0] ^= 1;
    std::fs::write(to.join("audit.log"), log).unwrap();
    let mut cmd = lanyard();
    cmd.args(["store", "restore", "--from", to.to_str().unwrap(), "--data-dir"]);
    cmd.arg(backups.path().join("again"));
    let line = one_line_failure("a tampered backup", &run(cmd, COMMAND_TIMEOUT));
    assert!(line.contains("checksum"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_metrics_and_logs_json_lines() {
    let server = TestServer::start_with(&["--log-format", "json"]);
    let port = free_port();
    let token = server.join_token("node1", "10m");
    let args = ["--join-token".to_owned(), token, "--metrics-listen".to_owned(), format!("127.0.0.1:{port}")];
    let args = [&args[..], &["--log-format".to_owned(), "json".to_owned()]].concat();
    let agent = TestAgent::start_with_token_args(&server, "node1", &args);
    let id = spiffe_id("connector/metrics");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);
    crate::harness::wait_served(&agent, &id, SVID_TIMEOUT).await;

    let (status, text) = crate::verify::http_get(&format!("http://127.0.0.1:{port}"), "/metrics", &[]);
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("{series} missing from\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("lanyard_agent_workload_api_calls_total{method=\"FetchX509SVID\",code=\"ok\"}") >= 1.0);
    assert!(value("lanyard_agent_workload_api_duration_seconds_count{method=\"FetchX509SVID\"}") >= 1.0);
    assert!(value("lanyard_agent_attestations_total{result=\"ok\"}") >= 1.0);
    assert_eq!(value("lanyard_agent_svids"), 1.0);
    assert_eq!(value("lanyard_agent_entries"), 1.0);
    assert!((0.0..60.0).contains(&value("lanyard_agent_sync_age_seconds")), "synced");
    assert!(value("lanyard_agent_svid_mints_total{reason=\"first\"}") >= 1.0);
    let (status, _) = crate::verify::http_get(&format!("http://127.0.0.1:{port}"), "/healthz", &[]);
    assert_eq!(status, 200);

    // Both logs are JSON lines with a level and the message.
    for log in [agent.log(), server.log()] {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{}", log.display());
        for line in lines {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", log.display()));
            assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        }
    }
}

#[test]
fn admin_commands_refuse_a_socket_owned_by_another_user() {
    if own_uid() != 0 {
        eprintln!("SKIPPED: giving a socket to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::os::unix::fs::chown(&path, Some(other_uid()), None).unwrap();
    let mut cmd = lanyard();
    cmd.args(["entry", "list", "--admin-socket", path.to_str().unwrap()]);
    let line = one_line_failure("entry list over another user's socket", &run(cmd, COMMAND_TIMEOUT));
    assert!(line.contains("is owned by uid") && line.contains("not by you"), "{line}");
}
