package appliance

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// mount is one file system PID 1 mounts before anything else.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// earlyMounts are the kernel's interfaces and the RAM-backed scratch space.
// The root file system is the initramfs itself.
func earlyMounts() []mount {
	const nosuid, nodev, noexec = unix.MS_NOSUID, unix.MS_NODEV, unix.MS_NOEXEC
	return []mount{
		{"proc", "/proc", "proc", nosuid | nodev | noexec, ""},
		{"sysfs", "/sys", "sysfs", nosuid | nodev | noexec, ""},
		// Debian's kernels have no DEVTMPFS_MOUNT: the nodes appear only here.
		{"devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", nosuid | noexec, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777"},
	}
}

// mountEarly mounts earlyMounts, going on past failures so that one missing
// file system does not keep the rest from working; it returns every failure.
func mountEarly() error {
	var errs []error
	for _, m := range earlyMounts() {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.target, err))
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) { // EBUSY: already mounted
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// openConsole makes fds 0-2 the console. The kernel opens /dev/console for
// init only if the node exists in the initramfs; with devtmpfs mounted it
// always does.
func openConsole() (*os.File, error) {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/console: %w", err)
	}
	for i := 0; i <= 2; i++ {
		if i == fd {
			continue
		}
		if err := unix.Dup3(fd, i, 0); err != nil {
			return nil, fmt.Errorf("dup console to fd %d: %w", i, err)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	} else {
		// It is one of 0-2 itself: it must survive exec like the others.
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	return os.NewFile(2, "/dev/console"), nil
}

// connLimit is the open-file limit for the Connector: 100,000 relayed
// connections each hold a public and an agent socket, plus the idle pooled
// agent connections and listeners, with room to spare.
const connLimit = 1 << 18 // 262,144

// raiseFileLimits raises the kernel's per-process and system-wide ceilings
// if they are below connLimit, then RLIMIT_NOFILE, which the Connector
// inherits. syscall.Setrlimit (not x/sys) also tells the Go runtime not to
// lower the limit again for children.
func raiseFileLimits() error {
	var errs []error
	for _, p := range []string{"/proc/sys/fs/nr_open", "/proc/sys/fs/file-max"} {
		if err := raiseSysctl(p, connLimit*2); err != nil {
			errs = append(errs, err)
		}
	}
	lim := syscall.Rlimit{Cur: connLimit, Max: connLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		errs = append(errs, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", connLimit, err))
	}
	return errors.Join(errs...)
}

func raiseSysctl(path string, atLeast uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var cur uint64
	fmt.Sscan(strings.TrimSpace(string(b)), &cur)
	if cur >= atLeast {
		return nil
	}
	if err := os.WriteFile(path, []byte(fmt.Sprint(atLeast)), 0o644); err != nil {
		return fmt.Errorf("raise %s from %d to %d: %w", path, cur, atLeast, err)
	}
	return nil
}

// installModprobe makes the kernel's own module requests (file systems,
// nftables expressions, crypto) run this binary as "modprobe": the kernel
// runs the path in /proc/sys/kernel/modprobe, and main dispatches on the
// name it was run under.
func installModprobe(self string) error {
	const link = "/sbin/modprobe"
	if err := os.MkdirAll("/sbin", 0o755); err != nil {
		return fmt.Errorf("install modprobe: %w", err)
	}
	os.Remove(link)
	if err := os.Symlink(self, link); err != nil {
		return fmt.Errorf("install modprobe: %w", err)
	}
	if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte(link), 0o644); err != nil {
		return fmt.Errorf("point the kernel at %s: %w", link, err)
	}
	return nil
}

// Cmdline is the kernel command line's key=value words (bare words map to
// "").
type Cmdline map[string]string

// ParseCmdline splits /proc/cmdline. Quoted values ("a b") keep their
// spaces, as the kernel does.
func ParseCmdline(s string) Cmdline {
	c := Cmdline{}
	var word strings.Builder
	quoted := false
	flush := func() {
		if word.Len() == 0 {
			return
		}
		k, v, _ := strings.Cut(word.String(), "=")
		c[k] = v
		word.Reset()
	}
	for i := 0; i < len(s); i++ { // bytes: the kernel does not care for UTF-8
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case !quoted && (c == ' ' || c == '\n' || c == '\t'):
			flush()
		default:
			word.WriteByte(c)
		}
	}
	flush()
	return c
}

// Bool reports whether key is set to a true value ("1", "true", "yes", or
// present bare).
func (c Cmdline) Bool(key string) bool {
	v, ok := c[key]
	if !ok {
		return false
	}
	switch strings.ToLower(v) {
	case "", "1", "true", "yes", "on":
		return true
	}
	return false
}
