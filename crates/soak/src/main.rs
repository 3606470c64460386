//! `lanyard-soak`: runs the soak test and writes its samples (CSV), graph
//! (PNG) and verdicts; exits 1 when a series keeps growing or too many
//! requests failed. `just soak 30m` runs it for 30 minutes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use lanyard_soak::{SoakConfig, plot, trend::Verdict};

/// Soak test: a server, an agent and a verifier under steady load, watched for growth.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The lanyard binary (build it with `cargo build --release -p lanyard`).
    #[arg(long, default_value = "target/release/lanyard")]
    lanyard: PathBuf,
    /// How long to run.
    #[arg(long, default_value = "30m", value_parser = lanyard_core::parse_duration)]
    duration: Duration,
    /// How often to sample.
    #[arg(long, default_value = "10s", value_parser = lanyard_core::parse_duration)]
    interval: Duration,
    /// Samples before this are drawn but not judged.
    #[arg(long, default_value = "2m", value_parser = lanyard_core::parse_duration)]
    settle: Duration,
    /// Operations per second of each of x509, jwt, task-token and verify.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Simulated workloads (connections to the agent).
    #[arg(long, default_value_t = 8)]
    workloads: u32,
    /// The connector's X.509-SVID lifetime: short, so the agent rotates during the run.
    #[arg(long, default_value = "5m")]
    x509_ttl: String,
    /// Where to write samples.csv, soak.png and verdicts.txt.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// A TrueType font for the graph's text.
    #[arg(long, default_value = plot::DEFAULT_FONT)]
    font: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lanyard-soak: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let config = SoakConfig {
        lanyard: args
            .lanyard
            .canonicalize()
            .with_context(|| format!("no lanyard binary at {}", args.lanyard.display()))?,
        duration: args.duration,
        interval: args.interval,
        settle: args.settle,
        rate: args.rate,
        workloads: args.workloads,
        x509_ttl: args.x509_ttl,
    };
    let font = std::fs::read(&args.font).with_context(|| format!("cannot read the font {}", args.font.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    eprintln!(
        "lanyard-soak: {} at {}/s of each operation, sampled every {}s; writing to {}",
        lanyard_core::format_duration(config.duration),
        config.rate,
        config.interval.as_secs_f64(),
        args.out.display()
    );
    let samples = lanyard_soak::run(&config, |s| {
        let p99: Vec<String> = s
            .ops
            .iter()
            .map(|o| format!("{} {}", o.op, o.p99_ms.map_or("-".to_owned(), |p| format!("{p:.1}ms"))))
            .collect();
        eprintln!(
            "[{:>6.0}s] rss server {:.1} agent {:.1} verifier {:.1} MiB; fds {}/{}/{}; store {:.1} + audit {:.1} MiB; p99 {}",
            s.t,
            s.server.rss_bytes as f64 / 1048576.0,
            s.agent.rss_bytes as f64 / 1048576.0,
            s.verifier.rss_bytes as f64 / 1048576.0,
            s.server.fds,
            s.agent.fds,
            s.verifier.fds,
            s.store_bytes as f64 / 1048576.0,
            s.audit_bytes as f64 / 1048576.0,
            p99.join(", ")
        );
    })?;
    std::fs::write(args.out.join("samples.csv"), lanyard_soak::csv(&samples))?;
    let title = format!(
        "lanyard soak: {} at {}/s per operation ({} workloads), sampled every {}s",
        lanyard_core::format_duration(config.duration),
        config.rate,
        config.workloads,
        config.interval.as_secs_f64()
    );
    plot::draw(&samples, font, &title, &args.out.join("soak.png"))?;
    let judged = lanyard_soak::judge(&samples, config.settle);
    let excess = lanyard_soak::error_excess(&samples);
    let mut verdicts =
        format!("{:<40}{:>12}{:>12}{:>12}  verdict\n", "series (after settling)", "early", "middle", "late");
    for j in &judged {
        let (medians, word) = match &j.verdict {
            Verdict::Level(m) => (Some(m), "level"),
            Verdict::Growing(m) => (Some(m), "GROWING"),
            Verdict::TooShort(_) => (None, "too few samples"),
        };
        let [a, b, c] =
            medians.map_or(["-".to_owned(), "-".to_owned(), "-".to_owned()], |m| m.map(|v| format!("{v:.2}")));
        verdicts.push_str(&format!("{:<40}{a:>12}{b:>12}{c:>12}  {word}\n", j.name));
    }
    for (op, count, errors) in &excess {
        verdicts.push_str(&format!("{op}: {errors} failed of {} requests (more than 0.1%)\n", count + errors));
    }
    std::fs::write(args.out.join("verdicts.txt"), &verdicts)?;
    print!("{verdicts}");
    let growing = judged.iter().any(|j| j.verdict.is_growing());
    let ok = !growing && excess.is_empty();
    eprintln!(
        "lanyard-soak: {}; samples, graph and verdicts in {}",
        if ok { "passed" } else { "FAILED" },
        args.out.display()
    );
    Ok(ok)
}
