#!/usr/bin/env bash
# Installs what `make test` needs from Debian's packages. Idempotent: a machine
# that already has everything spends no time here beyond a dpkg query.
set -euo pipefail
need=(qemu-system-x86 qemu-system-arm mtools dosfstools e2fsprogs iproute2 xz-utils rpm chromium debootstrap device-tree-compiler)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "install-test-deps: missing Debian packages: ${missing[*]}" >&2
		echo "install-test-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
