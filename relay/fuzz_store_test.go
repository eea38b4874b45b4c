package relay

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzStoreLoad feeds arbitrary bytes to the store loader, as a damaged
// card or a hand-edited file would. Whatever the bytes, loading never
// fails and never loses the file: an accepted store has mappings that share
// no id and no port, and it loads the same after a rewrite; a refused one
// is moved aside byte for byte.
func FuzzStoreLoad(f *testing.F) {
	pc := func(c byte) string { return "00000000-0000-4000-8000-00000000000" + string(c) }
	one, _ := json.Marshal(storeFile{Mappings: []Record{{ID: "a", Port1: 6000, Port2: 6001, PasscodePort1: pc('1'), MaxConnectionsPort1: 60}}})
	f.Add(one)
	f.Add(append(append([]byte{}, one...), "GARBAGE"...))
	f.Add([]byte(`{"mappings":[]}`))
	f.Add([]byte(`{"mappings":[{"id":"a","port1":6000,"port2":6001,"passcodeport1":"` + pc('1') + `"},{"id":"b","port1":6001,"port2":6002,"passcodeport1":"` + pc('2') + `"}]}`))
	f.Add([]byte(`{"mappings":[{"id":"a","port1":70000}]}`))
	f.Add([]byte(`{"mappings":null}`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, data []byte) {
		kept, dropped, err := parseStore(data)
		if err == nil {
			ids, ports := map[string]bool{}, map[uint16]bool{}
			for _, r := range kept {
				if r.check() != nil || ids[r.ID] || ports[r.Port1] || ports[r.Port2] {
					t.Fatalf("accepted %+v among %+v", r, kept)
				}
				ids[r.ID], ports[r.Port1], ports[r.Port2] = true, true, true
			}
			var all struct{ Mappings []json.RawMessage }
			if json.Unmarshal(data, &all) != nil || len(all.Mappings) != len(kept)+len(dropped) {
				t.Fatalf("kept %d and dropped %d of a store that is not %d mappings", len(kept), len(dropped), len(all.Mappings))
			}
			again, _ := encodeStore(kept)
			k2, d2, err := parseStore(again)
			if err != nil || len(d2) != 0 || len(k2) != len(kept) {
				t.Fatalf("rewritten store does not load the same: %v, %d kept, %d dropped", err, len(k2), len(d2))
			}
		}

		path := filepath.Join(t.TempDir(), StoreFile)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		st := loadStore(path, slog.New(slog.DiscardHandler), now)
		if err == nil {
			if len(st.recs) != len(kept) {
				t.Fatalf("loadStore kept %d, parseStore %d", len(st.recs), len(kept))
			}
			return
		}
		if len(st.recs) != 0 || !st.rewrite || st.preserve != nil {
			t.Fatalf("corrupt store with no previous generation: %+v", st)
		}
		aside := path + corruptSuffix + now.UTC().Format("20060102T150405Z")
		if got, err := os.ReadFile(aside); err != nil || string(got) != string(data) {
			t.Fatalf("corrupt store not kept byte for byte at %s: %v", aside, err)
		}
	})
}
