// Package image builds the appliance's disk images: a deterministic
// initramfs carrying our binary and the board's kernel modules, and a FAT
// boot partition holding the kernel (a unified kernel image on x86, the Pi
// firmware and DTBs on the Pi), the user's config, tls/ and state/.
//
// Kernels and firmware come from Debian packages that scripts/fetch.sh puts
// in a cache directory; the cache's manifest says which ones.
package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Cache is the directory scripts/fetch.sh fills (make fetch).
type Cache struct {
	Dir string
}

// DefaultCacheDir returns $IOFOG_CACHE, or the .cache directory at the root
// of the source tree that contains the working directory.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("IOFOG_CACHE"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("finding the kernel cache: set IOFOG_CACHE or run from the source tree: %w", err)
	}
	return filepath.Join(root, ".cache"), nil
}

// RepoRoot returns the nearest directory at or above the working directory
// holding a go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Kernel is one fetched Debian kernel.
type Kernel struct {
	ABI        string // uname -r, e.g. 6.1.0-56-arm64
	Image      string // vmlinuz: a bzImage on amd64, an uncompressed Image on arm64
	ModulesDir string // lib/modules/<ABI>
	Config     string // the kernel's build config
}

// Kernel returns the fetched kernel for a Debian architecture (amd64, arm64).
func (c Cache) Kernel(debArch string) (Kernel, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, debArch, "kernel.abi"))
	if err != nil {
		return Kernel{}, c.missing(debArch+" kernel", err)
	}
	abi := strings.TrimSpace(string(b))
	k := Kernel{
		ABI:        abi,
		Image:      filepath.Join(c.Dir, debArch, "boot", "vmlinuz-"+abi),
		ModulesDir: filepath.Join(c.Dir, debArch, "lib", "modules", abi),
		Config:     filepath.Join(c.Dir, debArch, "boot", "config-"+abi),
	}
	for _, p := range []string{k.Image, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, c.missing(debArch+" kernel", err)
		}
	}
	return k, nil
}

// File returns the path of a cached file (slash-separated, relative to the
// cache), failing with a hint when it is not there.
func (c Cache) File(rel string) (string, error) {
	p := filepath.Join(c.Dir, filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		return "", c.missing(rel, err)
	}
	return p, nil
}

// UKIStub returns systemd-boot's EFI stub for the architecture.
func (c Cache) UKIStub(debArch string) (string, error) {
	name := map[string]string{"amd64": "linuxx64.efi.stub", "arm64": "linuxaa64.efi.stub"}[debArch]
	return c.File(debArch + "/usr/lib/systemd/boot/efi/" + name)
}

// RaspiFirmwareDir is where bootcode.bin, start*.elf and fixup*.dat are.
func (c Cache) RaspiFirmwareDir() (string, error) { return c.File("arm64/usr/lib/raspi-firmware") }

// DTBDir is where the arm64 kernel's Broadcom device trees are.
func (c Cache) DTBDir(k Kernel) (string, error) {
	return c.File("arm64/usr/lib/linux-image-" + k.ABI + "/broadcom")
}

// OVMF returns the x86 UEFI firmware code and variable-store template.
func (c Cache) OVMF() (code, vars string, err error) {
	if code, err = c.File("all/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
		return "", "", err
	}
	vars, err = c.File("all/usr/share/OVMF/OVMF_VARS_4M.fd")
	return code, vars, err
}

// Manifest returns the cache's manifest: which packages, versions and .deb
// checksums everything came from.
func (c Cache) Manifest() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, "manifest.txt"))
	if err != nil {
		return nil, c.missing("manifest.txt", err)
	}
	return b, nil
}

func (c Cache) missing(what string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s not in the kernel cache %s: run make fetch (scripts/fetch.sh %s): %w", what, c.Dir, c.Dir, err)
	}
	return fmt.Errorf("kernel cache %s: %s: %w", c.Dir, what, err)
}
