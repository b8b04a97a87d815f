#!/usr/bin/env bash
# The RPC node: an archive, full-sync member of the network that serves users over HTTP and
# WebSocket. It exposes only eth, net, web3, txpool and clique by default; admin, personal,
# miner and debug stay off. Used by docker-compose.yml (busybox sh) and the native runner, so
# it stays POSIX. Settings come from the environment; extra geth flags may follow as arguments.
#
# Browsers: a web page can use the node through its visitor's browser only if its origin is in
# CORS_DOMAINS (HTTP: the CORS answer) or WS_ORIGINS (WebSocket: the Origin check; default
# CORS_DOMAINS), and the node answers HTTP only under the host names in VHOSTS (and IP
# addresses, which geth always answers), so a page whose own name was made to point at the
# node (DNS rebinding) is refused too. MetaMask and other wallets, command-line tools and the
# services need none of them. By default no page is let in and only localhost is answered;
# the native runner and docker-compose.yml list the stack's own pages and host names.
set -euo pipefail

: "${HTTP_ADDR:=0.0.0.0}"
: "${HTTP_PORT:=8545}"
: "${WS_PORT:=8546}"
: "${RPC_APIS:=eth,net,web3,txpool,clique}"
: "${CORS_DOMAINS:=}"
: "${VHOSTS:=localhost}"

. "$(dirname "$0")/scripts/lib/geth-node.sh"

# Each origin as geth's two checks need it. Browsers send an origin without its scheme's
# default port (http://localhost, never http://localhost:80): the HTTP CORS check compares
# origins as written, so a :80/:443 origin is listed without it too; the WebSocket check
# wants the port of an origin exactly as the browser sends it, so there it is dropped.
# (geth 1.13 lets a WebSocket origin without a port in on any port of its host: give pages
# on localhost a port of their own, as the faucet and the portal have.)
cors="" ws=""
set -f  # "*" is an origin here, not a file pattern (also in the geth command line below)
old_ifs=$IFS
IFS=,
for origin in $CORS_DOMAINS; do
    origin=$(printf '%s' "$origin" | tr -d ' \t')
    case "$origin" in
        "") ;;
        http://*:80) cors="$cors,$origin,${origin%:80}" ;;
        https://*:443) cors="$cors,$origin,${origin%:443}" ;;
        *) cors="$cors,$origin" ;;
    esac
done
for origin in ${WS_ORIGINS-$CORS_DOMAINS}; do
    origin=$(printf '%s' "$origin" | tr -d ' \t')
    case "$origin" in
        "") ;;
        http://*:80) ws="$ws,${origin%:80}" ;;
        https://*:443) ws="$ws,${origin%:443}" ;;
        *) ws="$ws,$origin" ;;
    esac
done
IFS=$old_ifs
cors=${cors#,} ws=${ws#,}
CORS_FLAGS=""
if [ -n "$cors" ]; then
    CORS_FLAGS="--http.corsdomain $cors"
fi
# geth takes an empty WebSocket origin list as "every page on localhost"; a name under the
# reserved .invalid domain is an origin no page can have, so no page gets in.
: "${ws:=http://no-page.invalid}"

# shellcheck disable=SC2086  # COMMON_FLAGS and CORS_FLAGS are flag lists on purpose
exec "$PILOTCHAIN_GETH" $COMMON_FLAGS --gcmode archive \
    --http --http.addr "$HTTP_ADDR" --http.port "$HTTP_PORT" --http.api "$RPC_APIS" \
    $CORS_FLAGS --http.vhosts "$VHOSTS" \
    --ws --ws.addr "$HTTP_ADDR" --ws.port "$WS_PORT" --ws.api "$RPC_APIS" --ws.origins "$ws" \
    "$@"
