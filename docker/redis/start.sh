#!/bin/sh
# Starts the stack's Redis with the password `pilotchain init` wrote to keys/redis/password
# ($KEYS_DIR: docker-compose.hosts.yml's apps read this host's keys).
# The password goes into a private config file, not onto the command line where `ps` shows it;
# then redis-server runs as the image's `redis` user. Works on the official image (Alpine:
# su-exec; Debian: gosu) and on the Debian stand-in the tests build (setpriv).
set -eu
password_file=${KEYS_DIR:-/pilotchain/keys}/redis/password
if [ ! -s "$password_file" ]; then
    echo "redis: $password_file is missing; the init service creates it (docker compose up init)." >&2
    exit 1
fi
umask 077
conf=/tmp/pilotchain-redis.conf
{
    printf 'requirepass %s\n' "$(cat "$password_file")"
    printf 'dir /data\nappendonly yes\nappendfsync everysec\nsave ""\n'
    # Bounded; when full it refuses writes and never evicts a stream entry (runner/redis.py).
    printf 'maxmemory %s\nmaxmemory-policy noeviction\n' "${REDIS_MAXMEMORY:-1gb}"
} > "$conf"
chown redis:redis "$conf" /data
if command -v setpriv >/dev/null 2>&1; then
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$conf"
elif command -v su-exec >/dev/null 2>&1; then
    exec su-exec redis redis-server "$conf"
elif command -v gosu >/dev/null 2>&1; then
    exec gosu redis redis-server "$conf"
fi
echo "redis: found no setpriv, su-exec or gosu to drop root; refusing to run Redis as root." >&2
exit 1
