package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"abc1234", "0.0.0+abc1234"},
		{"7eef746-dirty", "0.0.0+7eef746.dirty"}, // a commit id that starts with a digit
		{"dev", "0.0.0+dev"},
		{"v2.0.0-rc1", "2.0.0+rc1"},
	} {
		got, err := Version(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Version(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := Version(""); err == nil {
		t.Error("empty version accepted")
	}
}

// TestVersionOrder checks with dpkg itself that later builds sort later, which
// is what makes `apt install ./newer.deb` an upgrade.
func TestVersionOrder(t *testing.T) {
	dpkg := need(t, "dpkg")
	order := []string{"abc1234", "v1.0.0", "v1.0.0-3-gabc1234", "v1.0.0-12-gdef5678", "v1.0.1", "v1.10.0"}
	for i := 1; i < len(order); i++ {
		a, _ := Version(order[i-1])
		b, _ := Version(order[i])
		if a == b {
			continue
		}
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg does not sort %q (%s) before %q (%s)", a, order[i-1], b, order[i])
		}
	}
}

func TestBuildRejectsBadOptions(t *testing.T) {
	bin := testBinary(t)
	for _, tc := range []struct {
		opt  Options
		want string
	}{
		{Options{Version: "1.0.0", Arch: "386", Binary: bin}, "architecture"},
		{Options{Version: "v1.0.0", Arch: "amd64", Binary: bin}, `use "1.0.0"`},
		{Options{Version: "1.0.0", Arch: "amd64", Binary: "/nonexistent/iofog-connector"}, "make build"},
	} {
		err := Build(Deb, tc.opt, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%+v): err = %v, want one mentioning %q", tc.opt, err, tc.want)
		}
	}
}

// testBinary is a real executable to package for inspection tests: this
// test program itself. The install test packages the real daemon.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// need returns the path of a tool the test cannot do without, or fails
// saying which Debian package to install.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		pkg := map[string]string{"rpm": "rpm", "dpkg": "dpkg", "dpkg-deb": "dpkg"}[tool]
		t.Fatalf("%s is not installed; this test inspects packages with it (apt-get install %s)", tool, pkg)
	}
	return p
}

func buildTo(t *testing.T, f Format, opt Options) string {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(f, opt, &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), FileName(f, opt))
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The original's shipped settings, byte for byte (docs/protocol.md §2).
const originalDefault = `{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}`

func TestDebContents(t *testing.T) {
	dpkgDeb := need(t, "dpkg-deb")
	for _, arch := range Arches() {
		t.Run(arch, func(t *testing.T) {
			opt := Options{Version: "1.2.3", Arch: arch, Binary: testBinary(t), MTime: time.Unix(1700000000, 0)}
			pkg := buildTo(t, Deb, opt)
			if !strings.HasSuffix(pkg, "iofog-connector_1.2.3-1_"+arch+".deb") {
				t.Errorf("file name %s, want iofog-connector_1.2.3-1_%s.deb", filepath.Base(pkg), arch)
			}
			info := run(t, dpkgDeb, "-f", pkg, "Package", "Version", "Architecture")
			if want := "Package: iofog-connector\nVersion: 1.2.3-1\nArchitecture: " + arch + "\n"; info != want {
				t.Errorf("control fields:\n%s\nwant:\n%s", info, want)
			}

			listing := run(t, dpkgDeb, "-c", pkg)
			for path, perm := range map[string]string{
				"./usr/bin/iofog-connector":                        "-rwxr-xr-x root/root",
				"./etc/iofog-connector/":                           "drwxr-x--- iofog-connector/iofog-connector",
				"./etc/iofog-connector/iofog-connector.conf":       "-rw-r--r-- root/root",
				"./usr/share/iofog-connector/configs.json.empty":   "-rw-r--r-- root/root",
				"./usr/share/iofog-connector/firewall.conf":        "-rw-r--r-- root/root",
				"./usr/lib/systemd/system/iofog-connector.service": "-rw-r--r-- root/root",
				"./etc/init.d/iofog-connector":                     "-rwxr-xr-x root/root",
				"./var/log/iofog-connector/":                       "drwxr-x--- iofog-connector/iofog-connector",
			} {
				re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(perm) + `\s+\d+ \S+ \S+ ` + regexp.QuoteMeta(path) + `$`)
				if !re.MatchString(listing) {
					t.Errorf("package lacks %s with %s:\n%s", path, perm, listing)
				}
			}
			// Live state must never be a packaged file: dpkg would own it.
			if strings.Contains(listing, "/etc/iofog-connector/configs.json") {
				t.Errorf("the mapping store is in the package; upgrades and purges would treat it as dpkg's:\n%s", listing)
			}

			conffiles := run(t, dpkgDeb, "-I", pkg, "conffiles")
			if !strings.Contains(conffiles, "/etc/iofog-connector/iofog-connector.conf\n") {
				t.Errorf("settings file is not a conffile (upgrades would overwrite edits): %q", conffiles)
			}
			if strings.Contains(conffiles, "/etc/init.d/") {
				t.Errorf("init script is a conffile; it would linger after remove: %q", conffiles)
			}

			root := t.TempDir()
			run(t, dpkgDeb, "-x", pkg, root)
			if got, _ := os.ReadFile(filepath.Join(root, "etc/iofog-connector/iofog-connector.conf")); strings.TrimSpace(string(got)) != originalDefault {
				t.Errorf("default settings = %q, want the original's %q", got, originalDefault)
			}
			if got, _ := os.ReadFile(filepath.Join(root, "usr/share/iofog-connector/configs.json.empty")); strings.TrimSpace(string(got)) != `{"mappings":[]}` {
				t.Errorf("empty store = %q", got)
			}
			unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/iofog-connector.service"))
			for _, line := range []string{
				"User=iofog-connector", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
				"ProtectSystem=strict", "ReadWritePaths=/etc/iofog-connector /var/log/iofog-connector",
				"NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "Restart=on-failure", "LimitNOFILE=1048576",
				"ExecStart=/usr/bin/iofog-connector run --config /etc/iofog-connector/iofog-connector.conf --state-dir /etc/iofog-connector --tls-dir /etc/iofog-connector",
			} {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).Match(unit) {
					t.Errorf("unit lacks %q", line)
				}
			}
			if regexp.MustCompile(`(?m)^(Ambient|CapabilityBounding).*NET_ADMIN`).Match(unit) {
				t.Error("unit grants CAP_NET_ADMIN by default; it belongs in the firewall drop-in")
			}

			ctl := t.TempDir()
			run(t, dpkgDeb, "-e", pkg, ctl)
			for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
				p := filepath.Join(ctl, s)
				run(t, "sh", "-n", p)
				body, _ := os.ReadFile(p)
				if !strings.HasPrefix(string(body), "#!/bin/sh\nset -e\n") {
					t.Errorf("%s does not start with #!/bin/sh and set -e", s)
				}
			}
			postinst, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
			postrm, _ := os.ReadFile(filepath.Join(ctl, "postrm"))
			preinst, _ := os.ReadFile(filepath.Join(ctl, "preinst"))
			for name, want := range map[string][]string{
				"preinst":  {"adduser --system", "useradd -r"},
				"postinst": {"configs.json.empty", "restart_service"},
				"postrm":   {"purge)", `rm -rf "$ETC" "$LOGDIR"`, "remove_user"},
			} {
				body := map[string][]byte{"preinst": preinst, "postinst": postinst, "postrm": postrm}[name]
				for _, w := range want {
					if !bytes.Contains(body, []byte(w)) {
						t.Errorf("%s lacks %q", name, w)
					}
				}
			}
		})
	}
}

