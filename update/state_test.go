package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// simFirmware stands in for a board's boot firmware (UEFI NVRAM or the
// Pi's boot ROM), which does not run on the test host: a default slot, a
// one-shot slot consumed by the next boot, and the slots' files. Its
// state survives a "power cut"; cutAt makes its n-th operation fail, before
// (cutAfter false) or after (true) it takes effect.
type simFirmware struct {
	slots    map[Slot]map[string][]byte
	def      Slot
	once     Slot
	running  Slot
	ops      int
	cutAt    int
	cutAfter bool
}

var errCut = errors.New("power cut")

func newSim(sys map[string][]byte) *simFirmware {
	return &simFirmware{slots: map[Slot]map[string][]byte{SlotA: sys, SlotB: {}}, def: SlotA, running: SlotA}
}

func (f *simFirmware) op(apply func()) error {
	f.ops++
	if f.ops == f.cutAt {
		if f.cutAfter {
			apply()
		}
		return errCut
	}
	apply()
	return nil
}

func (f *simFirmware) State() (Slot, Slot, error) { return f.running, f.def, nil }

func (f *simFirmware) Install(s Slot, r *Reader, progress func(int64)) error {
	f.slots[s] = map[string][]byte{}
	var n int64
	for {
		fs, fr, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(fr)
		if err != nil {
			return err
		}
		if err := f.op(func() { f.slots[s][fs.Path] = data }); err != nil {
			return err
		}
		n += int64(len(data))
		progress(n)
	}
}

func (f *simFirmware) Check(s Slot, m *Manifest) error {
	for _, fs := range m.Files {
		sum := sha256.Sum256(f.slots[s][fs.Path])
		if hex.EncodeToString(sum[:]) != fs.SHA256 {
			return fmt.Errorf("%s differs", fs.Path)
		}
	}
	return nil
}

func (f *simFirmware) ArmOnce(s Slot) error    { return f.op(func() { f.once = s }) }
func (f *simFirmware) SetDefault(s Slot) error { return f.op(func() { f.def = s }) }
func (f *simFirmware) RebootArg() string       { return "" }

// boot is the firmware choosing a slot at reset.
func (f *simFirmware) boot() {
	f.running = f.def
	if f.once != "" {
		f.running, f.once = f.once, ""
	}
}

// system returns the version a slot's files make up, or "" if they are
// not one whole system.
func system(files map[string][]byte) string {
	k, i := files["kernel"], files["initrd"]
	if len(k) == 0 || !bytes.Equal(bytes.TrimPrefix(k, []byte("kernel ")), bytes.TrimPrefix(i, []byte("initrd "))) {
		return ""
	}
	return string(bytes.TrimPrefix(k, []byte("kernel ")))
}

func sysFiles(version string) []SourceFile {
	return []SourceFile{{"kernel", []byte("kernel " + version)}, {"initrd", []byte("initrd " + version)}}
}

func sysMap(version string) map[string][]byte {
	m := map[string][]byte{}
	for _, f := range sysFiles(version) {
		m[f.Path] = f.Data
	}
	return m
}

type box struct {
	t       *testing.T
	fw      *simFirmware
	record  string
	keys    []PublicKey
	healthy map[string]bool // versions whose system becomes healthy
}

func newBox(t *testing.T, keys []PublicKey) *box {
	return &box{t: t, fw: newSim(sysMap("v1")), record: filepath.Join(t.TempDir(), RecordFile), keys: keys,
		healthy: map[string]bool{"v1": true, "v2": true, "v3": true}}
}

func (b *box) updater() *Updater {
	return &Updater{FW: b.fw, Record: b.record, Keys: b.keys, Board: "test", Version: system(b.fw.slots[b.fw.running])}
}

