// Package powerbutton reads Linux input event devices (/dev/input/event*)
// and reports presses of KEY_POWER: the ACPI power button on x86 boards
// (and QEMU's system_powerdown), or a GPIO power key on others.
package powerbutton

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Input event constants from linux/input-event-codes.h.
const (
	EvKey    = 0x01
	KeyPower = 116
)

// EventSize is sizeof(struct input_event) on 64-bit kernels (arm64,
// x86-64): a 16-byte timeval, then type, code (u16) and value (s32).
const EventSize = 24

// Event is one decoded input event.
type Event struct {
	Type, Code uint16
	Value      int32
}

// Decode decodes one event from a native-endian (little-endian on every
// board we support) 24-byte record.
func Decode(b []byte) (Event, error) {
	if len(b) < EventSize {
		return Event{}, fmt.Errorf("input event: %d bytes, want %d", len(b), EventSize)
	}
	return Event{
		Type:  binary.LittleEndian.Uint16(b[16:18]),
		Code:  binary.LittleEndian.Uint16(b[18:20]),
		Value: int32(binary.LittleEndian.Uint32(b[20:24])),
	}, nil
}

// IsPowerPress reports whether e is the power key going down.
func (e Event) IsPowerPress() bool { return e.Type == EvKey && e.Code == KeyPower && e.Value == 1 }

// Read reads events from r until it finds a power key press (nil) or r
// fails.
func Read(r io.Reader) error {
	buf := make([]byte, EventSize*16)
	for {
		n, err := io.ReadAtLeast(r, buf, EventSize)
		for off := 0; off+EventSize <= n; off += EventSize {
			if e, _ := Decode(buf[off : off+EventSize]); e.IsPowerPress() {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// HasPowerKey reports whether the input device eventN can send KEY_POWER,
// from its key capability bitmap in sysfs (hex words, most significant
// first, each as wide as the kernel's long).
func HasPowerKey(sysClassInput, event string) bool {
	b, err := os.ReadFile(filepath.Join(sysClassInput, event, "device", "capabilities", "key"))
	if err != nil {
		return false
	}
	return bitSet(strings.Fields(string(b)), KeyPower)
}

func bitSet(words []string, bit int) bool {
	const wordBits = 64
	idx := len(words) - 1 - bit/wordBits
	if idx < 0 {
		return false
	}
	var w uint64
	if _, err := fmt.Sscanf(words[idx], "%x", &w); err != nil {
		return false
	}
	return w&(1<<(bit%wordBits)) != 0
}

// Devices lists the event devices that have a power key.
func Devices(sysClassInput, dev string) []string {
	ents, _ := os.ReadDir(sysClassInput)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "event") && HasPowerKey(sysClassInput, e.Name()) {
			out = append(out, filepath.Join(dev, e.Name()))
		}
	}
	return out
}

// Watch waits for a power key press on any device in paths and sends the
// device's path to pressed once. It returns when ctx ends or no device is
// left to read.
func Watch(ctx context.Context, paths []string, pressed chan<- string) error {
	if len(paths) == 0 {
		return errors.New("no input device with a power key")
	}
	errs := make(chan error, len(paths))
	var files []*os.File
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			errs <- err
			continue
		}
		files = append(files, f)
		go func() {
			err := Read(f)
			if err == nil {
				select {
				case pressed <- p:
				default:
				}
			}
			errs <- err
		}()
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for range paths {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				return nil
			}
		}
	}
	return errors.New("every power key device failed")
}
