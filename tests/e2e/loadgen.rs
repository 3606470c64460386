//! `lanyard bench`: the load tool against a real server and agent — every
//! operation as the connector workload, and the one-line failures when the
//! caller is not registered or the agent is not there.

use serde_json::Value;

use crate::harness::{
    COMMAND_TIMEOUT, GITHUB, SEARCH, TaskRig, TaskSpec, free_port, lanyard, run, stderr_lines, success,
};

#[test]
fn bench_drives_all_four_ops_through_the_agent_without_errors() {
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let task = rig.begin(&TaskSpec::default());
    let url = rig.server.bundle_url();
    #[rustfmt::skip]
    let args = [
        "bench", "--duration", "1s", "--warmup", "0s", "--workloads", "2", "--output", "json",
        "--op", "x509", "--op", "jwt", "--op", "task-token", "--op", "verify",
        "--task", &task, "--tool", SEARCH, "--audience", GITHUB, "--bundle-url", &url,
    ];
    let report: Value = serde_json::from_str(&success("lanyard bench", &rig.connector.run(&args))).unwrap();
    assert_eq!(report["workloads"], 2, "{report}");
    assert_eq!(report["duration_secs"], 1.0, "{report}");
    let ops = report["ops"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().map(|op| op["op"].as_str().unwrap()).collect();
    assert_eq!(names, ["x509", "jwt", "task-token", "verify"], "{report}");
    for op in ops {
        let count = op["count"].as_u64().unwrap();
        assert!(count > 0, "no successful {}: {report}", op["op"]);
        assert_eq!(op["errors"], 0, "{report}");
        // One second measured: throughput is the count.
        assert_eq!(op["per_sec"].as_f64().unwrap().round(), count as f64, "{report}");
        let [p50, p95, p99, max] = ["p50_us", "p95_us", "p99_us", "max_us"].map(|k| op[k].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{report}");
    }

    // A process no entry matches: every operation fails, and it says why on one line.
    let out = rig.workload("stranger").run(&["bench", "--duration", "1s", "--warmup", "0s", "--op", "x509"]);
    assert!(!out.status.success(), "an unregistered bench succeeded");
    assert_eq!(stderr_lines(&out), ["lanyard: every operation failed (x509: permission denied: no identity issued)"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_without_an_agent_fails_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("agent.sock").display());
    let mut cmd = lanyard();
    cmd.args(["bench", "--duration", "1s", "--socket", &socket]);
    let out = run(cmd, COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("lanyard: cannot reach the agent's socket"), "{lines:?}");
}

/// Workloads asking at once: the agent sends their task-token requests to
/// the server in batches of several on its MintTaskTokens stream (its
/// metrics say how many batches and requests), and every workload gets its
/// own answer.
#[test]
fn concurrent_task_token_requests_reach_the_server_in_batches() {
    let port = free_port();
    let rig = TaskRig::start_with_agent_args(&["--metrics-listen".to_owned(), format!("127.0.0.1:{port}")]);
    let task = rig.begin(&TaskSpec::default());
    #[rustfmt::skip]
    let args = [
        "bench", "--duration", "2s", "--warmup", "0s", "--workloads", "32", "--output", "json",
        "--op", "task-token", "--task", &task, "--tool", SEARCH, "--audience", GITHUB,
    ];
    let report: Value = serde_json::from_str(&success("lanyard bench", &rig.connector.run(&args))).unwrap();
    let op = &report["ops"][0];
    assert_eq!(op["errors"], 0, "{report}");
    let answered = op["count"].as_u64().unwrap();

    let (status, text) = crate::verify::http_get(&format!("http://127.0.0.1:{port}"), "/metrics", &[]);
    assert_eq!(status, 200);
    let value = |series: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("{series} missing from\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (calls, requests) =
        (value("lanyard_agent_task_token_batches_total"), value("lanyard_agent_task_token_batched_total"));
    // Every answer went through a batch (the warm-up's and the tail's too).
    assert!(requests >= answered && answered > 0, "{requests} sent, {answered} answered");
    assert!(calls * 2 <= requests, "32 workloads at once, yet {calls} calls for {requests} requests");
}
