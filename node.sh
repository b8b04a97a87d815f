#!/usr/bin/env bash
# The RPC node: an archive, full-sync member of the network that serves users over HTTP and
# WebSocket. It exposes only eth, net, web3, txpool and clique by default; admin, personal,
# miner and debug stay off. Used by docker-compose.yml (busybox sh) and the native runner, so
# it stays POSIX. Settings come from the environment; extra geth flags may follow as arguments.
set -euo pipefail

: "${HTTP_ADDR:=0.0.0.0}"
: "${HTTP_PORT:=8545}"
: "${WS_PORT:=8546}"
: "${RPC_APIS:=eth,net,web3,txpool,clique}"
: "${CORS_DOMAINS:=*}"
: "${VHOSTS:=*}"

. "$(dirname "$0")/scripts/lib/geth-node.sh"

# shellcheck disable=SC2086  # COMMON_FLAGS is a flag list on purpose
exec "$PILOTCHAIN_GETH" $COMMON_FLAGS --gcmode archive \
    --http --http.addr "$HTTP_ADDR" --http.port "$HTTP_PORT" --http.api "$RPC_APIS" \
    --http.corsdomain "$CORS_DOMAINS" --http.vhosts "$VHOSTS" \
    --ws --ws.addr "$HTTP_ADDR" --ws.port "$WS_PORT" --ws.api "$RPC_APIS" --ws.origins "$CORS_DOMAINS" \
    "$@"
