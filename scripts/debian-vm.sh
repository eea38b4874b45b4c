#!/usr/bin/env bash
# Builds the Debian test system the package tests boot under QEMU: Debian
# bookworm from Debian's own packages (debootstrap), with systemd as init,
# Debian's kernel and an initramfs made by initramfs-tools, in an ext4 disk
# image. Prints the directory holding root.img, vmlinuz and initrd.img.
#
# The result is cached under CACHE/debian-vm/<hash of this script>, so a
# warm run takes no time and a changed recipe builds afresh; older builds are
# removed. The mirror comes from the machine's apt sources (override with
# IOFOG_DEBIAN_MIRROR=http://host/debian, as for fetch.sh).
#
# The system is what `debootstrap --variant=minbase` installs plus systemd,
# udev, kmod, adduser, dbus, nftables and the kernel, with these changes for
# running under test:
#   - /etc/fstab mounts /dev/vda as /; systemd-networkd gives the virtio NIC
#     QEMU's user-mode address (10.0.2.15);
#   - iofog-vm-agent.service runs /usr/local/sbin/iofog-vm-agent when a test
#     has put one there (the harness writes it into its own copy of the image);
#   - the timers that would change the system during a test (apt, dpkg
#     backup, e2scrub, fstrim) are masked;
#   - the initramfs holds only the modules that mount the root (virtio, ext4).
set -euo pipefail

say() { printf 'debian-vm: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

cache=${1:?usage: debian-vm.sh CACHE_DIR}
mkdir -p "$cache/debian-vm"
cache=$(cd "$cache" && pwd)
base=$cache/debian-vm
key=$(sha256sum "$0" | cut -c1-16)
out=$base/$key

missing=()
for t in debootstrap:debootstrap mke2fs:e2fsprogs flock:util-linux; do
	command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
((${#missing[@]} == 0)) || die "missing ${missing[*]}: run scripts/install-test-deps.sh (apt-get install ${missing[*]})"
((EUID == 0)) || die "building the Debian test system needs root (debootstrap, file ownership)"

# One builder at a time; the others wait and then find it built.
exec 9>"$base/.lock"
flock 9
if [[ -e $out/ready ]]; then
	printf '%s\n' "$out"
	exit 0
fi

mirror=${IOFOG_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
	mirror=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
		awk '$2 !~ /-(security|updates|backports)$/ {print $1; exit}')
fi
[[ -n $mirror ]] || die "no Debian mirror in this machine's apt sources; set IOFOG_DEBIAN_MIRROR=http://.../debian"

rm -rf "$base"/build.*
work=$(mktemp -d "$base/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
# In place before the kernel package runs update-initramfs: a small initramfs
# unpacks in a fraction of the time under emulation.
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/iofog-vm.conf"
printf '%s\n' virtio_pci virtio_blk ext4 >"$root/usr/share/initramfs-tools/modules.d/iofog-vm"

say "debootstrap bookworm from $mirror (takes a few minutes once; cached in $out)"
debootstrap --variant=minbase --arch=amd64 \
	--include=systemd-sysv,udev,kmod,adduser,dbus,nftables,linux-image-amd64 \
	bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
	die "debootstrap failed; its log ends:
$(tail -n 30 "$work/debootstrap.log")"

cat >"$root/etc/fstab" <<'EOF'
/dev/vda / ext4 defaults,errors=remount-ro 0 1
EOF
echo debian-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-vm.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
cat >"$root/etc/systemd/system/iofog-vm-agent.service" <<'EOF'
[Unit]
Description=Test agent (runs commands for the test harness on the host)
ConditionPathExists=/usr/local/sbin/iofog-vm-agent

[Service]
ExecStart=/usr/local/sbin/iofog-vm-agent
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable --quiet systemd-networkd iofog-vm-agent.service
chroot "$root" systemctl mask --quiet apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer
chroot "$root" passwd -d root >/dev/null
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
: >"$root/etc/machine-id"

kernel=$(cd "$root/boot" && ls vmlinuz-* | head -n1)
abi=${kernel#vmlinuz-}
[[ -s $root/boot/initrd.img-$abi ]] || die "the kernel package made no initramfs (/boot/initrd.img-$abi)"
mkdir -p "$work/out"
cp "$root/boot/$kernel" "$work/out/vmlinuz"
cp "$root/boot/initrd.img-$abi" "$work/out/initrd.img"
printf '%s\n' "$abi" >"$work/out/kernel.abi"
chroot "$root" dpkg-query -W -f='${Package}\t${Version}\n' >"$work/out/packages.txt"

# Room for the packages, logs and journal the tests add.
size=$(($(du -sm "$root" | cut -f1) + 512))
mke2fs -q -t ext4 -L debian-root -d "$root" "$work/out/root.img" "${size}M" >&2 ||
	die "mke2fs -d failed"
touch "$work/out/ready"

rm -rf "$out"
mv "$work/out" "$out"
# Older recipes' builds are dead weight.
for d in "$base"/*/; do
	[[ ${d%/} == "$out" ]] || rm -rf "${d%/}"
done
say "built $out ($(du -sh "$out/root.img" | cut -f1) root image, kernel $abi)"
printf '%s\n' "$out"
