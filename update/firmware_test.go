package update

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

func TestLoadOptionEncoding(t *testing.T) {
	o := LoadOption{Active: true, Description: "ioFog Connector A",
		Disk: HardDrive{Number: 1, Start: 2048, Size: 147456, GUID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
		Path: `\EFI\iofog\A.efi`}
	b := o.Marshal()
	// The layout UEFI specifies: attributes, device path length,
	// description in UCS-2, hard drive node (42 bytes), file node, end node.
	descLen := 2 * (len(o.Description) + 1)
	fileLen := 4 + 2*(len(o.Path)+1)
	if got := binary.LittleEndian.Uint32(b); got != 1 {
		t.Errorf("attributes %#x", got)
	}
	if got := int(binary.LittleEndian.Uint16(b[4:])); got != 42+fileLen+4 {
		t.Errorf("device path length %d, want %d", got, 42+fileLen+4)
	}
	dp := b[6+descLen:]
	if dp[0] != 4 || dp[1] != 1 || binary.LittleEndian.Uint16(dp[2:]) != 42 || dp[40] != 2 || dp[41] != 2 {
		t.Errorf("hard drive node % x", dp[:42])
	}
	if f := dp[42:]; f[0] != 4 || f[1] != 4 || int(binary.LittleEndian.Uint16(f[2:])) != fileLen {
		t.Errorf("file node % x", f[:4])
	}
	if end := b[len(b)-4:]; !bytes.Equal(end, []byte{0x7f, 0xff, 4, 0}) {
		t.Errorf("end node % x", end)
	}
	back, err := ParseLoadOption(b)
	if err != nil || back != o {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for n := 0; n < len(b); n++ {
		ParseLoadOption(b[:n]) // must not panic on a short variable
	}
}

// writeVar as the firmware would: attributes then value.
func fwVar(t *testing.T, dir, name string, value []byte) {
	t.Helper()
	data := binary.LittleEndian.AppendUint32(nil, efiVarAttrs)
	if err := os.WriteFile(filepath.Join(dir, varName(name)), append(data, value...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readU16s(t *testing.T, e *EFI, name string) []uint16 {
	t.Helper()
	b, err := e.readVar(name)
	if err != nil {
		t.Fatal(err)
	}
	return u16s(b)
}

// The x86 slots against a directory laid out as efivarfs and one as the
// ESP: entries made on first boot, BootNext for the trial, BootOrder
// switched at the commit, firmware entries kept.
func TestEFISlots(t *testing.T) {
	vars, esp := t.TempDir(), t.TempDir()
	disk := HardDrive{Number: 1, Start: 2048, Size: 147456, GUID: [16]byte{9: 9}}
	// The firmware's own entry, as OVMF makes one for the disk.
	fwVar(t, vars, "Boot0000", LoadOption{Active: true, Description: "UEFI QEMU HARDDISK", Path: `\EFI\BOOT\BOOTX64.EFI`, Disk: disk}.Marshal())
	fwVar(t, vars, "BootOrder", u16bytes([]uint16{0}))
	fwVar(t, vars, "BootCurrent", u16bytes([]uint16{0}))
	e := &EFI{Vars: vars, ESP: esp, Disk: disk}

	running, def, err := e.State()
	if err != nil || running != "" || def != SlotA {
		t.Fatalf("fresh box: running %q default %q: %v", running, def, err)
	}
	if got := readU16s(t, e, "BootOrder"); len(got) != 3 || got[2] != 0 {
		t.Fatalf("BootOrder %v: want the two slots, then the firmware's entry", got)
	}
	b1, _ := e.readVar("Boot0001")
	if o, err := ParseLoadOption(b1); err != nil || o.Path != `\EFI\iofog\A.efi` || o.Disk != disk || !o.Active {
		t.Fatalf("Boot0001 %+v %v", o, err)
	}

	key := testKey(t)
	bundle := filepath.Join(t.TempDir(), "b.tar")
	var buf bytes.Buffer
	Write(&buf, key, "v2", "x86_64", time.Unix(0, 0), []SourceFile{{UKIFile, []byte("MZ new system")}})
	os.WriteFile(bundle, buf.Bytes(), 0o644)
	u := &Updater{FW: e, Record: filepath.Join(t.TempDir(), RecordFile), Keys: []PublicKey{Public(key)}, Board: "x86_64", Version: "v1"}
	if act, _, err := u.Boot(time.Now()); err != nil || act != ActionRun {
		t.Fatal(act, err)
	}
	if _, slot, err := u.Apply(context.Background(), bundle, false, nil); err != nil || slot != SlotB {
		t.Fatal(slot, err)
	}
	if got, _ := os.ReadFile(filepath.Join(esp, "EFI", "iofog", "B.efi")); string(got) != "MZ new system" {
		t.Fatalf("B.efi %q", got)
	}
	next := readU16s(t, e, "BootNext")
	order := readU16s(t, e, "BootOrder")
	if len(next) != 1 || next[0] != 2 || order[0] != 1 {
		t.Fatalf("after apply: BootNext %v BootOrder %v", next, order)
	}
	// The firmware boots BootNext once and deletes it.
	os.Remove(filepath.Join(vars, varName("BootNext")))
	fwVar(t, vars, "BootCurrent", u16bytes([]uint16{2}))
	u.Version = "v2"
	if act, _, err := u.Boot(time.Now()); err != nil || act != ActionProve {
		t.Fatalf("trial boot: %v %v", act, err)
	}
	if err := u.Commit(time.Now()); err != nil {
		t.Fatal(err)
	}
	if order := readU16s(t, e, "BootOrder"); order[0] != 2 || order[1] != 1 || order[2] != 0 {
		t.Fatalf("after commit BootOrder %v", order)
	}
	if running, def, _ := e.State(); running != SlotB || def != SlotB {
		t.Fatalf("after commit: running %s default %s", running, def)
	}
}

func TestGPTPartition(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.img")
	d, err := diskfs.Create(p, 8<<20, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 4095, Type: gpt.EFISystemPartition, GUID: "8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E002"},
		{Index: 2, Start: 4096, End: 8191, Type: gpt.LinuxFilesystem, GUID: "8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E003"},
	}}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	d.Close()
	h, err := GPTPartition(p, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Mixed-endian on disk: the first three fields little-endian.
	want := [16]byte{0x59, 0x7a, 0x6e, 0x8c, 0x1c, 0x4b, 0x57, 0x4f, 0x9d, 0x0a, 0x10, 0xf0, 0xc0, 0xc0, 0xe0, 0x02}
	if h.Number != 1 || h.Start != 2048 || h.Size != 2048 || h.GUID != want {
		t.Fatalf("partition 1: %+v", h)
	}
	if _, err := GPTPartition(p, 200); err == nil {
		t.Fatal("partition 200 found")
	}
}

// The Pi's slots on a directory laid out as its boot partition: the
// trial goes to B through tryboot.txt, the commit rewrites config.txt in
// place at its fixed size.
func TestRaspiSlots(t *testing.T) {
	boot, dt := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(boot, RaspiConfig), RaspiConfigTxt(SlotA), 0o644)
	os.WriteFile(filepath.Join(boot, RaspiTryboot), RaspiConfigTxt(SlotA), 0o644)
	os.MkdirAll(filepath.Join(boot, "B"), 0o755)
	os.WriteFile(filepath.Join(boot, "B", "stale.dtb"), []byte("old"), 0o644)
	p := &Raspi{Boot: boot, DeviceTree: dt}
	key := testKey(t)
	bundle := filepath.Join(t.TempDir(), "b.tar")
	var buf bytes.Buffer
	Write(&buf, key, "v2", "rpi", time.Unix(0, 0), []SourceFile{{RaspiKernel, []byte("kernel")}, {RaspiInitrd, []byte("initrd")}, {"bcm2711-rpi-4-b.dtb", []byte("dtb")}})
	os.WriteFile(bundle, buf.Bytes(), 0o644)
	u := &Updater{FW: p, Record: filepath.Join(t.TempDir(), RecordFile), Keys: []PublicKey{Public(key)}, Board: "rpi", Version: "v1"}
	if _, _, err := u.Boot(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, slot, err := u.Apply(context.Background(), bundle, false, nil); err != nil || slot != SlotB {
		t.Fatal(slot, err)
	}
	if _, err := os.Stat(filepath.Join(boot, "B", "stale.dtb")); !os.IsNotExist(err) {
		t.Error("a file of the old system stayed in the slot")
	}
	if got, _ := os.ReadFile(filepath.Join(boot, "B", RaspiInitrd)); string(got) != "initrd" {
		t.Fatalf("B/initrd.gz %q", got)
	}
	if s, _ := p.readSlot(RaspiTryboot); s != SlotB {
		t.Fatalf("tryboot.txt names %s", s)
	}
	if s, _ := p.readSlot(RaspiConfig); s != SlotA {
		t.Fatalf("config.txt names %s before the commit", s)
	}
	if p.RebootArg() != "0 tryboot" {
		t.Fatal(p.RebootArg())
	}
	// The firmware's tryboot: it read tryboot.txt and says so in the
	// device tree.
	os.MkdirAll(filepath.Join(dt, "chosen", "bootloader"), 0o755)
	os.WriteFile(filepath.Join(dt, "chosen", "bootloader", "tryboot"), []byte{0, 0, 0, 1}, 0o644)
	u.Version = "v2"
	if act, _, err := u.Boot(time.Now()); err != nil || act != ActionProve {
		t.Fatalf("trial boot: %v %v", act, err)
	}
	if err := u.Commit(time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(boot, RaspiConfig))
	if s, _ := RaspiSlotOf(cfg); s != SlotB || len(cfg) != RaspiConfigSize || !strings.Contains(string(cfg), "os_prefix=B/\n") {
		t.Fatalf("config.txt after the commit: slot %s, %d bytes", s, len(cfg))
	}
	// A normal reboot now boots B from config.txt.
	os.WriteFile(filepath.Join(dt, "chosen", "bootloader", "tryboot"), []byte{0, 0, 0, 0}, 0o644)
	if running, def, err := p.State(); running != SlotB || def != SlotB || err != nil {
		t.Fatalf("after the commit: %s %s %v", running, def, err)
	}
}
