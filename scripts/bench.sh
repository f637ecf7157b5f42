#!/usr/bin/env bash
# Every benchmark of the project, then one markdown table of each figure,
# its target and its reference (README "Benchmarks").
#
#   scripts/bench.sh           the full runs (about 20 minutes on 2 cores)
#   scripts/bench.sh --quick   shorter runs, for a first look (about 5 minutes;
#                              the flooder over 4 seeds instead of 16)
#
# Results and raw outputs go to target/bench/. Benchmarks measure CPU and
# wall time: run them on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

./scripts/setup.sh
out=target/bench
mkdir -p "$out"
rm -rf "$out"/*.md "$out"/*.txt "$out"/*.err "$out"/sim-*

echo "== building (release)" >&2
cargo build --release -q -p ferry-node -p ferry-tools

echo "== proto core (criterion)" >&2
if [ $quick = 1 ]; then crit=(--warm-up-time 1 --measurement-time 1); else crit=(--warm-up-time 1 --measurement-time 3); fi
cargo bench -q -p ferry-proto --bench core -- "${crit[@]}" >"$out/core.txt" 2>"$out/core.err"

echo "== relay harness (three processes on loopback)" >&2
if [ $quick = 1 ]; then relay=(--messages 20000 --runs 3 --latency-messages 200 --raw); else relay=(--messages 100000 --runs 5 --raw); fi
target/release/ferry-relay-bench "${relay[@]}" >"$out/relay.md" 2>"$out/relay.err"

echo "== simulator (real X25519, one thread per core)" >&2
for s in reference partition-carrier; do
    scen=tools/scenarios/$s.toml
    [ $quick = 1 ] && [ "$s" = reference ] && scen=tools/scenarios/reference-quick.toml
    target/release/ferry-sim run "$scen" --seed 1 --out "$out/sim-$s" >"$out/sim-$s.txt" 2>"$out/sim-$s.err"
done
# The flooder figure over many seeds (one seed places one flooder). Every
# endpoint in its range tries to open each of the flooder's first-contact
# frames, so this uses the documented DH stand-in (its own target dir).
echo "== simulator (flooder sweep, with the DH stand-in)" >&2
CARGO_TARGET_DIR=target/fast-dh cargo build --release -q -p ferry-tools --features fast-dh --bin ferry-sim
if [ $quick = 1 ]; then seeds=1..5; else seeds=1..17; fi
target/fast-dh/release/ferry-sim sweep tools/scenarios/flooder.toml --seeds $seeds --out "$out/sim-flooder" \
    >"$out/sim-flooder-sweep.txt" 2>"$out/sim-flooder-sweep.err"

target/release/ferry-bench-table "$out" | tee "$out/table.md"
