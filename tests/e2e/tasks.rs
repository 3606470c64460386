//! Tasks end to end: an orchestrator workload begins a task, a different
//! connector workload fetches its token, the token is a JWT-SVID bound to the
//! connector's certificate, every refusal of DESIGN.md "Tasks" holds at once,
//! and delegation carries the chain and ends with its parent.
//!
//! Workloads are told apart by executable path: each is the `lanyard` binary
//! under its own name ([`crate::harness::Workload`]), matched by a `unix:path:` selector.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::{JwtSvid, WorkloadApiClient};

use crate::harness::{
    CONNECTOR, CREATE_ISSUE, GITHUB, ORCHESTRATOR, READ_FILE, SEARCH, SVID_TIMEOUT, TD, TaskRig, TaskSpec, UPLOADS,
    b64url, eventually, eventually_async, jws_part, refused, sha256, spiffe_id, success, task_id,
};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn orchestrator_and_connector_are_different_workloads() {
    let rig = TaskRig::start(&[], &[]);
    let spec = TaskSpec::default();

    // Copy A (task authority) begins; copy B (the connector) gets the token.
    let task = rig.begin(&spec);
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");
    let claims = jws_part(&token, 1);
    assert_eq!(claims["sub"], CONNECTOR, "{claims}");
    assert_eq!(claims["txn"], task.as_str(), "{claims}");
    let listed: serde_json::Value =
        serde_json::from_str(&rig.server.admin_ok(&["task", "list", "--output", "json"])).unwrap();
    let listed = listed.as_array().unwrap().iter().find(|t| t["task_id"] == task.as_str()).unwrap().clone();
    assert_eq!(listed["begun_by"], ORCHESTRATOR, "the orchestrator's identity began it: {listed}");
    assert_eq!(listed["connector"], CONNECTOR, "{listed}");
    // Each path is served its own identity and nothing else.
    let served = success("svid fetch", &rig.orchestrator.run(&["svid", "fetch", "--output", "json"]));
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    let ids: Vec<_> = served.as_array().unwrap().iter().map(|s| s["spiffe_id"].clone()).collect();
    assert_eq!(ids, [ORCHESTRATOR], "the orchestrator's path is served its identity only");

    // The connector has no task authority.
    let out = rig.connector.run(&spec.args());
    refused("task begin by the connector", &out, "no task authority");

    // The orchestrator is not entitled to the connector's identity.
    let out = rig.orchestrator.fetch_token(&task, GITHUB, &[SEARCH], "read");
    let stderr = refused("the orchestrator fetching the connector's token", &out, "bound to");
    assert!(stderr.contains(CONNECTOR) && stderr.contains(ORCHESTRATOR), "{stderr}");

    // A process no entry matches (the binary under its own name) gets nothing.
    let stranger = rig.workload("stranger");
    let out = stranger.fetch_token(&task, GITHUB, &[SEARCH], "read");
    refused("task-token fetch by an unregistered process", &out, "no identity issued");
    let out = stranger.run(&spec.args());
    refused("task begin by an unregistered process", &out, "no identity issued");

    // Ending through the agent: a registered workload with no part in the
    // task may not; the orchestrator that began it may, and it holds at once.
    let bystander_id = spiffe_id("connector/bystander");
    let bystander = rig.workload("bystander");
    rig.server.create_entry(&bystander_id, &rig.agent.spiffe_id(), &[&bystander.selector()], &["--task-authority"]);
    bystander.wait_served(&bystander_id);
    refused("task end by a bystander", &bystander.run(&["task", "end", &task]), "not yours to end");
    rig.token(&task, GITHUB, &[SEARCH], "read");
    success("task end by the orchestrator", &rig.orchestrator.run(&["task", "end", &task]));
    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
    refused("a token after the orchestrator ended the task", &out, "the task has ended");
}

