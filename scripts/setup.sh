#!/usr/bin/env bash
# Ferry set-up: makes sure this machine has what the README's two commands
# need, and nothing more. Idempotent; prints nothing and takes well under a
# second when everything is already there.
#
#   scripts/setup.sh run    what building and running `ferry` needs
#                           (called by ./run.sh)
#   scripts/setup.sh test   that, plus what ./test.sh needs
#                           (called by ./test.sh; the default)
#
# What each profile installs, and why (README "Set-up" says the same):
#
#   run   Debian: ca-certificates (cargo fetches crates over HTTPS),
#                 gcc libc6-dev, only when no `cc` is found (rustc links
#                 through the system C compiler).
#         Checks: the cargo found first on PATH is rustup's, and its rustc is
#                 at least the workspace's rust-version.
#   test  Debian: g++ (libfuzzer-sys builds libFuzzer from C++),
#                 rustc-web cargo-web rust-web-src lld (the no_std check builds
#                 `core` for a Cortex-M4F with Debian's rustc, see
#                 docs/firmware-toolchain.md; must be >= the rust-version),
#                 strace (the no-disk-writes test), iproute2 (network
#                 namespaces), tcpdump (the capture test),
#                 avahi-daemon avahi-utils dbus (the test that avahi-browse
#                 reads our mDNS records; the test starts its own avahi-daemon
#                 inside a network namespace, and set-up leaves the system's
#                 avahi-daemon stopped, disabled and masked, see below),
#                 fonts-dejavu-core (text in the simulator's PNG plots).
#         Cargo:  cargo-nextest and cargo-fuzz, pinned versions, with
#                 `cargo install --locked` (from crates.io).
#         Checks: rustup has a nightly toolchain (cargo-fuzz needs one; this
#                 machine cannot download toolchains).
#
# No service is left running or enabled by set-up. Installing avahi-daemon
# on a systemd machine would normally start and enable a system-wide mDNS
# responder that announces the host name on the LAN: for a privacy tool,
# wrong as a side effect. Packages are installed with a policy-rc.d that
# forbids starting services, and an avahi-daemon that set-up installed is then
# disabled and masked.
#
# Under CI=true every problem is an error. Outside CI a missing nightly is a
# warning (./test.sh then skips the fuzz step and says so).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"

profile="${1:-test}"
case "$profile" in
    run | test) ;;
    *)
        echo "usage: scripts/setup.sh [run|test]" >&2
        exit 2
        ;;
esac

# Tool versions installed with `cargo install --locked`.
NEXTEST_VERSION=0.9.114
FUZZ_VERSION=0.13.2

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() {
    printf 'setup.sh: ERROR: %s\n' "$*" >&2
    exit 1
}
is_ci() { case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss]) return 0 ;; *) return 1 ;; esac; }

# "1.88" from the workspace manifest: the one place the minimum is written.
min_rust="$(sed -nE 's/^rust-version *= *"([0-9]+\.[0-9]+)(\.[0-9]+)?"/\1/p' "$root/Cargo.toml" | head -n 1)"
[[ -n "$min_rust" ]] || die "cannot read rust-version from $root/Cargo.toml"

# version_ge A B: whether version A (x.y[.z]) >= B (x.y).
version_ge() {
    local a_major a_minor b_major b_minor
    IFS=. read -r a_major a_minor _ <<<"$1"
    IFS=. read -r b_major b_minor _ <<<"$2"
    ((a_major > b_major || (a_major == b_major && a_minor >= b_minor)))
}

# ---- Rust toolchain (rustup's) ---------------------------------------------
# Checked first: without it nothing else matters, and the message must say so.
cargo_path="$(command -v cargo || true)"
rustup_path="$(command -v rustup || true)"
if [[ -z "$cargo_path" || -z "$rustup_path" ]]; then
    die "rustup's cargo was not found (PATH=$PATH). Install Rust with rustup, then open a new shell or run \`source \"\$HOME/.cargo/env\"\`. Debian's cargo (/usr/bin/cargo) is not enough: it is too old for this workspace, and Ferry is tested with rustup's toolchain."
fi
if [[ "$(dirname "$cargo_path")" != "$(dirname "$rustup_path")" ]]; then
    die "the first cargo on PATH is $cargo_path, not rustup's ($(dirname "$rustup_path")/cargo). Put $(dirname "$rustup_path") first on PATH (\`source \"\$HOME/.cargo/env\"\`)."
fi
rustc_version="$(rustc --version 2>/dev/null | awk '{print $2}')"
[[ -n "$rustc_version" ]] || die "rustc (rustup's) does not run; is a default toolchain set? (\`rustup default stable\`)"
if ! version_ge "$rustc_version" "$min_rust"; then
    die "rustc $rustc_version is older than this workspace's rust-version $min_rust: update the toolchain (\`rustup update stable\`)."
