#!/usr/bin/env bash
# `lanyard bench` with all four operations against a real server and agent:
# starts both in a temp dir (the server with a bundle endpoint), registers
# this uid as a connector with task ceilings, begins a task, runs the bench
# as that connector, prints the CPU each process used and how busy the
# machine was, then stops both and removes the dir.
#
#   scripts/bench-e2e.sh [lanyard bench flags, e.g. --duration 5s --output json]
#
# LANYARD=path picks the binary (default target/release/lanyard: build it
# with `cargo build --release -p lanyard`, as `just bench-e2e` does);
# BENCH_OPS the operations (default all four: BENCH_OPS=task-token for
# task tokens alone).
set -euo pipefail
cd "$(dirname "$0")/.."

script=bench-e2e
# shellcheck source=scripts/lib/bench.sh
source scripts/lib/bench.sh

td=example.org
admin=(--admin-socket "$dir/admin.sock")
socket="unix://$dir/agent.sock"
listen="127.0.0.1:$(free_port)"
bundle_listen="127.0.0.1:$(free_port)"
connector="spiffe://$td/connector/bench"
tool=bench.search
audience=bench.example

"$bin" server run --data-dir "$dir/server" --trust-domain "$td" "${admin[@]}" \
    --listen "$listen" --bundle-listen "$bundle_listen" >"$dir/server.log" 2>&1 &
pids+=($!)
retry "$bin" bundle show "${admin[@]}"
"$bin" bundle show "${admin[@]}" >"$dir/ca.pem"
token="$("$bin" join-token create --name bench "${admin[@]}")"

"$bin" agent run --data-dir "$dir/agent" --server "$listen" --join-token="$token" \
    --trust-bundle "$dir/ca.pem" --socket "$socket" --workload-rate 0 >"$dir/agent.log" 2>&1 &
pids+=($!)

"$bin" entry create --spiffe-id "$connector" --parent-id "spiffe://$td/agent/bench" \
    --selector "unix:uid:$(id -u)" --tool "$tool" --audience "$audience" \
    --max-classification internal "${admin[@]}" >/dev/null
retry "$bin" svid fetch --socket "$socket"
task="$("$bin" task begin --connector "$connector" --user-sub alice --user-iss https://idp.example \
    --session bench --tool "$tool" --audience "$audience" --classification internal --action read \
    --ttl 1h "${admin[@]}")"

echo "lanyard bench against a server and agent in $dir (binary $bin)" >&2
cpu_of "${pids[@]}" >"$dir/cpu.before"
read -r busy_before total_before < <(machine_ticks)
TIMEFORMAT='load generator: %U s user, %S s system'
ops=()
for op in ${BENCH_OPS:-x509 jwt task-token verify}; do
    ops+=(--op "$op")
done
time "$bin" bench --socket "$socket" "${ops[@]}" \
    --task "$task" --tool "$tool" --audience "$audience" --action read \
    --bundle-url "http://$bundle_listen" "$@"
# Where the CPU went over the run (warm-up included): the bench shares the
# machine with the server and agent, so their cost per operation is what
# sets its ceiling.
cpu_of "${pids[@]}" | paste -d' ' "$dir/cpu.before" - | awk '
    NR == 1 { name = "server" } NR == 2 { name = "agent" }
    { printf "%s: %.2f s user, %.2f s system\n", name, $5 - $2, $6 - $3 }' >&2
read -r busy_after total_after < <(machine_ticks)
echo "machine: $(( 100 * (busy_after - busy_before) / (total_after - total_before) ))% busy over the run" >&2
# The store's commit latency over the run.
commit_latency "$bundle_listen" store >&2
