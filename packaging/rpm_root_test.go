package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestRPMScratchRoot installs, upgrades and erases the .rpm with rpm itself
// into a scratch root (rpm --root), with its scriptlets running in that root
// as they would on an RPM host without systemd running: they create the
// user with useradd, lay down the state, keep the edited settings and the
// mapping store across an upgrade, and leave them (and the user) on erase.
//
// The scratch root borrows this machine's /usr (read-only) for the tools the
// scriptlets call, so those are Debian's builds of sh, useradd and friends,
// with Debian's update-rc.d hidden; what Fedora or RHEL would add (dnf,
// SELinux labels, a running systemd, chkconfig) is not here. The README says
// so.
func TestRPMScratchRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test installs the .rpm into a scratch root")
	}
	requireRoot(t)
	rpmTool := need(t, "rpm")
	need(t, "unshare")

	dir := t.TempDir()
	bin := daemonBinary(t)
	v1 := buildRPM(t, dir, "1.0.0", bin)
	v2 := buildRPM(t, dir, "1.0.1", bin)
	root := scratchRoot(t, filepath.Join(dir, "root"))
	rpm := func(args ...string) string {
		t.Helper()
		return inRoot(t, root, append([]string{rpmTool, "--root", root}, args...)...)
	}
	rpm("--initdb")

	// Install. The scripts need /bin/sh, which the empty database does not
	// list: --nodeps says so, nothing else is skipped.
	out := rpm("-i", "--nodeps", v1)
	if !strings.Contains(out, "installed and enabled at boot, but not started") {
		t.Errorf("rpm -i did not print the first-install note:\n%s", out)
	}
	uid := rootUser(t, root)
	for _, c := range []struct {
		path  string
		mode  os.FileMode
		owner int
	}{
		{BinaryPath, 0o755, 0},
		{ConfigPath, 0o644, 0},
		{ConfigDir, 0o750 | os.ModeDir, uid},
		{StorePath, 0o640, uid},
		{LogDir, 0o750 | os.ModeDir, uid},
		{UnitPath, 0o644, 0},
		{"/etc/rc.d/init.d/" + Name, 0o755, 0},
	} {
		st, err := os.Lstat(at(root, c.path))
		if err != nil {
			t.Errorf("after rpm -i: %v", err)
			continue
		}
		if st.Mode() != c.mode || int(st.Sys().(*syscall.Stat_t).Uid) != c.owner {
			t.Errorf("%s: mode %v owner %d, want %v owner %d", c.path, st.Mode(), st.Sys().(*syscall.Stat_t).Uid, c.mode, c.owner)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "/etc/init.d")); err == nil {
		t.Error("the .rpm made /etc/init.d, which is a symlink the system owns on the RPM family")
	}
	if got, _ := os.ReadFile(filepath.Join(root, StorePath)); strings.TrimSpace(string(got)) != `{"mappings":[]}` {
		t.Errorf("installed store %q, want an empty one", got)
	}

	// The user edits the settings and the daemon has stored a mapping.
	edited := `{"ports":["6000-6050"],"exclude":["6040-6050"],"broker":12345,"address":"127.0.0.1","dev":true}` + "\n"
	store := `{"mappings":[{"id":"kept"}]}` + "\n"
	writeIn(t, root, ConfigPath, edited)
	writeIn(t, root, StorePath, store)

	rpm("-U", "--nodeps", v2)
	if got := rpm("-q", "--qf", "%{VERSION}", Name); got != "1.0.1" {
		t.Errorf("version after upgrade = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(root, ConfigPath)); string(got) != edited {
		t.Errorf("rpm -U replaced the edited settings:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(root, ConfigPath+".rpmnew")); err == nil {
		t.Error("rpm -U wrote .rpmnew although the default did not change")
	}
	if got, _ := os.ReadFile(filepath.Join(root, StorePath)); string(got) != store {
		t.Errorf("rpm -U changed the mapping store:\n%s", got)
	}
	if rootUser(t, root) != uid {
		t.Error("rpm -U changed the service user's uid")
	}

	// Erase: the program goes; the edited settings, the store and the user
	// stay (RPM has no purge; the README gives the commands).
	rpm("-e", "--nodeps", Name)
	for _, p := range []string{BinaryPath, UnitPath, "/etc/rc.d/init.d/" + Name} {
		if _, err := os.Lstat(at(root, p)); err == nil {
			t.Errorf("%s left after rpm -e", p)
		}
	}
	// rpm's own rule for an edited config file: erase saves it beside
	// (the README says so).
	if got, _ := os.ReadFile(filepath.Join(root, ConfigPath+".rpmsave")); string(got) != edited {
		t.Errorf("rpm -e did not save the edited settings as %s.rpmsave (%q)", ConfigPath, got)
	}
	if got, _ := os.ReadFile(filepath.Join(root, StorePath)); string(got) != store {
		t.Errorf("rpm -e did not keep the mapping store (%q)", got)
	}
	rootUser(t, root)
	// The README's wipe, run in the root, leaves nothing of the package.
	inRoot(t, root, "chroot", root, "sh", "-c", "rm -rf /etc/iofog-connector /var/log/iofog-connector && userdel iofog-connector")
	if b, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); bytes.Contains(b, []byte(User+":")) {
		t.Error("the README's userdel left the user")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/group")); bytes.Contains(b, []byte(User+":")) {
		t.Error("the README's userdel left the group")
	}
}

