//! `lanyard`: every Lanyard role in one binary.
//!
//! `lanyard server run` is the issuer, `lanyard agent run` the node agent; the
//! other commands talk to one of them — admin commands to the server's admin
//! socket, workload commands to the agent's Workload API socket. A command
//! that fails prints one line saying why and exits non-zero.

mod admin;
mod audit;
mod cli;
mod clients;
mod config;
mod demo;
mod loadgen;
mod output;
mod run;
mod tasks;
mod verify;
mod workload;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: the mint path allocates and frees
/// many small buffers across threads (JSON, claims, protobuf, TLS records),
/// and glibc's allocator was about a seventh of the server's CPU per task
/// token (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let expanded = match config::expand(std::env::args_os().collect()) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("lanyard: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(&expanded.args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap's own output, exit 0.
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lanyard: {}", config::explain(&expanded, &e, usage_line(&e)));
            return std::process::ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.command.worker_threads() {
        runtime.worker_threads(threads.get());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lanyard: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(Outcome::Done) => std::process::ExitCode::SUCCESS,
        // The command said why (a denied policy check, a broken audit log).
        Ok(Outcome::No) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lanyard: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// How a command that ran went: done, or a definite "no" it has already
/// explained (exit 1 without an error line).
enum Outcome {
    Done,
    No,
}

impl From<bool> for Outcome {
    fn from(yes: bool) -> Self {
        if yes { Self::Done } else { Self::No }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    let done = match command {
        Command::Policy(cmd) => return tasks::policy(cmd).await.map(Outcome::from),
        Command::Audit(cmd) => return audit::run(cmd).await.map(Outcome::from),
        Command::Task(cmd) => tasks::task(cmd).await,
        Command::TaskToken(cmd) => tasks::task_token(cmd).await,
        Command::Session(cmd) => tasks::session(cmd).await,
        Command::Risk(cmd) => tasks::risk(cmd).await,
        Command::Token(cli::TokenCommand::Verify(args)) => return verify::run(args).await.map(Outcome::from),
        Command::Token(cli::TokenCommand::Revoke { jti, admin }) => tasks::revoke_token(jti, admin).await,
        Command::Server(cli::ServerCommand::Run(args)) => run::server(args).await,
        Command::Server(cli::ServerCommand::CheckConfig(args)) => run::check_server(args).await,
        Command::Agent(cli::AgentCommand::CheckConfig(args)) => run::check_agent(args),
        Command::Agent(cli::AgentCommand::Run(args)) => run::agent(args).await,
        Command::Agent(cli::AgentCommand::List { admin, output }) => admin::agent_list(admin, output).await,
        Command::Agent(cli::AgentCommand::Ban { spiffe_id, admin }) => admin::agent_ban(spiffe_id, admin).await,
        Command::Entry(cmd) => admin::entry(cmd).await,
        Command::JoinToken(cmd) => admin::join_token(cmd).await,
        Command::Bundle(cmd) => admin::bundle(cmd).await,
        Command::Ca(cmd) => admin::ca(cmd).await,
        Command::Store(cmd) => admin::store(cmd).await,
        Command::Svid(cmd) => workload::svid(cmd).await,
        Command::Jwt(cmd) => workload::jwt(cmd).await,
        Command::Demo => demo::run().await,
        Command::Bench(args) => loadgen::run(args).await,
    };
    done.map(|()| Outcome::Done)
}

/// clap's message without its `error:` prefix, tips and usage block.
fn usage_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see --help)")
}

/// The error and its causes on one line, without repeating a cause that
/// the message already contains.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}
