#!/usr/bin/env bash
# The run command: wsbridge in development mode against a local moto.
#
#   scripts/run.sh              # debug build (quick to compile)
#   scripts/run.sh --release    # optimised build (slow to compile; for benchmarks)
#   scripts/run.sh [--release] -- ARGS...   # extra arguments for `wsbridge dev`
#
# Makes sure .venv has moto[server], starts moto on 127.0.0.1:${MOTO_PORT:-5000}
# unless something already answers there (then that server is used and left
# alone), points the AWS SDK at it (AWS_ENDPOINT_URL, AWS_REGION and test
# credentials, each only if not already set), and runs `wsbridge dev`, which
# creates the topics and queues it needs and serves. Open the printed URL.
# Ctrl-C stops wsbridge, then the moto this script started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

cargo_args=()
while (($#)); do
    case "$1" in
        --release) cargo_args+=(--release); shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (try --help; pass wsbridge arguments after --)" ;;
    esac
done

moto_port="${MOTO_PORT:-5000}"
moto_url="http://127.0.0.1:$moto_port"

ensure_moto_venv
if moto_answers "$moto_url"; then
    log "using the moto already answering at $moto_url"
else
    trap stop_moto EXIT
    start_moto "$moto_port"
fi

export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-$moto_url}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

log "AWS endpoint: $AWS_ENDPOINT_URL (region $AWS_REGION)"
log "demo page: http://${BRIDGE_HOST:-127.0.0.1}:${BRIDGE_PORT:-8000}/"
# Not exec: the EXIT trap must stop moto when wsbridge ends.
cargo run "${cargo_args[@]}" -p app --bin wsbridge -- dev "$@"
