#!/usr/bin/env bash
# System tools the test suite needs that pip cannot install. Called by ./scripts/test; safe to run
# again (it skips whatever is already present).
#
#   Docker + Compose v2 (scripts/lib/install-docker.sh): tests/test_compose.py runs
#   `docker compose config`, and tests/test_compose_engine.py runs the stack on a real engine
#   (it starts dockerd itself when none answers, and builds local images with debootstrap).
set -euo pipefail

. "$(dirname "$0")/common.sh"

"$(dirname "$0")/install-docker.sh"
# Redis: the bridge's stream and the faucet's shared rate limits (tests start their own).
ensure_debian_package redis-server redis-server
# mosquitto: the meters' MQTT broker (tests/test_ingest_mqtt.py starts its own).
ensure_debian_package mosquitto mosquitto
# PostgreSQL: the portal's index on a real server (tests/portal_fixtures.py runs a private cluster
# with initdb; Debian keeps initdb and postgres off PATH, under /usr/lib/postgresql/<version>/bin).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
    ensure_debian_package pg_ctlcluster postgresql
fi
# Chromium: tests/test_faucet_browser.py drives the faucet page headless over the DevTools protocol.
ensure_debian_package chromium chromium
# DejaVu Sans: the portal embeds it in PDF statements (tests/test_portal_web.py prints names
# in several scripts).
ensure_debian_file /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf fonts-dejavu-core
# poppler's pdftoppm: the same test draws the statement's first page as the picture in
# docs/portal.md.
ensure_debian_package pdftoppm poppler-utils

# Several organisations' hosts (tests/test_hosts.py): network namespaces and veth pairs (iproute2),
# each host's generated firewall (nftables), the RPC node's HTTPS proxy (nginx) and a test CA
# (openssl).
ensure_debian_package ip iproute2
ensure_debian_package nft nftables
ensure_debian_package nginx nginx-light
ensure_debian_package openssl openssl

# Prometheus and promtool: tests/test_metrics.py checks every /metrics with promtool's parser
# and the alerting rules with `promtool test rules`, and runs a real Prometheus against a stack.
ensure_debian_package promtool prometheus
