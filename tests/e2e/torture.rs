//! Crash-loop torture: mixed load (entry writes, task begin/end, task-token
//! mints, risk reports) against a real server that is SIGKILLed at random
//! moments and restarted, again and again. After every restart: every
//! acknowledged write is there, every returned token has its audit record,
//! the audit chain verifies, sequence numbers never go back, and the agent
//! keeps serving.
//!
//! `LANYARD_TORTURE_KILLS` sets the number of kills (CI: 8; the 50
//! with `LANYARD_TORTURE_KILLS=50 cargo test --test e2e torture`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{
    COMMAND_TIMEOUT, CONNECTOR, GITHUB, SEARCH, TaskRig, TaskSpec, eventually, hex, jws_part, lanyard, run, sha256,
    spiffe_id,
};

/// What the load saw acknowledged.
#[derive(Default)]
struct Acked {
    entries: BTreeSet<String>,
    /// `jti`s of returned task tokens.
    jtis: BTreeSet<String>,
    ended_tasks: BTreeSet<String>,
    /// Revocation sequence numbers the server answered with.
    revocation_seqs: Vec<u64>,
}

/// A small deterministic generator (xorshift), seeded from the clock and
/// printed, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `lanyard ARGS --admin-socket SOCKET`: stdout when it succeeded.
fn admin(socket: &PathBuf, args: &[&str]) -> Option<String> {
    let mut cmd = lanyard();
    cmd.args(args).arg("--admin-socket").arg(socket);
    let out = run(cmd, COMMAND_TIMEOUT);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `(revocation N…)` an admin revocation prints.
fn revocation_seq(out: &str) -> Option<u64> {
    let rest = out.split("(revocation ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Begins a task as the orchestrator, through the agent, which finds a
/// restarted server on its own time.
fn begin(rig: &TaskRig, session: &str) -> String {
    let spec = TaskSpec { session, ..TaskSpec::default() };
    eventually(Duration::from_secs(30), "the agent to reach the server", || {
        let out = rig.orchestrator.run(&spec.args());
        match out.status.success() {
            true => Ok(crate::harness::task_id("task begin", &out)),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    })
}

#[test]
fn the_server_survives_repeated_sigkill_under_mixed_load() {
    let kills: u64 = std::env::var("LANYARD_TORTURE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("torture: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let mut rig = TaskRig::start(&[], &[]);
    let socket = rig.server.admin_socket();
    let parent = rig.agent.spiffe_id();
    let acked = Mutex::new(Acked::default());
    let mut last_seq = 0;
    let mut last_records = 0u64;
    let mut n = 0u64;

    for round in 0..kills {
        let task = begin(&rig, "torture");
        let stop = AtomicBool::new(false);
        let before_kill = Duration::from_millis(100 + rng.below(500));
        std::thread::scope(|s| {
            // Two load loops: admin writes, and a connector minting.
            s.spawn(|| {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let id = spiffe_id(&format!("torture/r{round}-{i}"));
                    let created = admin(
                        &socket,
                        &["entry", "create", "--spiffe-id", &id, "--parent-id", &parent, "--selector", "unix:uid:4242"]
                            .iter()
                            .copied()
                            .chain(["--output", "json"])
                            .collect::<Vec<_>>(),
                    );
                    if let Some(out) = created {
                        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                        acked.lock().unwrap().entries.insert(v["id"].as_str().unwrap().to_owned());
                    }
                    if i % 3 == 0 {
                        let out = admin(&socket, &["risk", "report", "--user", "mallory"]);
                        if let Some(seq) = out.as_deref().and_then(revocation_seq) {
                            acked.lock().unwrap().revocation_seqs.push(seq);
                        }
                    }
                }
            });
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
                    if out.status.success() {
                        let token = String::from_utf8(out.stdout).unwrap();
                        let jti = jws_part(token.trim(), 1)["jti"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().jtis.insert(jti);
                    }
                }
            });
            std::thread::sleep(before_kill);
            // End the task in the middle of it all, then kill.
            if let Some(out) = admin(&socket, &["task", "end", &task]) {
                let mut a = acked.lock().unwrap();
                a.ended_tasks.insert(task.clone());
                a.revocation_seqs.extend(revocation_seq(&out));
            }
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            rig.server.kill();
            stop.store(true, Ordering::Relaxed);
        });
        n += 1;
        rig.server.restart();

        let a = acked.lock().unwrap();
        // Every acknowledged entry is there.
        let entries: BTreeSet<String> =
            rig.server.entries().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        let lost: Vec<_> = a.entries.difference(&entries).collect();
        assert!(lost.is_empty(), "round {round} (seed {seed}): acknowledged entries lost: {lost:?}");
        // Every returned token has its audit record.
        let minted: BTreeSet<String> = rig
            .server
            .audit_query(&["--kind", "tasktoken.mint"])
            .iter()
            .filter(|r| r["event"]["context"]["decision"] == "allow")
            .filter_map(|r| r["event"]["context"]["jti_hash"].as_str().map(str::to_owned))
            .collect();
        let unaudited: Vec<_> = a.jtis.iter().filter(|j| !minted.contains(&hex(&sha256(j.as_bytes())))).collect();
        assert!(unaudited.is_empty(), "round {round} (seed {seed}): tokens without audit records: {unaudited:?}");
        // Every acknowledged task end holds.
        let tasks: serde_json::Value =
            serde_json::from_str(&rig.server.admin_ok(&["task", "list", "--output", "json"])).unwrap();
        for ended in &a.ended_tasks {
            let t = tasks.as_array().unwrap().iter().find(|t| t["task_id"] == ended.as_str());
            let t = t.unwrap_or_else(|| panic!("round {round}: task {ended} is gone"));
            assert!(!t["ended_at"].is_null(), "round {round} (seed {seed}): ended task {ended} is running: {t}");
        }
        // The audit chain verifies and only grows; revocation numbers only grow.
        let verified = rig.server.admin_ok(&["audit", "verify"]);
        let records: u64 = verified.split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(0);
        assert!(records >= last_records, "round {round}: the audit log went from {last_records} to {records} records");
        last_records = records;
        let max_seq = a.revocation_seqs.iter().copied().max().unwrap_or(0);
        assert!(max_seq >= last_seq, "round {round}: revocation sequence went back");
        last_seq = max_seq;
        drop(a);
        if let Some(out) = admin(&socket, &["risk", "clear", "--user", "mallory"]) {
            let seq = revocation_seq(&out).unwrap_or(0);
            assert!(seq > last_seq, "round {round}: a new revocation numbered {seq} after {last_seq}");
            last_seq = seq;
        }
    }
    // The agent keeps serving after the last restart.
    let task = begin(&rig, "after");
    eventually(Duration::from_secs(20), "a token after the last restart", || {
        let out = rig.connector.fetch_token(&task, GITHUB, &[SEARCH], "read");
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    });
    let a = acked.lock().unwrap();
    eprintln!(
        "torture: {n} kills; {} entries, {} tokens, {} task ends acknowledged and all found; {last_records} audit \
         records verify; connector {CONNECTOR} still served",
        a.entries.len(),
        a.jtis.len(),
        a.ended_tasks.len()
    );
    assert!(!a.entries.is_empty() && !a.jtis.is_empty(), "the load did something");
}
