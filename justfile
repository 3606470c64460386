# Everyday recipes. `just --list` shows them.

# Build everything (debug).
build:
    cargo build --workspace

# The README's test command: unit, property and end-to-end tests.
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# A server and an agent in a temp dir, narrated; exits 0.
demo:
    cargo run --release -- demo

# Signing throughput (criterion) and cached Workload API latency.
bench:
    cargo bench -p lanyard-ca --bench mint
    cargo bench -p lanyard --bench workload_fetch

# `lanyard bench` (x509, jwt, task-token, verify) against a release server and
# agent started in a temp dir; ARGS go to `lanyard bench` (e.g. --duration 5s).
bench-e2e *ARGS:
    cargo build --release -p lanyard
    scripts/bench-e2e.sh {{ARGS}}

# What CI runs.
ci:
    .ci/run

# Fuzz every parser that sees outside bytes (nightly + cargo-fuzz), SECONDS each.
fuzz SECONDS="60":
    scripts/fuzz.sh {{SECONDS}}

# Soak: a release server, agent and verifier under steady load for DURATION,
# sampled every 10 s; fails if memory, descriptors, store or p99 keep growing.
# Writes target/soak/{samples.csv,soak.png,verdicts.txt}; ARGS go to lanyard-soak.
soak DURATION="30m" *ARGS:
    cargo build --release -p lanyard -p lanyard-soak
    target/release/lanyard-soak --duration {{DURATION}} {{ARGS}}
