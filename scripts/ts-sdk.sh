#!/usr/bin/env bash
# The TypeScript client SDK (clients/ts): install its pinned toolchain from
# package-lock.json, build it, check that the browser bundle the binary embeds
# (crates/app/src/sdk/wsbridge.js) is the one the sources build, and run its
# tests: unit tests against an in-process fake bridge, and an end-to-end test
# against the real binary (`wsbridge dev` on the moto WSBRIDGE_TEST_MOTO_URL
# names, else on a `wsbridge emulator`).
#
#   scripts/ts-sdk.sh                       # uses target/debug/wsbridge
#   WSBRIDGE_BIN=/path/to/wsbridge scripts/ts-sdk.sh
#
# The binary is not built here: run it after `cargo build` (scripts/test.sh
# builds the debug binaries before its test step). A missing binary fails the
# end-to-end test with a message that says so. Needs node >= 20 and npm.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v node >/dev/null || die "node (>= 20) is required for the TypeScript SDK"
command -v npm >/dev/null || die "npm is required for the TypeScript SDK"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node >= 20 is required, found $(node --version)"

export WSBRIDGE_BIN="${WSBRIDGE_BIN:-$ROOT/target/debug/wsbridge}"
cd "$ROOT/clients/ts"
step "ts-sdk: npm ci" npm ci --no-audit --no-fund
step "ts-sdk: build" npm run build
step "ts-sdk: embedded bundle up to date" npm run check-bundle
step "ts-sdk: tests (WSBRIDGE_BIN=$WSBRIDGE_BIN)" npm test
