#!/bin/sh
# Starts gsy-e for Compose (the `simulation` profile): as root, reads the stack's Redis password
# (keys/redis/password, readable only by root here) into REDIS_URL for PilotChain's plug-in and
# prepares the directories gsy-e writes, then runs gsy-e as GSY_USER (the image's `gsy`) with
# that user's own HOME. setpriv keeps the environment, HOME=/root included, and gsy-e resolves
# paths under Path.home(): with /root (mode 0700) it stopped at the end of its first slot with
# an uncaught PermissionError.
set -eu
GSY_USER="${GSY_USER:-gsy}"
# The run's export (gsy-e run --export-path), on a volume of its own so it outlives the
# container: `pilotchain reconcile` reads it.
GSY_E_EXPORT_DIR="${GSY_E_EXPORT_DIR:-/var/lib/gsy-e/exports}"
# Trades the plug-in could not hand to Redis in time, on a volume the bridge container reads
# (replay them there with `pilotchain replay`).
BRIDGE_PLUGIN_OVERFLOW_FILE="${BRIDGE_PLUGIN_OVERFLOW_FILE:-/var/lib/pilotchain/overflow/pilotchain-unpublished-trades.jsonl}"
# gsy-e publishes results to Kafka when it can reach one; a closed port on the container's own
# loopback makes it give up at once and run without ("Running without Kafka connection").
KAFKA_URL="${KAFKA_URL:-127.0.0.1:1}"
export BRIDGE_PLUGIN_OVERFLOW_FILE KAFKA_URL

die() { echo "gsy-e: $*" >&2; exit 1; }

entry="$(getent passwd "$GSY_USER")" || die "there is no user $GSY_USER in this image."
gid="$(echo "$entry" | cut -d: -f4)"
# GSY_HOME: another home for a user whose own is missing or shared.
home="${GSY_HOME:-$(echo "$entry" | cut -d: -f6)}"
[ -d "$home" ] || die "the home of $GSY_USER ($home) does not exist; set GSY_HOME."

password_file="${PILOTCHAIN_DIR:-/pilotchain}/keys/redis/password"
if [ -z "${REDIS_URL:-}" ]; then
    [ -s "$password_file" ] \
        || die "$password_file is missing; the init service creates it (docker compose up init)."
    REDIS_URL="redis://:$(cat "$password_file")@${REDIS_HOST:-redis}:${REDIS_PORT:-6379}/0"
    export REDIS_URL
fi

overflow_dir="$(dirname "$BRIDGE_PLUGIN_OVERFLOW_FILE")"
mkdir -p "$GSY_E_EXPORT_DIR" "$overflow_dir"
chown "$GSY_USER:$gid" "$GSY_E_EXPORT_DIR" "$overflow_dir"

# `run` gets the export directory unless the command names one itself.
if [ "${1:-}" = run ]; then
    case " $* " in
        *" --export-path "*|*" --export-path="*|*" --no-export "*) ;;
        *) shift; set -- run --export-path "$GSY_E_EXPORT_DIR" "$@" ;;
    esac
fi
cd "$home"
exec setpriv --reuid="$GSY_USER" --regid="$gid" --init-groups \
    env HOME="$home" USER="$GSY_USER" LOGNAME="$GSY_USER" "${GSY_E_COMMAND:-gsy-e}" "$@"
