#!/bin/sh
# The node of one role in docker-compose.hosts.yml: reads the settings `pilotchain node-env`
# wrote from the checked network manifest (the container's one-shot `*-check` service), then
# becomes the bootnode, validator.sh or node.sh. POSIX sh: the geth image's shell.
set -eu
env_file=${1:?usage: host-node.sh FILE (written by pilotchain node-env)}
[ -f "$env_file" ] || { echo "host-node.sh: $env_file is missing; the check service writes it" >&2; exit 1; }
set -a
. "$env_file"
set +a
case "$NODE_ROLE" in
    bootnode)
        # shellcheck disable=SC2086  # the arguments are one string of flags
        exec bootnode $BOOTNODE_ARGS ;;
    validator) exec sh "$(dirname "$0")/../../validator.sh" ;;
    rpc) exec sh "$(dirname "$0")/../../node.sh" ;;
    *) echo "host-node.sh: unknown role $NODE_ROLE" >&2; exit 1 ;;
esac
