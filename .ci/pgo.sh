#!/usr/bin/env bash
# The simulator's PGO build (called by .ci/run): `cargo xtask pgo` must build, and its binary
# must compute the same worlds as the plain release binary: profile-guided optimisation changes
# how fast the code runs, never what it does, and a trace hash is every observation of a run.
# A difference means the two builds differ in behaviour (e.g. a build that lost
# `--cfg tokio_unstable`, whose tokio RNG is unseeded): the benchmark's figure would then be
# for another program.
#
# Training is shortened here (CI checks the pipeline and the sameness, not the speed; the
# benchmark's binary is built with the defaults, BENCHMARKS.md "The simulator's PGO build").
# Budget: ~15 minutes of CI's 90 (two full builds with fat LTO, the training runs).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ghatta-simulate
plain="$target/release/ghatta-sim"
cargo xtask pgo --train-s 300 --long-train-s 1200
fast="$target/pgo/ghatta-sim"

status=0
same() {
    local scenario=$1 seed=$2 duration_s=$3
    local a b t0 t1 t2
    t0=$(date +%s%N)
    a=$("$plain" run --scenario "sim/scenarios/$scenario.toml" --seed "$seed" \
        --duration-s "$duration_s" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["trace_hash"])')
    t1=$(date +%s%N)
    b=$("$fast" run --scenario "sim/scenarios/$scenario.toml" --seed "$seed" \
        --duration-s "$duration_s" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["trace_hash"])')
    t2=$(date +%s%N)
    printf -- '--- %s seed %s, %s s: release %s (%d ms), pgo %s (%d ms)\n' "$scenario" "$seed" \
        "$duration_s" "${a:0:16}" $(((t1 - t0) / 1000000)) "${b:0:16}" $(((t2 - t1) / 1000000))
    if [ "$a" != "$b" ]; then
        echo "FAIL: the PGO binary's trace differs from the release binary's on $scenario seed $seed"
        status=1
    fi
}

same five-node-leader-isolated 1 900
same power-cuts 3 600
exit $status
