#!/usr/bin/env bash
# Generates the Go protobuf and gRPC code for proto/ (package moviesv1).
#
# The output is committed under gen/go/; tests/test_interop.py runs this script
# into a temporary directory and fails when the committed files differ.
#
# Usage: scripts/gen_go.sh [OUTPUT_DIR]   (default: gen/go)
#
# protoc is grpcio-tools' (the same one scripts/gen_proto.py uses, pinned in
# requirements-dev.lock), so the "protoc" version written into the header of
# movies.pb.go stays the same on every machine. The plugins are pinned here
# and installed into .tools/bin when missing; scripts/install-tools.sh reads
# these two lines too.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12 # keep equal to google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

out="${1:-gen/go}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute, before the cd below
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
PYTHON="${PYTHON:-$PWD/.venv/bin/python}"

# Same stamp files as install-tools.sh's go_tool, so both agree on what is installed.
plugin() { # name module version
  local stamp="$BIN/.$1.version"
  if [ -x "$BIN/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$3" ]; then return 0; fi
  echo "gen_go: go install $2@$3" >&2
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install "$2@$3"
  echo "$3" >"$stamp"
}
plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# google/protobuf/*.proto (Timestamp) ship inside grpc_tools.
well_known="$("$PYTHON" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

# Relative .proto paths, so the generated code names "movies/v1/movies.proto" on every machine.
mapfile -t protos < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)

"$PYTHON" -m grpc_tools.protoc \
  -Iproto -I"$well_known" \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "${protos[@]}"
