#!/usr/bin/env bash
# `lanyard bench` with all four operations against a real server and agent:
# starts both in a temp dir (the server with a bundle endpoint), registers
# this uid as a connector with task ceilings, begins a task, runs the bench
# as that connector, then stops both and removes the dir.
#
#   scripts/bench-e2e.sh [lanyard bench flags, e.g. --duration 5s --output json]
#
# LANYARD=path picks the binary (default target/release/lanyard: build it
# with `cargo build --release -p lanyard`, as `just bench-e2e` does).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(realpath "${LANYARD:-target/release/lanyard}")"
[[ -x "$bin" ]] || { echo "bench-e2e: no $bin; run: cargo build --release -p lanyard" >&2; exit 1; }
dir="$(mktemp -d -t lanyard-bench-e2e.XXXXXX)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $status -ne 0 ]]; then
        for log in "$dir"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# Warnings only: per-request log lines would cost the server what we measure.
export LANYARD_LOG="${LANYARD_LOG:-warn}"
unset SPIFFE_ENDPOINT_SOCKET LANYARD_ADMIN_SOCKET LANYARD_JOIN_TOKEN

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Runs "$@" until it succeeds, for at most 20 s.
retry() {
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench-e2e: timed out waiting for: $*" >&2
    return 1
}

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
"$bin" bench --socket "$socket" --op x509 --op jwt --op task-token --op verify \
    --task "$task" --tool "$tool" --audience "$audience" --action read \
    --bundle-url "http://$bundle_listen" "$@"
# The store's commit latency over the run (sled: one group commit per flush).
python3 - "$bundle_listen" <<'PY' >&2
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
values = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("lanyard_store_commit_duration_seconds_") and " " in l}
count, total = values.get("lanyard_store_commit_duration_seconds_count", 0), values.get("lanyard_store_commit_duration_seconds_sum", 0)
print(f"store: {count:.0f} commits, mean commit {1e3 * total / max(count, 1):.2f} ms")
PY
