#!/usr/bin/env bash
# Create <repo>/.venv with moto[server] (the AWS SNS/SQS emulator the tests and
# `scripts/run.sh` use) unless .venv/bin/moto_server already exists. Idempotent.
# MOTO_PIP_SPEC overrides what is installed (default: the tested moto version).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_moto_venv
log "moto: $VENV/bin/moto_server ($("$VENV/bin/python" -m pip show moto 2>/dev/null | sed -n 's/^Version: //p'))"
