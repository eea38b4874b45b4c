// Package status renders STATUS.txt, the plain-text report the appliance
// keeps on its boot partition for a person who pulled the card and reads it
// on a laptop, and writes it crash-safely and rarely: only when its content
// changed, and at most once per interval.
package status

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// Status is everything STATUS.txt reports.
type Status struct {
	Version  string
	Booted   time.Time
	Clock    string // where the time came from: "SNTP (pool.ntp.org)", "last known time", ...
	BootDev  string // the boot partition's device; "" if none was found
	DataDev  string // the data partition's device; "" if none was found
	Data     string // what the data partition is doing: size, grown, migrated
	Problems []string

	Config Config

	Interfaces []Interface
	APIURL     string
	TLS        string // "" in dev mode; else what serves TLS (file, fingerprint)

	Connector Connector

	// Shown on the status page only (page.go), not in STATUS.txt.
	Firewall string  // "on", "off (by config)", or why it failed
	Events   []Event // newest last, at most MaxEvents
	// Update is the system slots and the last update, one line each.
	Update []string
}

// Config is the verdict on the config files.
type Config struct {
	File    string   // the file found, "" when none
	Ignored []string // other config files shadowed by File
	Using   string   // what runs: "connector.cue", "state/last-good.cue", "built-in default"
	Valid   bool
	Errors  []string // file:line:col: path: msg
}

// Interface is one network interface and its addresses.
type Interface struct {
	Name  string
	State string // "up", "down", "no carrier"
	MAC   string
	Addrs []string
}

// Connector is the supervised Connector's state.
type Connector struct {
	State       string // starting, running, restarting, stopped
	Mappings    int    // -1: unknown
	Restarts    int
	LastRestart string // when and why it was last restarted
}