#[test]
fn a_workload_with_several_identities_acts_as_the_tasks_connector() {
    let rig = TaskRig::start(&[], &[]);
    // One binary path entitled to a gateway identity (task authority) and to the connector.
    let gateway_id = spiffe_id("gateway/mcp-host");
    let both = rig.workload("gateway-and-connector");
    let parent = rig.agent.spiffe_id();
    rig.server.create_entry(&gateway_id, &parent, &[&both.selector()], &["--task-authority"]);
    let ceilings = ["--tool", SEARCH, "--audience", GITHUB, "--max-classification", "internal"];
    rig.server.create_entry(CONNECTOR, &parent, &[&both.selector()], &ceilings);
    both.wait_served(&gateway_id);
    both.wait_served(CONNECTOR);

    let task = task_id("task begin by the gateway", &both.run(&TaskSpec::default().args()));
    let token = success("its own task's token", &both.fetch_token(&task, GITHUB, &[SEARCH], "read"));
    assert_eq!(jws_part(&token, 1)["sub"], CONNECTOR, "the attested identity that serves the task");
    let tasks: serde_json::Value =
        serde_json::from_str(&rig.server.admin_ok(&["task", "list", "--output", "json"])).unwrap();
    assert_eq!(tasks[0]["begun_by"], gateway_id.as_str(), "begun as the identity with task authority: {tasks}");
    // Its connector entry's own ceilings bound it (read_file is in copy B's entry only).
    let wider = rig.begin(&TaskSpec { tools: &[SEARCH, READ_FILE], ..TaskSpec::default() });
    let out = both.fetch_token(&wider, GITHUB, &[READ_FILE], "read");
    refused("a tool outside this workload's entry", &out, "github.read_file is not in the connector's entry");
    rig.token(&wider, GITHUB, &[READ_FILE], "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_token_is_a_jwt_svid_bound_to_the_connector_certificate() {
    let issuer = "https://lanyard.example.test";
    let rig = TaskRig::start(&["--public-url", issuer], &[]);
    // This test process reads the JWT bundle through the Workload API as a
    // workload of its own (the agent answers only callers it has an entry for).
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let verifier = spiffe_id("verifier");
    rig.server.create_entry(&verifier, &rig.agent.spiffe_id(), &[&format!("unix:path:{}", me.display())], &[]);

    let spec = TaskSpec {
        tools: &[SEARCH, READ_FILE],
        audiences: &[GITHUB, UPLOADS],
        session: "sess-42",
        ..TaskSpec::default()
    };
    let task = rig.begin(&spec);
    // The connector's certificate as it sees it, then its token and a plain JWT-SVID.
    let svid_dir = rig.server.dir().join("connector-svid");
    success("svid fetch --write", &rig.connector.run(&["svid", "fetch", "--write", svid_dir.to_str().unwrap()]));
    let issued_after = now();
    let token = rig.token(&task, GITHUB, &[SEARCH, READ_FILE], "read");
    let jwt_svid = success("jwt fetch", &rig.connector.run(&["jwt", "fetch", "--audience", GITHUB])).trim().to_owned();

    // Any JWT-SVID validator accepts it as the connector for its audience.
    let client = eventually_async(SVID_TIMEOUT, "the spiffe client to connect", async || {
        WorkloadApiClient::connect_to(rig.agent.endpoint()).await
    })
    .await;
    let bundles = eventually_async(SVID_TIMEOUT, "the JWT bundles", async || client.fetch_jwt_bundles().await).await;
    let svid = JwtSvid::parse_and_validate(&token, &bundles, &[GITHUB])
        .unwrap_or_else(|e| panic!("the spiffe crate refuses the task token: {e}"));
    assert_eq!(svid.spiffe_id().to_string(), CONNECTOR);
    assert!(JwtSvid::parse_and_validate(&token, &bundles, &[UPLOADS]).is_err(), "one audience only");
    assert_eq!(svid.key_id(), jws_part(&token, 0)["kid"].as_str().unwrap());
    assert!(bundles.get(&spiffe::TrustDomain::new(TD).unwrap()).is_some());
    // So does the agent's ValidateJWTSVID.
    let out = rig.connector.run(&["jwt", "validate", "--audience", GITHUB, &token]);
    let validated: serde_json::Value = serde_json::from_str(&success("jwt validate of the task token", &out)).unwrap();
    assert_eq!(validated["spiffe_id"], CONNECTOR, "{validated}");
    assert_eq!(validated["claims"]["txn"], task.as_str(), "{validated}");

    // Header: exactly alg, kid, typ; its own key, not the JWT-SVID key.
    let header = jws_part(&token, 0);
    let mut keys: Vec<_> = header.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["alg", "kid", "typ"], "{header}");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let jwt_svid_kid = jws_part(&jwt_svid, 0)["kid"].clone();
    assert!(jwt_svid_kid.is_string());
    assert_ne!(header["kid"], jwt_svid_kid, "task tokens and JWT-SVIDs sign with different keys");

    // Claims, as docs/token-format.md lists them.
    let c = jws_part(&token, 1);
    assert_eq!(c["iss"], issuer, "{c}");
    assert_eq!(c["sub"], CONNECTOR, "{c}");
    assert_eq!(c["aud"], GITHUB, "aud is one string: {c}");
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(iat + 1 >= issued_after && iat <= now() + 1, "iat {iat} is the time of the request: {c}");
    assert!(exp > now() && exp <= iat + 300, "exp {exp} within 5 minutes of iat {iat}: {c}");
    let jti = c["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 22, "128 random bits, base64url: {jti}");
    assert!(jti.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{jti}");
    assert_eq!(c["txn"], task.as_str());
    assert_eq!(c["scope"], "tool:github.search tool:github.read_file", "{c}");
    let details = c["authorization_details"].as_array().unwrap();
    assert_eq!(details.len(), 2, "one object per tool: {c}");
    for (detail, tool) in details.iter().zip([SEARCH, READ_FILE]) {
        let want = serde_json::json!({
            "type": "lanyard_tool",
            "identifier": tool,
            "actions": ["read"],
            "locations": [GITHUB],
            "datatypes": ["internal"],
        });
        assert_eq!(*detail, want);
    }
    assert_eq!(c["user"], serde_json::json!({ "iss": "https://idp.example", "sub": "alice" }));
    assert_eq!(c["sid"], "sess-42");
    assert!(c.get("chain").is_none(), "no chain on a task begun directly: {c}");
    // cnf: the thumbprint of the leaf the connector holds.
    let pem = std::fs::read_to_string(svid_dir.join("svid.pem")).unwrap();
    let leaf = lanyard_ca::bundle::parse_pem(&pem, "CERTIFICATE").unwrap().remove(0);
    assert_eq!(c["cnf"], serde_json::json!({ "x5t#S256": b64url(&sha256(&leaf)) }));
    let mut names: Vec<_> = c.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["aud", "authorization_details", "cnf", "exp", "iat", "iss", "jti", "scope", "sid", "sub", "txn", "user"]
    );
}

#[test]
fn tokens_are_refused_at_once_after_end_session_revoke_and_risk() {
    let rig = TaskRig::start(&[], &[]);
    let fetch = |task: &str| rig.connector.fetch_token(task, GITHUB, &[SEARCH], "read");

    // Two tasks in session S.
    let first = rig.begin(&TaskSpec::default());
    let second = rig.begin(&TaskSpec::default());
    rig.token(&first, GITHUB, &[SEARCH], "read");
    rig.token(&second, GITHUB, &[SEARCH], "read");

    // task end: refused from the moment the admin command returns.
    rig.server.admin_ok(&["task", "end", &first]);
    refused("a token after task end", &fetch(&first), "the task has ended");
    rig.token(&second, GITHUB, &[SEARCH], "read");

    // session revoke: the other task of that session is refused, and no new task begins in it.
    rig.server.admin_ok(&["session", "revoke", "S"]);
    let stderr = refused("a token after session revoke", &fetch(&second), "");
    assert!(stderr.contains("the task has ended") || stderr.contains("the session is revoked"), "{stderr}");
    let out = rig.orchestrator.run(&TaskSpec::default().args());
    refused("task begin in a revoked session", &out, "the session is revoked");

    // risk report on the user: refused until cleared, then granted again.
    let third = rig.begin(&TaskSpec { session: "S3", ..TaskSpec::default() });
    rig.token(&third, GITHUB, &[SEARCH], "read");
    rig.server.admin_ok(&["risk", "report", "--user", "alice", "--reason", "impossible travel"]);
    refused("a token with open risk on the user", &fetch(&third), "risk on the user");
    rig.server.admin_ok(&["risk", "clear", "--user", "alice"]);
    rig.token(&third, GITHUB, &[SEARCH], "read");
}

#[test]
fn requests_outside_the_task_or_the_entry_are_refused() {
    let rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec::default());

    // Token requests beyond the task: tool, audience, action.
    let out = rig.connector.fetch_token(&task, GITHUB, &[CREATE_ISSUE], "read");
    refused("a tool of the entry but not of the task", &out, "tool github.create_issue is not in the task");
    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH, READ_FILE], "read");
    refused("one tool too many", &out, "tool github.read_file is not in the task");
    let out = rig.connector.fetch_token(&task, UPLOADS, &[SEARCH], "read");
    refused("an audience of the entry but not of the task", &out, "audience uploads.github.com is not in the task");
    let out = rig.connector.fetch_token(&task, "evil.example", &[SEARCH], "read");
    refused("an audience of neither", &out, "evil.example");
    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "write");
    refused("another action", &out, "action write is not the task's action read");
    // The task itself is still good.
    rig.token(&task, GITHUB, &[SEARCH], "read");

    // Tasks beyond the entry's ceilings are refused at begin, for the
    // orchestrator and for an admin alike.
    let above = TaskSpec { classification: "confidential", ..TaskSpec::default() };
    let out = rig.orchestrator.run(&above.args());
    refused("a task above the classification ceiling", &out, "classification confidential is above");
    refused("the same, by an admin", &rig.server.admin(&above.args()), "classification confidential is above");
    let outside = TaskSpec { tools: &[SEARCH, "github.delete_repo"], ..TaskSpec::default() };
    let out = rig.orchestrator.run(&outside.args());
    refused("a task with a tool outside the entry", &out, "tool github.delete_repo is not in the connector's entry");
    let outside = TaskSpec { audiences: &["evil.example"], ..TaskSpec::default() };
    let out = rig.orchestrator.run(&outside.args());
    refused("a task with an audience outside the entry", &out, "audience evil.example is not in the connector's entry");
    let tasks: serde_json::Value =
        serde_json::from_str(&rig.server.admin_ok(&["task", "list", "--output", "json"])).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "no refused task was stored: {tasks}");
}

