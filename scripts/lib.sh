# shellcheck shell=bash
# Shared helpers for the wsbridge scripts. Source it; do not run it.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Provides: ROOT, VENV, log, die, step, report_failure, ensure_moto_venv, free_port,
# moto_answers, wait_for_moto, start_moto, stop_moto.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The moto version the project is tested with; override to try another.
MOTO_PIP_SPEC="${MOTO_PIP_SPEC:-moto[server]==5.2.5}"
MOTO_PID=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# step NAME COMMAND...: run a command between banners, with its duration. The
# command runs under `set -e` (not in an `if`, which would switch that off), so a
# failure ends the script; CURRENT_STEP lets an EXIT trap name the failed step.
CURRENT_STEP=""
step() {
    local name="$1"; shift
    local start=$SECONDS
    CURRENT_STEP="$name"
    log "==> $name"
    "$@"
    CURRENT_STEP=""
    log "<== $name: ok in $((SECONDS - start)) s"
}

# For an EXIT trap: say which step failed, if one did.
report_failure() {
    local rc="$1"
    if ((rc != 0)); then
        log "FAILED${CURRENT_STEP:+ at step: $CURRENT_STEP} (exit $rc)"
    fi
}

# Create $VENV with moto[server] unless .venv/bin/moto_server is already there.
ensure_moto_venv() {
    if [[ -x "$VENV/bin/moto_server" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is required (to run moto, the AWS emulator)"
    log "creating $VENV with $MOTO_PIP_SPEC"
    if [[ ! -x "$VENV/bin/python" ]]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV"; then
            rm -rf "$VENV"
            die "'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
        fi
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_PIP_SPEC" \
        || die "pip install $MOTO_PIP_SPEC failed"
    [[ -x "$VENV/bin/moto_server" ]] || die "$VENV/bin/moto_server missing after pip install"
}

# Print a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# moto_answers URL: true if GET URL/moto-api/ gets an HTTP answer.
moto_answers() {
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2)
except urllib.error.HTTPError:
    pass  # an HTTP error is still an answer
except Exception:
    sys.exit(1)
PY
}

# wait_for_moto URL [SECONDS]: poll until moto answers, or fail.
wait_for_moto() {
    local url="$1" deadline=$((SECONDS + ${2:-30}))
    until moto_answers "$url"; do
        if [[ -n "$MOTO_PID" ]] && ! kill -0 "$MOTO_PID" 2>/dev/null; then
            die "moto exited before answering at $url (log: ${MOTO_LOG:-?})"
        fi
        ((SECONDS < deadline)) || die "moto did not answer GET $url/moto-api/ within ${2:-30} s"
        sleep 0.2
    done
}

# start_moto PORT: start $VENV/bin/moto_server on 127.0.0.1:PORT in the
# background (output to target/moto-PORT.log), set MOTO_PID and MOTO_URL, wait for it.
start_moto() {
    local port="$1"
    mkdir -p "$ROOT/target"
    MOTO_LOG="$ROOT/target/moto-$port.log"
    MOTO_URL="http://127.0.0.1:$port"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    wait_for_moto "$MOTO_URL" 30
    log "moto (pid $MOTO_PID) answers at $MOTO_URL"
}

# Stop the moto started by start_moto, if any.
stop_moto() {
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        log "moto (pid $MOTO_PID) stopped"
    fi
    MOTO_PID=""
}
