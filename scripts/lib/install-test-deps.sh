#!/usr/bin/env bash
# System tools the test suite needs that pip cannot install. Called by ./scripts/test; safe to run
# again (it skips whatever is already present).
#
#   Compose CLI: tests/test_compose.py runs `docker compose config` (the Docker plugin) or, when
#   that is missing, Debian's `docker-compose config`. Neither needs a running Docker engine.
set -euo pipefail

. "$(dirname "$0")/common.sh"
log() { say "$@"; }

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

have_compose_cli || ensure_debian_package docker-compose docker-compose
# Redis: the bridge's stream and the faucet's shared rate limits (tests start their own).
ensure_debian_package redis-server redis-server
# Chromium: tests/test_faucet_browser.py drives the faucet page headless over the DevTools protocol.
ensure_debian_package chromium chromium

