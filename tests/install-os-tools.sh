#!/usr/bin/env bash
# Install the Debian tools some tests drive for real, when they are missing:
#   faketime  (tests/test_time*.py: the daemon under a shifted clock)
#   promtool  (tests/test_alert_rules.py: `promtool test rules` on contrib/prometheus/alerts.yml;
#              Debian ships it in the `prometheus` package)
# Idempotent: nothing is installed when both are on PATH. Without root and sudo, or without a
# reachable package registry, it warns and the tests that need a tool skip (with CI set, they fail).
set -euo pipefail

missing=()
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[[ ${#missing[@]} -eq 0 ]] && exit 0

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-os-tools.sh: warning: ${missing[*]} missing and neither root nor sudo" >&2
        exit 0
    fi
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || echo "install-os-tools.sh: warning: could not install ${missing[*]}" >&2
