#!/usr/bin/env bash
# Task tokens through one vs two `lanyard server` replicas over one
# PostgreSQL database: a server, an agent and a `lanyard bench` per replica,
# the benches run at the same time, their throughputs added.
#
#   scripts/with-postgres.sh scripts/bench-replicas.sh REPLICAS [lanyard bench flags]
#   scripts/bench-replicas.sh sled [lanyard bench flags]
#
# REPLICAS is 1 or 2, over PostgreSQL: needs LANYARD_TEST_PG_URL
# (scripts/with-postgres.sh sets it); a new database is created for the run.
# `sled` is one server on the embedded store, for comparison. LANYARD=path
# picks the binary (default target/release/lanyard).
set -euo pipefail
cd "$(dirname "$0")/.."

replicas="${1:?usage: bench-replicas.sh 1|2|sled [bench flags]}"
shift
bin="$(realpath "${LANYARD:-target/release/lanyard}")"
[[ -x "$bin" ]] || { echo "bench-replicas: no $bin; run: cargo build --release -p lanyard" >&2; exit 1; }
store=()
if [[ "$replicas" == sled ]]; then
    replicas=1
    url="sled"
else
    : "${LANYARD_TEST_PG_URL:?run under scripts/with-postgres.sh}"
    db="lanyard_bench_$$"
    psql -q "$LANYARD_TEST_PG_URL" -c "CREATE DATABASE $db"
    url="${LANYARD_TEST_PG_URL%/*}/$db"
    store=(--store-url "$url")
fi

dir="$(mktemp -d -t lanyard-bench-replicas.XXXXXX)"
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
export LANYARD_LOG="${LANYARD_LOG:-warn}"
unset SPIFFE_ENDPOINT_SOCKET LANYARD_ADMIN_SOCKET LANYARD_JOIN_TOKEN LANYARD_STORE_URL
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
retry() {
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench-replicas: timed out waiting for: $*" >&2
    return 1
}

td=example.org
connector="spiffe://$td/connector/bench"
tool=bench.search
audience=bench.example
for n in $(seq "$replicas"); do
    listen[n]="127.0.0.1:$(free_port)"
    bundle[n]="127.0.0.1:$(free_port)"
    "$bin" server run "${store[@]}" --data-dir "$dir/server$n" --trust-domain "$td" \
        --admin-socket "$dir/admin$n.sock" --listen "${listen[n]}" --bundle-listen "${bundle[n]}" \
        >"$dir/server$n.log" 2>&1 &
    pids+=($!)
    retry "$bin" bundle show --admin-socket "$dir/admin$n.sock"
    # The first replica creates the keys; later ones start with them.
done
admin=(--admin-socket "$dir/admin1.sock")
"$bin" bundle show "${admin[@]}" >"$dir/ca.pem"
for n in $(seq "$replicas"); do
    token="$("$bin" join-token create --name "bench$n" "${admin[@]}")"
    "$bin" agent run --data-dir "$dir/agent$n" --server "${listen[n]}" --join-token="$token" \
        --trust-bundle "$dir/ca.pem" --socket "unix://$dir/agent$n.sock" --workload-rate 0 \
        >"$dir/agent$n.log" 2>&1 &
    pids+=($!)
    "$bin" entry create --spiffe-id "$connector" --parent-id "spiffe://$td/agent/bench$n" \
        --selector "unix:uid:$(id -u)" --tool "$tool" --audience "$audience" \
        --max-classification internal "${admin[@]}" >/dev/null
    retry "$bin" svid fetch --socket "unix://$dir/agent$n.sock"
done
task="$("$bin" task begin --connector "$connector" --user-sub alice --user-iss https://idp.example \
    --session bench --tool "$tool" --audience "$audience" --classification internal --action read \
    --ttl 1h "${admin[@]}")"

echo "lanyard bench: $replicas replica(s), store $url, binary $bin" >&2
for n in $(seq "$replicas"); do
    "$bin" bench --socket "unix://$dir/agent$n.sock" --op task-token --task "$task" --tool "$tool" \
        --audience "$audience" --action read --output json "$@" >"$dir/bench$n.json" &
    benches+=($!)
done
for pid in "${benches[@]}"; do wait "$pid"; done
python3 - "$dir"/bench*.json <<'PY'
import json, sys
ops = [json.load(open(f))["ops"][0] for f in sys.argv[1:]]
total = sum(o["per_sec"] for o in ops)
for f, o in zip(sys.argv[1:], ops):
    print(f"  {f.rsplit('/', 1)[-1]}: {o['per_sec']:.0f}/s, p50 {o['p50_us']/1e3:.2f} ms, p99 {o['p99_us']/1e3:.2f} ms, errors {o['errors']}")
print(f"task tokens/s, all replicas: {total:.0f}")
PY
for n in $(seq "$replicas"); do
    python3 - "${bundle[n]}" "$n" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
values = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("lanyard_store_commit_duration_seconds_") and " " in l}
count, total = values.get("lanyard_store_commit_duration_seconds_count", 0), values.get("lanyard_store_commit_duration_seconds_sum", 0)
print(f"  replica {sys.argv[2]}: {count:.0f} commits, mean commit {1e3 * total / max(count, 1):.2f} ms")
PY
done
