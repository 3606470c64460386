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
script=bench-replicas
# shellcheck source=scripts/lib/bench.sh
source scripts/lib/bench.sh

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
for n in $(seq "$replicas"); do commit_latency "${bundle[n]}" "  replica $n"; done
