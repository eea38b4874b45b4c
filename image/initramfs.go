package image

import (
	"bytes"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/kmod"
	"github.com/u-root/u-root/pkg/cpio"
)

// Initramfs is a built initramfs and what went into it.
type Initramfs struct {
	Data         []byte   // gzip-compressed newc cpio
	Uncompressed int64    // bytes of cpio before compression
	BinaryBytes  int64    // our binary (/init)
	ModuleBytes  int64    // the .ko files
	Modules      []string // every module carried, in load order
	Boot         []string // the ones loaded whatever the hardware, in load order
}

// BuildInitramfs makes the initramfs: binary as /init (and /sbin/modprobe,
// a link to it), /dev/console and /dev/null, the board's modules with
// everything they need and the index the appliance loads them by. Records
// are sorted and carry no times or owners, so the same inputs give the same
// bytes.
//
// Compression is gzip: the kernels take xz too, but under QEMU's emulation
// xz decompression costs seconds per boot where gzip costs a fraction.
func BuildInitramfs(binary string, k Kernel, b Board, extra ...File) (*Initramfs, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("reading the binary for /init: %w", err)
	}
	ix, err := kmod.Scan(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	boot, err := ix.Closure(b.Modules...)
	if err != nil {
		return nil, fmt.Errorf("board %s, kernel %s: %w", b.Name, k.ABI, err)
	}
	want := slices.Concat(b.Modules, b.Drivers)
	for _, m := range b.Optional {
		if _, err := ix.Resolve(m); err == nil {
			want = append(want, m)
		}
	}
	order, err := ix.Closure(want...)
	if err != nil {
		return nil, fmt.Errorf("board %s, kernel %s: %w", b.Name, k.ABI, err)
	}

	out := &Initramfs{BinaryBytes: int64(len(bin)), Modules: order, Boot: boot}
	recs := map[string]cpio.Record{}
	add := func(r cpio.Record) {
		for d := path.Dir(r.Name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := recs[d]; !ok {
				recs[d] = cpio.Directory(d, 0o755)
			}
		}
		recs[r.Name] = r
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "boot", "etc", "root", "var"} {
		add(cpio.Directory(d, 0o755))
	}
	add(cpio.Directory("tmp", 0o1777))
	add(cpio.StaticRecord(bin, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}))
	add(cpio.Symlink("sbin/modprobe", "/init"))
	add(cpio.CharDev("dev/console", 0o600, 5, 1))
	add(cpio.CharDev("dev/null", 0o666, 1, 3))
	for _, f := range extra {
		add(cpio.StaticRecord(f.Data, cpio.Info{Name: f.Path, Mode: cpio.S_IFREG | 0o644}))
	}

	// Module files live under lib/modules/<abi>/ as in a normal system; the
	// index sits beside them at kmod.IndexFile with paths relative to it.
	mods := make([]kmod.Module, 0, len(order))
	for _, name := range order {
		m, _ := ix.Module(name)
		data, err := os.ReadFile(filepath.Join(k.ModulesDir, filepath.FromSlash(m.File)))
		if err != nil {
			return nil, fmt.Errorf("reading module %s: %w", name, err)
		}
		m.File = path.Join(k.ABI, m.File)
		mods = append(mods, m)
		out.ModuleBytes += int64(len(data))
		add(cpio.StaticRecord(data, cpio.Info{Name: "lib/modules/" + m.File, Mode: cpio.S_IFREG | 0o644}))
	}
	sub, err := kmod.NewIndex(k.ABI, mods, ix.Builtin)
	if err != nil {
		return nil, err
	}
	sub.Load = boot
	var idx bytes.Buffer
	if err := sub.Write(&idx); err != nil {
		return nil, err
	}
	add(cpio.StaticRecord(idx.Bytes(), cpio.Info{Name: strings.TrimPrefix(kmod.IndexFile, "/"), Mode: cpio.S_IFREG | 0o644}))

	names := make([]string, 0, len(recs))
	for n := range recs {
		names = append(names, n)
	}
	slices.Sort(names) // a parent sorts before its children

	var raw bytes.Buffer
	w := cpio.Newc.Writer(&raw)
	for i, n := range names {
		r := cpio.MakeReproducible(recs[n])
		r.Ino = uint64(i + 1) // distinct, stable inode numbers
		r.NLink = 1
		if err := w.WriteRecord(r); err != nil {
			return nil, fmt.Errorf("writing initramfs record %s: %w", n, err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, err
	}
	out.Uncompressed = int64(raw.Len())

	var z bytes.Buffer
	zw, err := gzip.NewWriterLevel(&z, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	out.Data = z.Bytes()
	return out, nil
}
