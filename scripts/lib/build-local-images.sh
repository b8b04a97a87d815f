#!/usr/bin/env bash
# Builds local stand-ins for the upstream images docker-compose.yml uses, for machines that reach
# no image registry (ours): a Debian bookworm minbase made with debootstrap, and on it
#   geth    the project's own geth + bootnode v1.13.15 (scripts/lib/install-geth.sh), with busybox
#           as /bin/sh like ethereum/client-go:alltools (validator.sh needs `pipefail`, dash lacks it);
#   python  Python 3.11 (bookworm's python3) in a venv that is first on PATH, like python:3.11-slim;
#   redis   Debian's redis-server with an entry point that turns protected mode off when no config
#           file is given, as the official redis image does;
#   mosquitto  Debian's mosquitto and its clients (mosquitto_passwd, mosquitto_sub), with the
#           official eclipse-mosquitto image's /mosquitto/{config,data,log} owned by `mosquitto`
#           (docker/mosquitto/start.sh runs the same on both);
#   prometheus  Debian's prometheus (2.42) laid out like prom/prometheus: /usr/bin/prometheus as the
#           entry point, the series in /prometheus, run as nobody, busybox's wget for the health
#           check (the `monitoring` profile).
#   nginx   Debian's nginx-light (what the native RPC proxy runs), for docker-compose.hosts.yml's
#           rpc-proxy in place of nginx:1.28.0-bookworm.
# Every image is tagged pilotchain-local/<name>:<version>-<hash of its inputs> (never an upstream
# name) and rebuilt only when that hash changes, so a warm run builds nothing. The host's CA bundle
# goes into the base at /etc/ssl/host-ca.pem (Debian's ca-certificates would overwrite
# /etc/ssl/certs) and pip, requests, OpenSSL and Node.js are pointed at it.
#
# Needs a running Docker engine. Prints the Compose variables to use, one VAR=image per line:
#   eval "$(scripts/lib/build-local-images.sh)"; GETH_IMAGE=... docker compose up -d
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
REPO=pilotchain-local
# Bump to force a rebuild of everything when this script's recipes change in a way the hashes miss.
RECIPE_VERSION=1

