package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/image"
)

// Debian is the Debian bookworm test system that scripts/debian-vm.sh builds
// from Debian's own packages (systemd as init, Debian's kernel and
// initramfs-tools), for testing the .deb where users install it.
type Debian struct {
	// Dir holds root.img (ext4, the whole system), vmlinuz, initrd.img.
	Dir string
}

// DebianTools says which host programs building and preparing the Debian
// system needs and are missing, or nil.
func DebianTools() error {
	var missing []string
	for _, t := range []struct{ prog, pkg string }{
		{"debootstrap", "debootstrap"}, {"mke2fs", "e2fsprogs"}, {"debugfs", "e2fsprogs"},
		{"flock", "util-linux"}, {"chroot", "coreutils"},
	} {
		if _, err := exec.LookPath(t.prog); err != nil {
			missing = append(missing, t.prog+" (apt-get install "+t.pkg+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run scripts/install-test-deps.sh", strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("building the Debian test system needs root (debootstrap)")
	}
	return nil
}

// BuildDebian returns the Debian system cached under cacheDir, building it
// first with scripts/debian-vm.sh when the cache has no build of the current
// recipe (a few minutes; the script's progress goes to log).
func BuildDebian(ctx context.Context, cacheDir string, log io.Writer) (*Debian, error) {
	if err := DebianTools(); err != nil {
		return nil, err
	}
	root, err := image.RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("finding scripts/debian-vm.sh: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "debian-vm.sh"), cacheDir)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if log != nil {
		cmd.Stderr = log
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/debian-vm.sh %s: %w", cacheDir, err)
	}
	d := &Debian{Dir: strings.TrimSpace(stdout.String())}
	for _, f := range []string{"root.img", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(d.Dir, f)); err != nil {
			return nil, fmt.Errorf("the Debian system in %q is incomplete: %w", d.Dir, err)
		}
	}
	return d, nil
}

// DiskFile is a host file to put into a disk made by Disk.
type DiskFile struct {
	Src  string // on the host
	Dst  string // absolute path in the guest; its directory must exist
	Mode os.FileMode
}

// Disk writes a private copy of the system's disk to dst (sparse, so it
// takes the space of what is used) with files added, owned by root. The
// cached image itself is never booted, so it stays as built.
func (d *Debian) Disk(dst string, files ...DiskFile) error {
	if out, err := exec.Command("cp", "--sparse=always", "--reflink=auto", filepath.Join(d.Dir, "root.img"), dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying the Debian disk: %v: %s", err, out)
	}
	if len(files) == 0 {
		return nil
	}
	var cmds strings.Builder
	for _, f := range files {
		if !filepath.IsAbs(f.Dst) || strings.ContainsAny(f.Dst+f.Src, "\"\n") {
			return fmt.Errorf("disk file %q -> %q: want an absolute guest path and no quotes", f.Src, f.Dst)
		}
		fmt.Fprintf(&cmds, "cd \"%s\"\nwrite \"%s\" \"%s\"\n", filepath.Dir(f.Dst), f.Src, filepath.Base(f.Dst))
		fmt.Fprintf(&cmds, "sif \"%s\" mode 0%o\nsif \"%s\" uid 0\nsif \"%s\" gid 0\n", f.Dst, 0o100000|f.Mode.Perm(), f.Dst, f.Dst)
	}
	cmd := exec.Command("debugfs", "-w", "-f", "-", dst)
	cmd.Stdin = strings.NewReader(cmds.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs writing files into %s: %v: %s", dst, err, out)
	}
	// debugfs reports most failures on its output and exits 0.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "debugfs") || strings.TrimSpace(line) == "" || strings.HasPrefix(line, "Allocated inode") {
			continue
		}
		return fmt.Errorf("debugfs writing files into %s: %s", dst, out)
	}
	return nil
}

// Boot is what QEMU loads to boot the system with its disk as /dev/vda:
// Debian's kernel (unpacked, and cached in cacheDir, as for the appliance)
// and initramfs, a serial console, and cmdline appended.
func (d *Debian) Boot(cacheDir, cmdline string) (*Boot, error) {
	bz, err := os.ReadFile(filepath.Join(d.Dir, "vmlinuz"))
	if err != nil {
		return nil, err
	}
	elf, err := cachedVmlinux(bz, cacheDir)
	if err != nil {
		return nil, fmt.Errorf("%s/vmlinuz: %w", d.Dir, err)
	}
	initrd, err := os.ReadFile(filepath.Join(d.Dir, "initrd.img"))
	if err != nil {
		return nil, err
	}
	return &Boot{Kernel: elf, Initrd: initrd, Cmdline: strings.TrimSpace("root=/dev/vda console=ttyS0,115200 " + cmdline)}, nil
}
