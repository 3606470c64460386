#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with its seeds and
# dictionary: `just fuzz` or `scripts/fuzz.sh 600`. Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`); without them
# it says so and exits 0, so a smoke pass can run wherever they exist.
#
# `scripts/fuzz.sh --replay RUNS` is CI's smoke pass: the seeds and the kept
# regressions, then RUNS mutations from a fixed random seed and no saved
# corpus, so the same commit always runs the same inputs. Finding new bugs is
# the job of the timed runs; a clean checkout must pass or fail the same way
# every time.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if [ "${1:-}" = "--replay" ]; then
    budget=(-runs="${2:?--replay takes a number of runs}" -seed=1)
    corpus_of() { rm -rf "/tmp/lanyard-fuzz-replay/$1"; mkdir -p "/tmp/lanyard-fuzz-replay/$1"; echo "/tmp/lanyard-fuzz-replay/$1"; }
else
    budget=(-max_total_time="${1:-60}")
    corpus_of() { mkdir -p "corpus/$1"; echo "corpus/$1"; }
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1 || ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: SKIPPED (needs the nightly toolchain and cargo-fuzz)"
    exit 0
fi
dict_of() {
    case "$1" in
        spiffe_id|selector_duration) echo dicts/spiffe.dict ;;
        config) echo dicts/config.dict ;;
        requests) echo dicts/requests.dict ;;
        *) echo dicts/jose.dict ;;
    esac
}
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    echo "--- fuzz $target (${budget[*]})"
    inputs=("$(corpus_of "$target")" "seeds/$target")
    if [ -d "regressions/$target" ]; then inputs+=("regressions/$target"); fi
    cargo +nightly fuzz run -O "$target" "${inputs[@]}" -- \
        "${budget[@]}" -dict="$(dict_of "$target")" -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY|crash-" || true
    if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
        echo "fuzz: $target found a crash: fuzz/artifacts/$target"
        exit 1
    fi
done