#[test]
fn delegation_carries_the_chain_and_ends_with_its_parent() {
    let rig = TaskRig::start(&[], &["--delegate-to", "spiffe://example.org/connector/*"]);
    // A second connector (its own binary path), and one outside delegate_to.
    let summarizer_id = spiffe_id("connector/summarizer");
    let outsider_id = spiffe_id("partner/summarizer");
    let summarizer = rig.workload("summarizer");
    let outsider = rig.workload("outsider");
    let ceilings = ["--tool", SEARCH, "--audience", GITHUB, "--max-classification", "internal"];
    rig.server.create_entry(&summarizer_id, &rig.agent.spiffe_id(), &[&summarizer.selector()], &ceilings);
    rig.server.create_entry(&outsider_id, &rig.agent.spiffe_id(), &[&outsider.selector()], &ceilings);
    summarizer.wait_served(&summarizer_id);
    outsider.wait_served(&outsider_id);

    let parent = rig.begin(&TaskSpec { tools: &[SEARCH, READ_FILE], ..TaskSpec::default() });
    let delegate = |to: &str, tool: &str| {
        let args = ["task", "delegate", "--task", &parent, "--to", to, "--tool", tool, "--output", "json"];
        rig.connector.run(&args)
    };
    let child = task_id("task delegate", &delegate(&summarizer_id, SEARCH));

    // The child's token: the summarizer acting, the chain naming the parent connector, the same user.
    let token = success("the child's token", &summarizer.fetch_token(&child, GITHUB, &[SEARCH], "read"));
    let c = jws_part(&token, 1);
    assert_eq!(c["sub"], summarizer_id.as_str(), "{c}");
    assert_eq!(c["txn"], child.as_str(), "{c}");
    assert_eq!(c["chain"], serde_json::json!([CONNECTOR]), "{c}");
    assert_eq!(c["user"], serde_json::json!({ "iss": "https://idp.example", "sub": "alice" }));
    assert_eq!(c["sid"], "S");
    // The parent connector cannot act as the child's connector.
    let out = rig.connector.fetch_token(&child, GITHUB, &[SEARCH], "read");
    refused("the parent connector fetching the child's token", &out, "bound to");

    // Refused: a connector outside delegate_to, a tool outside the parent,
    // and delegation by a workload that is not the parent's connector.
    refused(
        "delegation outside delegate_to",
        &delegate(&outsider_id, SEARCH),
        "not in the delegating connector's delegate_to",
    );
    refused("delegating a tool the parent lacks", &delegate(&summarizer_id, CREATE_ISSUE), "github.create_issue");
    let args = ["task", "delegate", "--task", &parent, "--to", &summarizer_id, "--tool", SEARCH];
    refused("delegation by the orchestrator (not the parent's connector)", &rig.orchestrator.run(&args), "");

    let args = ["task", "delegate", "--task", &parent, "--to", &summarizer_id, "--tool", SEARCH, "--ttl", "1h"];
    refused("a child that outlives its parent", &rig.connector.run(&args), "lifetime is too long");

    // Depth: the connector hands the task on to itself (connector/* includes
    // it) four times; a fifth hop is refused, and the chain lists every actor.
    let mut tip = parent.clone();
    for depth in 1..=5 {
        let args = ["task", "delegate", "--task", &tip, "--to", CONNECTOR, "--tool", SEARCH, "--output", "json"];
        let out = rig.connector.run(&args);
        if depth == 5 {
            refused("delegation depth 5", &out, "delegation depth 5 exceeds the limit of 4");
            break;
        }
        tip = task_id(&format!("delegation at depth {depth}"), &out);
    }
    let deepest = jws_part(&rig.token(&tip, GITHUB, &[SEARCH], "read"), 1);
    assert_eq!(deepest["chain"], serde_json::json!([CONNECTOR, CONNECTOR, CONNECTOR, CONNECTOR]), "{deepest}");

    // Ending the parent ends every descendant at once.
    rig.server.admin_ok(&["task", "end", &parent]);
    let out = summarizer.fetch_token(&child, GITHUB, &[SEARCH], "read");
    let stderr = refused("the child's token after the parent ended", &out, "");
    assert!(stderr.contains("ended") || stderr.contains("no longer active"), "{stderr}");
    let out = rig.connector.fetch_token(&tip, GITHUB, &[SEARCH], "read");
    let stderr = refused("a depth-4 descendant's token after the root ended", &out, "");
    assert!(stderr.contains("ended") || stderr.contains("no longer active"), "{stderr}");
    let args = ["task", "delegate", "--task", &child, "--to", &summarizer_id, "--tool", SEARCH];
    refused("delegating from an ended task", &summarizer.run(&args), "");
    refused("the parent's token", &rig.connector.fetch_token(&parent, GITHUB, &[SEARCH], "read"), "the task has ended");
}

