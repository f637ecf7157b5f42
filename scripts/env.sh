# Sourced (not run) by ./run.sh, ./test.sh and scripts/*.sh before they call cargo.
#
# rustup puts its proxies in $CARGO_HOME/bin (~/.cargo/bin). A shell that never
# sourced ~/.cargo/env (a fresh login, sudo, CI) may find Debian's
# /usr/bin/cargo first, or no cargo at all: that cargo would build everything
# with Debian's rustc instead of the toolchain this project is tested with.
# Put rustup's directory first on PATH when it exists; scripts/setup.sh then
# checks that the cargo found first really is rustup's.
ferry_cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ -x "$ferry_cargo_bin/cargo" ]]; then
    case ":$PATH:" in
        ":$ferry_cargo_bin:"*) ;;
        *) PATH="$ferry_cargo_bin:$PATH" ;;
    esac
    export PATH
fi
unset ferry_cargo_bin
