//! The audit log end to end: records of task decisions with the connector and
//! the end user apart; `audit verify` naming the record an offline edit,
//! deletion or swap broke; a kept checkpoint exposing a truncated tail; and no
//! task token without its durable audit record across a SIGKILL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lanyard_store::AuditRecord;

use crate::harness::{
    COMMAND_TIMEOUT, CONNECTOR, CREATE_ISSUE, GITHUB, SEARCH, TaskRig, TaskSpec, copy_dir, eventually, hex, jws_part,
    lanyard, refused, run, sha256, success,
};

/// `lanyard audit verify --data-dir DIR [ARGS]`, offline.
fn verify_offline(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = lanyard();
    cmd.args(["audit", "verify", "--data-dir"]).arg(dir).args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// Asserts that an offline verify failed (exit 1) naming `needle`.
fn verify_fails(what: &str, dir: &Path, args: &[&str], needle: &str) {
    let out = verify_offline(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: verify did not fail: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(needle), "{what}: expected {needle:?} in {stderr}");
}

/// The audit log of a (stopped server's) store: one JSON line per record,
/// `{"record": …, "redo": …}`.
struct Log {
    path: std::path::PathBuf,
    lines: Vec<serde_json::Value>,
}

impl Log {
    fn open(dir: &Path) -> Self {
        let path = dir.join("audit.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        Self { path, lines }
    }

    /// Record `seq`.
    fn record(&self, seq: u64) -> AuditRecord {
        serde_json::from_value(self.lines[index(seq)]["record"].clone()).unwrap()
    }

    /// Replaces record `r.seq` (its line's redo stays).
    fn put(&mut self, r: &AuditRecord) {
        self.lines[index(r.seq)]["record"] = serde_json::to_value(r).unwrap();
    }

    fn save(&self) {
        let text: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.path, text).unwrap();
    }
}

fn index(seq: u64) -> usize {
    usize::try_from(seq - 1).unwrap()
}

/// Lets `f` change the audit log of the store in `dir`, then writes it back.
fn tamper(dir: &Path, f: impl FnOnce(&mut Log)) {
    let mut log = Log::open(dir);
    f(&mut log);
    log.save();
}

#[test]
fn audit_records_decisions_and_verify_names_the_tampered_record() {
    let mut rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    let token = rig.token(&task, GITHUB, &[SEARCH], "read");
    let out = rig.connector.fetch_token(&task, GITHUB, &[CREATE_ISSUE], "read");
    refused("a tool outside the task", &out, "not in the task");

    // Query by task: the begin, the allow with the jti's hash, the deny with its reason.
    let records = rig.server.audit_query(&["--task", &task]);
    let kinds: Vec<_> = records.iter().map(|r| r["event"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["task.begin", "tasktoken.mint", "tasktoken.mint"], "{records:#?}");
    let alice = serde_json::json!({ "iss": "https://idp.example", "sub": "alice" });
    for r in &records {
        let ctx = &r["event"]["context"];
        assert_eq!(ctx["connector"], CONNECTOR, "the connector has its own field: {r}");
        assert_eq!(ctx["user"], alice, "the end user has their own field: {r}");
        assert_eq!(ctx["task"], task.as_str(), "{r}");
        assert_eq!(ctx["session"], "S", "{r}");
    }
    let (allow, deny) = (&records[1]["event"]["context"], &records[2]["event"]["context"]);
    assert_eq!(allow["decision"], "allow", "{allow}");
    let jti = jws_part(&token, 1)["jti"].as_str().unwrap().to_owned();
    assert_eq!(allow["jti_hash"], hex(&sha256(jti.as_bytes())), "{allow}");
    assert_eq!(allow["audience"], GITHUB, "{allow}");
    assert_eq!(allow["tools"], serde_json::json!([SEARCH]), "{allow}");
    assert_eq!(allow["agent"], rig.agent.spiffe_id(), "{allow}");
    assert!(!records.iter().any(|r| r.to_string().contains(&jti)), "the jti itself is not kept");
    assert_eq!(deny["decision"], "deny", "{deny}");
    assert!(deny["reason"].as_str().unwrap().contains("github.create_issue is not in the task"), "{deny}");
    assert!(deny.get("jti_hash").is_none(), "{deny}");
    // The same records by user and by connector.
    let by_user = rig.server.audit_query(&["--user", "alice", "--kind", "tasktoken.mint"]);
    assert_eq!(by_user, records[1..], "query by user");
    let by_connector = rig.server.audit_query(&["--connector", CONNECTOR, "--kind", "tasktoken.mint"]);
    assert_eq!(by_connector, records[1..], "query by connector");

    let live = rig.server.admin(&["audit", "verify"]);
    assert!(success("audit verify", &live).contains("audit log verifies"));

    // Offline: the stopped server's store, and tampered copies of it.
    assert!(rig.server.stop().success());
    let original = rig.server.data_dir();
    let n = records[1]["seq"].as_u64().unwrap();
    let copies = rig.server.dir().join("copies");
    let copy = |name: &str| {
        let dir = copies.join(name);
        copy_dir(&original, &dir);
        dir
    };

    // Edit a record's content (who it was for).
    let edited = copy("edited");
    tamper(&edited, |log| {
        let mut r = log.record(n);
        r.event.context.user.as_mut().unwrap().sub = "mallory".parse().unwrap();
        log.put(&r);
    });
    verify_fails("an edited record", &edited, &[], &format!("audit record {n} is broken"));

    // Edit it and fix its own hash: the next record's link breaks.
    let rehashed = copy("rehashed");
    tamper(&rehashed, |log| {
        let mut r = log.record(n);
        r.event.context.decision = Some("deny".into());
        r.hash = lanyard_store::chain_hash(&r.prev_hash, r.seq, &r.event);
        log.put(&r);
    });
    verify_fails("an edited, re-hashed record", &rehashed, &[], &format!("audit record {} is broken", n + 1));

    // Delete a record.
    let deleted = copy("deleted");
    tamper(&deleted, |log| {
        log.lines.remove(index(n));
    });
    verify_fails("a deleted record", &deleted, &[], &format!("audit record {n} is broken"));

    // Swap two records (each renumbered to its new place, so only the chain tells).
    let swapped = copy("swapped");
    tamper(&swapped, |log| {
        let (mut a, mut b) = (log.record(n), log.record(n + 1));
        (a.seq, b.seq) = (b.seq, a.seq);
        log.put(&a);
        log.put(&b);
    });
    verify_fails("two swapped records", &swapped, &[], &format!("audit record {n} is broken"));

    // The original is untouched and verifies.
    let out = verify_offline(&original, &[]);
    assert!(success("audit verify of the original", &out).contains("audit log verifies"));
}

#[test]
fn a_kept_checkpoint_exposes_a_truncated_tail() {
    let mut rig = TaskRig::start(&["--checkpoint-every", "5"], &[]);
    let task = rig.begin(&TaskSpec::default());
    for _ in 0..3 {
        rig.token(&task, GITHUB, &[SEARCH], "read");
    }
    // The checkpoint is written after the records it covers: poll for one
    // past the setup records (entries, agent, SVIDs, the task and its tokens).
    let head = rig.server.audit_query(&[]).last().unwrap()["seq"].as_u64().unwrap();
    let (jws, seq) = eventually(Duration::from_secs(10), "a checkpoint over the task's records", || {
        let out = rig.server.admin(&["audit", "checkpoint"]);
        let jws = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let seq = jws_part(&jws, 1)["seq"].as_u64().unwrap();
        if seq + 5 > head { Ok((jws, seq)) } else { Err(format!("checkpoint at {seq}, head {head}")) }
    });
    assert_eq!(jws_part(&jws, 0)["typ"], "lanyard-checkpoint+jwt");
    let kept = rig.server.dir().join("checkpoint.jws");
    std::fs::write(&kept, &jws).unwrap();
    let kept_arg = kept.to_str().unwrap();

    assert!(rig.server.stop().success());
    let original = rig.server.data_dir();
    let out = verify_offline(&original, &["--checkpoint", kept_arg]);
    assert!(success("verify against the kept checkpoint", &out).contains("audit log verifies"));

    // Cut the tail from the checkpointed record on.
    let truncated = rig.server.dir().join("truncated");
    copy_dir(&original, &truncated);
    tamper(&truncated, |log| {
        assert!(log.lines.len() > index(seq));
        log.lines.truncate(index(seq));
    });
    // The shorter chain is consistent in itself: only the kept checkpoint tells.
    let out = verify_offline(&truncated, &[]);
    assert!(success("verify of the truncated copy alone", &out).contains(&format!("{} records", seq - 1)));
    verify_fails("a truncated log", &truncated, &["--checkpoint", kept_arg], "truncated");
}

#[test]
fn every_token_returned_before_sigkill_has_its_audit_record() {
    tokens_returned_before_sigkill_are_audited(TaskRig::start(&[], &[]));
}

/// A burst of task-token mints, the server SIGKILLed mid-burst and
/// restarted: every token returned has its audit record, the chain
/// verifies, and an acknowledged task end survives a SIGKILL right after.
/// (Also run on a PostgreSQL store, in `postgres`.)
pub(crate) fn tokens_returned_before_sigkill_are_audited(mut rig: TaskRig) {
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");

    let stop = AtomicBool::new(false);
    let granted = AtomicUsize::new(0);
    let tokens: BTreeSet<String> = std::thread::scope(|s| {
        let loops: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut tokens = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
                        if out.status.success() {
                            tokens.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokens
                })
            })
            .collect();
        // Mid-burst: once tokens are flowing from every loop's share, kill.
        let deadline = Instant::now() + Duration::from_secs(20);
        while granted.load(Ordering::Relaxed) < 24 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        rig.server.kill();
        stop.store(true, Ordering::Relaxed);
        loops.into_iter().flat_map(|l| l.join().unwrap()).collect()
    });
    assert!(tokens.len() >= 24, "the burst got {} tokens before the kill", tokens.len());

    rig.server.restart();
    let hashes: BTreeSet<String> = rig
        .server
        .audit_query(&["--kind", "tasktoken.mint", "--task", &task])
        .iter()
        .filter(|r| r["event"]["context"]["decision"] == "allow")
        .map(|r| r["event"]["context"]["jti_hash"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = tokens
        .iter()
        .map(|t| jws_part(t, 1)["jti"].as_str().unwrap().to_owned())
        .filter(|jti| !hashes.contains(&hex(&sha256(jti.as_bytes()))))
        .collect();
    assert!(missing.is_empty(), "{} of {} tokens have no audit record: jti {missing:?}", missing.len(), tokens.len());
    let out = rig.server.admin(&["audit", "verify"]);
    assert!(success("audit verify after SIGKILL", &out).contains("audit log verifies"));
    // The task outlived the kill, and the agent finds the server again.
    eventually(Duration::from_secs(15), "a token after the restart", || {
        let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    });
    eprintln!("{} tokens returned before SIGKILL, {} mint records after restart", tokens.len(), hashes.len());

    // An acknowledged end survives a SIGKILL right after it.
    rig.server.admin_ok(&["task", "end", &task]);
    rig.server.kill();
    rig.server.restart();
    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a token for a task ended before the SIGKILL");
    assert!(stderr.contains("the task has ended") || stderr.contains("unavailable"), "{stderr}");
    eventually(Duration::from_secs(15), "the refusal to come from the restarted server", || {
        let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
        assert!(!out.status.success(), "a token for a task ended before the SIGKILL");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("the task has ended") { Ok(()) } else { Err(stderr) }
    });
}

#[test]
fn revocations_are_found_by_the_task_and_user_they_revoke() {
    let rig = TaskRig::start(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    rig.server.admin_ok(&["risk", "report", "--user", "alice", "--reason", "impossible travel"]);
    rig.server.admin_ok(&["session", "revoke", "S"]);

    // The user's records include the risk raised on her, with its reason.
    let by_user = rig.server.audit_query(&["--user", "alice"]);
    let kinds: Vec<_> = by_user.iter().map(|r| r["event"]["kind"].as_str().unwrap().to_owned()).collect();
    let risk = by_user.iter().find(|r| r["event"]["kind"] == "risk.report");
    assert!(risk.is_some(), "audit query --user alice has no risk.report record: {kinds:?}");
    assert!(risk.unwrap().to_string().contains("impossible travel"), "the reason is not kept: {}", risk.unwrap());

    // The task's records say how it ended.
    let by_task = rig.server.audit_query(&["--task", &task]);
    let kinds: Vec<_> = by_task.iter().map(|r| r["event"]["kind"].as_str().unwrap().to_owned()).collect();
    assert!(
        kinds.iter().any(|k| k == "session.revoke" || k == "task.end"),
        "audit query --task has no record of the task's end by session revoke: {kinds:?}"
    );
}

/// One burst of token requests for a fresh task with `task end` in the
/// middle; the task's audit records and how many tokens requests sent after
/// the end returned got.
fn burst_across_task_end(rig: &TaskRig, session: &str) -> (Vec<serde_json::Value>, usize) {
    let task = rig.begin(&TaskSpec { session, ..TaskSpec::default() });
    let ended = AtomicBool::new(false);
    let granted = AtomicUsize::new(0);
    let connector = &rig.connector;
    let late = std::thread::scope(|s| {
        let loops: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let mut late = 0;
                    loop {
                        let was_ended = ended.load(Ordering::SeqCst);
                        let out = connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
                        match (out.status.success(), was_ended) {
                            (true, false) => _ = granted.fetch_add(1, Ordering::SeqCst),
                            (true, true) => late += 1,
                            // (Before `ended` is set if the end is under way.)
                            (false, _) => return late,
                        }
                    }
                })
            })
            .collect();
        eventually(Duration::from_secs(10), "tokens to flow", || match granted.load(Ordering::SeqCst) {
            n if n >= 8 => Ok(()),
            n => Err(n),
        });
        rig.server.admin_ok(&["task", "end", &task]);
        ended.store(true, Ordering::SeqCst);
        loops.into_iter().map(|l| l.join().unwrap()).sum()
    });
    (rig.server.audit_query(&["--task", &task]), late)
}

#[test]
fn no_token_is_minted_after_its_task_ended() {
    let rig = TaskRig::start(&[], &[]);
    // The race is narrow: a few rounds make it show.
    for round in 0..16 {
        let (records, late) = burst_across_task_end(&rig, &format!("round-{round}"));
        assert_eq!(late, 0, "round {round}: tokens for requests sent after task end returned");
        let end = records.iter().position(|r| r["event"]["kind"] == "task.end").unwrap();
        let allowed_after: Vec<_> = records[end..]
            .iter()
            .filter(|r| r["event"]["context"]["decision"] == "allow")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert!(
            allowed_after.is_empty(),
            "round {round}: task.end is audit record {}, yet tokens were minted (allow records {allowed_after:?})",
            records[end]["seq"]
        );
    }
}
