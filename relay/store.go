package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// StoreFile is the mapping store's name in the state directory.
const StoreFile = "configs.json"

// Record is one mapping as the original stores it (docs/protocol.md §4.5); the
// field names are the original's, so a store written by either reads in
// the other.
type Record struct {
	ID                             string `json:"id"`
	Port1                          uint16 `json:"port1"`
	Port2                          uint16 `json:"port2"`
	MaxConnectionsPort1            int    `json:"maxconnectionsport1"`
	MaxConnectionsPort2            int    `json:"maxconnectionsport2"`
	PasscodePort1                  string `json:"passcodeport1"`
	PasscodePort2                  string `json:"passcodeport2"`
	HeartbeatAbsenceThresholdPort1 int64  `json:"heartbeatabsencethresholdport1"`
	HeartbeatAbsenceThresholdPort2 int64  `json:"heartbeatabsencethresholdport2"`
}

// Public reports whether the record is a public mapping: its second port
// has no passcode because public clients connect there.
func (r Record) Public() bool { return r.PasscodePort2 == "" }

type storeFile struct {
	Mappings []Record `json:"mappings"`
}

func (s storeFile) check() error {
	seen := map[string]bool{}
	for i, r := range s.Mappings {
		switch {
		case r.ID == "":
			return fmt.Errorf("mapping %d: empty id", i)
		case seen[r.ID]:
			return fmt.Errorf("mapping %d: duplicate id %s", i, r.ID)
		case r.Port1 == 0 || r.Port2 == 0 || r.Port1 == r.Port2:
			return fmt.Errorf("mapping %s: bad ports %d and %d", r.ID, r.Port1, r.Port2)
		case len(r.PasscodePort1) != PasscodeLen:
			return fmt.Errorf("mapping %s: passcodeport1 is not a %d-character passcode", r.ID, PasscodeLen)
		case r.PasscodePort2 != "" && len(r.PasscodePort2) != PasscodeLen:
			return fmt.Errorf("mapping %s: passcodeport2 is not a %d-character passcode", r.ID, PasscodeLen)
		}
		seen[r.ID] = true
	}
	return nil
}

func parseStore(data []byte) ([]Record, error) {
	var s storeFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.Mappings, nil
}

// loadStore reads the mapping store. A missing store is empty. A corrupt one
// is moved aside (never discarded) and the previous generation is used if it
// parses; the caller then rewrites the store.
func loadStore(path string, log *slog.Logger, now time.Time) (recs []Record, rewrite bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		prev, perr := os.ReadFile(path + atomicfile.PrevSuffix)
		if perr != nil {
			return nil, false, nil
		}
		recs, perr := parseStore(prev)
		if perr != nil {
			return nil, false, nil
		}
		log.Warn("mapping store missing; using its previous generation", "file", path+atomicfile.PrevSuffix, "mappings", len(recs))
		return recs, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read mapping store %s: %w (check the state directory's permissions)", path, err)
	}
	recs, perr := parseStore(data)
	if perr == nil {
		return recs, false, nil
	}
	aside := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, aside); err != nil {
		return nil, false, fmt.Errorf("mapping store %s is corrupt (%v) and cannot be moved aside: %w", path, perr, err)
	}
	prev, err := os.ReadFile(path + atomicfile.PrevSuffix)
	if err == nil {
		if recs, err := parseStore(prev); err == nil {
			log.Error("mapping store is corrupt; moved it aside and restored the previous generation",
				"file", path, "error", perr.Error(), "moved_to", aside, "restored_from", path+atomicfile.PrevSuffix, "mappings", len(recs))
			return recs, true, nil
		}
	}
	log.Error("mapping store is corrupt and has no usable previous generation; moved it aside and starting with no mappings",
		"file", path, "error", perr.Error(), "moved_to", aside)
	return nil, true, nil
}

func saveStore(path string, recs []Record) error {
	if recs == nil {
		recs = []Record{}
	}
	data, err := json.Marshal(storeFile{Mappings: recs})
	if err != nil {
		return fmt.Errorf("encode mapping store: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600, atomicfile.Options{KeepPrevious: true}); err != nil {
		return fmt.Errorf("save mapping store: %w", err)
	}
	return nil
}