say() { echo "build-local-images: $*" >&2; }
die() { say "$*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is missing; run scripts/lib/install-docker.sh first."
docker info >/dev/null 2>&1 || die "no Docker engine answers; start dockerd first."
[ -f "$HOST_CA" ] || die "the CA bundle $HOST_CA is missing; set HOST_CA_BUNDLE to the host's bundle."

hash_of() { sha256sum | cut -c1-12; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# One build at a time on this machine (two test sessions, or a test and ./scripts/up): the
# second then finds the first's images by their tags instead of building them again.
LOCK_FILE="${TMPDIR:-/tmp}/pilotchain-build-local-images.lock"
exec 9>"$LOCK_FILE"
flock 9 || die "could not lock $LOCK_FILE"

work=$(mktemp -d)
# debootstrap mounts /proc (and more) inside the root filesystem and leaves them mounted when
# it fails: unmount whatever is below the work directory before removing it, or rm drowns the
# real error in hundreds of "Operation not permitted" lines about /proc.
unmount_below() {
    awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r \
        | xargs -r -n 1 umount -l 2>/dev/null || true
}
cleanup() {
    unmount_below "$work"
    rm -rf "$work" 2>/dev/null || say "could not remove $work entirely"
}
trap cleanup EXIT

# build NAME VERSION DOCKERFILE_TEXT [FILE...]: builds FROM the base with the given files in its
# context (by base name); prints the tag.
build() {
    local name=$1 version=$2 dockerfile=$3 tag inputs ctx
    shift 3
    inputs=$({ echo "$RECIPE_VERSION $BASE_TAG"; echo "$dockerfile"; [ "$#" -eq 0 ] || sha256sum "$@" | cut -d' ' -f1; } | hash_of)
    tag="$REPO/$name:$version-$inputs"
    if ! have_image "$tag"; then
        say "building $tag"
        ctx="$work/$name"
        mkdir -p "$ctx"
        [ "$#" -eq 0 ] || cp "$@" "$ctx/"
        printf 'FROM %s\n%s\nLABEL org.pilotchain.inputs=%s\n' "$BASE_TAG" "$dockerfile" "$inputs" > "$ctx/Dockerfile"
        # The classic builder: Debian's docker.io has no buildx plugin.
        DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >&2 \
            || die "building $tag failed (see above)."
    fi
    echo "$tag"
}

# --- Base: Debian bookworm minbase -------------------------------------------------------------
base_inputs=$({ echo "$RECIPE_VERSION $SUITE minbase $MIRROR"; sha256sum < "$HOST_CA"; } | hash_of)
BASE_TAG="$REPO/debian:$SUITE-$base_inputs"
if ! have_image "$BASE_TAG"; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing; run scripts/lib/install-docker.sh first."
    say "debootstrap $SUITE (minbase) from $MIRROR (about a minute)..."
    rootfs="$work/rootfs"
    # Once more after a failure (a mirror's hiccup), from a clean directory.
    for attempt in 1 2; do
        if debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
            break
        fi
        say "debootstrap attempt $attempt failed; the end of its log ($rootfs/debootstrap/debootstrap.log has more):"
        tail -n 20 "$work/debootstrap.log" >&2
        [ ! -f "$rootfs/debootstrap/debootstrap.log" ] || tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
        [ "$attempt" -eq 1 ] || die "debootstrap of $SUITE failed twice (see above)."
        unmount_below "$rootfs"
        rm -rf "$rootfs" 2>/dev/null || die "could not clear $rootfs for a second debootstrap."
    done
    mkdir -p "$rootfs/etc/ssl"
    cp "$HOST_CA" "$rootfs/etc/ssl/host-ca.pem"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV DEBIAN_FRONTEND=noninteractive' \
        -c 'ENV SSL_CERT_FILE=/etc/ssl/host-ca.pem REQUESTS_CA_BUNDLE=/etc/ssl/host-ca.pem PIP_CERT=/etc/ssl/host-ca.pem NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.pem' \
        -c 'CMD ["bash"]' \
        -c "LABEL org.pilotchain.inputs=$base_inputs" \
        - "$BASE_TAG" >/dev/null || die "docker import of the $SUITE root filesystem failed."
    say "imported $BASE_TAG"
fi

# --- geth + bootnode ----------------------------------------------------------------------------
GETH_BIN_DIR=$("$PROJECT_ROOT/scripts/lib/install-geth.sh")
GETH_IMAGE=$(build geth v1.13.15 '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends busybox \
    && rm -rf /var/lib/apt/lists/* && ln -sf /bin/busybox /bin/sh
COPY geth bootnode /usr/local/bin/
RUN geth version | grep -q "Version: 1.13.15" && bootnode -h 2>&1 | grep -q nodekey
EXPOSE 8545 8546 30303 30303/udp' "$GETH_BIN_DIR/geth" "$GETH_BIN_DIR/bootnode")

# --- Python 3.11 ------------------------------------------------------------------------------
PYTHON_IMAGE=$(build python 3.11-bookworm '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/python \
    && /opt/python/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]')

# --- Redis --------------------------------------------------------------------------------------
printf '%s\n' '#!/bin/sh' \
    '# As the official image: arguments alone go to redis-server; no config file -> no protected mode.' \
    'set -e' \
    'if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi' \
    'if [ "$1" = redis-server ]; then' \
    '    case "${2:-}" in *.conf) ;; *) set -- "$@" --protected-mode no ;; esac' \
    'fi' \
    'exec "$@"' > "$work/redis-entrypoint"
REDIS_IMAGE=$(build redis 7-bookworm '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint /usr/local/bin/
RUN chmod 0755 /usr/local/bin/redis-entrypoint
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]' "$work/redis-entrypoint")

# --- Mosquitto ----------------------------------------------------------------------------------
# bookworm has 2.0.11; the upstream pin is a later 2.0.x with the same configuration language.
MOSQUITTO_IMAGE=$(build mosquitto 2.0-bookworm '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
    && chown -R mosquitto:mosquitto /mosquitto
EXPOSE 1883
CMD ["mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]')

# --- Prometheus ---------------------------------------------------------------------------------
# bookworm has 2.42; the upstream pin is 2.53 (LTS), which reads the same configuration and rules.
PROMETHEUS_IMAGE=$(build prometheus 2.42-bookworm '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends prometheus busybox \
    && rm -rf /var/lib/apt/lists/* && ln -s /bin/busybox /usr/local/bin/wget \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus \
    && prometheus --version 2>&1 | grep -q "version 2\."
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]')

# --- nginx (the RPC node's HTTPS proxy) ---------------------------------------------------------
# bookworm's nginx-light 1.22 (TLS, proxy, map, WebSocket upgrade), as natively; the upstream
# pin is a later 1.x on the same Debian with the same configuration language.
RPC_PROXY_IMAGE=$(build nginx 1-bookworm '
RUN apt-get update -q && apt-get install -y -q --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* && nginx -V 2>&1 | grep -q http_ssl_module
EXPOSE 8443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]')

echo "GETH_IMAGE=$GETH_IMAGE"
echo "PYTHON_IMAGE=$PYTHON_IMAGE"
echo "REDIS_IMAGE=$REDIS_IMAGE"
echo "MOSQUITTO_IMAGE=$MOSQUITTO_IMAGE"
echo "PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
echo "RPC_PROXY_IMAGE=$RPC_PROXY_IMAGE"
