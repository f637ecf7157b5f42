#!/usr/bin/env bash
# Run Ferry: ./run.sh [ferry arguments...]   (no arguments: the chat)
#
# Installs only what building and running ferry needs (scripts/setup.sh run),
# builds the release binary, then runs it. Stays in the caller's directory, so
# relative paths in the arguments work.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
"$root/scripts/setup.sh" run

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
bin="$target/release/ferry"
build=(cargo build --release --manifest-path "$root/Cargo.toml" -p ferry-node --bin ferry)
if [[ -x "$bin" ]]; then
    # Built before: rebuild quietly if the sources changed (seconds).
    "${build[@]}" --quiet
else
    echo "run.sh: building ferry (the first build takes a minute or two; later runs start at once)..." >&2
    "${build[@]}"
fi
exec "$bin" "$@"
