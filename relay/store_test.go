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

// A store with anything after its JSON is not what was written: it is
// corrupt, moved aside, and the previous generation is used. Whitespace
// after it is fine.
func TestTrailingDataMakesTheStoreCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StoreFile)
	one := []Record{testRecord("1", 6000, 6001, true)}
	if err := saveStore(path, one); err != nil {
		t.Fatal(err)
	}
	if err := saveStore(path, append(one, testRecord("2", 6002, 6003, false))); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	os.WriteFile(path, append(append([]byte{}, good...), " \n\t"...), 0o600)
	if st := loadStore(path, slog.New(slog.DiscardHandler), time.Now()); len(st.recs) != 2 || st.rewrite {
		t.Fatalf("store with trailing whitespace: %+v, want both mappings as they are", st)
	}
	for _, tail := range []string{"GARBAGE", `{"mappings":[]}`, "]", "\x00"} {
		bad := append(append([]byte{}, good...), tail...)
		os.WriteFile(path, bad, 0o600)
		now := time.Now()
		st := loadStore(path, slog.New(slog.DiscardHandler), now)
		if len(st.recs) != 1 || st.recs[0].ID != "1" || !st.rewrite {
			t.Errorf("store + %q: %+v, want the previous generation's one mapping", tail, st)
		}
		aside := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
		if data, err := os.ReadFile(aside); err != nil || string(data) != string(bad) {
			t.Errorf("store + %q not kept at %s: %v", tail, aside, err)
		}
		os.Remove(aside)
	}
}

func TestParseStoreKeepsTheFirstOfConflictingMappings(t *testing.T) {
	a, b := testRecord("a", 6000, 6001, true), testRecord("b", 6001, 6002, false)
	c, d := testRecord("c", 6003, 6004, true), testRecord("a", 6005, 6006, true)
	data, _ := json.Marshal(storeFile{Mappings: []Record{a, b, c, d}})
	kept, dropped, err := parseStore(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 2 || kept[0] != a || kept[1] != c || len(dropped) != 2 || dropped[0] != b || dropped[1] != d {
		t.Errorf("kept %v, dropped %v; want a, c kept and b (port 6001), a again (id) dropped", kept, dropped)
	}
	for _, s := range []string{``, `null`, `{}`, `[]`, `{"mappings":{}}`, `{"mappings":[{"id":"x"}]}`} {
		if _, _, err := parseStore([]byte(s)); err == nil {
			t.Errorf("parseStore(%q) accepted", s)
		}
	}
	if kept, _, err := parseStore([]byte(`{"mappings":[]}`)); err != nil || len(kept) != 0 {
		t.Errorf("empty store: %v %v", kept, err)
	}
}
