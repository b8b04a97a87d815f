#!/bin/sh
# Starts gsy-e for Compose: reads the stack's Redis password (keys/redis/password, readable only
# by root here) into REDIS_URL for PilotChain's plug-in, then runs gsy-e as the image's `gsy` user.
set -eu
password_file=/pilotchain/keys/redis/password
if [ -z "${REDIS_URL:-}" ]; then
    if [ ! -s "$password_file" ]; then
        echo "gsy-e: $password_file is missing; the init service creates it (docker compose up init)." >&2
        exit 1
    fi
    REDIS_URL="redis://:$(cat "$password_file")@${REDIS_HOST:-redis}:${REDIS_PORT:-6379}/0"
    export REDIS_URL
fi
exec setpriv --reuid=gsy --regid=gsy --init-groups gsy-e "$@"
