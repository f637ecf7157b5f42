#!/usr/bin/env bash
# Does the README's set-up work on a machine that has nothing but Debian 12 and
# rustup's toolchains? This script builds such a machine and tries it:
#
#   1. debootstrap --variant=minbase bookworm into a new directory, with APT
#      sources for bookworm, bookworm-updates and bookworm-security (what a
#      standard Debian 12 install has), taken from this machine's mirrors;
#   2. copies in only rustup itself and its toolchains (~/.rustup and rustup's
#      proxies from ~/.cargo/bin: no cargo registry, no installed cargo tools);
#   3. a clean clone of this repository's committed HEAD;
#   4. inside a chroot, as root, with a PATH that does not have ~/.cargo/bin
#      and no stdin, times `./run.sh --help` (set-up and the first build), runs
#      a short chat (--no-mdns: no multicast on this machine's own network),
#      then times `CI=true ./test.sh`;
#   5. checks that no test process is left and that avahi-daemon is masked.
#
# Usage: sudo scripts/fresh-machine.sh [DIR]   (default /var/tmp/ferry-fresh)
# Needs root, about 12 GB of disk and about half an hour on 2 cores. The
# report goes to DIR/report.txt and stdout. CI does not run this (too slow).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-/var/tmp/ferry-fresh}"
rootfs="$dir/root"
report="$dir/report.txt"

die() {
    printf 'fresh-machine.sh: %s\n' "$*" >&2
    exit 1
}
[[ "$(id -u)" -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
[[ -d "$rustup_home/toolchains" && -x "$cargo_bin/rustup" ]] || die "no rustup toolchains in $rustup_home"

if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# This machine's Debian mirrors (deb822 .sources or one-line sources.list).
mirror_for() { # $1: "debian" or "debian-security"
    local want="$1" uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -nE 's/^URIs: *([^ ]+).*/\1/p' |
        grep -E "/$want/?\$" | head -n 1 || true)"
    if [[ -z "$uri" ]]; then
        uri="$(sed -nE 's/^deb +(\[[^]]*\] +)?([^ ]+) .*/\2/p' /etc/apt/sources.list 2>/dev/null |
            grep -E "/$want/?\$" | head -n 1 || true)"
    fi
    printf '%s' "${uri%/}"
}
mirror="${MIRROR:-$(mirror_for debian)}"
security="${SECURITY_MIRROR:-$(mirror_for debian-security)}"
[[ -n "$mirror" && -n "$security" ]] || die "cannot find this machine's Debian mirrors; set MIRROR and SECURITY_MIRROR"

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_in() { # mount_in TARGET mount-args...
    local target="$1"
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    mounts+=("$target")
}

