#!/bin/sh
# Entrypoint of the blockscout-backend service: reads the generated secrets, runs the database
# migrations and starts Blockscout (what upstream's compose runs, plus the secrets).
# POSTGRES_USER, POSTGRES_DB and POSTGRES_PASSWORD_FILE come from envs/blockscout-db.env, the same
# file the database container uses, so the two can never disagree.
set -eu

die() {
    echo "backend-start: $*" >&2
    exit 1
}

: "${POSTGRES_USER:?POSTGRES_USER is not set (envs/blockscout-db.env)}"
: "${POSTGRES_DB:?POSTGRES_DB is not set (envs/blockscout-db.env)}"
: "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is not set (envs/blockscout-db.env)}"
: "${BLOCKSCOUT_DB_HOST:=blockscout-db}"
: "${SECRET_KEY_BASE_FILE:=/secrets/secret_key_base}"

[ -s "$POSTGRES_PASSWORD_FILE" ] || die "$POSTGRES_PASSWORD_FILE is missing; the explorer-secrets step did not run"
[ -s "$SECRET_KEY_BASE_FILE" ] || die "$SECRET_KEY_BASE_FILE is missing; the explorer-secrets step did not run"

SECRET_KEY_BASE="$(cat "$SECRET_KEY_BASE_FILE")"
DATABASE_URL="postgresql://${POSTGRES_USER}:$(cat "$POSTGRES_PASSWORD_FILE")@${BLOCKSCOUT_DB_HOST}:5432/${POSTGRES_DB}"
export SECRET_KEY_BASE DATABASE_URL

bin/blockscout eval "Elixir.Explorer.ReleaseTasks.create_and_migrate()"
exec bin/blockscout start
