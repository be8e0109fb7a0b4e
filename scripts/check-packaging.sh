#!/usr/bin/env bash
# Checks the packaging files where no Docker engine runs:
#   - docker-compose.yml is valid for Compose (the real `docker-compose config`,
#     v1 from PyPI in .venv-compose: schema, ports, interpolation) and has what
#     docs/operations.md promises: the embedded emulator and wsbridge in `dev` mode on
#     127.0.0.1:8000 talking to it, both from the image built here, each with a
#     healthcheck, wsbridge started once the emulator is healthy; a bridge
#     open to anyone (beyond loopback, auth none, no origins) only with an
#     explicit BRIDGE_ALLOW_INSECURE=true and every port on loopback;
#   - the Dockerfile's base images are pinned to exact versions (the Rust
#     image at least the workspace's rust-version), its runtime stage has a
#     HEALTHCHECK running `wsbridge health` and no curl or wget, and it
#     does not allow an open bridge (BRIDGE_ALLOW_INSECURE, BRIDGE_AUTH=none);
#   - .github/workflows/ci.yml is YAML, runs .ci/run, and builds and
#     smoke-tests the image;
#   - the licence files and the workspace's licence agree, deny.toml exists;
#   - git tracks no build artefact or cache, and .gitignore covers them.
# The Dockerfile's stages and user and the binary's --help/--version are also
# checked by the app's tests (crates/app/tests/it/ops.rs).
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
"$COMPOSE_VENV/bin/python" - "$normalized" .github/workflows/ci.yml Dockerfile Cargo.toml <<'PY'
import re
import sys
import yaml

compose_file, workflow_file, dockerfile_file, cargo_file = sys.argv[1:5]
with open(compose_file) as f:
    compose = yaml.safe_load(f)
services = compose["services"]
problems = []
def check(ok, what):
    if not ok:
        problems.append(what)

# docker-compose.yml
check(set(services) == {"emulator", "wsbridge"}, f"services are {sorted(services)}")
emulator, bridge = services.get("emulator", {}), services.get("wsbridge", {})
for name, service in services.items():
    check("build" in service, f"{name} is built from this repository's Dockerfile")
    image = str(service.get("image", ""))
    check(image and not image.endswith(":latest") and ":" in image,
          f"{name}: image {image!r} is named with an explicit tag")
    test = service.get("healthcheck", {}).get("test", [])
    check(test[:3] == ["CMD", "wsbridge", "health"], f"{name}: healthcheck runs `wsbridge health`: {test}")
check(len({str(s.get("image")) for s in services.values()}) == 1, "both services run the same image")
command = emulator.get("command", [])
check(command[:1] == ["emulator"], f"emulator command is {command}")
check("--host" in command and "0.0.0.0" in command, "the emulator listens on all interfaces in its container")
check("9324" in [str(c) for c in command], "the emulator listens on 9324")
check(bridge.get("command") == ["dev"], f"wsbridge command is {bridge.get('command')}")
depends = bridge.get("depends_on", {})
check(isinstance(depends, dict) and depends.get("emulator", {}).get("condition") == "service_healthy",
      f"wsbridge waits for a healthy emulator: {depends}")
env = bridge.get("environment", {})
check(env.get("AWS_ENDPOINT_URL") == "http://emulator:9324", f"AWS_ENDPOINT_URL is {env.get('AWS_ENDPOINT_URL')}")
check(env.get("BRIDGE_HOST") == "0.0.0.0", "wsbridge listens on all interfaces in its container")
for name in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    check(name in env, f"{name} set for the SDK")
ports = [str(p) for p in bridge.get("ports", [])]
check(any(p.startswith("127.0.0.1:8000:8000") for p in ports), f"wsbridge ports {ports}")
all_on_loopback = all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
check(all_on_loopback, "every published port is on the host's loopback only")
# docs/operations.md, Docker: beyond loopback, auth = none without an origin list refuses to
# start unless allowed explicitly; allowed only where nothing is published
# beyond the host's loopback.
loopback_hosts = ("127.0.0.1", "localhost", "::1", "[::1]")
open_bridge = (str(env.get("BRIDGE_HOST", "127.0.0.1")) not in loopback_hosts
               and str(env.get("BRIDGE_AUTH", "none")) == "none"
               and not env.get("BRIDGE_ALLOWED_ORIGINS"))
allowed_open = str(env.get("BRIDGE_ALLOW_INSECURE", "false")).lower() == "true"
check(not open_bridge or allowed_open,
      "wsbridge listens beyond loopback with auth none and no origins: without "
      "BRIDGE_ALLOW_INSECURE=true it refuses to start")
