package relay

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testRecord(id string, p1, p2 uint16, public bool) Record {
	r := Record{ID: id, Port1: p1, Port2: p2, MaxConnectionsPort1: 60, PasscodePort1: strings.Repeat("a", 35) + id[:1],
		HeartbeatAbsenceThresholdPort1: 200000}
	if !public {
		r.MaxConnectionsPort1, r.MaxConnectionsPort2 = 1, 1
		r.PasscodePort2 = strings.Repeat("b", 35) + id[:1]
		r.HeartbeatAbsenceThresholdPort2 = 200000
	}
	return r
}

func TestStoreRoundTripKeepsEveryField(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFile)
	recs := []Record{testRecord("1", 6000, 6001, true), testRecord("2", 6002, 6003, false)}
	if err := saveStore(path, recs); err != nil {
		t.Fatal(err)
	}
	st := loadStore(path, slog.New(slog.DiscardHandler), time.Now())
	got := st.recs
	if st.rewrite || st.preserve != nil {
		t.Fatalf("load: %+v", st)
	}
	a, _ := json.Marshal(recs)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Errorf("round trip:\n got %s\nwant %s", b, a)
	}
}

func TestMissingStoreIsEmpty(t *testing.T) {
	st := loadStore(filepath.Join(t.TempDir(), StoreFile), slog.New(slog.DiscardHandler), time.Now())
	if len(st.recs) != 0 || st.rewrite {
		t.Fatalf("missing store: %+v", st)
	}
}

func TestCorruptStoreIsMovedAsideAndPreviousGenerationUsed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StoreFile)
	// Two saves leave the first generation in configs.json.prev.
	if err := saveStore(path, []Record{testRecord("1", 6000, 6001, true)}); err != nil {
		t.Fatal(err)
	}
	if err := saveStore(path, []Record{testRecord("1", 6000, 6001, true), testRecord("2", 6002, 6003, false)}); err != nil {
		t.Fatal(err)
	}
	garbage := []byte(`{"mappings":[{"id":"1","port1":60`)
	os.WriteFile(path, garbage, 0o600)

	var logs strings.Builder
	now := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	st := loadStore(path, slog.New(slog.NewTextHandler(&logs, nil)), now)
	if got := st.recs; !st.rewrite || len(got) != 1 || got[0].ID != "1" {
		t.Fatalf("got %+v, want the previous generation's one mapping", st)
	}
	aside := path + ".corrupt-20261125T170000Z"
	if data, err := os.ReadFile(aside); err != nil || string(data) != string(garbage) {
		t.Errorf("corrupt store not kept at %s: %v %q", aside, err, data)
	}
	if !strings.Contains(logs.String(), "corrupt") || !strings.Contains(logs.String(), aside) {
		t.Errorf("log does not say what happened: %s", logs.String())
	}
}

func TestCorruptStoreWithoutPreviousStartsEmptyButKeepsTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StoreFile)
	os.WriteFile(path, []byte(`{"mappings":[{"id":"","port1":1,"port2":2}]}`), 0o600)
	st := loadStore(path, slog.New(slog.DiscardHandler), time.Now())
	if len(st.recs) != 0 || !st.rewrite {
		t.Fatalf("got %+v", st)
	}
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Errorf("corrupt store not moved aside: %v", matches)
	}
}
