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

# MINE=0: unlock the key but seal only once told to (miner_start over IPC): the native
# runner starts several validators' sealing together once each has unlocked its key
# (runner/localnet.py says why).
MINE_FLAGS="--mine"
if [ "${MINE:-1}" = 0 ]; then
    MINE_FLAGS=""
fi

# shellcheck disable=SC2086  # COMMON_FLAGS and MINE_FLAGS are flag lists on purpose
exec "$PILOTCHAIN_GETH" $COMMON_FLAGS $MINE_FLAGS \
    --miner.etherbase "$SIGNER_ADDRESS" --miner.gaslimit "$GAS_LIMIT" \
    --unlock "$SIGNER_ADDRESS" --password "$PASSWORD_FILE" \
    "$@"
