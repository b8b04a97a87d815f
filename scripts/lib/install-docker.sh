#!/usr/bin/env bash
# Installs what `docker compose up` needs on a Debian machine, unless it is already there:
#   - Debian's docker.io (dockerd, containerd, runc) when no dockerd is installed;
#   - Docker Compose v2, pinned, as the Docker CLI plugin. Debian bookworm ships only the old
#     Python docker-compose 1.29, so v2 is built from the Go module proxy into a cache outside
#     the checkout (one folder per version) and linked into the CLI plugin folder.
# debootstrap is installed too: tests build their local base image with it, since no image
# registry may be reachable. Starting dockerd is left to whoever needs it (the test harness
# starts its own). Safe to run again; a warm run changes nothing. Needs root for apt and the
# plugin folder.
set -euo pipefail

COMPOSE_VERSION=v2.40.3
COMPOSE_MODULE=github.com/docker/compose/v2
CACHE_DIR="${PILOTCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilotchain}"
COMPOSE_BIN="$CACHE_DIR/compose-$COMPOSE_VERSION/docker-compose"
PLUGIN_DIR="${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"

# Another apt (a second test run, unattended upgrades) may hold the lock: wait for it.
APT_WAIT=(-o DPkg::Lock::Timeout=600)

say() { echo "install-docker: $*" >&2; }
die() { say "$*"; exit 1; }

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "no apt-get on this machine; install $* yourself."
    [ "$(id -u)" -eq 0 ] || die "installing $* needs root; run this script as root (or with sudo)."
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "$@" >&2; then
        say "refreshing the package lists and trying again"
        apt-get "${APT_WAIT[@]}" update -q >&2 || die "apt-get update failed; is Debian's mirror reachable?"
        apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "$@" >&2 || die "apt-get could not install $*."
    fi
}

# --- The engine and the client ----------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# docker.io brings the client too; iptables is what dockerd's bridge networks need.
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian's ${missing[*]}"
    apt_install "${missing[@]}"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd is still missing after installing docker.io."
command -v docker >/dev/null 2>&1 || die "the docker client is missing; install Debian's docker.io."

# --- Compose v2 --------------------------------------------------------------------------------
compose_ok() {
    [ -x "$1" ] && [[ "$("$1" version 2>/dev/null)" == *"${COMPOSE_VERSION}"* ]]
}

if ! compose_ok "$COMPOSE_BIN"; then
    command -v go >/dev/null 2>&1 || { say "Go is not installed; installing Debian's golang-go"; apt_install golang-go; }
    say "building Docker Compose $COMPOSE_VERSION from the Go module proxy (about 2 minutes on 2 cores)..."
    mkdir -p "$(dirname "$COMPOSE_BIN")"
    # `go install .../cmd@version` is refused (the module has exclude directives), so fetch the
    # module and build inside it.
    module_dir=$(go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') \
        || die "could not download $COMPOSE_MODULE@$COMPOSE_VERSION from the Go module proxy."
    [ -d "$module_dir" ] || die "the Go module proxy gave no source folder for $COMPOSE_MODULE@$COMPOSE_VERSION."
    tmp_bin=$(mktemp "$CACHE_DIR/docker-compose.XXXXXX")
    trap 'rm -f "$tmp_bin"' EXIT
    # Build to a scratch file and move it into place: an interrupted build never leaves a
    # half-written binary that the check above would trust.
    (cd "$module_dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
        -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
        -o "$tmp_bin" ./cmd) >&2 || die "building Docker Compose $COMPOSE_VERSION failed (see above)."
    chmod 0755 "$tmp_bin"
    mv "$tmp_bin" "$COMPOSE_BIN"
    compose_ok "$COMPOSE_BIN" || die "the built $COMPOSE_BIN does not report version $COMPOSE_VERSION."
fi

plugin="$PLUGIN_DIR/docker-compose"
if [ "$(readlink "$plugin" 2>/dev/null || true)" != "$COMPOSE_BIN" ]; then
    [ -w "$(dirname "$PLUGIN_DIR")" ] || [ "$(id -u)" -eq 0 ] \
        || die "linking the Compose plugin into $PLUGIN_DIR needs root."
    mkdir -p "$PLUGIN_DIR"
    ln -sfn "$COMPOSE_BIN" "$plugin"
    say "linked $plugin -> $COMPOSE_BIN"
fi
docker compose version >/dev/null 2>&1 \
    || die "'docker compose' does not work although $plugin is in place; is $PLUGIN_DIR a plugin folder of this docker client?"
say "ready: $(dockerd --version 2>/dev/null | head -n 1); Docker Compose $COMPOSE_VERSION"
