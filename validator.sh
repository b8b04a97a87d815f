#!/usr/bin/env bash
# A Clique signer: seals blocks with its own key, full sync, no HTTP or WebSocket (IPC only).
# Used by docker-compose.yml (run with the image's busybox sh) and by the native runner
# (./scripts/up), so it stays POSIX. Settings come from the environment; extra geth flags
# may follow as arguments.
set -euo pipefail

# Compose passes the address as a file written by the init step.
if [ -z "${SIGNER_ADDRESS:-}" ] && [ -n "${SIGNER_ADDRESS_FILE:-}" ]; then
    SIGNER_ADDRESS=$(tr -d ' \r\n' < "$SIGNER_ADDRESS_FILE")
fi
: "${SIGNER_ADDRESS:?SIGNER_ADDRESS is not set: the validator account (0x...)}"
: "${KEYSTORE_FILE:?KEYSTORE_FILE is not set: the validator keystore JSON}"
: "${PASSWORD_FILE:?PASSWORD_FILE is not set: the file holding the keystore password}"
: "${GAS_LIMIT:=60000000}"

. "$(dirname "$0")/scripts/lib/geth-node.sh"

[ -f "$KEYSTORE_FILE" ] || die "keystore $KEYSTORE_FILE is missing; run 'pilotchain init'"
[ -f "$PASSWORD_FILE" ] || die "password file $PASSWORD_FILE is missing; run 'pilotchain init'"
mkdir -p "$DATA_DIR/keystore"
cp "$KEYSTORE_FILE" "$DATA_DIR/keystore/"

# MINE=0: neither unlock the key nor seal; the native runner does both over IPC (the
# deprecated personal namespace, IPC only: a validator serves no HTTP or WebSocket), so that
# every validator it starts takes its peers' blocks before any of them can seal one
# (runner/localnet.py says why).
if [ "${MINE:-1}" = 0 ]; then
    set -- --rpc.enabledeprecatedpersonal "$@"
else
    set -- --mine --unlock "$SIGNER_ADDRESS" --password "$PASSWORD_FILE" "$@"
fi

# shellcheck disable=SC2086  # COMMON_FLAGS is a flag list on purpose
exec "$PILOTCHAIN_GETH" $COMMON_FLAGS \
    --miner.etherbase "$SIGNER_ADDRESS" --miner.gaslimit "$GAS_LIMIT" \
    "$@"
