package powerbutton

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// event encodes a struct input_event as a 64-bit little-endian kernel
// writes it.
func event(typ, code uint16, value int32) []byte {
	b := make([]byte, EventSize)
	binary.LittleEndian.PutUint64(b[0:8], 1700000000) // tv_sec
	binary.LittleEndian.PutUint64(b[8:16], 123456)    // tv_usec
	binary.LittleEndian.PutUint16(b[16:18], typ)
	binary.LittleEndian.PutUint16(b[18:20], code)
	binary.LittleEndian.PutUint32(b[20:24], uint32(value))
	return b
}

const evSyn = 0

func TestDecodeAndPowerPress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   []byte
		press bool
	}{
		{"power down", event(EvKey, KeyPower, 1), true},
		{"power up", event(EvKey, KeyPower, 0), false},
		{"power autorepeat", event(EvKey, KeyPower, 2), false},
		{"another key", event(EvKey, 115 /* KEY_VOLUMEUP */, 1), false},
		{"sync report", event(evSyn, 0, 0), false},
	} {
		e, err := Decode(tc.raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if e.IsPowerPress() != tc.press {
			t.Errorf("%s: decoded %+v, IsPowerPress = %v, want %v", tc.name, e, !tc.press, tc.press)
		}
	}
	if _, err := Decode(make([]byte, 23)); err == nil {
		t.Error("a short record decoded without error")
	}
}

func TestReadFindsPressAmongOtherEvents(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(event(EvKey, 115, 1))
	stream.Write(event(evSyn, 0, 0))
	stream.Write(event(EvKey, KeyPower, 0)) // a release alone is no press
	stream.Write(event(EvKey, KeyPower, 1))
	stream.Write(event(evSyn, 0, 0))
	if err := Read(&stream); err != nil {
		t.Fatalf("Read = %v, want the press found", err)
	}
	var none bytes.Buffer
	none.Write(event(EvKey, KeyPower, 0))
	if err := Read(&none); err != io.EOF {
		t.Fatalf("Read without a press = %v, want io.EOF", err)
	}
}

func TestCapabilityBitmap(t *testing.T) {
	// Key bitmaps as the kernel prints them: 64-bit hex words, most
	// significant first. KEY_POWER (116) is bit 52 of the second word from
	// the right.
	root := t.TempDir()
	mk := func(ev, caps string) {
		d := filepath.Join(root, ev, "device", "capabilities")
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "key"), []byte(caps+"\n"), 0o644)
	}
	mk("event0", "10000000000000 0")                         // bit 116: the power button
	mk("event1", "ffefffffffffffff fffffffffffffffe")        // a keyboard without KEY_POWER
	mk("event2", "0")                                        // a mouse
	mk("event3", "3 0 0 0 0 0 0 0 0 0 0 0 10000000000000 0") // a long bitmap: only the low words count
	got := Devices(root, "/dev/input")
	want := []string{"/dev/input/event0", "/dev/input/event3"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Devices = %v, want %v", got, want)
	}
}

func TestWatchReportsPressFromAPipe(t *testing.T) {
	// A FIFO stands in for /dev/input/eventN: the same read(2) semantics.
	p := filepath.Join(t.TempDir(), "event0")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Expose the pipe's read end by a path Watch can open.
	if err := os.Symlink("/proc/self/fd/"+itoa(int(r.Fd())), p); err != nil {
		t.Fatal(err)
	}
	pressed := make(chan string, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, []string{p}, pressed) }()
	w.Write(event(EvKey, KeyPower, 1))
	select {
	case got := <-pressed:
		if got != p {
			t.Fatalf("pressed on %q, want %q", got, p)
		}
	case <-ctx.Done():
		t.Fatal("press not reported within 30s")
	}
	w.Close()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func FuzzDecode(f *testing.F) {
	f.Add(event(EvKey, KeyPower, 1))
	f.Add(make([]byte, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.IsPowerPress() && (e.Type != EvKey || e.Code != KeyPower || e.Value != 1) {
			t.Fatalf("%+v taken for a power press", e)
		}
	})
}
