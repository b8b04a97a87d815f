#!/bin/sh
# Refuses, in one sentence, to let a geth node start on a data directory that holds another
# chain than GENESIS_FILE's: geth checks the genesis only when initialising, so a node would
# otherwise run the old chain (keys and genesis regenerated, or a volume of another network).
# Compose runs it before the nodes (docker-compose.yml's `chain-check`, the `*-chain-check`
# services of docker-compose.hosts.yml); the native runner compares the running node's block 0.
#
#   check-chain-data.sh GENESIS_FILE NAME=DATADIR...
#
# Read-only on the data: the genesis block's hash is geth's canonical hash of block 0
# (database key "h" + uint64 0 + "n", which geth keeps in its key-value store even after it
# moves old blocks to the freezer), read with `geth db get`. The hash genesis.json gives is
# geth's own, from an `init` into a scratch directory. POSIX sh: the geth image's busybox.
set -eu
: "${PILOTCHAIN_GETH:=geth}"
genesis=${1:?usage: check-chain-data.sh GENESIS_FILE NAME=DATADIR...}
shift
CANONICAL_GENESIS_KEY=0x6800000000000000006e

die() {
    echo "check-chain-data: $*" >&2
    exit 1
}

[ -f "$genesis" ] || die "$genesis is missing; run 'pilotchain init' first."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# genesis_of DATADIR: the hash of its block 0 (no 0x), or nothing when the node holds the
# directory (it is running: it was checked when it started).
genesis_of() {
    if out=$("$PILOTCHAIN_GETH" --datadir "$1" --verbosity 1 --cache 16 db get \
            "$CANONICAL_GENESIS_KEY" 2>&1); then
        echo "$out" | sed -n 's/^key [0-9a-fx]*: 0x\([0-9a-f]\{64\}\)$/\1/p'
        return
    fi
    case "$out" in
        *"already used by another process"*) return ;;
        *) die "could not read the genesis block in $1: $out" ;;
    esac
}

"$PILOTCHAIN_GETH" --datadir "$scratch" --verbosity 1 init "$genesis" >/dev/null 2>&1 \
    || die "geth cannot initialise a chain from $genesis; is it a genesis file?"
want=$(genesis_of "$scratch")
[ -n "$want" ] || die "geth wrote no genesis block from $genesis."

for entry in "$@"; do
    name=${entry%%=*}
    dir=${entry#*=}
    if [ ! -d "$dir/geth/chaindata" ]; then
        echo "check-chain-data: $name: no chain data yet; the node initialises it from $genesis."
        continue
    fi
    have=$(genesis_of "$dir")
    if [ -z "$have" ]; then
        echo "check-chain-data: $name: in use by its running node; checked when it started."
    elif [ "$have" != "$want" ]; then
        die "$name's data ($dir) holds another chain (genesis 0x$(echo "$have" | cut -c1-12)…, not 0x$(echo "$want" | cut -c1-12)… of $genesis): restore the keys and genesis.json it was built on, or remove its data (docker compose down -v) to start the new chain."
    else
        echo "check-chain-data: $name: chain data of genesis 0x$(echo "$want" | cut -c1-12)…, as $genesis."
    fi
done