// run resets the box until it runs a system that stays up, as the
// appliance and the hardware watchdog do: a slot that is not a whole
// system, or one that never gets healthy, is reset by the watchdog. It
// returns the running version.
func (b *box) run() string {
	for resets := 0; resets < 5; resets++ {
		b.fw.boot()
		v := system(b.fw.slots[b.fw.running])
		if v == "" {
			continue // nothing booted: the watchdog resets the board
		}
		act, _, err := b.updater().Boot(time.Now())
		if err != nil {
			b.t.Fatalf("boot of %s: %v", v, err)
		}
		switch act {
		case ActionRevert:
			continue
		case ActionProve:
			if !b.healthy[v] {
				continue // never healthy: the watchdog resets it
			}
			if err := b.updater().Commit(time.Now()); err != nil {
				if errors.Is(err, errCut) {
					continue
				}
				b.t.Fatalf("commit: %v", err)
			}
		}
		return v
	}
	b.t.Fatal("the box does not come up")
	return ""
}

func (b *box) record_(t *testing.T) *Record {
	r, err := LoadRecord(b.record, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeBundle(t *testing.T, key ed25519.PrivateKey, version string) string {
	p := filepath.Join(t.TempDir(), version+".update.tar")
	var buf bytes.Buffer
	if _, err := Write(&buf, key, version, "test", time.Unix(0, 0), sysFiles(version)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUpdateCommitsAndAlternates(t *testing.T) {
	key := testKey(t)
	b := newBox(t, []PublicKey{Public(key)})
	if v := b.run(); v != "v1" {
		t.Fatalf("first boot runs %s", v)
	}
	var phases []string
	m, slot, err := b.updater().Apply(context.Background(), writeBundle(t, key, "v2"), false, func(p string, done, total int64) {
		if len(phases) == 0 || phases[len(phases)-1] != p {
			phases = append(phases, p)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "v2" || slot != SlotB || strings.Join(phases, ",") != "verify,write,check" {
		t.Fatalf("applied %s to %s, progress %v", m.Version, slot, phases)
	}
	if r := b.record_(t); r.Trial == nil || r.Trial.Phase != PhasePending || b.fw.def != SlotA || b.fw.once != SlotB {
		t.Fatalf("after apply: record %+v, firmware default %s once %s", r.Trial, b.fw.def, b.fw.once)
	}
	if v := b.run(); v != "v2" {
		t.Fatalf("after the update the box runs %s", v)
	}
	r := b.record_(t)
	if b.fw.def != SlotB || r.Committed != SlotB || r.Last.Result != ResultCommitted || r.Slots[SlotA].Version != "v1" || r.Slots[SlotB].Version != "v2" {
		t.Fatalf("after commit: default %s, record %+v last %+v", b.fw.def, r, r.Last)
	}
	// The next update goes to the other slot.
	if _, slot, err := b.updater().Apply(context.Background(), writeBundle(t, key, "v3"), false, nil); err != nil || slot != SlotA {
		t.Fatalf("second update into %s: %v", slot, err)
	}
	if v := b.run(); v != "v3" || b.fw.def != SlotA {
		t.Fatalf("second update: runs %s, default %s", v, b.fw.def)
	}
}

func TestUnhealthyUpdateRollsBack(t *testing.T) {
	key := testKey(t)
	b := newBox(t, []PublicKey{Public(key)})
	b.run()
	b.healthy["v2"] = false
	bundle := writeBundle(t, key, "v2")
	if _, _, err := b.updater().Apply(context.Background(), bundle, false, nil); err != nil {
		t.Fatal(err)
	}
	if v := b.run(); v != "v1" {
		t.Fatalf("unhealthy update: runs %s", v)
	}
	r := b.record_(t)
	if r.Last == nil || r.Last.Result != ResultRolledBack || r.Last.Version != "v2" || !strings.Contains(r.Last.Reason, "not healthy") || len(r.Failed) != 1 || b.fw.def != SlotA {
		t.Fatalf("record after the rollback: %+v, last %+v", r, r.Last)
	}
	// Not retried by itself; forced, it is.
	_, _, err := b.updater().Apply(context.Background(), bundle, false, nil)
	if !IsRefusal(err) || !strings.Contains(err.Error(), "failed its trial boot before") {
		t.Fatalf("retry of a failed bundle: %v", err)
	}
	b.healthy["v2"] = true
	if _, _, err := b.updater().Apply(context.Background(), bundle, true, nil); err != nil {
		t.Fatal(err)
	}
	if v := b.run(); v != "v2" {
		t.Fatalf("forced retry runs %s", v)
	}
}

// A refused bundle changes nothing: no record, no slot written, no boot armed.
func TestRefusedBundleWritesNothing(t *testing.T) {
	key := testKey(t)
	b := newBox(t, []PublicKey{Public(key)})
	b.run()
	before, _ := os.ReadFile(b.record)
	for name, p := range map[string]string{
		"wrong key":   writeBundle(t, testKey(t), "v2"),
		"truncated":   truncated(t, writeBundle(t, key, "v2")),
		"other board": otherBoard(t, key),
	} {
		_, _, err := b.updater().Apply(context.Background(), p, false, nil)
		if !IsRefusal(err) {
			t.Errorf("%s: %v", name, err)
		}
		after, _ := os.ReadFile(b.record)
		if !bytes.Equal(before, after) || len(b.fw.slots[SlotB]) != 0 || b.fw.once != "" || b.fw.ops != 0 {
			t.Errorf("%s: something was written (ops %d)", name, b.fw.ops)
		}
	}
}

func truncated(t *testing.T, p string) string {
	data, _ := os.ReadFile(p)
	os.WriteFile(p, data[:len(data)-1500], 0o644)
	return p
}

func otherBoard(t *testing.T, key ed25519.PrivateKey) string {
	p := filepath.Join(t.TempDir(), "other.tar")
	var buf bytes.Buffer
	Write(&buf, key, "v2", "rpi", time.Unix(0, 0), sysFiles("v2"))
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

// A power cut at every step of an update, before and after each firmware
// write: the box always comes up, on the old system until the firmware's
// default changed and on the new one after, and the record says how the
// update ended.
func TestPowerCutAtEveryStep(t *testing.T) {
	key := testKey(t)
	// Operations: two file writes, the one-shot arm, the commit's default.
	const ops = 4
	for cut := 1; cut <= ops; cut++ {
		for _, after := range []bool{false, true} {
			t.Run(fmt.Sprintf("op%d-after=%v", cut, after), func(t *testing.T) {
				b := newBox(t, []PublicKey{Public(key)})
				b.run()
				b.fw.cutAt, b.fw.cutAfter = cut, after
				_, _, err := b.updater().Apply(context.Background(), writeBundle(t, key, "v2"), false, nil)
				if cut <= 3 && !errors.Is(err, errCut) {
					t.Fatalf("apply: %v", err)
				}
				v := b.run()
				if b.fw.def == SlotA && v != "v1" || b.fw.def == SlotB && v != "v2" {
					t.Fatalf("runs %s with default %s", v, b.fw.def)
				}
				r := b.record_(t)
				if r.Trial != nil || r.Committed != b.fw.def || r.Last == nil {
					t.Fatalf("record after the cut: %+v", r)
				}
				// Cut before the arm took effect: the update did not happen;
				// cut at the commit's default before it took: rolled back.
				// Otherwise it committed.
				want := ResultCommitted
				switch {
				case cut <= 2 || cut == 3 && !after:
					want = ResultInterrupted
				case cut == 4 && !after:
					want = ResultRolledBack
				}
				if r.Last.Result != want {
					t.Fatalf("outcome %q (%s), want %q", r.Last.Result, r.Last.Reason, want)
				}
				// Whatever happened, the next update goes through.
				b.fw.cutAt = 0
				if _, _, err := b.updater().Apply(context.Background(), writeBundle(t, key, "v3"), true, nil); err != nil {
					t.Fatal(err)
				}
				if v := b.run(); v != "v3" {
					t.Fatalf("next update runs %s", v)
				}
			})
		}
	}
}