# Leftovers of an earlier run: unmount whatever is still mounted below $dir,
# then remove the root (a finished debootstrap in $dir/base is kept and copied:
# FRESH_BASE=new makes a new one).
if [[ -d "$dir" ]]; then
    { grep -F " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" || true; done
    # Never rm -rf across a mount (a bind of /dev, say).
    if grep -qF " $dir/" /proc/mounts; then die "mounts below $dir remain; unmount them first"; fi
    rm -rf "$rootfs"
    if [[ "${FRESH_BASE:-}" == new ]]; then rm -rf "$dir/base"; fi
fi
mkdir -p "$dir"

now() { date +%s; }
t0=$(now)
if [[ ! -e "$dir/base/.ferry-complete" ]]; then
    echo "== debootstrap bookworm (minbase) into $dir/base"
    rm -rf "$dir/base"
    debootstrap --variant=minbase bookworm "$dir/base" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $dir/debootstrap.log"
    touch "$dir/base/.ferry-complete"
fi
cp -a "$dir/base" "$rootfs"
rm -f "$rootfs/.ferry-complete"
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" >"$rootfs/etc/apt/sources.list"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# The local CA certificates of this machine's network (which may intercept
# HTTPS): a new machine here has them in its image too. They take effect when
# set-up installs ca-certificates.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
t_debootstrap=$(($(now) - t0))

echo "== rustup and its toolchains only"
mkdir -p "$rootfs/root/.cargo/bin"
cp -a "$rustup_home" "$rootfs/root/.rustup"
# rustup's proxies are copies of rustup itself; anything else in ~/.cargo/bin
# (cargo-fuzz, cargo-nextest, ...) was installed later and stays out.
for f in "$cargo_bin"/*; do
    if cmp -s "$f" "$cargo_bin/rustup"; then cp -a "$f" "$rootfs/root/.cargo/bin/"; fi
done
ls "$rootfs/root/.cargo/bin" >"$dir/cargo-bin.txt"

echo "== a clean clone of $(git -C "$repo" rev-parse --short HEAD)"
git clone --quiet --no-local "$repo" "$rootfs/root/ferry"
commit="$(git -C "$rootfs/root/ferry" rev-parse HEAD)"

# The root a machine boots is a mount point; a plain directory is not, and
# `ip netns exec` / `ip -n` (mount --make-rslave /) fail on one. Bind the
# root onto itself so that inside the chroot / is a mount, as on a machine.
mount_in "$rootfs" --bind "$rootfs"
mount_in "$rootfs/proc" -t proc proc
mount_in "$rootfs/sys" -t sysfs sysfs
mount_in "$rootfs/dev" --bind /dev
mount_in "$rootfs/dev/pts" -t devpts devpts -o newinstance,ptmxmode=0666
mount_in "$rootfs/run" -t tmpfs tmpfs
mount_in "$rootfs/tmp" -t tmpfs tmpfs

# A login-less root shell: no ~/.cargo/bin on PATH, no stdin, CI=true for the tests.
in_root() {
    chroot "$rootfs" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@" </dev/null
}

echo "== ./run.sh --help (set-up and the first build)"
t0=$(now)
in_root bash -c 'cd /root/ferry && ./run.sh --help' >"$dir/run-help.log" 2>&1 ||
    die "./run.sh --help failed; see $dir/run-help.log"
t_run=$(($(now) - t0))

echo "== a short chat: ./run.sh --ephemeral --no-mdns, /me /peers /quit"
t0=$(now)
in_root bash -c 'cd /root/ferry && printf "/me\n/peers\n/quit\n" | ./run.sh --ephemeral --no-mdns' >"$dir/chat.log" 2>&1 ||
    die "the chat failed; see $dir/chat.log"
t_chat=$(($(now) - t0))
grep -q '^your code: ferry1' "$dir/chat.log" || die "the chat printed no contact code; see $dir/chat.log"

echo "== CI=true ./test.sh (log: $dir/test.log)"
t0=$(now)
rc=0
in_root bash -c 'cd /root/ferry && CI=true ./test.sh' >"$dir/test.log" 2>&1 || rc=$?
t_test=$(($(now) - t0))

# No systemd runs in a chroot: read the unit's state from its files (masked =
# a link to /dev/null).
avahi=unknown
if [[ "$(readlink "$rootfs/etc/systemd/system/avahi-daemon.service" 2>/dev/null || true)" == /dev/null ]]; then
    avahi=masked
elif [[ -e "$rootfs/lib/systemd/system/avahi-daemon.service" ]]; then
    avahi="installed, not masked"
fi
left="$(for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null || true)"
    case "$exe" in "$rootfs"/*) echo "${p#/proc/} $exe" ;; esac
done)"

{
    echo "fresh-machine check of $commit, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "debootstrap (minbase bookworm), or a copy of an earlier one: ${t_debootstrap} s"
    echo "rustup proxies copied: $(tr '\n' ' ' <"$dir/cargo-bin.txt")"
    echo "./run.sh --help, first run (set-up run + release build): ${t_run} s"
    echo "./run.sh --ephemeral --no-mdns, /me /peers /quit (built): ${t_chat} s"
    echo "CI=true ./test.sh, first run: ${t_test} s, exit status $rc"
    echo "test.sh closing lines:"
    tail -n 4 "$dir/test.log" | sed 's/^/    /'
    echo "avahi-daemon.service after set-up: ${avahi:-unknown}"
    echo "processes of the fresh root still running: ${left:-none}"
} | tee "$report"
[[ $rc -eq 0 && -z "$left" ]] || exit 1
