#!/bin/sh
# One-shot step of docker-compose.yml (service "explorer-secrets"): creates the explorer's secrets
# in the "explorer-secrets" volume the first time, and keeps them afterwards.
#   db_password      Postgres password for the "blockscout" role (read via POSTGRES_PASSWORD_FILE)
#   secret_key_base  Phoenix SECRET_KEY_BASE of the Blockscout backend (at least 64 characters)
# Values are hex, so they are safe inside a database URL. Only the explorer containers mount the
# volume; nothing here is ever written to the project directory or committed.
set -eu

SECRETS_DIR="${SECRETS_DIR:-/secrets}"

# new_secret NAME BYTES: write BYTES random bytes as hex to $SECRETS_DIR/NAME unless it exists.
new_secret() {
    target="$SECRETS_DIR/$1"
    if [ -s "$target" ]; then
        echo "make-secrets: keeping existing $1"
        return 0
    fi
    head -c "$2" /dev/urandom | od -An -v -tx1 | tr -d ' \n' > "$target.tmp"
    # Readable by the postgres (uid 70) and blockscout (uid 10001) users of the other images.
    chmod 0444 "$target.tmp"
    mv "$target.tmp" "$target"
    echo "make-secrets: created $1"
}

mkdir -p "$SECRETS_DIR"
new_secret db_password 24
new_secret secret_key_base 64
