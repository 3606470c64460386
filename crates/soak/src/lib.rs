//! The soak test (`just soak`): a real `lanyard server`, `lanyard agent` and
//! `lanyard bench` (whose verify loops are a lanyard-verify verifier
//! following the bundle endpoint) under a steady rate of X.509-SVID,
//! JWT-SVID and task-token fetches and verifications, for as long as asked.
//!
//! Every `--interval` the bench prints what each operation did; at each such
//! line the soak samples the resident memory and open descriptors of the
//! three processes and the size of the server's store (sled files and the
//! audit log apart). At the end each series is judged by [`trend::judge`];
//! the run fails if any keeps growing or too many requests failed. The
//! samples are written as CSV and drawn as a PNG ([`plot`]).

mod cluster;
pub mod plot;
pub mod sample;
pub mod trend;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::{AUDIENCE, Cluster, TOOL};
use crate::sample::ProcessSample;
use crate::trend::{Tolerance, Verdict};

/// Why a soak could not run (as opposed to a run that found growth).
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// A file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server or agent did not come up, or an admin command failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The load tool failed or printed something unexpected.
    #[error("lanyard bench: {0}")]
    Bench(String),
    /// A process under test exited during the run.
    #[error("the {0} exited during the run\n{1}")]
    Exited(&'static str, String),
    /// The graph could not be drawn.
    #[error("graph: {0}")]
    Plot(String),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `lanyard` binary.
    pub lanyard: PathBuf,
    /// How long the load runs.
    pub duration: Duration,
    /// How often to sample.
    pub interval: Duration,
    /// Samples before this are not judged (caches filling, first rotations).
    pub settle: Duration,
    /// Operations per second of each operation.
    pub rate: u32,
    /// Simulated workloads (connections to the agent).
    pub workloads: u32,
    /// The connector's X.509-SVID lifetime, so that rotation happens during the run.
    pub x509_ttl: String,
}

/// One operation in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct OpPoint {
    /// `x509`, `jwt`, `task-token` or `verify`.
    pub op: String,
    /// Completed per second.
    pub per_sec: f64,
    /// 99th percentile latency, milliseconds (`None` when none completed).
    pub p99_ms: Option<f64>,
    /// Completed.
    pub count: u64,
    /// Failed.
    pub errors: u64,
}

/// Everything sampled at the end of one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// The server.
    pub server: ProcessSample,
    /// The agent.
    pub agent: ProcessSample,
    /// The bench process: load generator and verifier.
    pub verifier: ProcessSample,
    /// The server's sled files, bytes.
    pub store_bytes: u64,
    /// The server's audit log, bytes.
    pub audit_bytes: u64,
    /// What each operation did in the interval.
    pub ops: Vec<OpPoint>,
}

/// The audit log's file name in the server's data directory.
const AUDIT_LOG: &str = "audit.log";
const MIB: f64 = 1024.0 * 1024.0;
/// Most failed requests allowed, as a fraction of all.
pub const MAX_ERROR_RATIO: f64 = 0.001;

/// Runs the soak; the samples, one per interval.
pub fn run(config: &SoakConfig, mut on_sample: impl FnMut(&Sample)) -> Result<Vec<Sample>, SoakError> {
    let mut cluster = Cluster::start(&config.lanyard, &config.x509_ttl)?;
    // A file, not a pipe: a pipe nobody reads would stop the bench once full.
    let bench_log = cluster.log_file("bench")?;
    let mut bench = Command::new(&config.lanyard)
        .args(["bench", "--socket", &cluster.socket, "--bundle-url", &cluster.bundle_url, "--task", &cluster.task])
        .args(["--tool", TOOL, "--audience", AUDIENCE, "--action", "read"])
        .args(["--op", "x509", "--op", "jwt", "--op", "task-token", "--op", "verify"])
        .args(["--rate", &config.rate.to_string(), "--workloads", &config.workloads.to_string()])
        // An interval longer than sampled: the bench is alive at every
        // sample, and is stopped after the last.
        .args(["--duration", &secs(config.duration + config.interval), "--warmup", "0s"])
        .args(["--interval", &secs(config.interval)])
        .args(["--output", "json"])
        .env("LANYARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(bench_log)
        .spawn()?;
    let bench_pid = bench.id();
    let wanted = (config.duration.as_secs_f64() / config.interval.as_secs_f64()).round() as usize;
    let stdout = bench.stdout.take().ok_or_else(|| SoakError::Bench("no standard output".to_owned()))?;
    let mut samples = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let json: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| SoakError::Bench(format!("not JSON ({e}): {line}")))?;
        let Some(t) = json["interval_end_secs"].as_f64() else {
            continue; // the final report
        };
        if let Some(who) = cluster.exited() {
            return Err(SoakError::Exited(who, cluster.log_tails()));
        }
        let pid_sample = |pid: u32, who: &'static str| {
            sample::process(pid).ok_or_else(|| SoakError::Exited(who, cluster.log_tails()))
        };
        let (audit_bytes, store_bytes) = sample::dir_size(&cluster.store_dir(), AUDIT_LOG)?;
        let sample = Sample {
            t,
            server: pid_sample(cluster.server_pid(), "server")?,
            agent: pid_sample(cluster.agent_pid(), "agent")?,
            verifier: pid_sample(bench_pid, "bench")?,
            store_bytes,
            audit_bytes,
            ops: ops_of(&json)?,
        };
        on_sample(&sample);
        samples.push(sample);
        if samples.len() == wanted {
            // Its work is done; what it would say at the end is not needed.
            bench.kill()?;
            bench.wait()?;
            return Ok(samples);
        }
    }
    // The bench ended before the last sample.
    if !bench.wait()?.success() {
        return Err(SoakError::Bench(cluster.log_tail("bench")));
    }
    Ok(samples)
}