#[test]
fn token_lifetime_is_bounded_by_request_task_and_certificate() {
    let rig = TaskRig::start(&[], &["--x509-ttl", "40s"]);
    let short = rig.begin(&TaskSpec { ttl: "2s", session: "short", ..TaskSpec::default() });
    let task = rig.begin(&TaskSpec::default());
    let lifetime = |token: &str| {
        let c = jws_part(token, 1);
        (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap())
    };
    let fetch_ttl = |task: &str, ttl: &str| {
        let args = ["task-token", "fetch", "--task", task, "--audience", GITHUB, "--tool", SEARCH, "--action", "read"];
        rig.connector.run(&[&args[..], &["--ttl", ttl]].concat())
    };

    // As requested.
    let (iat, exp) = lifetime(&success("a 30s token", &fetch_ttl(&task, "30s")));
    assert_eq!(exp - iat, 30);
    // Never past the connector's X.509-SVID (40s here), whatever the request.
    let (iat, exp) = lifetime(&rig.token(&task, GITHUB, &[SEARCH], "read"));
    assert!(exp > iat && exp <= iat + 40, "a token outlives the certificate it is bound to: iat {iat}, exp {exp}");
    // Never more than 5 minutes.
    let out = fetch_ttl(&task, "6m");
    assert!(!out.status.success(), "a 6m task token was issued");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid argument"), "{out:?}");
    // Never past the task.
    let begun = rig.orchestrator.run(&TaskSpec { ttl: "20s", session: "twenty", ..TaskSpec::default() }.args());
    let begun: serde_json::Value = serde_json::from_str(&success("task begin", &begun)).unwrap();
    let (iat, exp) = lifetime(&rig.token(begun["task_id"].as_str().unwrap(), GITHUB, &[SEARCH], "read"));
    assert!(exp <= begun["expires_at"].as_u64().unwrap() && exp <= iat + 20, "past the task: iat {iat}, exp {exp}");

    // A task ends by itself at its TTL.
    let out = rig.connector.fetch_token(&short, GITHUB, &[SEARCH], "read");
    if out.status.success() {
        eventually(Duration::from_secs(5), "the 2s task to expire", || {
            let out = rig.connector.fetch_token(&short, GITHUB, &[SEARCH], "read");
            match out.status.success() {
                true => Err("still granted"),
                false => Ok(refused("a token after the task's TTL", &out, "the task has expired")),
            }
        });
    } else {
        refused("a token after the task's TTL", &out, "the task has expired");
    }

    // A banned agent's workloads get no token, from the moment of the ban.
    rig.server.admin_ok(&["agent", "ban", &rig.agent.spiffe_id()]);
    // (The workload hears "unavailable: the server is unreachable; retry":
    // the agent treats the ban as a lost server.)
    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
    assert!(!out.status.success() && out.stdout.is_empty(), "a banned agent relayed a token: {out:?}");
}

