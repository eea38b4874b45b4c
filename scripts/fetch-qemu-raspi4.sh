#!/usr/bin/env bash
# Fetches QEMU 10 (which has the raspi4b machine) from Debian 12's
# bookworm-backports into CACHE/qemu10, unpacked, not installed: the
# system's QEMU stays as it is for every other test, and only the Pi 4 boot
# test runs this one (with QEMU_MODULE_DIR pointing at its own modules).
# The mirror is the machine's own, from its apt sources; IOFOG_DEBIAN_MIRROR
# overrides it. Idempotent.
set -euo pipefail
cache=${1:?usage: scripts/fetch-qemu-raspi4.sh CACHE}
d=$cache/qemu10
if [[ -x $d/root/usr/bin/qemu-system-aarch64 ]]; then
	exit 0
fi
mirror=${IOFOG_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -e $f ]] || continue
		mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f")
		[[ -n $mirror ]] && break
	done
fi
if [[ -z $mirror && -e /etc/apt/sources.list ]]; then
	mirror=$(awk '/^deb / && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || { echo "fetch-qemu-raspi4: no Debian mirror in /etc/apt/sources*; set IOFOG_DEBIAN_MIRROR" >&2; exit 1; }
mkdir -p "$d/apt/lists/partial" "$d/apt/cache/archives/partial" "$d/debs"
touch "$d/apt/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" >"$d/apt/sources.list"
cat >"$d/apt/apt.conf" <<CONF
Dir::Etc::SourceList "$d/apt/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$d/apt/lists";
Dir::State::status "$d/apt/status";
Dir::Cache "$d/apt/cache";
APT::Architecture "amd64";
APT::Sandbox::User "root";
CONF
export APT_CONFIG=$d/apt/apt.conf
apt-get update -qq
(cd "$d/debs" && apt-get download -qq qemu-system-arm qemu-system-common qemu-system-data)
rm -rf "$d/root.tmp"
for deb in "$d"/debs/*.deb; do dpkg-deb -x "$deb" "$d/root.tmp"; done
rm -rf "$d/root"
mv "$d/root.tmp" "$d/root"
"$d/root/usr/bin/qemu-system-aarch64" -M help | grep -q raspi4b || { echo "fetch-qemu-raspi4: the fetched QEMU has no raspi4b" >&2; exit 1; }
echo "QEMU for raspi4b in $d/root"
