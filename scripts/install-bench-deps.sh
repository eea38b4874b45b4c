#!/usr/bin/env bash
# Installs the peers that `make bench` measures the Connector against (socat
# and haproxy, from Debian's packages). Idempotent: when both are present this
# costs one dpkg query. When they cannot be installed (no root, no network)
# the benchmark still runs and reports those peers as missing.
set -euo pipefail
need=(socat haproxy)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
	echo "install-bench-deps: not root, cannot install ${missing[*]}; the benchmark will skip them" >&2
	exit 0
fi
echo "installing: ${missing[*]}"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
	echo "install-bench-deps: could not install ${missing[*]}; the benchmark will skip them" >&2
fi
# haproxy's package enables its service; the benchmark runs its own instance
# in the foreground and needs no system one listening.
if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null && systemctl is-active -q haproxy 2>/dev/null; then
	systemctl stop haproxy || true
fi
exit 0
