// Package packaging builds the .deb and .rpm packages of the Connector for
// plain Linux hosts, with nfpm used as a library. Everything that goes into a
// package besides the binary (systemd unit, SysV init script, maintainer
// scripts, default settings) is embedded here, so a package is a function of
// the binary, the version and the architecture.
//
// What keeps state safe (see files/scripts/common.sh):
//   - the settings file is a config file (config|noreplace): upgrades keep
//     the user's edits;
//   - the mapping store is not in the package at all: it ships as
//     /usr/share/iofog-connector/configs.json.empty and the post-install script
//     copies it to /etc/iofog-connector/configs.json only when no store exists,
//     so neither dpkg nor rpm ever owns, compares or replaces live state;
//   - dpkg purge removes settings, store, TLS files, logs and the user;
//     remove (and rpm -e) keep them.
package packaging

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"
)

//go:embed files
var assets embed.FS

// Package identity and the paths the rest of the product assumes.
const (
	Name       = "iofog-connector"
	User       = "iofog-connector"
	BinaryPath = "/usr/bin/iofog-connector"
	ConfigDir  = "/etc/iofog-connector"
	ConfigPath = "/etc/iofog-connector/iofog-connector.conf"
	StorePath  = "/etc/iofog-connector/configs.json"
	LogDir     = "/var/log/iofog-connector"
	ShareDir   = "/usr/share/iofog-connector"
	UnitPath   = "/usr/lib/systemd/system/iofog-connector.service"
	InitPath   = "/etc/init.d/iofog-connector"
)

// Format is a package format.
type Format string

// The formats Build makes.
const (
	Deb Format = "deb"
	RPM Format = "rpm"
)

// Formats lists every format, in build order.
func Formats() []Format { return []Format{Deb, RPM} }

// Arches lists the Go architectures packages are built for.
func Arches() []string { return []string{"amd64", "arm64"} }

// Options describe one package.
type Options struct {
	// Version is a package version (see Version to turn `git describe`
	// output into one).
	Version string
	// Arch is the Go architecture of Binary: "amd64" or "arm64".
	Arch string
	// Binary is the path of the linux/Arch iofog-connector executable.
	Binary string
	// MTime stamps every file, for reproducible packages; zero means
	// $SOURCE_DATE_EPOCH or else now.
	MTime time.Time
}

// Build writes the package in format f to w.
func Build(f Format, opt Options, w io.Writer) error {
	if err := checkOptions(opt); err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "iofog-connector-pkg-")
	if err != nil {
		return fmt.Errorf("build %s package: staging directory: %w", f, err)
	}
	defer os.RemoveAll(stage)
	info, err := packageInfo(f, opt, stage)
	if err != nil {
		return fmt.Errorf("build %s package: %w", f, err)
	}
	var p nfpm.Packager
	switch f {
	case Deb:
		p = deb.Default
	case RPM:
		p = rpm.DefaultRPM
	default:
		return fmt.Errorf("build package: unknown format %q: want deb or rpm", f)
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, string(f)); err != nil {
		return fmt.Errorf("build %s package: %w", f, err)
	}
	if err := p.Package(info, w); err != nil {
		return fmt.Errorf("build %s package for %s: %w", f, opt.Arch, err)
	}
	return nil
}

// FileName is the conventional file name of the package, as apt, dnf and
// repository tools expect it (name_version-1_arch.deb, name-version-1.arch.rpm).
func FileName(f Format, opt Options) string {
	info := nfpm.WithDefaults(&nfpm.Info{Name: Name, Arch: opt.Arch, Version: opt.Version, VersionSchema: "none", Release: "1"})
	if f == RPM {
		return rpm.DefaultRPM.ConventionalFileName(info)
	}
	return deb.Default.ConventionalFileName(info)
}

func checkOptions(opt Options) error {
	switch opt.Arch {
	case "amd64", "arm64":
	default:
		return fmt.Errorf("build package: architecture %q: want amd64 or arm64", opt.Arch)
	}
	if v, err := Version(opt.Version); err != nil {
		return fmt.Errorf("build package: %w", err)
	} else if v != opt.Version {
		return fmt.Errorf("build package: version %q is not a package version; use %q", opt.Version, v)
	}
	st, err := os.Stat(opt.Binary)
	if err != nil {
		return fmt.Errorf("build package: binary: %w (run `make build` first)", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("build package: binary %s is not a regular file", opt.Binary)
	}
	return nil
}

// Version turns a version as the Makefile has it (`git describe --tags
// --always --dirty`: "v1.2.3", "v1.2.3-4-gabc1234-dirty", "abc1234", "dev")
// into one that dpkg and rpm both accept and order the way releases go:
// it starts with a digit, has no '-' (rpm forbids it; dpkg would read a
// Debian revision), and builds after a tag sort after that tag.
func Version(raw string) (string, error) {
	v := strings.TrimPrefix(strings.TrimSpace(raw), "v")
	if v == "" {
		return "", fmt.Errorf("empty version")
	}
	if !releaseLike(v) {
		// No tag yet: a commit id (which may start with a digit) or "dev".
		// 0.0.0 sorts below any release.
		v = "0.0.0+" + v
	} else if i := strings.IndexByte(v, '-'); i >= 0 {
		v = v[:i] + "+" + v[i+1:]
	}
	var b strings.Builder
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '+', c == '~':
			b.WriteRune(c)
		default:
			b.WriteByte('.')
		}
	}
	return b.String(), nil
}

