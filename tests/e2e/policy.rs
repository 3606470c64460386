//! Cedar policies through the command line: `--policy DIR` with the shipped
//! examples, `policy check`, the decision at token time, a reload that fails
//! (the old set stays) and a SIGHUP reload that succeeds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{CONNECTOR, GITHUB, SEARCH, TaskRig, TaskSpec, copy_dir, eventually, refused, success};

/// The example policies shipped in the repository.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

#[test]
fn cedar_policies_decide_tokens_and_a_failed_reload_keeps_the_old_set() {
    let policies = tempfile::Builder::new().prefix("lanyard-e2e-policies-").tempdir().unwrap();
    let dir = policies.path();
    copy_dir(&examples(), dir);
    let rig = TaskRig::start(&["--policy", dir.to_str().unwrap()], &[]);

    // policy check: mallory may not write, alice may; the determining policies are named.
    let args_of = |user: &'static str, action: &'static str| {
        ["policy", "check", "--connector", CONNECTOR, "--tool", SEARCH, "--user", user, "--action", action]
    };
    let check = |user: &'static str| rig.server.admin(&[&args_of(user, "write")[..], &["--audience", GITHUB]].concat());
    let mallory = check("mallory");
    let stdout = String::from_utf8_lossy(&mallory.stdout);
    assert_eq!(mallory.status.code(), Some(1), "mallory's write: {stdout}");
    assert!(stdout.contains("deny") && stdout.contains("write-named-users"), "{stdout}");
    let alice = check("alice");
    let stdout = String::from_utf8_lossy(&alice.stdout);
    assert_eq!(alice.status.code(), Some(0), "alice's write: {stdout}");
    assert!(stdout.contains("allow") && stdout.contains("base-permit"), "{stdout}");

    // The other shipped rules: another issuer's alice is not alice; restricted
    // data only in business hours (Monday 2026-03-02 10:00 UTC, Sunday 2026-03-01 10:00 UTC).
    let out = rig.server.admin(&[&args_of("alice", "write")[..], &["--user-iss", "https://evil-idp.example"]].concat());
    assert_eq!(out.status.code(), Some(1), "alice at another issuer: {}", String::from_utf8_lossy(&out.stdout));
    for (at, code) in [("1772445600", 0), ("1772359200", 1)] {
        let args = [&args_of("alice", "read")[..], &["--classification", "restricted", "--at", at]].concat();
        let out = rig.server.admin(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "restricted read at {at}: {stdout}");
        assert_eq!(code == 1, stdout.contains("restricted-business-hours"), "{stdout}");
    }

    // At token time: the ceilings pass for both, Cedar refuses mallory's write.
    let write = |user: &'static str, session: &'static str| {
        rig.begin(&TaskSpec { user, session, action: "write", ..TaskSpec::default() })
    };
    let mallory_task = write("mallory", "m1");
    let alice_task = write("alice", "a1");
    let mallory_fetch = || rig.connector.fetch_token(&mallory_task, GITHUB, &[SEARCH], "write");
    refused("mallory's write", &mallory_fetch(), "forbidden by policy write-named-users");
    rig.token(&alice_task, GITHUB, &[SEARCH], "write");

    // Reloads that fail keep the old set in force: a file that does not parse,
    // then one that parses but does not validate against the schema.
    let named_users = dir.join("20-write-named-users.cedar");
    let original = std::fs::read_to_string(&named_users).unwrap();
    std::fs::write(&named_users, "forbid (principal, action, resource) when { oops").unwrap();
    let reload = rig.server.admin(&["policy", "reload"]);
    assert!(!reload.status.success(), "a policy that does not parse was loaded");
    std::fs::write(&named_users, &original).unwrap();
    let unknown_field = "@id(\"bad\")\nforbid (principal, action, resource) when { context.no_such_field == 1 };\n";
    std::fs::write(dir.join("30-invalid.cedar"), unknown_field).unwrap();
    let reload = rig.server.admin(&["policy", "reload"]);
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert!(!reload.status.success(), "a policy that does not validate was loaded");
    assert!(stderr.contains("30-invalid") || stderr.contains("no_such_field"), "names what is wrong: {stderr}");
    refused("mallory's write after failed reloads", &mallory_fetch(), "forbidden by policy write-named-users");
    rig.token(&alice_task, GITHUB, &[SEARCH], "write");
    assert_eq!(check("mallory").status.code(), Some(1));

    // A forbid that fails to evaluate (integer overflow) denies; Cedar alone would skip it.
    std::fs::remove_file(dir.join("30-invalid.cedar")).unwrap();
    let overflow = "@id(\"overflowing\")\nforbid (principal, action, resource)\n\
                    when { context.time.unix * 9223372036854775807 > 0 };\n";
    std::fs::write(dir.join("40-overflow.cedar"), overflow).unwrap();
    success("policy reload", &rig.server.admin(&["policy", "reload"]));
    let out = rig.connector.fetch_token(&alice_task, GITHUB, &[SEARCH], "write");
    refused("a token while a policy fails to evaluate", &out, "policy evaluation failed");
    assert_eq!(check("alice").status.code(), Some(1));
    std::fs::remove_file(dir.join("40-overflow.cedar")).unwrap();
    success("policy reload", &rig.server.admin(&["policy", "reload"]));
    rig.token(&alice_task, GITHUB, &[SEARCH], "write");

    // A valid new set without write-named-users, loaded on SIGHUP: mallory may write.
    std::fs::remove_file(&named_users).unwrap();
    rig.server.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the SIGHUP reload to allow mallory's write", || {
        let out = mallory_fetch();
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    });
    assert_eq!(check("mallory").status.code(), Some(0));
    // Only Cedar changed: the ceilings still hold.
    let out = rig.connector.fetch_token(&mallory_task, GITHUB, &[SEARCH], "read");
    refused("mallory's task with another action", &out, "action read is not the task's action write");
}
