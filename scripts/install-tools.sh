#!/usr/bin/env bash
# Installs what the project needs beyond Python packages; idempotent.
#   Debian packages: redis-server (tests, `make run`), prometheus (observability tests),
#   nginx (the load-balancer test runs its binary with a config of its own; the package's
#   default site is not used)
#   Go tools into .tools/bin: ferretdb (a MongoDB-compatible server), grpcurl, ghz
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"

FERRETDB_VERSION=v1.24.2
GRPCURL_VERSION=v1.9.4
GHZ_VERSION=v0.121.0

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-tools: need root or sudo to install ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  echo "install-tools: apt-get install ${missing[*]}"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install redis-server redis-tools prometheus nghttp2-client nginx
# docker-compose (1.29): tests/test_deployments.py validates the compose file with
# `docker-compose config`, which needs no container engine.
apt_install docker-compose
# Headless Chromium and its WebDriver (tests/test_ui_browser.py drives the web UI with
# Selenium through them; nothing downloads a browser). Fonts, which --no-install-recommends
# would leave out, so that screenshots show text.
apt_install chromium chromium-driver fonts-liberation

command -v go >/dev/null || { echo "install-tools: Go is required to build ferretdb, grpcurl and ghz" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

# FerretDB's `go install` build panics at start-up without build/version/version.txt,
# which only its own release tooling writes: build from a copy of the module with it.
if [ "$("$BIN/ferretdb" --version 2>/dev/null | head -1)" != "version: $FERRETDB_VERSION" ]; then
  echo "install-tools: building ferretdb $FERRETDB_VERSION"
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  echo "$FERRETDB_VERSION" > "$work/build/version/version.txt"
  (cd "$work" && go build -trimpath -o "$BIN/ferretdb" ./cmd/ferretdb)
fi

go_tool() { # name module version
  local stamp="$BIN/.$1.version"
  if [ -x "$BIN/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$3" ]; then return 0; fi
  echo "install-tools: go install $2@$3"
  GOBIN="$BIN" go install "$2@$3"
  echo "$3" > "$stamp"
}
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
echo "install-tools: ok ($BIN)"

# Interop clients (tests/test_interop.py). protoc-gen-go / protoc-gen-go-grpc
# for scripts/gen_go.sh, at the versions pinned there (read from its
# PROTOC_GEN_GO*_VERSION= lines, so there is one place to bump them).
pin() { sed -n "s/^$1=\([^ ]*\).*/\1/p" scripts/gen_go.sh; }
go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$(pin PROTOC_GEN_GO_VERSION)"
go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$(pin PROTOC_GEN_GO_GRPC_VERSION)"
# The Node client's pinned packages, from its package-lock.json.
if [ ! -d tests/interop/node/node_modules ]; then
  if command -v npm >/dev/null; then
    echo "install-tools: npm ci in tests/interop/node"
    (cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "install-tools: npm not found, the Node interop test will be skipped" >&2
  fi
fi
echo "install-tools: interop ok"

# Jaeger (tests/test_tracing.py: a real OTLP receiver and trace store). Its `go install` is
# refused (the module has replace directives), so it is built inside a scratch module that
# requires it as a tool, which honours the versions Jaeger's own go.mod selects.
JAEGER_VERSION=v1.76.0
if [ ! -x "$BIN/jaeger" ] || [ "$(cat "$BIN/.jaeger.version" 2>/dev/null)" != "$JAEGER_VERSION" ]; then
  echo "install-tools: building jaeger $JAEGER_VERSION (a few minutes)"
  jaeger_work=$(mktemp -d)
  (cd "$jaeger_work" && go mod init movieservice-tools/jaeger >/dev/null 2>&1 \
    && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" \
    && go build -trimpath -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  rm -rf "$jaeger_work"
  echo "$JAEGER_VERSION" > "$BIN/.jaeger.version"
fi
echo "install-tools: jaeger ok"
