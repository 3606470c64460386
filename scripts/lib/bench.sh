# Shared by the bench scripts (sourced, not run): the binary, a temp dir
# whose processes are stopped and logs shown on failure, free ports,
# waiting for a command, and a server's store commit latency.
#
# Before sourcing set `script` (a name for messages); after, add the PID of
# each process started to `pids`.

# The lanyard binary: LANYARD=path, else target/release/lanyard.
bin="$(realpath "${LANYARD:-target/release/lanyard}")"
[[ -x "$bin" ]] || { echo "$script: no $bin; run: cargo build --release -p lanyard" >&2; exit 1; }

dir="$(mktemp -d -t "lanyard-$script.XXXXXX")"
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
unset SPIFFE_ENDPOINT_SOCKET LANYARD_ADMIN_SOCKET LANYARD_JOIN_TOKEN LANYARD_STORE_URL

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Runs "$@" until it succeeds, for at most 20 s.
retry() {
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "$script: timed out waiting for: $*" >&2
    return 1
}

# Prints "LABEL: N commits, mean commit X ms" from the /metrics of the
# server whose bundle endpoint listens on $1 (sled: one per group commit).
commit_latency() {
    python3 - "$1" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
values = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("lanyard_store_commit_duration_seconds_") and " " in l}
count, total = values.get("lanyard_store_commit_duration_seconds_count", 0), values.get("lanyard_store_commit_duration_seconds_sum", 0)
print(f"{sys.argv[2]}: {count:.0f} commits, mean commit {1e3 * total / max(count, 1):.2f} ms")
PY
}

# CPU seconds (user and system) each PID in "$@" has used so far, one
# "pid user system" line each, from /proc/<pid>/stat (clock ticks of 1/100 s).
cpu_of() {
    for pid in "$@"; do
        # Field 2, the command name, may hold spaces: count from after its ')'.
        sed 's/.*) //' "/proc/$pid/stat" | awk -v pid="$pid" '{print pid, $12 / 100, $13 / 100}'
    done
}

# Busy and total ticks of the whole machine so far, from /proc/stat.
machine_ticks() {
    head -1 /proc/stat | awk '{busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}'
}
