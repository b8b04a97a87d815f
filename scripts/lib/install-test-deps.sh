#!/usr/bin/env bash
# System tools the test suite needs that pip cannot install. Called by ./scripts/test; safe to run
# again (it skips whatever is already present).
#
#   Compose CLI: tests/test_compose.py runs `docker compose config` (the Docker plugin) or, when
#   that is missing, Debian's `docker-compose config`. Neither needs a running Docker engine.
set -euo pipefail

log() {
    echo "install-test-deps: $*"
}

die() {
    echo "install-test-deps: $*" >&2
    exit 1
}

have_compose_cli() {
    if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        log "Compose present: $(docker compose version 2>/dev/null | head -n 1)"
        return 0
    fi
    if command -v docker-compose >/dev/null 2>&1; then
        log "Compose present: $(docker-compose version 2>/dev/null | head -n 1)"
        return 0
    fi
    return 1
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

# Debian packages the suite runs for real: $1 is the command to look for, $2 the package.
ensure_debian_package() {
    command -v "$1" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install $2 yourself (it provides $1)"
    log "installing Debian's $2 (for $1)"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y -q --no-install-recommends "$2"; then
        log "refreshing the package lists and trying again"
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends "$2"
    fi
    command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

have_compose_cli || ensure_debian_package docker-compose docker-compose
# Redis: the bridge's stream and the faucet's shared rate limits (tests start their own).
ensure_debian_package redis-server redis-server
