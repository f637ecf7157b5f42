#!/usr/bin/env bash
# Ferry: run every test. This is the one command CI runs (.ci/run -> ./test.sh).
#
# Steps (each announced with "==> ..."; the first failure stops the run):
#   setup     scripts/setup.sh test (what it installs: README "Set-up")
#   fmt       cargo fmt --check (workspace, plus proto/fuzz if present)
#   clippy    cargo clippy --workspace --all-targets -- -D warnings
#   no_std    ferry-proto for thumbv7em-none-eabihf, every no_std feature set,
#             with -Zbuild-std=core only (proves no std and no alloc)
#   tests     cargo nextest run --workspace --lib --bins --tests; cargo test --doc;
#             then no process the tests started may still be running
#   release   cargo build --release -p ferry-node; the relay memory test
#             (tests/tests/memory.rs) again against that binary
#   fuzz      every cargo-fuzz target of proto for FUZZ_SECONDS (default 20) each
#
# Full logs go to target/test-logs/ (tests.log, fuzz-<target>.log); the
# terminal gets the test runner's output and one summary line per fuzz target.
#
# Under CI=true a step that cannot run for lack of a tool is a failure. Outside
# CI it prints "SKIP: <reason>" and the run carries on.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/env.sh
source scripts/env.sh

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
CROSS_TARGET=thumbv7em-none-eabihf
# Separate target dir for the cross build: it never touches (or waits on the
# lock of) the host build in target/debug.
CROSS_TARGET_DIR=target/thumbv7em
# Every no_std feature set of ferry-proto, as extra cargo arguments on top of
# --no-default-features. "std" is host-only and deliberately absent.
# Keep in step with [features] in proto/Cargo.toml.
PROTO_NO_STD_FEATURE_SETS=(
    ""                      # relay-only hop node
    "--features endpoint"   # end-user side (X25519, ChaCha20-Poly1305)
)

is_ci() { case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss]) return 0 ;; *) return 1 ;; esac; }

current_step="(start)"
skipped=()
step() {
    current_step="$1"
    printf '==> %s\n' "$1"
}
skip() {
    if is_ci; then
        printf 'test.sh: FAIL: %s: %s (CI=true: a missing tool is a failure)\n' "$current_step" "$1" >&2
        exit 1
    fi
    printf 'SKIP: %s: %s\n' "$current_step" "$1" >&2
    skipped+=("$current_step: $1")
}
run() {
    printf '    $ %s\n' "$*"
    "$@"
}
logs=target/test-logs
mkdir -p "$logs"
fuzz_work=""
on_exit() {
    local rc=$?
    if [[ -n "$fuzz_work" ]]; then rm -rf "$fuzz_work"; fi
    if ((rc != 0)); then
        printf 'test.sh: FAILED in step "%s" (exit %d)\n' "$current_step" "$rc" >&2
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------
step "setup"
scripts/setup.sh test

# ---------------------------------------------------------------------------
step "fmt"
if cargo fmt --version >/dev/null 2>&1; then
    run cargo fmt --all -- --check
    if [[ -f proto/fuzz/Cargo.toml ]]; then
        # proto/fuzz is its own workspace, so --all does not reach it.
        (cd proto/fuzz && run cargo fmt --all -- --check)
    fi
else
    skip "rustfmt (cargo fmt) is not installed"
fi

# ---------------------------------------------------------------------------
step "clippy"
if cargo clippy --version >/dev/null 2>&1; then
    run cargo clippy --workspace --all-targets -- -D warnings
else
    skip "clippy (cargo clippy) is not installed"
fi

# ---------------------------------------------------------------------------
step "no_std: ferry-proto for $CROSS_TARGET"
# The Debian route (docs/firmware-toolchain.md): Debian's rustc 1.96 with its
# library sources (rust-web-src) builds `core` for the target itself.
#
# We build with -Zbuild-std=core ONLY, not core,alloc, and on purpose: the
# Debian sysroot has no prebuilt libraries for $CROSS_TARGET, so the only
# crates that exist for it are core and compiler_builtins. If ferry-proto or
# any of its dependencies (in any of these feature sets) uses `std` or
# `alloc`, it fails to compile with "can't find crate for `alloc`". That is
# the no_std / no-heap check. (It is also why we use this route even when
# rustup has the target installed: a rustup sysroot ships alloc and would let
# an accidental heap dependency through.)
#
# RUSTC_BOOTSTRAP=1 is set for these commands only; never for host builds.
if [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library/core ]]; then
    for extra in "${PROTO_NO_STD_FEATURE_SETS[@]}"; do
        # shellcheck disable=SC2086 # $extra is deliberately word-split
        run env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CROSS_TARGET_DIR" \
            /usr/bin/cargo build -p ferry-proto --no-default-features $extra \
            --target "$CROSS_TARGET" -Zbuild-std=core
    done
    # A hop node never decrypts: the relay-only build must not even link
    # X25519 or an AEAD.
    printf '    $ cargo tree -p ferry-proto --no-default-features (no X25519/AEAD crates)\n'
    if cargo tree -p ferry-proto --no-default-features -e normal --prefix none |
        grep -E '^(x25519|curve25519|chacha20|poly1305|aead)'; then
        echo "    relay-only ferry-proto depends on X25519/AEAD code" >&2
        exit 1
    fi
else
    skip "Debian rustc-web/cargo-web/rust-web-src not installed (/usr/bin/rustc, /usr/bin/cargo, /usr/lib/rustlib/src/rust/library)"
