package kmod

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// elfModule returns a minimal little-endian ELF64 relocatable file whose only
// content is a .modinfo section holding fields, NUL-separated.
func elfModule(fields ...string) []byte {
	modinfo := []byte(strings.Join(fields, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(modinfo)
	shOff := (strOff + len(shstrtab) + 7) &^ 7

	var b bytes.Buffer
	le := binary.LittleEndian
	ident := [16]byte{0x7f, 'E', 'L', 'F', 2 /*64-bit*/, 1 /*LE*/, 1 /*version*/}
	b.Write(ident[:])
	for _, v := range []any{
		uint16(1), uint16(62), uint32(1), uint64(0), uint64(0), uint64(shOff), uint32(0),
		uint16(ehsize), uint16(0), uint16(0), uint16(shentsize), uint16(3), uint16(2),
	} {
		_ = binary.Write(&b, le, v)
	}
	b.Write(modinfo)
	b.Write(shstrtab)
	for b.Len() < shOff {
		b.WriteByte(0)
	}
	section := func(name, typ uint32, off, size int) {
		for _, v := range []any{name, typ, uint64(0), uint64(0), uint64(off), uint64(size), uint32(0), uint32(0), uint64(1), uint64(0)} {
			_ = binary.Write(&b, le, v)
		}
	}
	section(0, 0, 0, 0)
	section(1, 1 /*PROGBITS*/, infoOff, len(modinfo))
	section(10, 3 /*STRTAB*/, strOff, len(shstrtab))
	return b.Bytes()
}

// writeTree writes synthetic modules under a temporary modules directory.
func writeTree(t *testing.T, mods map[string][]string) string {
	t.Helper()
	dir := t.TempDir()
	for file, fields := range mods {
		p := filepath.Join(dir, filepath.FromSlash(file))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, elfModule(fields...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestParseModinfo(t *testing.T) {
	data := []byte("license=GPL\x00name=bcm2835-rng\x00depends=rng-core,of\x00softdep=pre: crc32c post: nft_reject\x00alias=of:N*T*Cbrcm,bcm2835-rng\x00alias=of:N*T*Cbrcm,bcm2835-rngC*\x00\x00\x00")
	got, err := ParseModinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	want := Info{
		Name:     "bcm2835_rng",
		Depends:  []string{"rng_core", "of"},
		SoftPre:  []string{"crc32c"},
		SoftPost: []string{"nft_reject"},
		Aliases:  []string{"of:N*T*Cbrcm,bcm2835-rng", "of:N*T*Cbrcm,bcm2835-rngC*"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"softdep=crc32c", "name=a/b"} {
		if _, err := ParseModinfo([]byte(bad)); err == nil {
			t.Errorf("ParseModinfo(%q) accepted malformed input", bad)
		}
	}
}

func TestReadInfoSyntheticELF(t *testing.T) {
	dir := writeTree(t, map[string][]string{"x/nameless-mod.ko": {"depends=a"}})
	info, err := ReadInfo(filepath.Join(dir, "x/nameless-mod.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "nameless_mod" || !slices.Equal(info.Depends, []string{"a"}) {
		t.Fatalf("module without name= read as %+v; want name from the file and depends=[a]", info)
	}
	junk := filepath.Join(dir, "junk.ko")
	if err := os.WriteFile(junk, []byte("not elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadInfo(junk); err == nil || !strings.Contains(err.Error(), junk) {
		t.Fatalf("a non-ELF file gave %v; want an error naming the file", err)
	}
}

func syntheticIndex(t *testing.T) *Index {
	t.Helper()
	dir := writeTree(t, map[string][]string{
		"kernel/net/nf_tables.ko":      {"name=nf_tables", "depends=nfnetlink,libcrc32c", "softdep=pre: crc32c", "alias=nfnetlink-subsys-10"},
		"kernel/net/nfnetlink.ko":      {"name=nfnetlink", "depends="},
		"kernel/lib/libcrc32c.ko":      {"name=libcrc32c", "depends="},
		"kernel/crypto/crc32c_gen.ko":  {"name=crc32c_generic", "alias=crypto-crc32c", "alias=crc32c"},
		"kernel/arch/crc32c-intel.ko":  {"name=crc32c_intel", "alias=crc32c", "alias=cpu:type:x86,ven*fam*mod*:feature:*0094*"},
		"kernel/net/nft_ct.ko":         {"name=nft_ct", "depends=nf_tables,nf_conntrack", "alias=nft-expr-ct"},
		"kernel/net/nf_conntrack.ko":   {"name=nf_conntrack", "depends=nf_defrag_ipv4"},
		"kernel/net/nf_defrag_ipv4.ko": {"name=nf_defrag_ipv4"},
		"kernel/a.ko":                  {"name=a", "softdep=post: b"},
		"kernel/b.ko":                  {"name=b", "softdep=pre: a"},
		"kernel/broken.ko":             {"name=broken", "depends=gone"},
		"kernel/opt.ko":                {"name=opt", "softdep=pre: nothing-provides-this"},
		"kernel/drivers/e1000.ko":      {"name=e1000", "alias=pci:v00008086d0000100Esv*sd*bc*sc*i*"},
		"kernel/fs/vfat.ko":            {"name=vfat", "alias=fs-vfat"},
	})
	// modules.builtin is text, not ELF.
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/char/hw_random/rng-core.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func before(order []string, a, b string) bool {
	i, j := slices.Index(order, a), slices.Index(order, b)
	return i >= 0 && j >= 0 && i < j
}

func TestClosureOrder(t *testing.T) {
	ix := syntheticIndex(t)
	order, err := ix.Closure("nft-expr-ct")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{
		{"crc32c_generic", "nf_tables"}, {"crc32c_intel", "nf_tables"}, {"libcrc32c", "nf_tables"},
		{"nfnetlink", "nf_tables"}, {"nf_tables", "nft_ct"}, {"nf_defrag_ipv4", "nf_conntrack"}, {"nf_conntrack", "nft_ct"},
	} {
		if !before(order, p[0], p[1]) {
			t.Errorf("load order %v: want %s before %s", order, p[0], p[1])
		}
	}
	if len(order) != 8 {
		t.Errorf("load order %v: want exactly 8 modules", order)
	}

	// A softdep cycle terminates, and post: comes after.
	order, err = ix.Closure("a")
	if err != nil || !slices.Equal(order, []string{"a", "b"}) {
		t.Errorf("softdep cycle: got %v, %v; want [a b]", order, err)
	}
	// A missing soft dependency is skipped, a missing hard one is an error naming both.
	if order, err := ix.Closure("opt"); err != nil || !slices.Equal(order, []string{"opt"}) {
		t.Errorf("optional softdep: got %v, %v", order, err)
	}
	if _, err := ix.Closure("broken"); err == nil || !strings.Contains(err.Error(), "broken needs") || !strings.Contains(err.Error(), "gone") {
		t.Errorf("missing dependency gave %v; want an error naming broken and gone", err)
	}
	// Builtins need nothing; dashes and underscores are the same name.
	if order, err := ix.Closure("rng-core"); err != nil || len(order) != 0 {
		t.Errorf("builtin: got %v, %v; want nothing to load", order, err)
	}
	if order, err := ix.Closure("nf-defrag-ipv4"); err != nil || !slices.Equal(order, []string{"nf_defrag_ipv4"}) {
		t.Errorf("dashed name: got %v, %v", order, err)
	}
}

func TestMatchAlias(t *testing.T) {
	ix := syntheticIndex(t)
	cases := map[string][]string{
		"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00": {"e1000"},
		"pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00": nil,
		"fs-vfat": {"vfat"},
		"crc32c":  {"crc32c_generic", "crc32c_intel"},
		"cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094,00C0": {"crc32c_intel"},
	}
	for in, want := range cases {
		if got := ix.MatchAlias(in); !slices.Equal(got, want) {
			t.Errorf("MatchAlias(%q) = %v; want %v", in, got, want)
		}
	}
}

func TestIndexRoundTripAndSubset(t *testing.T) {
	ix := syntheticIndex(t)
	order, err := ix.Closure("nft_ct", "vfat")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ix.Subset(order, order)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sub.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadIndex(&buf)
	if err != nil {
		t.Fatal(err)
	}
	again, err := back.Closure(back.Load...)
	if err != nil || !slices.Equal(again, order) {
		t.Fatalf("closure from the written index = %v, %v; want %v", again, err, order)
	}
	if _, ok := back.Module("e1000"); ok {
		t.Error("subset kept a module that was not asked for")
	}
	if _, err := ReadIndex(strings.NewReader(`{"modules":[{"name":"x","file":"../../etc/x.ko"}]}`)); err == nil {
		t.Error("an index pointing outside its directory was accepted")
	}
}

func TestModaliasesAndModprobeArgs(t *testing.T) {
	sys := t.TempDir()
	for dev, alias := range map[string]string{
		"bus/pci/devices/0000:00:03.0":    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n",
		"bus/pci/devices/0000:00:04.0":    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n",
		"bus/virtio/devices/virtio0":      "virtio:d00000001v00001AF4\n",
		"bus/platform/devices/serial8250": "",
	} {
		if err := os.MkdirAll(filepath.Join(sys, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, dev, "modalias"), []byte(alias), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Modaliases(sys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "virtio:d00000001v00001AF4"}
	if !slices.Equal(got, want) {
		t.Fatalf("Modaliases = %q; want %q", got, want)
	}

	for _, c := range []struct {
		args         []string
		name, params string
	}{
		{[]string{"-q", "--", "fs-vfat"}, "fs-vfat", ""},
		{[]string{"-q", "nft-expr-ct"}, "nft-expr-ct", ""},
		{[]string{"--", "-odd-name", "debug=1", "x=2"}, "-odd-name", "debug=1 x=2"},
	} {
		n, p, err := ParseModprobeArgs(c.args)
		if err != nil || n != c.name || p != c.params {
			t.Errorf("ParseModprobeArgs(%q) = %q, %q, %v", c.args, n, p, err)
		}
	}
	if _, _, err := ParseModprobeArgs([]string{"-q"}); err == nil {
		t.Error("modprobe without a name was accepted")
	}
}