func TestRPMContents(t *testing.T) {
	rpmTool := need(t, "rpm")
	for arch, rpmArch := range map[string]string{"amd64": "x86_64", "arm64": "aarch64"} {
		t.Run(arch, func(t *testing.T) {
			opt := Options{Version: "1.2.3", Arch: arch, Binary: testBinary(t)}
			pkg := buildTo(t, RPM, opt)
			if want := "iofog-connector-1.2.3-1." + rpmArch + ".rpm"; filepath.Base(pkg) != want {
				t.Errorf("file name %s, want %s", filepath.Base(pkg), want)
			}
			if got := run(t, rpmTool, "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}\n", pkg); got != "iofog-connector 1.2.3 1 "+rpmArch+"\n" {
				t.Errorf("rpm header: %q", got)
			}
			run(t, rpmTool, "-qip", pkg)

			listing := run(t, rpmTool, "-qp", "--qf", `[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]`, pkg)
			for _, line := range []string{
				"-rwxr-xr-x root root /usr/bin/iofog-connector",
				"drwxr-x--- iofog-connector iofog-connector /etc/iofog-connector",
				"-rw-r--r-- root root /etc/iofog-connector/iofog-connector.conf",
				"-rw-r--r-- root root /usr/share/iofog-connector/configs.json.empty",
				"-rw-r--r-- root root /usr/lib/systemd/system/iofog-connector.service",
				"-rwxr-xr-x root root /etc/rc.d/init.d/iofog-connector",
				"drwxr-x--- iofog-connector iofog-connector /var/log/iofog-connector",
			} {
				if !strings.Contains(listing, line+"\n") {
					t.Errorf("rpm lacks %q:\n%s", line, listing)
				}
			}
			// /etc/init.d is a symlink on the RPM family; owning it as a
			// directory would make the package conflict with chkconfig.
			if regexp.MustCompile(`(?m) /etc/init\.d$| /etc/rc\.d/init\.d$| /etc$| /usr/bin$`).MatchString(listing) {
				t.Errorf("rpm owns a system directory:\n%s", listing)
			}
			if strings.Contains(listing, "/etc/iofog-connector/configs.json\n") {
				t.Error("the mapping store is in the package")
			}
			cfg := run(t, rpmTool, "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILENAMES}\n]`, pkg)
			if !strings.Contains(cfg, "cn /etc/iofog-connector/iofog-connector.conf\n") {
				t.Errorf("settings file is not %%config(noreplace):\n%s", cfg)
			}

			for _, tag := range []string{"PREIN", "POSTIN", "PREUN", "POSTUN"} {
				body := run(t, rpmTool, "-qp", "--qf", "%{"+tag+"}", pkg)
				f := filepath.Join(t.TempDir(), tag)
				if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				run(t, "sh", "-n", f)
			}
			scripts := run(t, rpmTool, "-qp", "--scripts", pkg)
			for _, w := range []string{"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "useradd -r", "configs.json.empty", `if [ "$1" -eq 0 ]; then`} {
				if !strings.Contains(scripts, w) {
					t.Errorf("rpm scripts lack %q", w)
				}
			}
		})
	}
}
