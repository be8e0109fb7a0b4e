#!/usr/bin/env bash
# Create <repo>/.venv with the tests' Python tools unless they are already
# there: moto[server] (the AWS SNS/SQS emulator the tests hold the bridge and
# the embedded emulator to), the AWS CLI v1 and boto3 (the tests drive the
# embedded emulator with them). Idempotent. MOTO_PIP_SPEC and
# AWS_CLIENTS_PIP_SPECS override what is installed (default: the tested versions).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_moto_venv
log "moto: $VENV/bin/moto_server ($("$VENV/bin/python" -m pip show moto 2>/dev/null | sed -n 's/^Version: //p'))"
log "aws cli: $("$VENV/bin/aws" --version 2>&1); boto3 $("$VENV/bin/python" -c 'import boto3; print(boto3.__version__)')"