#[test]
fn entry_changes_and_risks_apply_at_the_moment_of_the_request() {
    let rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec { tools: &[SEARCH, READ_FILE], ..TaskSpec::default() });
    let fetch = |tool: &str| rig.connector.fetch_token(&task, GITHUB, &[tool], "read");
    let entries = rig.server.entries();
    let entry = entries.iter().find(|e| e["spiffe_id"] == CONNECTOR).unwrap()["id"].as_str().unwrap().to_owned();

    // Lower the entry's ceilings after the task began: the next request is measured against them.
    rig.server.admin_ok(&["entry", "update", &entry, "--tool", READ_FILE]);
    refused("a tool the entry no longer has", &fetch(SEARCH), "tool github.search is not in the connector's entry");
    success("a tool the entry still has", &fetch(READ_FILE));
    rig.server.admin_ok(&["entry", "update", &entry, "--max-classification", "public"]);
    refused("above the lowered ceiling", &fetch(READ_FILE), "classification internal is above");
    rig.server.admin_ok(&["entry", "update", &entry, "--max-classification", "internal"]);
    success("back under the ceiling", &fetch(READ_FILE));

    // Risk on the connector, the session, the agent: refused until cleared.
    let agent = rig.agent.spiffe_id();
    for (flag, subject, what) in
        [("--connector", CONNECTOR, "connector"), ("--session", "S", "session"), ("--agent", &agent, "agent")]
    {
        rig.server.admin_ok(&["risk", "report", flag, subject]);
        refused(&format!("a token with open risk on the {what}"), &fetch(READ_FILE), &format!("risk on the {what}"));
        rig.server.admin_ok(&["risk", "clear", flag, subject]);
        success(&format!("a token after the {what}'s risk was cleared"), &fetch(READ_FILE));
    }
    // A user is a subject at an issuer: risk on another issuer's "alice" is not on ours.
    rig.server.admin_ok(&["risk", "report", "--user", "alice", "--user-iss", "https://other-idp.example"]);
    success("a token for alice at https://idp.example", &fetch(READ_FILE));
    rig.server.admin_ok(&["risk", "report", "--user", "alice", "--user-iss", "https://idp.example"]);
    refused("a token with open risk on alice at her issuer", &fetch(READ_FILE), "risk on the user");

    // Deleting the connector's entry: no token from the moment it is acknowledged.
    rig.server.admin_ok(&["risk", "clear", "--user", "alice", "--user-iss", "https://idp.example"]);
    success("a token before the entry is deleted", &fetch(READ_FILE));
    rig.server.admin_ok(&["entry", "delete", &entry]);
    refused("a token after the entry was deleted", &fetch(READ_FILE), "");
}