fi

# ---- Debian packages -------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian 12 (or a derivative)"

pkgs=(ca-certificates)
command -v cc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
if [[ "$profile" == test ]]; then
    pkgs+=(
        g++
        rustc-web cargo-web rust-web-src lld
        strace iproute2 tcpdump
        avahi-daemon avahi-utils dbus
        fonts-dejavu-core
    )
fi

# One dpkg-query for all of them; unknown ones just do not show as "ii".
declare -A installed=()
while read -r name state; do
    if [[ "$state" == ii* ]]; then installed[$name]=1; fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
    [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "missing Debian packages (${missing[*]}), not root, and sudo is not available: install them as root"
    fi
    as_root() { ${SUDO[@]+"${SUDO[@]}"} "$@"; }
    log "installing Debian packages: ${missing[*]}"
    # No service may start because of this install (see the header).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# ferry scripts/setup.sh: no service starts during its apt-get install\nexit 101\n' |
            as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        own_policy=1
    fi
    drop_policy() { if ((own_policy)); then as_root rm -f "$policy"; fi; }
    trap drop_policy EXIT
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    drop_policy
    trap - EXIT
    for p in "${missing[@]}"; do
        if [[ "$p" == avahi-daemon ]]; then
            # Installed by us: make sure it never runs as the system's responder.
            # systemctl disables and masks units offline too (no systemd running:
            # a container or chroot), so that a later boot does not start it.
            if command -v systemctl >/dev/null 2>&1; then
                if [[ -d /run/systemd/system ]]; then
                    as_root systemctl stop avahi-daemon.socket avahi-daemon.service >/dev/null 2>&1 || true
                fi
                as_root systemctl disable avahi-daemon.socket avahi-daemon.service >/dev/null 2>&1 || true
                as_root systemctl mask avahi-daemon.socket avahi-daemon.service >/dev/null 2>&1 || true
            else
                # No systemd installed (a minimal root): the package still
                # enabled its units for a later systemd. Disable and mask them
                # by hand, as systemctl would: drop the enablement links, link
                # the units to /dev/null.
                for unit in avahi-daemon.service avahi-daemon.socket dbus-org.freedesktop.Avahi.service; do
                    as_root find /etc/systemd/system -name "$unit" -type l -delete 2>/dev/null || true
                done
                as_root mkdir -p /etc/systemd/system
                as_root ln -sf /dev/null /etc/systemd/system/avahi-daemon.service
                as_root ln -sf /dev/null /etc/systemd/system/avahi-daemon.socket
            fi
            if command -v update-rc.d >/dev/null 2>&1; then
                as_root update-rc.d avahi-daemon disable >/dev/null 2>&1 || true
            fi
            log "avahi-daemon is installed for the avahi interop test only: disabled and masked, not running"
        fi
    done
    log "installed: ${missing[*]}"
fi

if [[ "$profile" == run ]]; then
    exit 0
fi

# ---- Debian's rustc (the no_std check) -------------------------------------
# Debian 12's main archive has rustc-web 1.85; newer builds come from the
# bookworm-security suite, which a standard install has but a bare debootstrap
# does not.
debian_rustc="$(/usr/bin/rustc --version 2>/dev/null | awk '{print $2}' || true)"
if [[ -z "$debian_rustc" ]]; then
    die "Debian's rustc (/usr/bin/rustc from rustc-web) does not run"
fi
if ! version_ge "$debian_rustc" "$min_rust"; then
    die "Debian's rustc-web is $debian_rustc; the no_std check needs >= $min_rust. Enable Debian 12's bookworm-security suite in your APT sources (a standard install has it; debootstrap does not add it), then \`apt-get update && apt-get install rustc-web cargo-web rust-web-src\`."
fi

# ---- cargo tools -------------------------------------------------------------
# `cargo install` builds from crates.io source: a few minutes, once.
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest $NEXTEST_VERSION (cargo install --locked; a few minutes, once)"
    cargo install --locked --quiet "cargo-nextest@$NEXTEST_VERSION"
fi

have_nightly=0
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    have_nightly=1
else
    msg="rustup has no nightly toolchain; cargo-fuzz (the fuzz step of ./test.sh) needs one, and this machine cannot download toolchains. Provide one offline (a pre-seeded ~/.rustup) or run without fuzzing."
    if is_ci; then die "$msg"; fi
    log "WARNING: $msg"
fi
if ((have_nightly)) && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $FUZZ_VERSION (cargo install --locked; about a minute, once)"
    cargo install --locked --quiet "cargo-fuzz@$FUZZ_VERSION"
fi