func buildRPM(t *testing.T, dir, version, bin string) string {
	t.Helper()
	opt := Options{Version: version, Arch: runtime.GOARCH, Binary: bin}
	var buf bytes.Buffer
	if err := Build(RPM, opt, &buf); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName(RPM, opt))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// scratchRoot makes an otherwise empty root at dir in which this machine's
// /usr is mounted (by inRoot, under an overlay) for the scriptlets' tools, with the accounts
// files of a fresh system.
func scratchRoot(t *testing.T, dir string) string {
	t.Helper()
	for _, d := range []string{".usr/upper", ".usr/work"} {
		if err := os.MkdirAll(dir+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"usr", "dev", "run", "tmp", "var/lib/rpm", "var/log", "var/tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		target, err := os.Readlink("/" + l)
		if err != nil {
			if l == "lib64" {
				continue
			}
			t.Fatalf("this test needs a merged-/usr host (/%s -> usr/%s): %v", l, l, err)
		}
		if err := os.Symlink(target, filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	login, err := os.ReadFile("/etc/login.defs")
	if err != nil {
		t.Fatalf("useradd needs /etc/login.defs: %v", err)
	}
	for name, body := range map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":         "root:x:0:\n",
		"etc/shadow":        "root:*:19000:0:99999:7:::\n",
		"etc/gshadow":       "root:*::\n",
		"etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\ngshadow: files\n",
		"etc/login.defs":    string(login),
		"dev/null":          "",
	} {
		mode := os.FileMode(0o644)
		if strings.Contains(name, "shadow") {
			mode = 0o640
		}
		writeFileMode(t, filepath.Join(dir, name), body, mode)
	}
	return dir
}

// inRoot runs a command in a private mount namespace in which root has this
// machine's /usr (under an overlay: what the package writes to /usr goes to
// root+".usr/upper", see at) and /dev/null, and Debian's update-rc.d and
// adduser are hidden, as on an RPM host.
func inRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	setup := fmt.Sprintf(`set -e
mount -t overlay overlay -o lowerdir=/usr,upperdir=%[1]s.usr/upper,workdir=%[1]s.usr/work %[1]s/usr
mount --bind /dev/null %[1]s/dev/null
for f in /usr/sbin/update-rc.d /usr/sbin/adduser /usr/sbin/deluser /usr/sbin/chkconfig; do
	[ -e "$f" ] && mount --bind %[1]s/dev/null %[1]s$f
done
exec "$@"`, root)
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", setup, "sh"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// rootUser returns the service user's uid in root, failing unless it is a
// system account that cannot log in.
func rootUser(t *testing.T, root string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] != User {
			continue
		}
		uid, _ := strconv.Atoi(f[2])
		if uid <= 0 || uid >= 1000 || !strings.HasSuffix(f[6], "nologin") {
			t.Errorf("service user %q: want a system uid and a nologin shell", line)
		}
		return uid
	}
	t.Fatalf("no user %s in the scratch root:\n%s", User, b)
	return 0
}

// at is where path in root is on this machine outside inRoot: what the
// package put under /usr is in the overlay's upper directory.
func at(root, path string) string {
	if rest, ok := strings.CutPrefix(path, "/usr/"); ok {
		return filepath.Join(root+".usr/upper", rest)
	}
	return filepath.Join(root, path)
}

func writeIn(t *testing.T, root, path, body string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, path), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeFileMode(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}
