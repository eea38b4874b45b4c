#!/usr/bin/env bash
# Fetches the Debian kernels and firmware the appliance images are built from
# into a cache directory (default .cache), unpacks only the parts the images
# and the QEMU harness use, and writes CACHE/manifest.txt (package, version,
# architecture, sha256 of the .deb) so every image can say what it was built
# from.
#
# It uses a private apt configuration per architecture, so the machine's own
# apt state is never touched and no foreign architecture has to be added.
# Mirrors come from the machine's apt sources; override them with
#   IOFOG_DEBIAN_MIRROR=http://host/debian
#   IOFOG_DEBIAN_SECURITY_MIRROR=http://host/debian-security
# Package lists younger than IOFOG_FETCH_MAX_AGE minutes (default 720) are not
# refreshed, so a warm re-run takes seconds and works offline; IOFOG_FETCH_REFRESH=1
# forces a refresh.
set -euo pipefail

cache=${1:-.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
max_age=${IOFOG_FETCH_MAX_AGE:-720}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

say() { printf 'fetch: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_tools() {
	local missing=()
	command -v apt-get >/dev/null || missing+=(apt)
	command -v dpkg-deb >/dev/null || missing+=(dpkg)
	command -v sha256sum >/dev/null || missing+=(coreutils)
	[[ -r $keyring ]] || missing+=(debian-archive-keyring)
	if ((${#missing[@]})); then
		if [[ $(id -u) == 0 ]]; then
			say "installing ${missing[*]}"
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
		else
			die "missing ${missing[*]}: install them (apt-get install ${missing[*]}) and run again"
		fi
	fi
}

# mirrors prints "MAIN SECURITY": the machine's Debian mirrors, read from its
# apt sources (deb822 .sources files first, then one-line sources.list).
mirrors() {
	local main=${IOFOG_DEBIAN_MIRROR:-} sec=${IOFOG_DEBIAN_SECURITY_MIRROR:-}
	local f uri suites line
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		# A stanza is URIs: then Suites: (in either order); read pairs.
		while IFS='|' read -r uri suites; do
			[[ -n $uri ]] || continue
			if [[ $suites == *-security* ]]; then
				[[ -n $sec ]] || sec=$uri
			else
				[[ -n $main ]] || main=$uri
			fi
		done < <(awk '
			/^[[:space:]]*$/ { if (u != "") print u "|" s; u=""; s=""; next }
			/^URIs:/ { u=$2 }
			/^Suites:/ { $1=""; s=$0 }
			END { if (u != "") print u "|" s }' "$f")
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		while read -r line; do
			set -- $line
			[[ ${1:-} == deb ]] || continue
			shift
			[[ ${1:-} == \[* ]] && while [[ $# -gt 0 && $1 != *\] ]]; do shift; done && shift
			uri=${1:-}
			suites=${2:-}
			if [[ $suites == *-security* ]]; then
				[[ -n $sec ]] || sec=$uri
			else
				[[ -n $main ]] || main=$uri
			fi
		done <"$f"
	done
	[[ -n $main ]] || die "no Debian mirror in /etc/apt/sources*; set IOFOG_DEBIAN_MIRROR=http://.../debian"
	if [[ -z $sec ]]; then
		sec=${main%/debian}/debian-security
	fi
	printf '%s %s\n' "$main" "$sec"
}

# aptenv ARCH: sets up CACHE/apt/ARCH and prints the APT_CONFIG path.
aptenv() {
	local arch=$1 d=$cache/apt/$1
	mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/sources.list.d" "$d/preferences.d"
	: >>"$d/status"
	read -r main sec < <(mirrors)
	cat >"$d/sources.list.new" <<EOF
deb [signed-by=$keyring] $main bookworm main non-free-firmware
deb [signed-by=$keyring] $main bookworm-updates main non-free-firmware
deb [signed-by=$keyring] $sec bookworm-security main non-free-firmware
EOF
	# A changed mirror invalidates the lists.
	if ! cmp -s "$d/sources.list.new" "$d/sources.list"; then
		mv "$d/sources.list.new" "$d/sources.list"
		rm -f "$d/lists/"*_Packages* "$d/updated"
	else
		rm -f "$d/sources.list.new"
	fi
	cat >"$d/apt.conf" <<EOF
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
Dir::Etc::SourceList "$d/sources.list";
Dir::Etc::SourceParts "$d/sources.list.d";
Dir::Etc::Preferences "$d/preferences";
Dir::Etc::PreferencesParts "$d/preferences.d";
Dir::State::Lists "$d/lists";
Dir::State::status "$d/status";
Dir::Cache "$d";
Dir::Cache::archives "$d/archives";
Dir::Cache::pkgcache "$d/pkgcache.bin";
Dir::Cache::srcpkgcache "$d/srcpkgcache.bin";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "3";
EOF
	printf '%s\n' "$d/apt.conf"
}

# update ARCH: refreshes the package lists unless they are fresh enough.
update() {
	local arch=$1 conf=$cache/apt/$1/apt.conf stamp=$cache/apt/$1/updated
	if [[ -z ${IOFOG_FETCH_REFRESH:-} && -e $stamp ]] && [[ -z $(find "$stamp" -mmin +"$max_age") ]]; then
		return 0
	fi
	say "updating package lists for $arch"
	if APT_CONFIG=$conf apt-get -qq update; then
		touch "$stamp"
	elif [[ -e $stamp ]]; then
		say "could not refresh package lists for $arch; using the ones from $(date -r "$stamp" -u +%FT%TZ)"
	else
		die "could not download package lists for $arch: check the network and the mirror ($(mirrors))"
	fi
}

# candidate ARCH PKG: the version apt would install.
candidate() {
	APT_CONFIG=$cache/apt/$1/apt.conf apt-cache policy "$2" | awk '/Candidate:/ {print $2}'
}

# kernel_pkg ARCH: the versioned kernel package the metapackage points at.
kernel_pkg() {
	local arch=$1 dep
	dep=$(APT_CONFIG=$cache/apt/$arch/apt.conf apt-cache depends "linux-image-$arch" |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[[ -n $dep ]] || die "linux-image-$arch has no linux-image-<abi> dependency in the $arch lists"
	printf '%s\n' "$dep"
}

# download ARCH PKG: prints the path of the .deb, downloading it if the cache
# does not already hold the candidate version.
download() {
	local arch=$1 pkg=$2 ver d=$cache/apt/$1/archives deb
	ver=$(candidate "$arch" "$pkg")
	[[ -n $ver && $ver != "(none)" ]] || die "package $pkg not found for $arch"
	deb=$(ls "$d/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
	if [[ -z $deb ]]; then
		say "downloading $pkg $ver ($arch)"
		(cd "$d" && APT_CONFIG=$cache/apt/$arch/apt.conf apt-get -qq download "$pkg=$ver") >&2
		deb=$(ls "$d/${pkg}_${ver//:/%3a}_"*.deb | head -n1)
	fi
	printf '%s\n' "$deb"
}

# unpack DEB DEST PATTERN...: extracts only the members matching the shell
# patterns (tar wildcards) into DEST, once per .deb checksum.
unpack() {
	local deb=$1 dest=$2 sum stamp
	shift 2
	# The stamp covers the patterns too, so widening the list re-unpacks.
	sum="$(sha256sum "$deb" | cut -d' ' -f1) $(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
	stamp=$dest/.unpacked-$(basename "$deb" .deb)
	if [[ -e $stamp && $(cat "$stamp") == "$sum" ]]; then
		return 0
	fi
	say "unpacking $(basename "$deb")"
	mkdir -p "$dest"
	# Turn the patterns into one regexp so a pattern with no match in this
	# kernel (a directory a config change removed) is no error.
	local re='' p
	for p in "$@"; do
		p=${p//./\\.}
		p=${p//\*/.*}
		re+=${re:+|}$p
	done
	dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -E "^($re)\$" >"$dest/.members" ||
		die "$(basename "$deb") holds nothing matching $*"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest" --no-recursion -T "$dest/.members"
	rm -f "$dest/.members"
	printf '%s\n' "$sum" >"$stamp"
}

# Kernel module directories the boards draw from. Keeping the rest out saves
# most of the unpacked size; kmod resolves aliases only among these.
module_dirs=(
	'./lib/modules/*/kernel/arch/*'
	'./lib/modules/*/kernel/crypto/*'
	'./lib/modules/*/kernel/lib/*'
	'./lib/modules/*/kernel/fs/fat/*'
	'./lib/modules/*/kernel/fs/nls/*'
	'./lib/modules/*/kernel/fs/efivarfs/*'
	'./lib/modules/*/kernel/fs/ext4/*'
	'./lib/modules/*/kernel/fs/jbd2/*'
	'./lib/modules/*/kernel/fs/mbcache.ko'
	'./lib/modules/*/kernel/net/core/*'
	'./lib/modules/*/kernel/net/netfilter/*'
	'./lib/modules/*/kernel/net/ipv4/*'
	'./lib/modules/*/kernel/net/ipv6/*'
	'./lib/modules/*/kernel/drivers/ata/*'
	'./lib/modules/*/kernel/drivers/block/*'
	'./lib/modules/*/kernel/drivers/char/hw_random/*'
	'./lib/modules/*/kernel/drivers/clk/*'
	'./lib/modules/*/kernel/drivers/mmc/*'
	'./lib/modules/*/kernel/drivers/net/ethernet/*'
	'./lib/modules/*/kernel/drivers/net/mdio/*'
	'./lib/modules/*/kernel/drivers/net/phy/*'
	'./lib/modules/*/kernel/drivers/net/usb/*'
	'./lib/modules/*/kernel/drivers/net/virtio_net.ko'
	'./lib/modules/*/kernel/drivers/net/net_failover.ko'
	'./lib/modules/*/kernel/drivers/net/mii.ko'
	'./lib/modules/*/kernel/drivers/nvme/*'
	'./lib/modules/*/kernel/drivers/phy/*'
	'./lib/modules/*/kernel/drivers/reset/*'
	'./lib/modules/*/kernel/drivers/scsi/*'
	'./lib/modules/*/kernel/block/*'
	'./lib/modules/*/kernel/drivers/usb/*'
	'./lib/modules/*/kernel/drivers/virtio/*'
	'./lib/modules/*/kernel/drivers/watchdog/*'
	'./lib/modules/*/kernel/drivers/input/evdev.ko'
	'./lib/modules/*/kernel/drivers/acpi/button.ko'
	'./lib/modules/*/kernel/drivers/firmware/*'
	'./lib/modules/*/kernel/drivers/base/*'
	'./lib/modules/*/kernel/drivers/dma/*'
	'./lib/modules/*/kernel/drivers/i2c/*'
	'./lib/modules/*/kernel/drivers/mailbox/*'
	'./lib/modules/*/kernel/drivers/soc/*'
	'./lib/modules/*/kernel/drivers/ptp/*'
	'./lib/modules/*/kernel/drivers/pps/*'
	'./lib/modules/*/kernel/drivers/hwmon/*'
	'./lib/modules/*/kernel/drivers/dca/*'
	'./lib/modules/*/kernel/drivers/pci/*'
	'./lib/modules/*/kernel/drivers/gpio/*'
	'./lib/modules/*/kernel/drivers/pinctrl/*'
	'./lib/modules/*/kernel/drivers/regulator/*'
	'./lib/modules/*/kernel/drivers/rtc/*'
	'./lib/modules/*/modules.builtin'
	'./lib/modules/*/modules.builtin.modinfo'
	'./lib/modules/*/modules.order'
)

manifest_lines=()
used_debs=()
record() { # PKG ARCH DEB
	local sum ver
	used_debs+=("$3")
	sum=$(sha256sum "$3" | cut -d' ' -f1)
	ver=$(dpkg-deb -f "$3" Version)
	manifest_lines+=("$(printf '%s\t%s\t%s\t%s' "$1" "$ver" "$2" "$sum")")
}

need_tools
for arch in amd64 arm64; do
	aptenv "$arch" >/dev/null
	update "$arch"
done

# Warm cache: the lists did not change since the manifest was written by
# this same script, so nothing can have moved.
script_sum=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -z ${IOFOG_FETCH_REFRESH:-} && -s $cache/manifest.txt && $(cat "$cache/.fetch-script" 2>/dev/null) == "$script_sum" && $cache/manifest.txt -nt $cache/apt/amd64/updated &&
	$cache/manifest.txt -nt $cache/apt/arm64/updated && -e $cache/amd64/kernel.abi && -e $cache/arm64/kernel.abi ]]; then
	say "cache is current ($cache/manifest.txt)"
	exit 0
fi

for arch in amd64 arm64; do
	root=$cache/$arch
	kpkg=$(kernel_pkg "$arch")
	abi=${kpkg#linux-image-}
	deb=$(download "$arch" "$kpkg")
	# A new kernel replaces the old tree rather than piling up beside it.
	if [[ -e $root/kernel.abi && $(cat "$root/kernel.abi") != "$abi" ]]; then
		say "kernel moved from $(cat "$root/kernel.abi") to $abi; replacing $root"
		rm -rf "$root"
	fi
	pats=('./boot/vmlinuz-*' './boot/config-*' "${module_dirs[@]}")
	if [[ $arch == arm64 ]]; then
		pats+=('./usr/lib/linux-image-*/broadcom/bcm27*' './usr/lib/linux-image-*/broadcom/bcm28*')
	fi
	unpack "$deb" "$root" "${pats[@]}"
	printf '%s\n' "$abi" >"$root/kernel.abi"
	record "$kpkg" "$arch" "$deb"

	deb=$(download "$arch" systemd-boot-efi)
	unpack "$deb" "$root" './usr/lib/systemd/boot/efi/linux*.efi.stub'
	record systemd-boot-efi "$arch" "$deb"
done

deb=$(download arm64 raspi-firmware)
unpack "$deb" "$cache/arm64" './usr/lib/raspi-firmware/*'
record raspi-firmware arm64 "$deb"

deb=$(download amd64 ovmf)
unpack "$deb" "$cache/all" './usr/share/OVMF/OVMF_CODE_4M.fd' './usr/share/OVMF/OVMF_VARS_4M.fd'
record ovmf all "$deb"

deb=$(download arm64 qemu-efi-aarch64)
unpack "$deb" "$cache/all" './usr/share/AAVMF/AAVMF_CODE.fd' './usr/share/AAVMF/AAVMF_VARS.fd'
record qemu-efi-aarch64 all "$deb"

# Drop .debs of versions no longer current, so the cache does not grow with
# every kernel security update.
for arch in amd64 arm64; do
	for f in "$cache/apt/$arch/archives/"*.deb; do
		[[ -e $f ]] || continue
		keep=
		for u in "${used_debs[@]}"; do
			[[ $f == "$u" ]] && keep=1 && break
		done
		[[ -n $keep ]] || rm -f "$f"
	done
done

{
	printf '# package\tversion\tarch\tsha256 (of the .deb)\n'
	printf '%s\n' "${manifest_lines[@]}"
} >"$cache/manifest.txt.new"
mv "$cache/manifest.txt.new" "$cache/manifest.txt"
printf '%s\n' "$script_sum" >"$cache/.fetch-script"
say "cache ready in $cache ($(wc -l <"$cache/manifest.txt") lines in manifest.txt)"
