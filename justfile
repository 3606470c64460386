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

# What CI runs.
ci:
    .ci/run
