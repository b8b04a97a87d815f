# Shared by validator.sh and node.sh: settings, preflight checks and one-time datadir init.
# Sourced, never run. Keep it POSIX plus `pipefail`: the ethereum/client-go alltools image
# runs it with busybox sh and the native runner with bash (Debian's dash lacks pipefail).

: "${PILOTCHAIN_GETH:=geth}"
: "${DATA_DIR:=/data}"
: "${GENESIS_FILE:=/pilotchain/genesis.json}"
: "${NETWORK_ID:?NETWORK_ID is not set: give the chain id from genesis.json}"
# Compose names the bootnode by host and reads its public key from the generated keys.
if [ -z "${BOOTNODES:-}" ] && [ -n "${BOOTNODE_PUBKEY_FILE:-}" ]; then
    BOOTNODES="enode://$(tr -d ' \r\n' < "$BOOTNODE_PUBKEY_FILE")@${BOOTNODE_HOST:-bootnode}:0?discport=${BOOTNODE_PORT:-30301}"
fi
: "${BOOTNODES:?BOOTNODES is not set: give the bootnode enode URL (enode://<pubkey>@<host>:0?discport=30301)}"
: "${P2P_PORT:=30303}"
: "${AUTHRPC_PORT:=8551}"
: "${NAT:=none}"
: "${VERBOSITY:=3}"
# geth's --cache in MB (1024 is geth's own default); its database preallocates write-ahead
# logs in proportion on disk, some 400 MB per node at 1024.
: "${GETH_CACHE:=1024}"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

command -v "$PILOTCHAIN_GETH" >/dev/null 2>&1 || die "geth not found ('$PILOTCHAIN_GETH'); run ./scripts/up, which builds geth v1.13.15, or set PILOTCHAIN_GETH"
geth_version=$("$PILOTCHAIN_GETH" version 2>/dev/null) || die "'$PILOTCHAIN_GETH version' failed; is $PILOTCHAIN_GETH a geth binary?"
case "$geth_version" in
    *"Version: 1.13.15"*) ;;
    *) die "$PILOTCHAIN_GETH is not geth 1.13.15, the last release that seals Clique blocks" ;;
esac
[ -f "$GENESIS_FILE" ] || die "genesis file $GENESIS_FILE is missing; run 'pilotchain init' first"

# Initialise only an empty datadir: re-running init on a live chain is harmless in geth, but
# skipping it keeps restarts fast and makes a genesis mismatch fail loudly in geth itself.
if [ ! -d "$DATA_DIR/geth/chaindata" ]; then
    echo "$(basename "$0"): initialising $DATA_DIR from $GENESIS_FILE"
    "$PILOTCHAIN_GETH" --datadir "$DATA_DIR" --verbosity 2 init "$GENESIS_FILE"
fi

# Static peers (comma-separated enode URLs with IP addresses) connect signers at once instead
# of after a discovery round; without them, signers that start together may each seal their
# own block 1 before they meet. geth redials them for as long as it runs, so a node that lost
# its network finds them again. Give addresses, not host names: geth resolves a name once, at
# start-up. geth 1.13 takes static nodes only from a TOML config file.
# Compose gives them as <file holding the peer's enode public key>@<address>:<port> instead,
# since the keys are written by `pilotchain init` after the compose file is read.
if [ -n "${STATIC_PEER_FILES:-}" ]; then
    for entry in $(echo "$STATIC_PEER_FILES" | tr ',' ' '); do
        pubkey_file=${entry%%@*}
        [ -f "$pubkey_file" ] || die "node public key $pubkey_file is missing; run 'pilotchain init'"
        STATIC_PEERS="${STATIC_PEERS:+$STATIC_PEERS,}enode://$(tr -d ' \r\n' < "$pubkey_file")@${entry#*@}"
    done
fi
CONFIG_FLAGS=""
if [ -n "${STATIC_PEERS:-}" ]; then
    printf '[Node.P2P]\nStaticNodes = ["%s"]\n' "$(echo "$STATIC_PEERS" | sed 's/,/", "/g')" \
        > "$DATA_DIR/static-peers.toml"
    CONFIG_FLAGS="--config $DATA_DIR/static-peers.toml"
fi
# Partners' networks (comma-separated CIDRs): geth neither dials nor accepts nor relays in
# discovery anyone outside them.
NETRESTRICT_FLAGS=""
if [ -n "${NETRESTRICT:-}" ]; then
    NETRESTRICT_FLAGS="--netrestrict $NETRESTRICT"
fi
# geth's own metrics (Prometheus text at /debug/metrics/prometheus) on METRICS_ADDR: the
# node's loopback or private address, never a public one. METRICS_PORT unset or 0: off.
METRICS_FLAGS=""
if [ -n "${METRICS_PORT:-}" ] && [ "$METRICS_PORT" != 0 ]; then
    METRICS_FLAGS="--metrics --metrics.addr ${METRICS_ADDR:-127.0.0.1} --metrics.port $METRICS_PORT"
fi
NODEKEY_FLAGS=""
if [ -n "${NODEKEY_FILE:-}" ]; then
    [ -f "$NODEKEY_FILE" ] || die "node key $NODEKEY_FILE is missing; run 'pilotchain init'"
    NODEKEY_FLAGS="--nodekey $NODEKEY_FILE"
fi

# Flags every node of the network shares.
COMMON_FLAGS="--datadir $DATA_DIR --networkid $NETWORK_ID --port $P2P_PORT --bootnodes $BOOTNODES \
--nat $NAT --authrpc.port $AUTHRPC_PORT --syncmode full --verbosity $VERBOSITY --nousb \
--cache $GETH_CACHE \
$CONFIG_FLAGS $NODEKEY_FLAGS $NETRESTRICT_FLAGS $METRICS_FLAGS"