// initPath is where the SysV init script goes: /etc/init.d on Debian, its
// real directory on the RPM family (where /etc/init.d is a symlink to it and
// must not become a directory of ours).
func initPath(f Format) string {
	if f == RPM {
		return "/etc/rc.d/init.d/" + Name
	}
	return InitPath
}

// releaseLike reports whether v starts with a dotted number such as "1.2".
func releaseLike(v string) bool {
	major, rest, ok := strings.Cut(v, ".")
	if !ok || !allDigits(major) {
		return false
	}
	minor := strings.FieldsFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	return len(minor) > 0 && strings.HasPrefix(rest, minor[0])
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// packageInfo describes the package; embedded files are written to stage
// because nfpm reads contents and scripts from paths.
func packageInfo(f Format, opt Options, stage string) (*nfpm.Info, error) {
	if err := fs.WalkDir(assets, "files", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(stage, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	}); err != nil {
		return nil, fmt.Errorf("stage embedded files: %w", err)
	}
	src := func(name string) string { return filepath.Join(stage, "files", name) }
	mode := func(m fs.FileMode) *files.ContentFileInfo { return &files.ContentFileInfo{Mode: m} }
	owned := func(m fs.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: m, Owner: User, Group: User}
	}

	scripts := map[string]string{}
	common, err := assets.ReadFile("files/scripts/common.sh")
	if err != nil {
		return nil, err
	}
	var names []string
	switch f {
	case Deb:
		names = []string{"deb-preinst", "deb-postinst", "deb-prerm", "deb-postrm"}
	case RPM:
		names = []string{"rpm-pre", "rpm-post", "rpm-preun", "rpm-postun"}
	}
	for _, n := range names {
		body, err := assets.ReadFile("files/scripts/" + n + ".sh")
		if err != nil {
			return nil, err
		}
		path := filepath.Join(stage, n)
		script := "#!/bin/sh\nset -e\n\n" + string(common) + "\n" + string(body)
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			return nil, fmt.Errorf("stage %s: %w", n, err)
		}
		scripts[n] = path
	}

	info := &nfpm.Info{
		Name:          Name,
		Arch:          opt.Arch,
		Platform:      "linux",
		Version:       opt.Version,
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "Eclipse ioFog <iofog-dev@eclipse.org>",
		Vendor:        "Eclipse ioFog",
		Homepage:      "https://github.com/eclipse-iofog/iofog-connector",
		License:       "EPL-2.0",
		Description: "ioFog Connector: NAT traversal relay for ioFog microservices\n" +
			"Relays public clients and agent-to-agent routes for microservices on\n" +
			"ioFog edge nodes behind NAT. Speaks the ioFog 1.x Connector protocol,\n" +
			"so existing Controllers and agents work with it unchanged.",
		MTime: opt.MTime,
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				{Source: opt.Binary, Destination: BinaryPath, FileInfo: mode(0o755)},
				{Destination: ConfigDir, Type: files.TypeDir, FileInfo: owned(0o750)},
				{Source: src("iofog-connector.conf"), Destination: ConfigPath, Type: files.TypeConfigNoReplace, FileInfo: mode(0o644)},
				{Destination: ShareDir, Type: files.TypeDir, FileInfo: mode(0o755)},
				{Source: src("configs.json.empty"), Destination: ShareDir + "/configs.json.empty", FileInfo: mode(0o644)},
				{Source: src("firewall.conf"), Destination: ShareDir + "/firewall.conf", FileInfo: mode(0o644)},
				{Source: src("iofog-connector.service"), Destination: UnitPath, FileInfo: mode(0o644)},
				{Source: src("iofog-connector.init"), Destination: initPath(f), FileInfo: mode(0o755)},
				{Source: src("logrotate"), Destination: "/etc/logrotate.d/iofog-connector", Type: files.TypeConfigNoReplace, FileInfo: mode(0o644)},
				{Destination: LogDir, Type: files.TypeDir, FileInfo: owned(0o750)},
			},
		},
	}
	switch f {
	case Deb:
		info.Scripts = nfpm.Scripts{
			PreInstall: scripts["deb-preinst"], PostInstall: scripts["deb-postinst"],
			PreRemove: scripts["deb-prerm"], PostRemove: scripts["deb-postrm"],
		}
		info.Deb.Compression = "xz"
	case RPM:
		info.Scripts = nfpm.Scripts{
			PreInstall: scripts["rpm-pre"], PostInstall: scripts["rpm-post"],
			PreRemove: scripts["rpm-preun"], PostRemove: scripts["rpm-postun"],
		}
		info.RPM.Compression = "xz"
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Summary = "ioFog Connector: NAT traversal relay for ioFog microservices"
	}
	return info, nil
}
