#!/usr/bin/env bash
# Run Ferry: ./run.sh [ferry arguments...]
# Stays in the caller's directory, so relative paths in the arguments work.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/setup.sh"
exec cargo run --release -q --manifest-path "$root/Cargo.toml" -p ferry-node --bin ferry -- "$@"
