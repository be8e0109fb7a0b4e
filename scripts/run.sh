#!/usr/bin/env bash
# The run command: wsbridge in development mode. Needs only cargo.
#
#   scripts/run.sh              # debug build (quick to compile)
#   scripts/run.sh --release    # optimised build (slow to compile; for benchmarks)
#   scripts/run.sh [--release] -- ARGS...   # extra arguments for `wsbridge dev`
#
# The same as `cargo run -p app --bin wsbridge -- dev`: without
# AWS_ENDPOINT_URL (or `-- --endpoint URL`), `dev` starts the embedded SQS/SNS
# emulator on 127.0.0.1:9324 (BRIDGE_EMULATOR_PORT) and prints the
# `export AWS_ENDPOINT_URL=…` lines for another shell; it creates the topics
# and queues it needs and serves. Open the printed URL. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo_args=()
while (($#)); do
    case "$1" in
        --release) cargo_args+=(--release); shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument: $1 (try --help; pass wsbridge arguments after --)" >&2; exit 2 ;;
    esac
done

exec cargo run "${cargo_args[@]}" -p app --bin wsbridge -- dev "$@"