fn ops_of(json: &serde_json::Value) -> Result<Vec<OpPoint>, SoakError> {
    let ops = json["ops"].as_array().ok_or_else(|| SoakError::Bench(format!("no ops in {json}")))?;
    Ok(ops
        .iter()
        .map(|o| OpPoint {
            op: o["op"].as_str().unwrap_or("?").to_owned(),
            per_sec: o["per_sec"].as_f64().unwrap_or(0.0),
            p99_ms: o["p99_us"].as_f64().map(|us| us / 1e3),
            count: o["count"].as_u64().unwrap_or(0),
            errors: o["errors"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// Whole seconds, as `lanyard bench` takes durations.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// One judged series.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// What it is, with its unit.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// The series the soak judges, from the samples taken after `settle`.
pub fn judge(samples: &[Sample], settle: Duration) -> Vec<Judged> {
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.t > settle.as_secs_f64()).collect();
    let rss = Tolerance { relative: 0.02, absolute: 2.0 };
    let fds = Tolerance { relative: 0.0, absolute: 3.0 };
    let store = Tolerance { relative: 0.10, absolute: 4.0 };
    let p99 = Tolerance { relative: 0.50, absolute: 2.0 };
    let mib = |f: fn(&Sample) -> u64| settled.iter().map(|s| f(s) as f64 / MIB).collect::<Vec<_>>();
    let count = |f: fn(&Sample) -> u64| settled.iter().map(|s| f(s) as f64).collect::<Vec<_>>();
    let mut out = vec![
        judged("server RSS (MiB)", &mib(|s| s.server.rss_bytes), rss),
        judged("agent RSS (MiB)", &mib(|s| s.agent.rss_bytes), rss),
        judged("verifier RSS (MiB)", &mib(|s| s.verifier.rss_bytes), rss),
        judged("server fds", &count(|s| s.server.fds), fds),
        judged("agent fds", &count(|s| s.agent.fds), fds),
        judged("verifier fds", &count(|s| s.verifier.fds), fds),
        judged("store, sled files (MiB)", &mib(|s| s.store_bytes), store),
    ];
    // The audit log grows with every audited request, by design; what must
    // not grow is what each interval adds to it at a steady rate.
    let added: Vec<f64> =
        settled.windows(2).map(|w| w[1].audit_bytes.saturating_sub(w[0].audit_bytes) as f64 / MIB).collect();
    out.push(judged("audit log added per interval (MiB)", &added, Tolerance { relative: 0.25, absolute: 0.01 }));
    let names: std::collections::BTreeSet<&str> =
        settled.iter().flat_map(|s| s.ops.iter().map(|o| o.op.as_str())).collect();
    for op in names {
        let values: Vec<f64> =
            settled.iter().filter_map(|s| s.ops.iter().find(|o| o.op == op).and_then(|o| o.p99_ms)).collect();
        out.push(judged(&format!("{op} p99 (ms)"), &values, p99));
    }
    out
}

fn judged(name: &str, values: &[f64], tolerance: Tolerance) -> Judged {
    Judged { name: name.to_owned(), verdict: trend::judge(values, tolerance) }
}

/// Requests that failed over the whole run, per operation, when more than
/// [`MAX_ERROR_RATIO`] of that operation's.
pub fn error_excess(samples: &[Sample]) -> Vec<(String, u64, u64)> {
    let mut totals: Vec<(String, u64, u64)> = Vec::new();
    for point in samples.iter().flat_map(|s| &s.ops) {
        match totals.iter_mut().find(|(op, _, _)| *op == point.op) {
            Some((_, count, errors)) => {
                *count += point.count;
                *errors += point.errors;
            }
            None => totals.push((point.op.clone(), point.count, point.errors)),
        }
    }
    totals.retain(|(_, count, errors)| *errors as f64 > (*count + *errors) as f64 * MAX_ERROR_RATIO);
    totals
}

/// The samples as CSV, one row per interval.
pub fn csv(samples: &[Sample]) -> String {
    let ops: Vec<String> = samples.first().map(|s| s.ops.iter().map(|o| o.op.clone()).collect()).unwrap_or_default();
    let mut out = String::from(
        "t_secs,server_rss_bytes,server_fds,agent_rss_bytes,agent_fds,verifier_rss_bytes,verifier_fds,store_bytes,audit_bytes",
    );
    for op in &ops {
        out.push_str(&format!(",{op}_per_sec,{op}_p99_ms,{op}_errors"));
    }
    out.push('\n');
    for s in samples {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}",
            s.t,
            s.server.rss_bytes,
            s.server.fds,
            s.agent.rss_bytes,
            s.agent.fds,
            s.verifier.rss_bytes,
            s.verifier.fds,
            s.store_bytes,
            s.audit_bytes
        ));
        for op in &ops {
            match s.ops.iter().find(|o| &o.op == op) {
                Some(o) => out.push_str(&format!(
                    ",{},{},{}",
                    o.per_sec,
                    o.p99_ms.map(|p| p.to_string()).unwrap_or_default(),
                    o.errors
                )),
                None => out.push_str(",,,"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
