//! `lanyard bench`: load on a running agent (and, through it, the server).
//!
//! Each of N simulated workloads opens its own connection to the agent's
//! socket and runs every selected operation on it in a loop of its own:
//! closed by default (the next request goes out when the last one has
//! returned), or paced to a steady `--rate`. With `--interval` a line per
//! period says what each operation did in it, for soak runs. The caller
//! is attested as itself, so this process must be registered as a workload.
//! Operations that complete in the warm-up are not counted; those still in
//! flight when the measured window closes are dropped. Throughput is the
//! number completed in the window over its length.
//!
//! The statistics (a fixed-size [`Histogram`] per loop, merged at the end,
//! and the [`Report`] printed from them) are pure and come first; the loops
//! that do the IO follow.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use lanyard_proto::agent::FetchTaskTokenRequest;
use lanyard_proto::agent::tasks_client::TasksClient;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{JwtsvidRequest, X509svidRequest};
use lanyard_verify::{Endpoint, Expect, Verifier, VerifierConfig};
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cli::{BenchArgs, Output};
use crate::clients::{self, status_line, workload_request};

/// Most simulated workloads (each holds one connection to the agent).
const MAX_WORKLOADS: u32 = 1024;
/// Longest wait for one operation before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed operation, so a refusing agent is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// A verify loop fetches a new task token when its own expires within this.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Distinct error messages kept per operation (every error is counted).
const MAX_ERROR_SAMPLES: usize = 5;
/// Shortest `--interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Highest `--rate` (per operation).
const MAX_RATE: u32 = 1_000_000;

/// One operation the load generator can drive.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    /// FetchX509SVID over the Workload API (the first message of a new stream).
    #[value(name = "x509")]
    X509,
    /// FetchJWTSVID for --audience over the Workload API.
    #[value(name = "jwt")]
    Jwt,
    /// FetchTaskToken over the agent's Tasks API (needs --task and --tool).
    #[value(name = "task-token")]
    TaskToken,
    /// Verify the fetched task tokens in process with lanyard-verify (needs --task and --bundle-url).
    #[value(name = "verify")]
    Verify,
}

impl Op {
    /// Its name on the command line and in the report.
    fn name(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::TaskToken => "task-token",
            Self::Verify => "verify",
        }
    }
}

/// The operations to drive, in report order: those asked for, or else every
/// one the flags make possible. Also checks the numbers.
fn plan(args: &BenchArgs) -> anyhow::Result<Vec<Op>> {
    if !(1..=MAX_WORKLOADS).contains(&args.workloads) {
        bail!("--workloads must be between 1 and {MAX_WORKLOADS}");
    }
    if args.duration.is_zero() {
        bail!("--duration must be longer than 0s");
    }
    if args.interval.is_some_and(|i| i < MIN_INTERVAL) {
        bail!("--interval must be at least {}", secs(MIN_INTERVAL));
    }
    if args.rate > MAX_RATE {
        bail!("--rate must be at most {MAX_RATE}");
    }
    let task = args.task.is_some();
    let bundle = args.bundle_url.is_some();
    let mut ops = args.ops.clone();
    if ops.is_empty() {
        ops = vec![Op::X509, Op::Jwt];
        if task {
            ops.push(Op::TaskToken);
        }
        if task && bundle {
            ops.push(Op::Verify);
        }
    }
    ops.sort();
    ops.dedup();
    if ops.contains(&Op::TaskToken) && !task {
        bail!("--op task-token needs --task and --tool");
    }
    if ops.contains(&Op::Verify) && !(task && bundle) {
        bail!("--op verify checks task tokens: it needs --task, --tool and --bundle-url");
    }
    Ok(ops)
}

// ---------------------------------------------------------------------------
// Statistics (pure).

/// Bits of sub-bucket resolution: 128 buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Exact values below `SUB`, then `SUB` buckets for each of the remaining powers of two.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// Latencies in nanoseconds, in log-linear buckets: exact below 256 ns, and
/// no bucket wider than 1/128 (0.8%) of the values in it. Fixed memory
/// however long the run; merging two is adding their counts. Count, sum,
/// minimum and maximum are exact.
#[derive(Clone, Debug, PartialEq)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_nanos: u128,
    min_nanos: u64,
    max_nanos: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS], count: 0, sum_nanos: 0, min_nanos: u64::MAX, max_nanos: 0 }
    }
}

/// The bucket a value falls in.
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB {
        return nanos as usize;
    }
    let msb = 63 - nanos.leading_zeros();
    let shift = msb - SUB_BITS;
    // The top SUB_BITS + 1 bits, leading 1 removed: 0..SUB.
    let sub = (nanos >> shift) - SUB;
    (shift as usize + 1) * SUB as usize + sub as usize
}

