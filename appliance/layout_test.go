package appliance_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/qemu"
	"github.com/eclipse-iofog/iofog-connector/relay"
)

// legacyStore is a mapping store as a card of the first layout kept it on
// the FAT, in state/configs.json.
func legacyStore() string {
	p1, p2 := strings.Repeat("A", relay.PasscodeLen), strings.Repeat("B", relay.PasscodeLen)
	return `{"mappings":[{"id":"kept-from-the-fat","port1":6010,"port2":6011,"maxconnectionsport1":1,"maxconnectionsport2":1,` +
		`"passcodeport1":"` + p1 + `","passcodeport2":"` + p2 + `","heartbeatabsencethresholdport1":200000,"heartbeatabsencethresholdport2":200000}]}`
}

// TestFirstBootGrowsAndMigrates writes the x86 image to a disk four times
// its size holding, as a card of the first layout did, a mapping store on
// the FAT. The first boot must grow the data partition to the end of the
// disk (the GPT's backup header moved there too), move the store onto the
// data partition and serve its mapping, and leave both file systems clean
// and the FAT without state/.
func TestFirstBootGrowsAndMigrates(t *testing.T) {
	cache := requireQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := image.BuildBinary(ctx, "amd64", dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "connector.cue")
	if err := os.WriteFile(cfg, []byte(powerCutConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, "appliance.img"), Binary: bin, Config: cfg, CacheDir: cache})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}
	if err := image.WriteBootFiles(res.Image, []image.File{{Path: "state/configs.json", Data: []byte(legacyStore())}}); err != nil {
		t.Fatal(err)
	}
	// "dd" onto a larger disk.
	st, err := os.Stat(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	diskSize := 4 * st.Size()
	if err := os.Truncate(res.Image, diskSize); err != nil {
		t.Fatal(err)
	}

	vm, _ := boot(ctx, t, res.Image, cache, []qemu.Forward{{Guest: 8080}})
	api := "http://" + vm.Addr(8080)
	grown := waitConsole(ctx, t, vm, 0, `msg="data partition grown to fill the disk".* took=\S+\s`, bootTimeout)
	if m := regexp.MustCompile(`took=(\S+)`).FindStringSubmatch(grown); m != nil { // e.g. 198ms
		t.Logf("first-boot grow of the data partition to a %d MiB disk took %s (guest clock)", diskSize>>20, m[1])
	}
	waitConsole(ctx, t, vm, 0, `msg="moved state from the boot partition to the data partition".*`, bootTimeout)
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	list := listMappings(t, api)
	if m, ok := list["kept-from-the-fat"]; !ok || m.Port1 != 6010 || m.Port2 != 6011 {
		t.Errorf("after moving the store: mappings %v; want kept-from-the-fat on 6010/6011", list)
	}
	command(t, api, "stop")
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatalf("after commandline stop: %v", err)
	}

	// The data partition ends where the disk's backup GPT begins, and the
	// GPT is whole at the new size.
	off, size, err := image.PartitionExtent(res.Image, image.DataLabel)
	if err != nil {
		t.Fatal(err)
	}
	if end := off + size; end != diskSize-33*512 {
		t.Errorf("data partition ends at byte %d; want %d (the disk's end less the backup GPT's 33 sectors)", end, diskSize-33*512)
	}
	d, err := diskfs.Open(res.Image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := pt.(*gpt.Table).Verify(f, uint64(diskSize)); err != nil {
		t.Errorf("GPT after the grow: %v", err)
	}
	f.Close()
	d.Close()
	if stored := storedMappings(t, res.Image); stored["kept-from-the-fat"].Pass1 != strings.Repeat("A", relay.PasscodeLen) {
		t.Errorf("store on the data partition: %v", stored)
	}
	if _, err := image.ReadBootFile(res.Image, "state/configs.json"); err == nil {
		t.Error("state/configs.json is still on the FAT after the move")
	}
	for _, label := range []string{image.Label, image.ESPLabel, image.DataLabel} {
		if out, err := image.CheckPartition(res.Image, label); err != nil {
			t.Errorf("%s: %v\n%s", label, err, out)
		}
	}
}