// Render writes the report. It is deterministic: equal Status, equal bytes.
func Render(s Status) []byte {
	var b bytes.Buffer
	line := func(k, v string) { fmt.Fprintf(&b, "%-13s %s\n", k+":", v) }
	b.WriteString("ioFog Connector appliance\n")
	b.WriteString("=========================\n")
	line("Version", s.Version)
	booted := "unknown"
	if !s.Booted.IsZero() {
		booted = s.Booted.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	if s.Clock != "" {
		booted += " (clock: " + s.Clock + ")"
	}
	line("Booted", booted)
	if s.BootDev != "" {
		line("Boot device", s.BootDev)
	}
	if s.DataDev != "" {
		line("Data", s.DataDev+" "+s.Data)
	}
	b.WriteString("\n")

	c := s.Config
	switch {
	case c.File == "":
		line("Config", "no config file; running on the "+c.Using)
	case c.Valid:
		line("Config", c.File+": OK")
	default:
		line("Config", fmt.Sprintf("%s: INVALID, running on the %s", c.File, c.Using))
	}
	if len(c.Errors) > 0 {
		fmt.Fprintf(&b, "  %d problem(s); fix them on this partition and reboot:\n", len(c.Errors))
		for _, e := range c.Errors {
			for i, l := range strings.Split(e, "\n") {
				if i == 0 {
					b.WriteString("  - " + l + "\n")
				} else {
					b.WriteString("    " + l + "\n")
				}
			}
		}
	}
	if len(c.Ignored) > 0 {
		line("Ignored", strings.Join(c.Ignored, ", ")+" ("+c.File+" comes first)")
	}
	b.WriteString("\n")

	if len(s.Update) > 0 {
		b.WriteString("System slots:\n")
		for _, l := range s.Update {
			b.WriteString("  " + l + "\n")
		}
		b.WriteString("\n")
	}

	b.WriteString("Network:\n")
	if len(s.Interfaces) == 0 {
		b.WriteString("  (no interfaces up yet)\n")
	}
	for _, ifc := range s.Interfaces {
		addrs := "no address"
		if len(ifc.Addrs) > 0 {
			addrs = strings.Join(ifc.Addrs, ", ")
		}
		mac := ""
		if ifc.MAC != "" {
			mac = " " + ifc.MAC
		}
		fmt.Fprintf(&b, "  %-8s %s%s  %s\n", ifc.Name, ifc.State, mac, addrs)
	}
	if s.APIURL != "" {
		line("API", s.APIURL)
	}
	if s.TLS != "" {
		line("TLS", s.TLS)
	}
	b.WriteString("\n")

	k := s.Connector
	state := k.State
	if state == "" {
		state = "not started"
	}
	if k.Mappings >= 0 && k.State == "running" {
		state += fmt.Sprintf(", %d mapping(s)", k.Mappings)
	}
	line("Connector", state)
	if k.Restarts > 0 {
		line("Restarts", fmt.Sprint(k.Restarts))
	}
	if k.LastRestart != "" {
		line("Last restart", k.LastRestart)
	}
	if len(s.Problems) > 0 {
		b.WriteString("\nProblems:\n")
		for _, p := range s.Problems {
			b.WriteString("  - " + p + "\n")
		}
	}
	return b.Bytes()
}

// Writer keeps one STATUS.txt current: Update writes only when the content
// changed and no more than once per MinInterval (a change inside the
// interval is written when it ends), so an SD card is not worn by a flapping
// state. Safe for concurrent use.
type Writer struct {
	Path        string
	MinInterval time.Duration
	// Save, if set, writes the content instead of replacing Path
	// atomically (the boot partition's STATUS.txt is rewritten in place).
	Save func([]byte) error
	// OnError, if set, hears about failed writes.
	OnError func(error)

	mu        sync.Mutex
	written   []byte // content on disk
	pending   []byte // newer content waiting for the interval to end
	lastWrite time.Time
	timer     *time.Timer
	writes    int
}

// Update records the new status and writes it when due.
func (w *Writer) Update(s Status) {
	data := Render(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Equal(data, w.written) {
		w.pending = nil
		return
	}
	w.pending = data
	wait := w.MinInterval - time.Since(w.lastWrite)
	if w.lastWrite.IsZero() || wait <= 0 {
		w.flushLocked()
		return
	}
	if w.timer == nil {
		w.timer = time.AfterFunc(wait, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			// Runs on its own goroutine in PID 1: a panic must not kill it.
			defer func() {
				if r := recover(); r != nil && w.OnError != nil {
					w.OnError(fmt.Errorf("writing %s: internal error: %v", w.Path, r))
				}
			}()
			w.timer = nil
			w.flushLocked()
		})
	}
}

// Flush writes pending content now (at shutdown).
func (w *Writer) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.flushLocked()
}

// Writes reports how many times the file was written.
func (w *Writer) Writes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes
}

// Current returns the content last rendered (pending or written).
func (w *Writer) Current() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending != nil {
		return bytes.Clone(w.pending)
	}
	return bytes.Clone(w.written)
}

func (w *Writer) flushLocked() {
	if w.pending == nil {
		return
	}
	data := w.pending
	w.lastWrite = time.Now()
	save := w.Save
	if save == nil {
		save = func(b []byte) error { return atomicfile.Write(w.Path, b, 0o644, atomicfile.Options{}) }
	}
	if err := save(data); err != nil {
		if w.OnError != nil {
			w.OnError(err)
		}
		return // pending stays; the next Update or Flush tries again
	}
	w.pending = nil
	w.written = data
	w.writes++
}

// FileSize is STATUS.txt's size on the boot partition: the image build
// makes it so, and the appliance rewrites it in place without changing it.
const FileSize = 16 << 10

// Pad fits text to exactly size bytes, for a STATUS.txt of fixed size: cut
// with a note when too long, else padded with spaces and a final newline
// (so an editor shows no binary junk).
func Pad(text []byte, size int) []byte {
	const cut = "\n[... cut: STATUS.txt has a fixed size]\n"
	if size <= len(cut)+1 {
		return bytes.Repeat([]byte("\n"), max(size, 0))
	}
	if len(text) > size-1 {
		text = append(text[:size-1-len(cut):size-1-len(cut)], cut...)
	}
	out := make([]byte, size)
	n := copy(out, text)
	for i := n; i < size-1; i++ {
		out[i] = ' '
	}
	out[size-1] = '\n'
	return out
}
