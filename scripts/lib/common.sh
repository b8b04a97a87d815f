# Sourced by the scripts in scripts/: locate the project, keep its venv up to date.
# shellcheck shell=bash

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$PROJECT_ROOT/.venv"

say() { echo "$(basename "$0"): $*" >&2; }
die() { say "$*"; exit 1; }

# Create or refresh .venv when pyproject.toml changed since the last install.
# $1: the pip extras to install, e.g. "test" (empty for the runtime only).
ensure_venv() {
    local extras="${1:-}" spec="" stamp
    [ -n "$extras" ] && spec="[$extras]"
    command -v python3 >/dev/null 2>&1 || die "python3 is missing; install Python 3.11 or newer"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python $(python3 -V 2>&1) is too old; PilotChain needs 3.11 or newer"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the Python environment in .venv"
        python3 -m venv "$VENV" 2>/dev/null || die "python3 -m venv failed; on Debian: apt-get install python3-venv"
    fi
    stamp="$VENV/.installed-$(sha256sum "$PROJECT_ROOT/pyproject.toml" | cut -c1-16)-${extras:-runtime}"
    if [ ! -f "$stamp" ]; then
        say "installing Python dependencies (${spec:-runtime})"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$PROJECT_ROOT$spec" >&2
        touch "$stamp"
    fi
}

# Build (once per version) or find geth and bootnode 1.13.15; exports GETH_BIN_DIR.
ensure_geth() {
    GETH_BIN_DIR="$("$PROJECT_ROOT/scripts/lib/install-geth.sh")"
    export GETH_BIN_DIR
}

# Install the npm packages (the solc-js compiler, OpenZeppelin) when package-lock.json changed.
ensure_npm() {
    local stamp="$PROJECT_ROOT/node_modules/.installed-$(sha256sum "$PROJECT_ROOT/package-lock.json" | cut -c1-16)"
    command -v npm >/dev/null 2>&1 || die "npm is missing; on Debian: apt-get install nodejs npm"
    if [ ! -f "$stamp" ]; then
        say "installing npm packages (solc, @openzeppelin/contracts, uplot; axe-core for the tests)"
        (cd "$PROJECT_ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
        touch "$stamp"
    fi
}

# Run a command as root: directly if we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Another apt (a second test run, unattended upgrades) may hold the lock: wait for it.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
# Install Debian package $3 unless what it provides is there: $1 "command" or "file", $2 which.
ensure_debian() {
    local kind=$1 wanted=$2 package=$3
    have() { if [ "$kind" = command ]; then command -v "$wanted" >/dev/null 2>&1; else [ -e "$wanted" ]; fi; }
    have && return 0
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install $package yourself (it provides $wanted)"
    say "installing Debian's $package (for $wanted)"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "$package" >&2; then
        say "refreshing the package lists and trying again"
        as_root apt-get "${APT_WAIT[@]}" update -q >&2
        as_root apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "$package" >&2
    fi
    have || die "$wanted is still missing after installing $package"
}
# Install a Debian package unless its command exists: $1 the command, $2 the package.
ensure_debian_package() { ensure_debian command "$1" "$2"; }
# Install a Debian package unless a file it provides exists: $1 the file, $2 the package.
ensure_debian_file() { ensure_debian file "$1" "$2"; }