/// The smallest and largest values of a bucket.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index);
    }
    let shift = index / SUB - 1;
    let sub = index % SUB + SUB;
    let high = (u128::from(sub + 1) << shift) - 1;
    (sub << shift, u64::try_from(high).unwrap_or(u64::MAX))
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)] += 1;
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
        self.min_nanos = self.min_nanos.min(nanos);
        self.max_nanos = self.max_nanos.max(nanos);
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.min_nanos = self.min_nanos.min(other.min_nanos);
        self.max_nanos = self.max_nanos.max(other.max_nanos);
    }

    /// The nearest-rank `q`-quantile (`0.0..=1.0`), reported as the top of
    /// its bucket but never above the largest value seen: at most 0.8% above
    /// the exact value. `None` when empty.
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_bounds(index).1.min(self.max_nanos)));
            }
        }
        Some(Duration::from_nanos(self.max_nanos))
    }

    fn mean(&self) -> Option<Duration> {
        let mean = self.sum_nanos.checked_div(u128::from(self.count))?;
        Some(Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX)))
    }

    fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_nanos))
    }
}

/// What one loop saw of one operation in the measured window.
#[derive(Clone, Debug, Default, PartialEq)]
struct Tally {
    /// Latencies of the operations that succeeded.
    latencies: Histogram,
    errors: u64,
    /// Up to [`MAX_ERROR_SAMPLES`] distinct messages, with how often each came.
    error_samples: BTreeMap<String, u64>,
}

impl Tally {
    fn ok(&mut self, latency: Duration) {
        self.latencies.record(latency);
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        let room = self.error_samples.len() < MAX_ERROR_SAMPLES;
        match self.error_samples.get_mut(&message) {
            Some(n) => *n += 1,
            None if room => {
                self.error_samples.insert(message, 1);
            }
            None => {}
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.merge(&other.latencies);
        self.errors += other.errors;
        for (message, n) in other.error_samples {
            let room = self.error_samples.len() < MAX_ERROR_SAMPLES;
            match self.error_samples.get_mut(&message) {
                Some(mine) => *mine += n,
                None if room => {
                    self.error_samples.insert(message, n);
                }
                None => {}
            }
        }
    }
}

/// Latency figures of the operations that succeeded.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Latency {
    mean: Duration,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

/// One operation's line of the report.
#[derive(Clone, Debug, PartialEq)]
struct OpSummary {
    op: Op,
    /// Completed successfully in the measured window.
    count: u64,
    errors: u64,
    /// `count` per second of the measured window.
    per_sec: f64,
    /// `None` when none succeeded.
    latency: Option<Latency>,
    /// Distinct error messages, most frequent first.
    error_samples: Vec<(String, u64)>,
}

impl OpSummary {
    /// Its JSON object; latencies in microseconds, `null` when none succeeded.
    fn json(&self) -> Value {
        let l = self.latency.as_ref();
        json!({
            "op": self.op.name(),
            "count": self.count,
            "errors": self.errors,
            "per_sec": (self.per_sec * 10.0).round() / 10.0,
            "mean_us": l.map(|l| us(l.mean)),
            "p50_us": l.map(|l| us(l.p50)),
            "p95_us": l.map(|l| us(l.p95)),
            "p99_us": l.map(|l| us(l.p99)),
            "max_us": l.map(|l| us(l.max)),
            "error_samples": self.error_samples.iter()
                .map(|(message, n)| json!({ "message": message, "count": n }))
                .collect::<Vec<_>>(),
        })
    }
}

/// One `--interval` line: what each operation did in the period that ended
/// `end` after the start of measuring.
fn interval_line(end: Duration, ops: &[OpSummary], output: Output) -> String {
    match output {
        Output::Json => json!({ "interval_end_secs": end.as_secs_f64(), "ops": ops.iter().map(OpSummary::json).collect::<Vec<_>>() }).to_string(),
        Output::Text => {
            let parts: Vec<String> = ops
                .iter()
                .map(|s| {
                    let p99 = s.latency.map_or_else(|| "-".to_owned(), |l| ms(l.p99));
                    format!("{} {:.1}/s p99 {p99} ms, {} errors", s.op.name(), s.per_sec, s.errors)
                })
                .collect();
            format!("[{}] {}", secs(end), parts.join("; "))
        }
    }
}

fn summarize(op: Op, tally: &Tally, measured: Duration) -> OpSummary {
    let h = &tally.latencies;
    let latency = match (h.mean(), h.quantile(0.50), h.quantile(0.95), h.quantile(0.99), h.max()) {
        (Some(mean), Some(p50), Some(p95), Some(p99), Some(max)) => Some(Latency { mean, p50, p95, p99, max }),
        _ => None,
    };
    let per_sec = if measured.is_zero() { 0.0 } else { h.count as f64 / measured.as_secs_f64() };
    let mut error_samples: Vec<_> = tally.error_samples.iter().map(|(m, n)| (m.clone(), *n)).collect();
    error_samples.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    OpSummary { op, count: h.count, errors: tally.errors, per_sec, latency, error_samples }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    socket: String,
    workloads: u32,
    warmup: Duration,
    measured: Duration,
    ops: Vec<OpSummary>,
}

/// Milliseconds with three decimals (microsecond resolution).
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Microseconds to a tenth, for JSON.
fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

/// Seconds as `5s` or `1.5s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl Report {
    /// A header line, a table with one row per operation, then the error messages seen.
    fn text(&self) -> String {
        let mut out = format!(
            "lanyard bench: {} workload(s), {} measured after {} warm-up, agent {}\n",
            self.workloads,
            secs(self.measured),
            secs(self.warmup),
            self.socket
        );
        out.push_str(&format!(
            "{:<11}{:>10}{:>8}{:>11}{:>10}{:>10}{:>10}{:>10}\n",
            "op", "count", "errors", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        ));
        for s in &self.ops {
            let [p50, p95, p99, max] = match &s.latency {
                Some(l) => [l.p50, l.p95, l.p99, l.max].map(ms),
                None => ["-"; 4].map(str::to_owned),
            };
            out.push_str(&format!(
                "{:<11}{:>10}{:>8}{:>11.1}{p50:>10}{p95:>10}{p99:>10}{max:>10}\n",
                s.op.name(),
                s.count,
                s.errors,
                s.per_sec
            ));
        }
        for s in &self.ops {
            for (message, n) in &s.error_samples {
                out.push_str(&format!("{} error ({n}x): {message}\n", s.op.name()));
            }
        }
        out
    }

