// Package kmod reads Linux kernel modules' metadata and loads modules in
// dependency order, without modules.dep, depmod or modprobe.
//
// The image builder uses it on the host to pick a board's modules and write a
// small index into the initramfs; the appliance uses it at boot to load them
// (and to act as the kernel's modprobe), so it must stay pure Go and small.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Info is what a module's .modinfo section says about it.
type Info struct {
	Name     string   // module name, with '-' turned into '_'
	Depends  []string // modules that must be loaded first (hard dependencies)
	SoftPre  []string // modules or aliases modprobe loads before this one
	SoftPost []string // modules or aliases modprobe loads after this one
	Aliases  []string // glob patterns of device modaliases and other names
}

// ParseModinfo parses the raw bytes of a .modinfo section: NUL-separated
// key=value strings, possibly padded with extra NULs.
func ParseModinfo(data []byte) (Info, error) {
	var info Info
	for _, field := range bytes.Split(data, []byte{0}) {
		if len(field) == 0 {
			continue
		}
		key, value, ok := strings.Cut(string(field), "=")
		if !ok {
			// Old kernels put a few bare words here; they carry nothing we use.
			continue
		}
		switch key {
		case "name":
			if value == "" || strings.ContainsAny(value, "/ \t") {
				return Info{}, fmt.Errorf("modinfo name=%q is not a module name", value)
			}
			info.Name = Normalize(value)
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info.Depends = append(info.Depends, Normalize(d))
				}
			}
		case "softdep":
			pre, post, err := parseSoftdep(value)
			if err != nil {
				return Info{}, err
			}
			info.SoftPre = append(info.SoftPre, pre...)
			info.SoftPost = append(info.SoftPost, post...)
		case "alias":
			if value != "" {
				info.Aliases = append(info.Aliases, value)
			}
		}
	}
	return info, nil
}

// parseSoftdep parses "pre: a b post: c" (either part optional).
func parseSoftdep(value string) (pre, post []string, err error) {
	var into *[]string
	for _, word := range strings.Fields(value) {
		switch word {
		case "pre:":
			into = &pre
		case "post:":
			into = &post
		default:
			if into == nil {
				return nil, nil, fmt.Errorf("modinfo softdep=%q: %q comes before the pre: or post: keyword", value, word)
			}
			*into = append(*into, word)
		}
	}
	return pre, post, nil
}

// Normalize turns a module name as written in file names or softdeps
// (bcm2835-rng) into the kernel's form (bcm2835_rng).
func Normalize(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

// ReadInfo reads the .modinfo section of the module file at path. A module
// without a name= field is named after its file.
func ReadInfo(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return Info{}, fmt.Errorf("%s: not a kernel module (ELF): %w", path, err)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("%s: no .modinfo section: not a kernel module", path)
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("%s: reading .modinfo: %w", path, err)
	}
	info, err := ParseModinfo(data)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", path, err)
	}
	if info.Name == "" {
		info.Name = Normalize(strings.TrimSuffix(filepath.Base(path), ".ko"))
	}
	return info, nil
}
