#!/usr/bin/env bash
# Builds geth and bootnode v1.13.15 through the Go module proxy into a cache outside the
# checkout (one folder per version), unless they are already there. Prints the bin folder.
set -euo pipefail

GETH_VERSION=v1.13.15
# Upstream built 1.13.15 with Go 1.21; Go >= 1.23 fails to link github.com/fjl/memsize.
GO_TOOLCHAIN=go1.21.13
CACHE_DIR="${PILOTCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilotchain}"
BIN_DIR="$CACHE_DIR/geth-$GETH_VERSION/bin"

say() { echo "install-geth: $*" >&2; }

if [ -x "$BIN_DIR/geth" ] && [ -x "$BIN_DIR/bootnode" ] \
    && [[ "$("$BIN_DIR/geth" version 2>/dev/null)" == *"Version: ${GETH_VERSION#v}-"* ]]; then
    echo "$BIN_DIR"
    exit 0
fi

# Another apt (a second test run, unattended upgrades) may hold the lock: wait for it.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
if ! command -v go >/dev/null 2>&1; then
    say "Go is not installed; installing Debian's golang-go (needs root)."
    apt-get "${APT_WAIT[@]}" update -qq >&2 && apt-get "${APT_WAIT[@]}" install -y -qq golang-go >&2
fi
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "$go_minor" -lt 21 ]; then
    say "Go $(go env GOVERSION) is too old to fetch the $GO_TOOLCHAIN toolchain; install Go >= 1.21."
    exit 1
fi

say "building geth and bootnode $GETH_VERSION with $GO_TOOLCHAIN (a cold build takes a few minutes)..."
mkdir -p "$BIN_DIR"
tmp_bin=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
trap 'rm -rf "$tmp_bin"' EXIT
# Build into a scratch folder and move into place, so an interrupted build never leaves a
# half-written binary that the check above would trust.
GOTOOLCHAIN="$GO_TOOLCHAIN" GOFLAGS=-mod=mod GOBIN="$tmp_bin" go install -v \
    "github.com/ethereum/go-ethereum/cmd/geth@$GETH_VERSION" \
    "github.com/ethereum/go-ethereum/cmd/bootnode@$GETH_VERSION" 2>&1 \
    | sed -u 's/^/install-geth: compiled /' >&2
mv "$tmp_bin/geth" "$tmp_bin/bootnode" "$BIN_DIR/"
say "geth $GETH_VERSION ready in $BIN_DIR"
echo "$BIN_DIR"