    /// The same as JSON; latencies in microseconds, `null` when none succeeded.
    fn json(&self) -> Value {
        let ops: Vec<Value> = self.ops.iter().map(OpSummary::json).collect();
        json!({
            "socket": self.socket,
            "workloads": self.workloads,
            "warmup_secs": self.warmup.as_secs_f64(),
            "duration_secs": self.measured.as_secs_f64(),
            "ops": ops,
        })
    }

    /// When no operation succeeded: why, on one line.
    fn all_failed(&self) -> Option<String> {
        if self.ops.iter().any(|s| s.count > 0) {
            return None;
        }
        let first = self.ops.iter().find_map(|s| s.error_samples.first().map(|(m, _)| (s.op, m)));
        Some(match first {
            Some((op, message)) => format!("every operation failed ({}: {message})", op.name()),
            None => format!("no operation completed within the measured {}", secs(self.measured)),
        })
    }
}

// ---------------------------------------------------------------------------
// The load (IO).

/// Runs `lanyard bench`.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let ops = plan(&args)?;
    let verifier = match &args.bundle_url {
        Some(url) if ops.contains(&Op::Verify) => Some(start_verifier(url).await?),
        _ => None,
    };
    let task_request = args.task.as_ref().map(|task| FetchTaskTokenRequest {
        task_id: task.clone(),
        audience: args.audience.clone(),
        tools: args.tools.clone(),
        action: args.action.clone(),
        ttl_seconds: 0,
    });
    // Every connection up front: an unreachable agent fails here, on one line.
    let mut channels = Vec::new();
    for _ in 0..args.workloads {
        channels.push(clients::agent_channel(&args.socket.socket).await?);
    }
    let start = Instant::now();
    let window = Window { from: start + args.warmup, to: start + args.warmup + args.duration };
    // Each loop's share of --rate: one request per `period`, loops spread evenly over it.
    let period = (args.rate > 0).then(|| Duration::from_secs_f64(f64::from(args.workloads) / f64::from(args.rate)));
    let periods = args.interval.map(|_| Periods::new(&ops));
    let mut loops = tokio::task::JoinSet::new();
    for (index, channel) in channels.iter().enumerate() {
        // The loops of one workload start together, the workloads spread evenly over a period.
        let first = period.map(|period| (start + period.mul_f64(index as f64 / f64::from(args.workloads)), period));
        for &op in &ops {
            let caller = match op {
                Op::X509 => Caller::X509(SpiffeWorkloadApiClient::new(channel.clone())),
                Op::Jwt => Caller::Jwt(
                    SpiffeWorkloadApiClient::new(channel.clone()),
                    JwtsvidRequest { audience: vec![args.audience.clone()], spiffe_id: String::new() },
                ),
                Op::TaskToken | Op::Verify => {
                    let request = task_request.clone().context("task tokens need --task")?;
                    let tasks = TasksClient::new(channel.clone());
                    match (op, &verifier) {
                        (Op::Verify, Some(verifier)) => {
                            Caller::Verify { tasks, request, verifier: verifier.clone(), token: None }
                        }
                        (Op::Verify, None) => bail!("verify needs --bundle-url"),
                        _ => Caller::TaskToken(tasks, request),
                    }
                }
            };
            let ticker = first.map(|(at, period)| ticker(at, period));
            loops.spawn(drive(op, caller, Pacing { window, ticker, periods: periods.clone() }));
        }
    }
    let reporter = match (args.interval, &periods) {
        (Some(every), Some(periods)) => {
            Some(tokio::spawn(report_periods(periods.clone(), window, every, args.output.output)))
        }
        _ => None,
    };
    let mut tallies: BTreeMap<Op, Tally> = ops.iter().map(|op| (*op, Tally::default())).collect();
    while let Some(done) = loops.join_next().await {
        let (op, tally) = done.context("a load loop stopped unexpectedly")?;
        tallies.entry(op).or_default().merge(tally);
    }
    if let Some(reporter) = reporter {
        reporter.await.context("the interval reporter stopped unexpectedly")?;
    }
    let report = Report {
        socket: args.socket.socket.clone(),
        workloads: args.workloads,
        warmup: args.warmup,
        measured: args.duration,
        ops: tallies.iter().map(|(op, tally)| summarize(*op, tally, args.duration)).collect(),
    };
    if let Some(why) = report.all_failed() {
        bail!(why);
    }
    match args.output.output {
        Output::Json => println!("{}", report.json()),
        Output::Text => print!("{}", report.text()),
    }
    Ok(())
}