check(not allowed_open or (open_bridge and all_on_loopback),
      "BRIDGE_ALLOW_INSECURE=true only for an open bridge published on loopback only")

# Dockerfile
with open(dockerfile_file) as f:
    dockerfile = f.read()
with open(cargo_file) as f:
    cargo = f.read()
def version(text):
    return tuple(int(part) for part in text.split("."))
rust_version = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', cargo, re.M)
check(rust_version, "Cargo.toml sets rust-version")
froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M | re.I)
check(len(froms) == 2, f"two stages: {froms}")
for image in froms:
    name, _, tag = image.partition(":")
    # A version tag (1.95.0-bookworm, 12.12-slim) or a dated one
    # (bookworm-20251117-slim): never latest, a bare major or a codename alone.
    pinned = re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9]+)*", tag) or re.fullmatch(r"[a-z]+-\d{8}(-slim)?", tag)
    check(pinned, f"base image {image} is pinned to an exact version")
    if name == "rust" and pinned and rust_version and tag[0].isdigit():
        tag_version = tag.split("-")[0]
        check(version(tag_version) >= version(rust_version.group(1)),
              f"{image} is older than the workspace's rust-version {rust_version.group(1)}")
runtime = re.split(r"^FROM\s+\S+.*$", dockerfile, flags=re.M | re.I)[-1]
# Instructions only, comments left out.
runtime = "\n".join(l for l in runtime.splitlines() if not l.lstrip().startswith("#"))
joined = runtime.replace("\\\n", " ")
healthchecks = [l for l in joined.splitlines() if l.strip().upper().startswith("HEALTHCHECK ")]
check(len(healthchecks) == 1 and '"wsbridge", "health"' in healthchecks[0],
      f"the runtime stage has one HEALTHCHECK running wsbridge health (exec form): {healthchecks}")
check(not re.search(r"\b(curl|wget)\b", runtime), "no curl or wget in the runtime image")
check(not re.search(r"BRIDGE_ALLOW_INSECURE|BRIDGE_AUTH=\"?none", runtime),
      "the image does not allow an open bridge by default (BRIDGE_ALLOW_INSECURE, BRIDGE_AUTH=none)")
user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
check(user and user[-1] not in ("root", "0"), f"the runtime stage runs as a non-root user: {user}")

# The CI workflow
with open(workflow_file) as f:
    workflow = yaml.safe_load(f)
runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
check(any(".ci/run" in run.split() for run in runs), f"the CI workflow runs .ci/run: {runs}")
image_runs = "\n".join(runs)
check("docker compose build" in image_runs or "docker build" in image_runs, "the CI workflow builds the image")
check("--version" in image_runs and "wsbridge health" in image_runs,
      "the CI workflow smoke-tests the image: --version and the healthcheck")

# Licences
license = re.search(r'^license\s*=\s*"([^"]+)"', cargo, re.M)
check(license and license.group(1) == "MIT OR Apache-2.0", f"workspace license is {license and license.group(1)}")
for name, needle in (("LICENSE-MIT", "Permission is hereby granted"), ("LICENSE-APACHE", "Apache License")):
    try:
        with open(name) as f:
            check(needle in f.read(), f"{name} holds the licence text")
    except FileNotFoundError:
        problems.append(f"{name} is missing")

if problems:
    sys.exit("packaging check failed:\n  " + "\n  ".join(problems))
print("docker-compose.yml, Dockerfile, ci.yml and licences: ok")
PY

[[ -f deny.toml ]] || die "deny.toml is missing (cargo deny check licenses bans sources)"

# No build artefact or cache is tracked, and .gitignore covers them.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    tracked="$(git ls-files | grep -E '(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache|\.venv[^/]*|target|node_modules)/|\.py[cod]$|\.profraw$|(^|/)\.env$' || true)"
    [[ -z "$tracked" ]] || die "build artefacts or caches are tracked in git:"$'\n'"$tracked"
    for pattern in "__pycache__/" "*.py[cod]" "/target" "/.venv" "/.env"; do
        grep -qxF -- "$pattern" .gitignore || die ".gitignore does not cover $pattern"
    done
    for probe in crates/x/__pycache__/m.cpython-311.pyc scripts/m.pyc target/debug/wsbridge .venv/bin/python .pytest_cache/v; do
        git check-ignore -q --no-index "$probe" || die ".gitignore does not ignore $probe"
    done
fi
echo "deny.toml, git hygiene: ok"
