package status

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPageJSONRoundTripsAndEventsAreBounded(t *testing.T) {
	var s Status
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	for i := range MaxEvents + 10 {
		s.AddEvent(Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: "restart", Text: "restart " + string(rune('a'+i%26))})
	}
	if len(s.Events) != MaxEvents || !s.Events[0].Time.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("%d events, first at %s; want the last %d", len(s.Events), s.Events[0].Time, MaxEvents)
	}
	s.Config = Config{File: "connector.cue", Errors: []string{"connector.cue:1:2: x: y"}}
	s.Firewall = "on"
	s.Interfaces = []Interface{{Name: "eth0", Addrs: []string{"192.0.2.1/24"}}}
	data, err := EncodeJSON(s)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "status.json")
	if err := WriteJSON(file, data); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(file)
	if err != nil {
		t.Fatal(err)
	}
	if got.Config.Errors[0] != s.Config.Errors[0] || got.Firewall != "on" || got.Interfaces[0].Addrs[0] != "192.0.2.1/24" || len(got.Events) != MaxEvents {
		t.Errorf("round trip lost something: %+v", got)
	}
	// STATUS.txt does not change for page-only fields.
	if string(Render(got)) != string(Render(s)) || strings.Contains(string(Render(s)), "restart a") {
		t.Errorf("STATUS.txt shows page-only fields")
	}
}

func TestReadJSONRefusesOversizeAndGarbage(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`{"Clock":"`+strings.Repeat("x", maxJSON)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversize file: %v, want refused", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"Clock":`), 0o644)
	if _, err := ReadJSON(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("truncated file: %v, want an error naming it", err)
	}
}
