package status

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func example() Status {
	return Status{
		Version: "1.0.0 (commit abc)",
		Booted:  time.Date(2026, 11, 25, 17, 30, 2, 0, time.UTC),
		Clock:   "SNTP",
		BootDev: "/dev/mmcblk0p1",
		Config: Config{
			File: "connector.cue", Ignored: []string{"iofog-connector.conf"},
			Using: "built-in default",
			Errors: []string{
				"connector.cue:1:11: ports[0]: port 70000 in \"6000-70000\" is out of range",
				"connector.cue:5:10: dev: must be true or false, not a string",
			},
		},
		Interfaces: []Interface{{Name: "eth0", State: "up", MAC: "52:54:00:12:34:56", Addrs: []string{"10.0.2.15/24"}}},
		APIURL:     "http://10.0.2.15:8080/api/v2/",
		Connector:  Connector{State: "running", Mappings: 3, Restarts: 1, LastRestart: "17:31:10 exited with status 2"},
	}
}

func TestRenderSaysWhatAPersonNeeds(t *testing.T) {
	out := string(Render(example()))
	for _, want := range []string{
		"Version:      1.0.0 (commit abc)",
		"Booted:       2026-11-25 17:30:02 UTC (clock: SNTP)",
		"Config:       connector.cue: INVALID, running on the built-in default",
		"  - connector.cue:1:11: ports[0]: port 70000",
		"  - connector.cue:5:10: dev: must be true or false",
		"Ignored:      iofog-connector.conf (connector.cue comes first)",
		"  eth0     up 52:54:00:12:34:56  10.0.2.15/24",
		"API:          http://10.0.2.15:8080/api/v2/",
		"Connector:    running, 3 mapping(s)",
		"Last restart: 17:31:10 exited with status 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("STATUS.txt lacks %q:\n%s", want, out)
		}
	}
	ok := example()
	ok.Config = Config{File: "connector.cue", Valid: true, Using: "connector.cue"}
	if out := string(Render(ok)); !strings.Contains(out, "Config:       connector.cue: OK\n") || strings.Contains(out, "problem") {
		t.Errorf("valid config rendered as:\n%s", out)
	}
}

func TestWriterWritesOnlyChangesAndRateLimits(t *testing.T) {
	p := filepath.Join(t.TempDir(), "STATUS.txt")
	w := &Writer{Path: p, MinInterval: time.Hour}
	s := example()
	w.Update(s)
	if b, _ := os.ReadFile(p); string(b) != string(Render(s)) || w.Writes() != 1 {
		t.Fatalf("first update: %d writes, file:\n%s", w.Writes(), b)
	}

	w.Update(s) // same content: nothing to write
	if w.Writes() != 1 {
		t.Fatalf("unchanged status written again (%d writes)", w.Writes())
	}

	s.Connector.Mappings = 4 // a change inside the interval waits
	w.Update(s)
	if w.Writes() != 1 {
		t.Fatal("a change was written before the interval ended")
	}
	if !strings.Contains(string(w.Current()), "4 mapping(s)") {
		t.Fatal("Current() does not show the pending change")
	}
	w.Flush() // shutdown writes it
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), "4 mapping(s)") || w.Writes() != 2 {
		t.Fatalf("after Flush: %d writes, file:\n%s", w.Writes(), b)
	}
}

func TestWriterWritesDeferredChangeWhenIntervalEnds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "STATUS.txt")
	w := &Writer{Path: p, MinInterval: 50 * time.Millisecond}
	s := example()
	w.Update(s)
	s.Connector.State = "restarting"
	w.Update(s)
	deadline := time.Now().Add(30 * time.Second)
	for w.Writes() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("deferred change never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), "Connector:    restarting") {
		t.Fatalf("file:\n%s", b)
	}
}

// STATUS.txt is rewritten in place, so whatever the report, Pad gives
// exactly the file's size, keeps a short report whole and cuts a long one
// with a note.
func TestPad(t *testing.T) {
	short := Pad([]byte("hello\n"), 64)
	if len(short) != 64 || !bytes.HasPrefix(short, []byte("hello\n")) || short[63] != '\n' || len(bytes.TrimSpace(short[6:])) != 0 {
		t.Errorf("Pad(short) = %q", short)
	}
	long := Pad(bytes.Repeat([]byte("x"), 1000), 200)
	if len(long) != 200 || !bytes.Contains(long, []byte("cut: STATUS.txt has a fixed size")) {
		t.Errorf("Pad(long) = %q", long)
	}
	if got := Pad(Render(Status{Version: "1"}), FileSize); len(got) != FileSize {
		t.Errorf("Pad(report) is %d bytes; want %d", len(got), FileSize)
	}
}
