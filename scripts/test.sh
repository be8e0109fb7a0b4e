#!/usr/bin/env bash
# The test command: everything CI checks, in this order.
#
#   scripts/test.sh                 # full run (what CI does)
#   scripts/test.sh --no-coverage   # skip the coverage step, for quick local loops
#
# 1. makes sure .venv has moto[server], the AWS CLI and boto3
#    (scripts/moto-venv.sh), starts ONE moto on a free loopback port for the
#    whole run and exports WSBRIDGE_TEST_MOTO_URL, MOTO_SERVER,
#    WSBRIDGE_TEST_AWS_CLI and WSBRIDGE_TEST_PYTHON (the testkit crate uses
#    them); moto is stopped on exit;
#    makes sure RabbitMQ runs on 127.0.0.1:5672 (started if not, and left
#    running) and exports WSBRIDGE_TEST_AMQP_URL;
# 2. cargo fmt --check, cargo clippy -D warnings (the workspace with the app's
#    optional `otlp` feature, then the app as released, without its test
#    routes);
#    the packaging files (scripts/check-packaging.sh: docker-compose.yml through
#    the real `docker-compose config`, the Dockerfile's pinned base images and
#    HEALTHCHECK, the CI workflow, the licence files, no tracked artefacts);
#    a headless Chromium and chromedriver for the demo page test: Debian's
#    chromium and chromium-driver, installed with apt-get when missing (root or
#    sudo), or the ones WSBRIDGE_CHROME / WSBRIDGE_CHROMEDRIVER name;
#    nginx for the sharded-routing test: Debian's nginx-light, installed the
#    same way (its service is not started), or the one WSBRIDGE_NGINX names;
# 3. checks that the domain crate depends on no aws-, actix, lapin or other tokio
#    crate, and on tokio only for its clock (feature `time`);
# 4. the tests: cargo nextest (or cargo test where nextest is absent), then doc tests.
#    With coverage (the default) everything from here on is built ONCE,
#    instrumented (cargo-llvm-cov, installed if missing, with rustup's
#    llvm-tools): the same run gives the verdict and the coverage figure;
# 5. a smoke run of the benchmark suite (crates/bench, every workload tiny, the
#    debug binaries of step 4, W3 against the moto above), and of W4 and W5
#    with 20 ms per SQS/SNS call: it prints figures and checks no
#    thresholds, but fails when a workload fails;
# 6. RFC 6455 conformance: the Autobahn cases (kosoku) against the echo route
#    (scripts/autobahn.sh);
# 7. line coverage of everything steps 4-6 ran, excluding the test tooling
#    (testkit, bench) and the tests themselves; fails under COVERAGE_MIN
#    percent (default 80). The report: target/llvm-cov/summary.txt.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

coverage=1
for arg in "$@"; do
    case "$arg" in
        --no-coverage) coverage=0 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

COVERAGE_MIN="${COVERAGE_MIN:-80}"

check_domain_deps() {
    local tree bad
    # Every crate with its features, the mock feature's included: tokio is
    # allowed for its clock alone (feature `time`), never its runtime.
    tree="$(cargo tree -p domain -e normal --features mock --prefix none -f '{p}|{f}')"
    bad="$(awk -F'|' '
        { split($1, name, " ") }
        name[1] ~ /^(aws-|actix|lapin|tokio-|async-std|smol)/ { print name[1], name[2]; next }
        name[1] == "tokio" {
            sub(/ \(\*\)$/, "", $2)
            n = split($2, features, ",")
            for (i = 1; i <= n; i++) {
                if (features[i] != "time") { print name[1], name[2], "with feature", features[i] }
            }
        }
    ' <<<"$tree" | sort -u || true)"
    if [[ -n "$bad" ]]; then
        log "the domain crate must not depend on SDK, runtime or broker crates, tokio's clock aside (ARCHITECTURE.md), but it pulls in:"
        while read -r crate; do log "    $crate"; done <<<"$bad"
        die "domain dependency rule broken"
    fi
}

# No adapter depends on another (ARCHITECTURE.md): they meet in the app only.
check_adapter_deps() {
    local adapters adapter others bad=""
    adapters="$(cargo metadata --no-deps --format-version 1 \
        | python3 -c 'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"] if p["name"].startswith("adapters-")))')"
    for adapter in $adapters; do
        others="$(cargo tree -p "$adapter" -e normal --prefix none -f '{p}' \
            | awk '{print $1}' | grep -E '^adapters-' | grep -vx "$adapter" | sort -u || true)"
        if [[ -n "$others" ]]; then bad+="$adapter -> $(tr '\n' ' ' <<<"$others")"$'\n'; fi
    done
    if [[ -n "$bad" ]]; then
        log "an adapter depends on another adapter (ARCHITECTURE.md):"
        while read -r line; do [[ -n "$line" ]] && log "    $line"; done <<<"$bad"
        die "adapter dependency rule broken"
    fi
}