fi

# ---------------------------------------------------------------------------
step "tests"
# "pid binary" of every process running a binary from this workspace's target/debug.
workspace_procs() {
    local dir p exe
    dir="$(mkdir -p "${CARGO_TARGET_DIR:-target}/debug" && cd "${CARGO_TARGET_DIR:-target}/debug" && pwd -P)"
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null || true)"
        case "$exe" in "$dir"/*) echo "${p#/proc/} $exe" ;; esac
    done
}
before_tests=()
while read -r pid _; do before_tests+=("$pid"); done < <(workspace_procs)
if cargo nextest --version >/dev/null 2>&1; then
    # Benchmarks are compiled by clippy above and run by `cargo bench`, not here.
    # The summary line is kept for the closing "N passed, N failed" line.
    run cargo nextest run --workspace --lib --bins --tests 2>&1 | tee "$logs/tests.log"
    tests_summary="$(grep -E '^ *Summary .* tests run:' "$logs/tests.log" | tail -n 1 || true)"
else
    skip "cargo-nextest is not installed"
    echo "    falling back to cargo test"
    run cargo test --workspace --lib --bins --tests
fi
# nextest does not run doctests.
run cargo test --workspace --doc

# Every process a test starts must be gone when it ends, failed or not (each
# test ends its children through a guard with Drop). A binary of this
# workspace that runs now and did not before the tests was left behind by one.
leftovers=()
while read -r pid exe; do
    if [[ " ${before_tests[*]} " != *" $pid "* ]]; then leftovers+=("$pid $exe"); fi
done < <(workspace_procs)
if ((${#leftovers[@]})); then
    printf '    still running after the tests (pid, binary):\n' >&2
    printf '        %s\n' "${leftovers[@]}" >&2
    for l in "${leftovers[@]}"; do kill -KILL "${l%% *}" 2>/dev/null || true; done
    echo "    a test left processes behind (killed now)" >&2
    exit 1
fi
echo "    no process started by the tests is still running"

# ---------------------------------------------------------------------------
step "release build: delivered and destroyed"
# What people run is the release build, and the optimiser moves bytes where a
# debug build does not (a stack temporary copied into a static, say): the
# relay's memory test runs against it too (SPEC §8).
run cargo build --release -p ferry-node
run env FERRY_BIN="$(pwd -P)/${CARGO_TARGET_DIR:-target}/release/ferry" cargo test -p ferry-tests --test memory

# ---------------------------------------------------------------------------
step "fuzz smoke (${FUZZ_SECONDS}s per target)"
if [[ ! -f proto/fuzz/Cargo.toml ]]; then
    echo "    no proto/fuzz/Cargo.toml: nothing to fuzz"
elif ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    skip "no rustup nightly toolchain (cargo-fuzz needs nightly; it cannot be downloaded here)"
elif ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    skip "cargo-fuzz is not installed"
else
    fuzz_targets=()
    while IFS= read -r t; do
        if [[ -n "$t" ]]; then fuzz_targets+=("$t"); fi
    done < <(cd proto && cargo +nightly fuzz list)
    if ((${#fuzz_targets[@]} == 0)); then
        echo "    proto/fuzz has no fuzz targets"
    else
        # Build all targets once; each `fuzz run` then only starts the binary.
        (cd proto && run cargo +nightly fuzz build)
        fuzz_work="$(mktemp -d)" # removed by on_exit
        for t in "${fuzz_targets[@]}"; do
            # New inputs go to the first corpus dir, a scratch one, so the
            # checked-in seed corpus (read-only input) stays untouched.
            corpora=("$fuzz_work/$t")
            mkdir -p "$fuzz_work/$t"
            if [[ -d "proto/fuzz/corpus/$t" ]]; then corpora+=("$PWD/proto/fuzz/corpus/$t"); fi
            log="$logs/fuzz-$t.log"
            if (cd proto && cargo +nightly fuzz run "$t" "${corpora[@]}" -- \
                -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1; then
                # libFuzzer's last status line ("#N DONE cov: ... corp: ...") and its final stats.
                done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | tr -s ' \t' ' ')"
                runs="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)"
                printf '    fuzz %-16s ok: %s runs in %ss (%s); full log %s\n' \
                    "$t" "${runs:-?}" "$FUZZ_SECONDS" "${done_line:-no DONE line}" "$log"
            else
                printf '    fuzz %-16s FAILED; the last lines of %s:\n' "$t" "$log" >&2
                tail -n 60 "$log" | sed 's/^/        /' >&2
                exit 1
            fi
        done
    fi
fi

# ---------------------------------------------------------------------------
if ((${#skipped[@]})); then
    printf 'test.sh: all steps passed, but %d skipped:\n' "${#skipped[@]}"
    printf '    SKIP %s\n' "${skipped[@]}"
else
    echo "test.sh: all steps passed"
fi
# One plain closing line for whoever reads only the end of the log.
if [[ -n "${tests_summary:-}" ]]; then
    passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$tests_summary")
    failed=$(grep -oE '[0-9]+ failed' <<<"$tests_summary" | grep -oE '[0-9]+' || echo 0)
    skipped_n=$(grep -oE '[0-9]+ skipped' <<<"$tests_summary" | grep -oE '[0-9]+' || echo 0)
    printf 'tests: %s passed, %s failed, %s skipped\n' "$passed" "${failed:-0}" "${skipped_n:-0}"
fi
