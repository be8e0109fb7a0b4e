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

# The real AWS clients the tests drive the embedded emulator with (the AWS
# CLI v1 and boto3; crates/emulator/tests/it/clients.rs), and the JSON Schema
# validator the tests hold emitted events to docs/schemas with
# (crates/testkit/src/schemas.rs): the versions tested.
AWS_CLIENTS_PIP_SPECS="${AWS_CLIENTS_PIP_SPECS:-awscli==1.46.3 boto3==1.44.18 jsonschema==4.26.0}"

# Create $VENV with moto[server], the AWS CLI and boto3 (test dependencies:
# running wsbridge needs none of them) unless they are already there.
ensure_moto_venv() {
    if [[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/aws" ]] \
        && "$VENV/bin/python" -c 'import boto3, jsonschema' 2>/dev/null; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is required (to run moto, the AWS emulator the tests use)"
    log "creating $VENV with $MOTO_PIP_SPEC $AWS_CLIENTS_PIP_SPECS"
    if [[ ! -x "$VENV/bin/python" ]]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV"; then
            rm -rf "$VENV"
            die "'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
        fi
    fi
    # shellcheck disable=SC2086 # a list of specs
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_PIP_SPEC" \
        $AWS_CLIENTS_PIP_SPECS \
        || die "pip install $MOTO_PIP_SPEC $AWS_CLIENTS_PIP_SPECS failed"
    [[ -x "$VENV/bin/moto_server" ]] || die "$VENV/bin/moto_server missing after pip install"
    [[ -x "$VENV/bin/aws" ]] || die "$VENV/bin/aws missing after pip install"
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

# --- Added for scripts/autobahn.sh ------------------------------------------

# ensure_venv_tool BIN PIP_SPEC: make sure $VENV/bin/BIN exists, pip-installing
# PIP_SPEC into $VENV (created first if it does not exist) when it does not.
ensure_venv_tool() {
    local bin="$1" spec="$2"
    if [[ -x "$VENV/bin/$bin" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is required (to install $spec)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || die "'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
    fi
    log "installing $spec into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" \
        || die "pip install $spec failed"
    [[ -x "$VENV/bin/$bin" ]] || die "$VENV/bin/$bin missing after pip install $spec"
}

# wait_for_http URL SECONDS [PID]: poll until GET URL answers 2xx, or fail
# (early, if process PID has exited).
wait_for_http() {
    local url="$1" deadline=$((SECONDS + $2)) pid="${3:-}"
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "process $pid exited before $url answered"
        fi
        ((SECONDS < deadline)) || die "$url did not answer within $2 s"
        sleep 0.2
    done
}

# --- Added for the demo page test and the packaging check --------------------

# as_root CMD...: run CMD as root: directly when root, else with sudo (fails
# when neither is possible).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "root or sudo is needed to run: $*"
        return 1
    fi
}

# ensure_chromium: make sure the demo page test (crates/app/tests/it/browser.rs)
# finds a headless Chromium and its chromedriver. WSBRIDGE_CHROME and
# WSBRIDGE_CHROMEDRIVER name others (e.g. Google Chrome on CI images); else
# Debian's `chromium` and `chromium-driver` are installed with apt-get when
# missing (as root or with sudo). Without them the test fails, so this fails.
ensure_chromium() {
    local chrome="${WSBRIDGE_CHROME:-$(command -v chromium || true)}"
    local driver="${WSBRIDGE_CHROMEDRIVER:-$(command -v chromedriver || true)}"
    if [[ -z "$chrome" || -z "$driver" ]] && [[ -z "${WSBRIDGE_CHROME:-}${WSBRIDGE_CHROMEDRIVER:-}" ]]; then
        command -v apt-get >/dev/null \
            || die "the demo page test needs chromium and chromedriver: install them, or set WSBRIDGE_CHROME and WSBRIDGE_CHROMEDRIVER"
        log "installing Debian's chromium and chromium-driver (apt-get, once)"
        as_root apt-get update -qq \
            || die "apt-get update failed: installing chromium needs root or sudo"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
            || die "apt-get install chromium chromium-driver failed"
        chrome="$(command -v chromium || true)"
        driver="$(command -v chromedriver || true)"
    fi
    [[ -n "$chrome" && -x "$chrome" ]] || die "no Chromium at '${chrome}' (WSBRIDGE_CHROME)"
    [[ -n "$driver" && -x "$driver" ]] || die "no chromedriver at '${driver}' (WSBRIDGE_CHROMEDRIVER)"
    # Debian's chromium wrapper prints a harmless shell warning on stderr.
    log "browser: $("$chrome" --version 2>/dev/null | head -1); $("$driver" --version 2>/dev/null | head -1)"
}

# ensure_nginx: make sure the sharded-routing test (crates/app/tests/it/sharded.rs)
# finds nginx (WSBRIDGE_NGINX, else nginx on PATH or in /usr/sbin); else
# Debian's `nginx-light` is installed with apt-get, with service starts
# blocked (policy-rc.d) so that the package does not start a server on port 80.
ensure_nginx() {
    local nginx="${WSBRIDGE_NGINX:-$(command -v nginx || true)}"
    if [[ -z "$nginx" && -x /usr/sbin/nginx ]]; then
        nginx=/usr/sbin/nginx
    fi
    if [[ -z "$nginx" ]]; then
        command -v apt-get >/dev/null \
            || die "the sharded-routing test needs nginx: install it, or set WSBRIDGE_NGINX"
        log "installing Debian's nginx-light (apt-get, once; its service is not started)"
        local policy=/usr/sbin/policy-rc.d
        local placed=0
        if [[ ! -e "$policy" ]]; then
            printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && placed=1
        fi
        local rc=0
        as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || rc=$?
        if ((placed)); then as_root rm -f "$policy"; fi
        ((rc == 0)) || die "apt-get install nginx-light failed"
        nginx=/usr/sbin/nginx
    fi
    [[ -x "$nginx" ]] || die "no nginx at '${nginx}' (WSBRIDGE_NGINX)"
    log "nginx: $("$nginx" -v 2>&1 | head -1)"
}

# The pinned docker-compose (v1, from PyPI) that validates docker-compose.yml
# where no Docker engine or compose plugin is installed, in its own venv.
COMPOSE_VENV="$ROOT/.venv-compose"
COMPOSE_PIP_SPEC="${COMPOSE_PIP_SPEC:-docker-compose==1.29.2}"

# ensure_compose_venv: $COMPOSE_VENV with docker-compose. Its PyYAML 5.4.1 does
# not build with Cython 3, so it is built first with an older Cython.
ensure_compose_venv() {
    if [[ -x "$COMPOSE_VENV/bin/docker-compose" ]]; then
        return 0
    fi
    log "creating $COMPOSE_VENV with $COMPOSE_PIP_SPEC (once; about 20 s)"
    rm -rf "$COMPOSE_VENV"
    python3 -m venv "$COMPOSE_VENV" || die "'python3 -m venv' failed"
    local pip=("$COMPOSE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" "cython<3" wheel setuptools || die "pip install cython<3 failed"
    "${pip[@]}" --no-build-isolation "pyyaml==5.4.1" || die "building pyyaml 5.4.1 failed"
    "${pip[@]}" "$COMPOSE_PIP_SPEC" || die "pip install $COMPOSE_PIP_SPEC failed"
    [[ -x "$COMPOSE_VENV/bin/docker-compose" ]] || die "docker-compose missing after pip install"
}

# --- Added for the broker suite (crates/app/tests/it/brokers) ----------------

# ensure_rabbitmq [SECONDS]: make sure RabbitMQ accepts AMQP on 127.0.0.1:5672
# (guest/guest), for the RabbitMQ half of the tests. When nothing listens there
# it is started with `rabbitmq-server -detached` (as root or with sudo; Debian's
# rabbitmq-server is installed with apt-get first when missing) and waited for,
# at most SECONDS (default 60). It is left running, like a system service. The
# tests also read queue counts with `rabbitmqctl`, so that must reach the node.
ensure_rabbitmq() {
    local deadline=$((SECONDS + ${1:-60}))
    amqp_port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
    if ! amqp_port_open; then
        if ! command -v rabbitmq-server >/dev/null; then
            command -v apt-get >/dev/null \
                || die "nothing listens on 127.0.0.1:5672 and rabbitmq-server is not installed"
            log "installing Debian's rabbitmq-server (apt-get, once)"
            as_root apt-get update -qq || die "apt-get update failed: installing RabbitMQ needs root or sudo"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server \
                || die "apt-get install rabbitmq-server failed"
        fi
        if ! amqp_port_open; then
            log "starting RabbitMQ (rabbitmq-server -detached)"
            as_root rabbitmq-server -detached || die "rabbitmq-server -detached failed"
        fi
        until amqp_port_open; do
            ((SECONDS < deadline)) || die "RabbitMQ did not accept connections on 127.0.0.1:5672 within ${1:-60} s"
            sleep 0.5
        done
    fi
    rabbitmqctl -q status >/dev/null 2>&1 \
        || die "RabbitMQ listens on 127.0.0.1:5672 but 'rabbitmqctl status' fails (the tests use rabbitmqctl)"
    log "rabbitmq: $(rabbitmqctl -q version 2>/dev/null || echo '?') on 127.0.0.1:5672"
}
