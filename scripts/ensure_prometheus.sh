#!/usr/bin/env bash
# Finds or installs Prometheus's `prometheus` and `promtool` (Debian's `prometheus` package ships
# both). The rule tests (tests/deploy/test_prometheus_rules.py) run `promtool`; the scrape test
# runs `prometheus`. Idempotent: when both are on PATH it only says where they are.
#
# Prints the two paths on success; on failure ONE line naming the fix, exit 1.
# Installing needs root (or sudo) and apt-get; the package's service is not started (the tests run
# their own Prometheus on a loopback port; Debian's policy-rc.d decides, as for any package).
set -euo pipefail

have_both() { command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; }

say_found() {
    echo "prometheus: $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
    echo "promtool:   $(command -v promtool)"
}

fail() {
    echo "ensure_prometheus: $*" >&2
    exit 1
}

if have_both; then
    say_found
    exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
    fail "promtool/prometheus not on PATH and no apt-get here; install Prometheus 2.x (both binaries) and put them on PATH"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    fail "promtool/prometheus not on PATH; run as root (or with sudo): apt-get install -y prometheus"
fi

log=$(mktemp "${TMPDIR:-/tmp}/ensure-prometheus.XXXXXX.log")
export DEBIAN_FRONTEND=noninteractive
echo "== installing Debian's prometheus package (promtool + prometheus); log $log"
# The package list may be missing or old on a fresh machine: update only when apt knows no candidate.
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${SUDO[@]}" apt-get update -q >>"$log" 2>&1 ||
        fail "apt-get update failed (see $log); check the machine reaches its Debian mirror"
fi
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus >>"$log" 2>&1 ||
    fail "apt-get install prometheus failed (see $log: $(tail -n1 "$log"))"
hash -r
have_both || fail "Debian's prometheus package is installed but promtool/prometheus are not on PATH (PATH=$PATH)"
rm -f "$log"
say_found