/// A verifier on the issuer's bundle endpoint, expecting the issuer its
/// discovery document names (as `lanyard token verify` does).
async fn start_verifier(url: &str) -> anyhow::Result<Verifier> {
    let endpoint = Endpoint::new(url, &[])?;
    let mut config = VerifierConfig::default();
    if let Some(issuer) = lanyard_verify::discovered_issuer(&endpoint).await? {
        config = config.issuer(issuer);
    }
    Verifier::start(endpoint, config).await.with_context(|| format!("cannot start a verifier on {url}"))
}

/// What each operation did in the current `--interval` period, shared by
/// the loops and taken by the reporter at the end of each period.
#[derive(Clone)]
struct Periods(Arc<Mutex<BTreeMap<Op, Tally>>>);

impl Periods {
    fn new(ops: &[Op]) -> Self {
        Self(Arc::new(Mutex::new(ops.iter().map(|op| (*op, Tally::default())).collect())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Op, Tally>> {
        // A loop that panicked holding the lock left whole tallies behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the period saw, leaving empty tallies for the next.
    fn take(&self) -> BTreeMap<Op, Tally> {
        let mut tallies = self.lock();
        let fresh = tallies.keys().map(|op| (*op, Tally::default())).collect();
        std::mem::replace(&mut *tallies, fresh)
    }
}

/// Prints a line per `every` of the measured window.
async fn report_periods(periods: Periods, window: Window, every: Duration, output: Output) {
    let mut end = window.from + every;
    periods.take(); // what the warm-up did
    while end <= window.to {
        tokio::time::sleep_until(end).await;
        let ops: Vec<OpSummary> = periods.take().iter().map(|(op, tally)| summarize(*op, tally, every)).collect();
        println!("{}", interval_line(end - window.from, &ops, output));
        end += every;
    }
}

/// A loop's ticker for `--rate`: ticks at `first`, then every `period`.
///
/// A tick missed while a call was out (the system stalled) is skipped, and
/// the loop goes on at its own phase: `first` plus a whole number of
/// periods. Delaying instead (next tick a period after the late one) put
/// every loop that waited through one stall on the same phase, so that
/// from then on the workloads sent together in bursts rather than spread
/// over the period: after one stall of 33-185 ms, p99 at 5,000/s was
/// 6-20 ms every second to the end of the run, against 2.4-6.1 ms before
/// it (docs/benchmarks.md).
fn ticker(first: Instant, period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(first, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
}

/// How a loop runs: when it counts, how fast, and where it also reports.
struct Pacing {
    window: Window,
    /// With `--rate`: the next request waits for the next tick.
    ticker: Option<tokio::time::Interval>,
    /// With `--interval`: each counted outcome is also recorded here.
    periods: Option<Periods>,
}

/// The measured window: after the warm-up, before the end.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: Instant,
    to: Instant,
}

/// One loop's way of doing its operation.
enum Caller {
    X509(SpiffeWorkloadApiClient<Channel>),
    Jwt(SpiffeWorkloadApiClient<Channel>, JwtsvidRequest),
    TaskToken(TasksClient<Channel>, FetchTaskTokenRequest),
    Verify {
        tasks: TasksClient<Channel>,
        request: FetchTaskTokenRequest,
        verifier: Verifier,
        /// The token being verified and when it expires (Unix seconds).
        token: Option<(String, i64)>,
    },
}

impl Caller {
    /// Does the operation once; how long its timed part took.
    async fn call(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        match self {
            Self::X509(client) => {
                let mut stream =
                    client.fetch_x509svid(workload_request(X509svidRequest {})).await.map_err(|s| status_line(&s))?;
                match stream.get_mut().message().await {
                    Ok(Some(m)) if !m.svids.is_empty() => Ok(started.elapsed()),
                    Ok(Some(_)) => Err("the agent answered with no X.509-SVIDs".into()),
                    Ok(None) => Err("the agent closed the stream without an answer".into()),
                    Err(s) => Err(status_line(&s)),
                }
            }
            Self::Jwt(client, request) => {
                let reply =
                    client.fetch_jwtsvid(workload_request(request.clone())).await.map_err(|s| status_line(&s))?;
                match reply.get_ref().svids.is_empty() {
                    false => Ok(started.elapsed()),
                    true => Err("the agent answered with no JWT-SVIDs".into()),
                }
            }
            Self::TaskToken(tasks, request) => {
                let reply =
                    tasks.fetch_task_token(workload_request(request.clone())).await.map_err(|s| status_line(&s))?;
                match reply.get_ref().token.is_empty() {
                    false => Ok(started.elapsed()),
                    true => Err("the agent answered with an empty task token".into()),
                }
            }
            Self::Verify { tasks, request, verifier, token } => {
                let now = i64::try_from(lanyard_core::unix_secs(SystemTime::now())).unwrap_or(i64::MAX);
                let margin = i64::try_from(TOKEN_REFRESH_MARGIN.as_secs()).unwrap_or(0);
                // A token of our own to verify; fetching it is not timed.
                if token.as_ref().is_none_or(|(_, expires_at)| *expires_at - margin <= now) {
                    let reply = tasks
                        .fetch_task_token(workload_request(request.clone()))
                        .await
                        .map_err(|s| format!("fetching a token to verify: {}", status_line(&s)))?
                        .into_inner();
                    *token = Some((reply.token, reply.expires_at));
                }
                let Some((jwt, _)) = token.as_ref() else { return Err("no task token to verify".into()) };
                let mut expect = Expect::audience(&request.audience).action(&request.action);
                expect.tool = request.tools.first().map(String::as_str);
                let started = Instant::now();
                let verified = verifier.task_token(jwt, &expect);
                let elapsed = started.elapsed();
                // Verification never waits: let the other loops run.
                tokio::task::yield_now().await;
                verified.map(|_| elapsed).map_err(|e| format!("token refused: {e}"))
            }
        }
    }
}

/// Runs `caller` in its loop until the window closes; what it saw in the window.
async fn drive(op: Op, mut caller: Caller, pacing: Pacing) -> (Op, Tally) {
    let Pacing { window, mut ticker, periods } = pacing;
    let mut tally = Tally::default();
    let end = tokio::time::sleep_until(window.to);
    tokio::pin!(end);
    loop {
        if let Some(ticker) = ticker.as_mut() {
            tokio::select! {
                biased;
                () = &mut end => break,
                _ = ticker.tick() => {}
            }
        }
        let outcome = tokio::select! {
            biased;
            () = &mut end => break,
            outcome = tokio::time::timeout(OP_TIMEOUT, caller.call()) => outcome,
        };
        let now = Instant::now();
        if now >= window.to {
            break;
        }
        let counted = now >= window.from;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}", secs(OP_TIMEOUT))),
        };
        if counted {
            record(&mut tally, &outcome);
            if let Some(periods) = &periods {
                record(periods.lock().entry(op).or_default(), &outcome);
            }
        }
        if outcome.is_err() {
            tokio::select! {
                biased;
                () = &mut end => break,
                () = tokio::time::sleep(ERROR_PAUSE) => {}
            }
        }
    }
    (op, tally)
}

fn record(tally: &mut Tally, outcome: &Result<Duration, String>) {
    match outcome {
        Ok(latency) => tally.ok(*latency),
        Err(message) => tally.error(message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn us_(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn filled(samples: impl IntoIterator<Item = Duration>) -> Histogram {
        let mut h = Histogram::default();
        for s in samples {
            h.record(s);
        }
        h
    }

    /// Within `tolerance` (a fraction) of `exact`, and not below it.
    fn close(got: Duration, exact: Duration, tolerance: f64) -> bool {
        got >= exact && got.as_secs_f64() <= exact.as_secs_f64() * (1.0 + tolerance)
    }

    #[test]
    fn every_value_lies_in_its_bucket_which_is_at_most_a_128th_wide() {
        let mut values: Vec<u64> = (0..2000).collect();
        for bit in 7..64 {
            let p = 1u64 << bit;
            values.extend([p - 1, p, p + 1, p + p / 3]);
        }
        values.push(u64::MAX);
        for v in values {
            let index = bucket_of(v);
            assert!(index < BUCKETS, "{v} -> bucket {index}");
            let (low, high) = bucket_bounds(index);
            assert!(low <= v && v <= high, "{v} not in bucket {index} [{low}, {high}]");
            assert!((high - low) as f64 <= v as f64 / SUB as f64, "bucket of {v} too wide: [{low}, {high}]");
        }
        // Exact below 256 ns; buckets follow each other without gaps.
        assert!((0..256).all(|v| bucket_bounds(bucket_of(v)) == (v, v)));
        assert!((1..BUCKETS).all(|i| bucket_bounds(i).0 == bucket_bounds(i - 1).1 + 1));
    }

    #[test]
    fn quantiles_of_a_uniform_run_are_within_a_percent_and_max_and_mean_exact() {
        let h = filled((1..=1000).map(us_));
        assert!(close(h.quantile(0.50).unwrap(), us_(500), 0.01), "{:?}", h.quantile(0.50));
        assert!(close(h.quantile(0.95).unwrap(), us_(950), 0.01), "{:?}", h.quantile(0.95));
        assert!(close(h.quantile(0.99).unwrap(), us_(990), 0.01), "{:?}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), Some(us_(1000)));
        assert!(close(h.quantile(0.0).unwrap(), us_(1), 0.01), "{:?}", h.quantile(0.0));
        assert_eq!(h.max(), Some(us_(1000)));
        assert_eq!(h.mean(), Some(Duration::from_nanos(500_500)));
    }

    #[test]
    fn quantiles_never_pass_the_maximum_and_grow_with_the_rank() {
        // 990 fast calls and 10 slow ones: p99 is still fast, max is slow.
        let h = filled(std::iter::repeat_n(us_(1000), 990).chain(std::iter::repeat_n(us_(100_000), 10)));
        let [p50, p95, p99, max] = [0.5, 0.95, 0.99, 1.0].map(|q| h.quantile(q).unwrap());
        assert!(p50 <= p95 && p95 <= p99 && p99 <= max);
        assert!(close(p99, us_(1000), 0.01), "{p99:?}");
        assert_eq!(max, us_(100_000));
        // One sample: every quantile is that sample, exactly.
        let one = filled([Duration::from_nanos(1_234_567)]);
        assert!([0.0, 0.5, 0.99, 1.0].iter().all(|q| one.quantile(*q) == Some(Duration::from_nanos(1_234_567))));
        let empty = Histogram::default();
        assert_eq!((empty.quantile(0.5), empty.mean(), empty.max()), (None, None, None));
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let a: Vec<_> = (1..500).map(|i| us_(i * 7)).collect();
        let b: Vec<_> = (1..300).map(|i| us_(i * 13 + 5)).collect();
        let mut merged = filled(a.clone());
        merged.merge(&filled(b.clone()));
        assert_eq!(merged, filled(a.into_iter().chain(b)));
        let mut into_empty = Histogram::default();
        into_empty.merge(&filled([us_(3)]));
        assert_eq!(into_empty, filled([us_(3)]));
    }

    #[test]
    fn summary_counts_successes_per_second_and_errors_apart() {
        let mut tally = Tally::default();
        for i in 1..=100 {
            tally.ok(us_(i));
        }
        for _ in 0..3 {
            tally.error("permission denied: no".into());
        }
        tally.error("unavailable: agent gone".into());
        let s = summarize(Op::Jwt, &tally, Duration::from_secs(4));
        assert_eq!((s.count, s.errors), (100, 4));
        assert!((s.per_sec - 25.0).abs() < 1e-9, "{}", s.per_sec);
        let l = s.latency.unwrap();
        assert_eq!((l.max, l.mean), (us_(100), Duration::from_nanos(50_500)));
        assert!(close(l.p50, us_(50), 0.01));
        assert_eq!(s.error_samples, vec![("permission denied: no".into(), 3), ("unavailable: agent gone".into(), 1)]);

        let failed = summarize(Op::X509, &Tally { errors: 2, ..Tally::default() }, Duration::from_secs(1));
        assert_eq!((failed.count, failed.per_sec, failed.latency), (0, 0.0, None));
    }

    #[test]
    fn error_messages_are_all_counted_but_only_a_few_kept() {
        let mut a = Tally::default();
        for i in 0..20 {
            a.error(format!("error {}", i % 10));
        }
        let mut b = Tally::default();
        b.error("error 0".into());
        b.error("something else".into());
        a.merge(b);
        assert_eq!(a.errors, 22);
        assert_eq!(a.error_samples.len(), MAX_ERROR_SAMPLES);
        assert_eq!(a.error_samples["error 0"], 3);
    }

    fn report(ops: Vec<OpSummary>) -> Report {
        Report {
            socket: "unix:///tmp/agent.sock".into(),
            workloads: 8,
            warmup: Duration::from_secs(1),
            measured: Duration::from_secs(5),
            ops,
        }
    }

    #[test]
    fn the_report_prints_a_row_per_op_and_the_same_as_json() {
        let mut good = Tally::default();
        (1..=1000).for_each(|i| good.ok(us_(i)));
        let mut bad = Tally::default();
        bad.error("permission denied: not registered".into());
        let r = report(vec![
            summarize(Op::X509, &good, Duration::from_secs(5)),
            summarize(Op::TaskToken, &bad, Duration::from_secs(5)),
        ]);
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("8 workload(s), 5s measured after 1s warm-up"), "{text}");
        assert!(lines[1].starts_with("op") && lines[1].contains("p99 ms"), "{text}");
        assert!(lines[2].starts_with("x509") && lines[2].contains("200.0") && lines[2].contains("1.000"), "{text}");
        assert!(lines[3].starts_with("task-token") && lines[3].trim_end().ends_with('-'), "{text}");
        assert_eq!(lines[4], "task-token error (1x): permission denied: not registered");

        let json = r.json();
        assert_eq!(json["workloads"], 8);
        assert_eq!(json["duration_secs"], 5.0);
        let x509 = &json["ops"][0];
        assert_eq!(
            (x509["op"].as_str(), x509["count"].as_u64(), x509["errors"].as_u64()),
            (Some("x509"), Some(1000), Some(0))
        );
        assert_eq!((x509["per_sec"].as_f64(), x509["max_us"].as_f64()), (Some(200.0), Some(1000.0)));
        assert!(x509["p50_us"].as_f64().unwrap() <= x509["p99_us"].as_f64().unwrap());
        assert_eq!(json["ops"][1]["p50_us"], Value::Null);
        assert_eq!(json["ops"][1]["error_samples"][0]["count"], 1);
        assert_eq!(r.all_failed(), None);
    }

    #[test]
    fn a_run_where_nothing_succeeded_says_why_on_one_line() {
        let mut bad = Tally::default();
        bad.error("permission denied: no identity for this process".into());
        let r = report(vec![
            summarize(Op::X509, &Tally::default(), Duration::from_secs(5)),
            summarize(Op::Jwt, &bad, Duration::from_secs(5)),
        ]);
        assert_eq!(
            r.all_failed().unwrap(),
            "every operation failed (jwt: permission denied: no identity for this process)"
        );
        let idle = report(vec![summarize(Op::X509, &Tally::default(), Duration::from_secs(5))]);
        assert_eq!(idle.all_failed().unwrap(), "no operation completed within the measured 5s");
    }

    fn bench(words: &[&str]) -> Result<BenchArgs, String> {
        let argv = [&["lanyard", "bench"], words].concat();
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Bench(args) => Ok(args),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    fn planned(words: &[&str]) -> Result<Vec<Op>, String> {
        plan(&bench(words)?).map_err(|e| e.to_string())
    }

    #[test]
    fn the_flags_decide_which_ops_run() {
        let args = bench(&[]).unwrap();
        assert_eq!((args.workloads, args.duration, args.warmup), (8, Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((args.audience.as_str(), args.action.as_str()), ("bench", "read"));
        assert_eq!(planned(&[]).unwrap(), [Op::X509, Op::Jwt]);
        let task = ["--task", "t1", "--tool", "github.search"];
        assert_eq!(planned(&task).unwrap(), [Op::X509, Op::Jwt, Op::TaskToken]);
        let all = [&task[..], &["--bundle-url", "http://127.0.0.1:1"]].concat();
        assert_eq!(planned(&all).unwrap(), [Op::X509, Op::Jwt, Op::TaskToken, Op::Verify]);
        // Asked for: deduplicated, in report order.
        assert_eq!(planned(&["--op", "jwt", "--op", "x509", "--op", "jwt"]).unwrap(), [Op::X509, Op::Jwt]);
        let only_verify = [&all[..], &["--op", "verify"]].concat();
        assert_eq!(planned(&only_verify).unwrap(), [Op::Verify]);
    }

    #[test]
    fn ops_without_what_they_need_and_bad_numbers_are_refused() {
        assert!(planned(&["--op", "task-token"]).unwrap_err().contains("needs --task"));
        let verify = ["--op", "verify", "--task", "t1", "--tool", "x"];
        assert!(planned(&verify).unwrap_err().contains("--bundle-url"));
        assert!(bench(&["--task", "t1"]).unwrap_err().contains("--tool"), "--task needs a --tool");
        assert!(bench(&["--tool", "x"]).unwrap_err().contains("--task"), "--tool needs a --task");
        assert!(bench(&["--op", "mint"]).is_err());
        assert!(planned(&["--workloads", "0"]).unwrap_err().contains("--workloads"));
        assert!(planned(&["--duration", "0s"]).unwrap_err().contains("--duration"));
        assert!(bench(&["--duration", "5"]).is_err(), "durations carry a unit");
        assert_eq!(bench(&["--warmup", "0s"]).unwrap().warmup, Duration::ZERO);
        assert!(planned(&["--interval", "10ms"]).unwrap_err().contains("--interval"));
        assert!(planned(&["--rate", "2000000"]).unwrap_err().contains("--rate"));
        let steady = bench(&["--rate", "200", "--interval", "10s"]).unwrap();
        assert_eq!((steady.rate, steady.interval), (200, Some(Duration::from_secs(10))));
    }

    #[tokio::test]
    async fn a_paced_loop_keeps_its_phase_after_a_stall() {
        let period = Duration::from_millis(20);
        let first = Instant::now() + Duration::from_millis(5);
        let mut ticker = ticker(first, period);
        assert_eq!(ticker.tick().await, first);
        // A call out for five and a half periods: the ticks meanwhile are missed.
        tokio::time::sleep(period * 5 + period / 2).await;
        let late = ticker.tick().await;
        let next = ticker.tick().await;
        assert!(next > late);
        let since_first = (next - first).as_nanos();
        assert_eq!(
            since_first % period.as_nanos(),
            0,
            "the next tick, {since_first} ns after the first, is off its phase"
        );
    }

    #[test]
    fn an_interval_line_says_what_each_op_did_in_its_period() {
        let mut good = Tally::default();
        (1..=100).for_each(|i| good.ok(us_(i * 10)));
        let mut bad = Tally::default();
        bad.error("unavailable".into());
        let ops =
            [summarize(Op::Jwt, &good, Duration::from_secs(10)), summarize(Op::Verify, &bad, Duration::from_secs(10))];
        let line = interval_line(Duration::from_secs(20), &ops, Output::Json);
        let json: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["interval_end_secs"], 20.0);
        assert_eq!((json["ops"][0]["op"].as_str(), json["ops"][0]["per_sec"].as_f64()), (Some("jwt"), Some(10.0)));
        assert_eq!(json["ops"][0]["max_us"], 1000.0);
        assert_eq!((json["ops"][1]["errors"].as_u64(), &json["ops"][1]["p99_us"]), (Some(1), &Value::Null));
        let text = interval_line(Duration::from_secs(20), &ops, Output::Text);
        assert!(
            text.starts_with("[20s] jwt 10.0/s p99 ") && text.ends_with("verify 0.0/s p99 - ms, 1 errors"),
            "{text}"
        );
    }

    #[test]
    fn a_period_hands_over_its_tallies_and_starts_empty() {
        let periods = Periods::new(&[Op::X509, Op::Jwt]);
        periods.lock().entry(Op::X509).or_default().ok(us_(5));
        let first = periods.take();
        assert_eq!(first[&Op::X509].latencies.count, 1);
        assert_eq!(first.keys().copied().collect::<Vec<_>>(), [Op::X509, Op::Jwt]);
        let second = periods.take();
        assert!(second.values().all(|t| t.latencies.count == 0 && t.errors == 0), "{second:?}");
        assert_eq!(second.len(), 2);
    }
}
