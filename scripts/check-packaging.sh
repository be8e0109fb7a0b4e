#!/usr/bin/env bash
# Checks the packaging files where no Docker engine runs:
#   - docker-compose.yml is valid for Compose (the real `docker-compose config`,
#     v1 from PyPI in .venv-compose: schema, ports, interpolation) and has what
#     the README promises: moto, and wsbridge in `dev` mode on 127.0.0.1:8000
#     talking to moto;
#   - .github/workflows/ci.yml is YAML and runs .ci/run.
# The Dockerfile and the binary's --help/--version are checked by the app's
# tests (crates/app/tests/it/ops.rs).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_compose_venv
"$COMPOSE_VENV/bin/docker-compose" -f docker-compose.yml config --quiet \
    || die "docker-compose.yml is not a valid Compose file"
normalized="$(mktemp)"
trap 'rm -f "$normalized"' EXIT
"$COMPOSE_VENV/bin/docker-compose" -f docker-compose.yml config >"$normalized"
"$COMPOSE_VENV/bin/python" - "$normalized" .github/workflows/ci.yml <<'PY'
import sys
import yaml

with open(sys.argv[1]) as f:
    compose = yaml.safe_load(f)
services = compose["services"]
problems = []
def check(ok, what):
    if not ok:
        problems.append(what)

check(set(services) == {"moto", "wsbridge"}, f"services are {sorted(services)}")
moto, bridge = services.get("moto", {}), services.get("wsbridge", {})
check("moto" in str(moto.get("image", "")), "moto runs the moto image")
check(bridge.get("command") == ["dev"], f"wsbridge command is {bridge.get('command')}")
check("moto" in bridge.get("depends_on", {}), "wsbridge depends on moto")
env = bridge.get("environment", {})
check(env.get("AWS_ENDPOINT_URL") == "http://moto:5000", f"AWS_ENDPOINT_URL is {env.get('AWS_ENDPOINT_URL')}")
check(env.get("BRIDGE_HOST") == "0.0.0.0", "wsbridge listens on all interfaces in its container")
for name in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    check(name in env, f"{name} set for the SDK")
ports = [str(p) for p in bridge.get("ports", [])]
check(any(p.startswith("127.0.0.1:8000:8000") for p in ports), f"wsbridge ports {ports}")
check(all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", [])),
      "every published port is on the host's loopback only")

with open(sys.argv[2]) as f:
    workflow = yaml.safe_load(f)
runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
check(any(".ci/run" in run.split() for run in runs), f"the CI workflow runs .ci/run: {runs}")

if problems:
    sys.exit("packaging check failed:\n  " + "\n  ".join(problems))
print("docker-compose.yml and ci.yml: ok")
PY