run_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace
        # The RabbitMQ alarm tests block every other RabbitMQ test while
        # they run: left out above (.config/nextest.toml), run alone here.
        cargo nextest run --workspace --ignore-default-filter --test-threads 1 \
            -E 'test(/rabbit_alarm_/)'
        # nextest does not run doc tests.
        cargo test --workspace --doc
    else
        log "cargo-nextest not found; using cargo test"
        cargo test --workspace -- --skip rabbit_alarm_
        cargo test --workspace -- --test-threads 1 rabbit_alarm_
    fi
}

run_bench_smoke() {
    # Same targets and features as the tests step: only the bench binary is
    # linked, nothing is rebuilt (and never in release). `timeout` bounds the
    # run should a workload hang; the bench stops the bridges it started.
    cargo build --workspace --all-targets
    timeout --kill-after=10 300 \
        "${CARGO_TARGET_DIR:-$ROOT/target}/debug/bench" --smoke --no-build all
    # The downlink and uplink again with a remote queue's latency per call,
    # as the headline table of BENCHMARKS.md measures them.
    timeout --kill-after=10 180 \
        "${CARGO_TARGET_DIR:-$ROOT/target}/debug/bench" --smoke --no-build \
        --latency-ms 20 --out "${CARGO_TARGET_DIR:-$ROOT/target}/bench/smoke-latency.json" w4 w5
}

# Test tooling and the tests themselves are not part of the figure.
COVERAGE_IGNORE='crates/(testkit|bench)/|/tests/'

# From here on every cargo build is instrumented, into the usual target
# directory: the tests, the benchmark smoke run and the Autobahn run all use
# the same binaries, and each process they start writes its profile there.
instrument() {
    if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
        rustup component add llvm-tools
    fi
    if ! cargo llvm-cov --version >/dev/null 2>&1; then
        log "installing cargo-llvm-cov (once; about two minutes)"
        cargo install cargo-llvm-cov --locked
    fi
    local env
    env="$(cargo llvm-cov show-env --sh 2>/dev/null)"
    eval "$env"
    # Profiles of an earlier run would count again.
    find "${CARGO_LLVM_COV_TARGET_DIR:?}" -maxdepth 1 -name '*.profraw' -delete
}

run_coverage() {
    local out="${CARGO_LLVM_COV_TARGET_DIR:?}/llvm-cov"
    mkdir -p "$out"
    local rc=0
    cargo llvm-cov report --summary-only --ignore-filename-regex "$COVERAGE_IGNORE" \
        --fail-under-lines "$COVERAGE_MIN" >"$out/summary.txt" || rc=$?
    cat "$out/summary.txt"
    local figure
    figure="$(awk '$1 == "TOTAL" {print $(NF-3)}' "$out/summary.txt" || true)"
    log "line coverage: ${figure:-not reported} (minimum ${COVERAGE_MIN} %)"
    return "$rc"
}

total_start=$SECONDS
step "moto venv" ensure_moto_venv
export MOTO_SERVER="$VENV/bin/moto_server"
# The real AWS clients the emulator's tests drive it with (testkit::tools).
export WSBRIDGE_TEST_AWS_CLI="$VENV/bin/aws"
export WSBRIDGE_TEST_PYTHON="$VENV/bin/python"
on_exit() {
    local rc=$?
    stop_moto
    report_failure "$rc"
    exit "$rc"
}
trap on_exit EXIT
step "start moto" start_moto "$(free_port)"
export WSBRIDGE_TEST_MOTO_URL="$MOTO_URL"
step "rabbitmq" ensure_rabbitmq
export WSBRIDGE_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"

step "cargo fmt --check" cargo fmt --all -- --check
# With the optional OTLP exporter (off by default): what it adds is type-checked too.
step "cargo clippy" cargo clippy --workspace --all-targets --features app/otlp -- -D warnings
# The release binary: without the test-only routes the tests build in.
step "cargo clippy (app without test routes)" cargo clippy -p app --lib --bins -- -D warnings
step "domain dependency rule" check_domain_deps
step "adapter dependency rule" check_adapter_deps
step "packaging (compose file, Dockerfile, CI workflow, licences, git hygiene)" scripts/check-packaging.sh
step "chromium + chromedriver (demo page test)" ensure_chromium
step "nginx (sharded routing test)" ensure_nginx
if ((coverage)); then
    step "instrumented builds (cargo-llvm-cov)" instrument
fi
step "tests" run_tests
step "TypeScript SDK (clients/ts)" scripts/ts-sdk.sh
step "benchmark smoke run" run_bench_smoke
step "autobahn (kosoku)" scripts/autobahn.sh
if ((coverage)); then
    step "coverage (cargo llvm-cov)" run_coverage
else
    log "coverage skipped (--no-coverage)"
fi
log "all checks passed in $((SECONDS - total_start)) s"
