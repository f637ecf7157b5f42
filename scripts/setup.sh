#!/usr/bin/env bash
# Ferry set-up: makes sure this machine has what building, testing and running
# Ferry needs. Idempotent; prints nothing and takes a few milliseconds when
# everything is already there. Called by ./test.sh and ./run.sh.
#
#   - Debian packages (apt-get, as root; via sudo when not root):
#       rustc-web cargo-web rust-web-src lld   the "Debian route" for bare-metal
#                                              builds with -Zbuild-std=core
#                                              (see FIRMWARE-TOOLCHAIN.md)
#       binutils-arm-none-eabi qemu-system-arm firmware size checks and emulation
#       strace iproute2 avahi-utils tcpdump    used by the node and its tests
#       fonts-dejavu-core                      text in ferry-sim's PNG plots
#   - cargo-fuzz (cargo install --locked), used by the fuzz smoke in ./test.sh.
#   - Checks that rustup has a nightly toolchain (cargo-fuzz needs one). This
#     machine cannot download toolchains, so a missing nightly is reported,
#     not fixed: an error under CI=true, a warning otherwise.
set -euo pipefail

log() { printf 'setup.sh: %s\n' "$*"; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }
is_ci() { case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss]) return 0 ;; *) return 1 ;; esac; }

# ---- Debian packages -------------------------------------------------------
PKGS=(
    rustc-web cargo-web rust-web-src lld
    binutils-arm-none-eabi qemu-system-arm
    strace iproute2 avahi-utils tcpdump
    fonts-dejavu-core
)

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian/Ubuntu"

# One dpkg-query call for all packages. Unknown packages make dpkg-query print
# to stderr and exit non-zero; they simply do not appear as installed ("ii").
declare -A installed=()
while read -r name state; do
    if [[ "$state" == ii* ]]; then installed[$name]=1; fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PKGS[@]}" 2>/dev/null || true)

missing=()
for p in "${PKGS[@]}"; do
    [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "missing packages (${missing[*]}) and not root, and sudo is not available"
    fi
    log "installing: ${missing[*]}"
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    log "installed: ${missing[*]}"
fi

# ---- Rust toolchains -------------------------------------------------------
command -v cargo >/dev/null 2>&1 \
    || die "cargo not found on PATH (expected the rustup toolchain in ~/.cargo/bin)"

# Cheap checks first; only fall back to asking cargo itself.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
if ! command -v cargo-fuzz >/dev/null 2>&1 \
    && [[ ! -x "$cargo_home/bin/cargo-fuzz" ]] \
    && ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing: cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
    log "installed: cargo-fuzz"
fi

if command -v rustup >/dev/null 2>&1; then
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        msg="rustup has no nightly toolchain; cargo-fuzz (the fuzz smoke in test.sh) needs one, and this machine cannot download toolchains. Provide one offline (e.g. a pre-seeded ~/.rustup) or run without fuzzing."
        if is_ci; then die "$msg"; fi
        printf 'setup.sh: ERROR: %s\n' "$msg" >&2
    fi
else
    msg="rustup not found; cannot check for the nightly toolchain that cargo-fuzz needs."
    if is_ci; then die "$msg"; fi
    printf 'setup.sh: ERROR: %s\n' "$msg" >&2
fi
