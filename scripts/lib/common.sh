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
        say "installing npm packages (solc, @openzeppelin/contracts)"
        (cd "$PROJECT_ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
        touch "$stamp"
    fi
}
