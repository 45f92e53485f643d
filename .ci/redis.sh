#!/usr/bin/env bash
# Installs Debian's redis-server (the tests start their own on 127.0.0.1; no service is enabled here).
set -euo pipefail
if command -v redis-server >/dev/null; then
    echo "redis: $(redis-server --version)"
    exit 0
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends redis-server
# The package starts a system service where systemd runs; the tests need only the binary.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    "${SUDO[@]}" systemctl stop redis-server || true
fi
echo "redis: $(redis-server --version)"
