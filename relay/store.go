package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// StoreFile is the mapping store's name in the state directory.
const StoreFile = "configs.json"

// Suffixes of files kept beside the store, never deleted by the Connector.
const (
	// corruptSuffix + time: a store that could not be read, moved aside.
	corruptSuffix = ".corrupt-"
	// conflictSuffix + time: mappings dropped at load because an earlier
	// mapping in the store already had their id or one of their ports. The
	// file has the store's format, so they can be looked at or restored.
	conflictSuffix = ".conflicts-"
)

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

func (r Record) check() error {
	switch {
	case r.ID == "":
		return errors.New("empty id")
	case r.Port1 == 0 || r.Port2 == 0 || r.Port1 == r.Port2:
		return fmt.Errorf("mapping %s: bad ports %d and %d", r.ID, r.Port1, r.Port2)
	case len(r.PasscodePort1) != PasscodeLen:
		return fmt.Errorf("mapping %s: passcodeport1 is not a %d-character passcode", r.ID, PasscodeLen)
	case r.PasscodePort2 != "" && len(r.PasscodePort2) != PasscodeLen:
		return fmt.Errorf("mapping %s: passcodeport2 is not a %d-character passcode", r.ID, PasscodeLen)
	}
	return nil
}

// parseStore decodes a store. The whole file must be one JSON object with
// a "mappings" list (anything after it makes the store corrupt: it is not
// what was written), and every record must be whole. Records whose id or
// ports an earlier record already has are returned apart in dropped: two
// mappings can never share a port, and the first one is the one the agents
// have been using longest.
func parseStore(data []byte) (kept, dropped []Record, err error) {
	var s struct {
		Mappings *[]Record `json:"mappings"`
	}
	// Unmarshal, unlike a Decoder, refuses trailing data after the value.
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, nil, err
	}
	if s.Mappings == nil {
		return nil, nil, errors.New(`no "mappings" list`)
	}
	ids := map[string]bool{}
	ports := map[uint16]bool{}
	for i, r := range *s.Mappings {
		if err := r.check(); err != nil {
			return nil, nil, fmt.Errorf("mapping %d: %w", i, err)
		}
		if ids[r.ID] || ports[r.Port1] || ports[r.Port2] {
			dropped = append(dropped, r)
			continue
		}
		ids[r.ID], ports[r.Port1], ports[r.Port2] = true, true, true
		kept = append(kept, r)
	}
	return kept, dropped, nil
}

// loaded is the outcome of reading the store at start.
type loaded struct {
	recs []Record
	// rewrite: the store on disk is not what recs says (restored from the
	// previous generation, or conflicts taken out) and is to be rewritten.
	rewrite bool
	// preserve must succeed before the store is written again: it keeps
	// evidence (a corrupt store, dropped conflicts) that a write would
	// destroy and that could not be kept at load. nil when all is kept.
	preserve []func() error
}

// loadStore reads the mapping store. Nothing here stops the Connector: a
// missing store is empty; a store that cannot be read or parsed is moved
// aside (never discarded) and the previous generation is used if it parses,
// else no mappings; if it cannot even be moved aside (a read-only file
// system), the Connector still starts on the previous generation or empty,
// and the move is retried before the store is next written, which is
// refused until it succeeds, so the evidence is never overwritten.
func loadStore(path string, log *slog.Logger, now time.Time) loaded {
	stamp := now.UTC().Format("20060102T150405Z")
	prevPath := path + atomicfile.PrevSuffix
	var out loaded
	data, err := os.ReadFile(path)
	var perr error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		prev, err := os.ReadFile(prevPath)
		if err != nil {
			return out
		}
		recs, dropped, err := parseStore(prev)
		if err != nil {
			return out
		}
		log.Warn("mapping store missing; using its previous generation", "file", prevPath, "mappings", len(recs))
		out.recs, out.rewrite = recs, true
		out.keepConflicts(path, stamp, dropped, log)
		return out
	case err != nil:
		perr = fmt.Errorf("read: %w", err)
	default:
		var dropped []Record
		out.recs, dropped, perr = parseStore(data)
		if perr == nil {
			out.keepConflicts(path, stamp, dropped, log)
			return out
		}
		out.recs = nil
	}

	// Corrupt or unreadable: keep it, then fall back.
	aside := path + corruptSuffix + stamp
	moved := os.Rename(path, aside)
	var recs []Record
	var dropped []Record
	from := "no usable previous generation"
	if prev, err := os.ReadFile(prevPath); err == nil {
		if r, d, err := parseStore(prev); err == nil {
			recs, dropped, from = r, d, prevPath
		}
	}
	out.recs, out.rewrite = recs, true
	if moved == nil {
		log.Error("mapping store is corrupt; moved it aside and started on the previous generation, or empty",
			"file", path, "error", perr.Error(), "moved_to", aside, "restored_from", from, "mappings", len(recs))
	} else {
		// The evidence stays where it is until it can be moved; until then
		// no write may replace it (nor push it into .prev over the good
		// previous generation).
		log.Error("mapping store is corrupt and cannot be moved aside; started on the previous generation, or empty, "+
			"and will not write the store until the corrupt file can be moved (is the file system read-only?)",
			"file", path, "error", perr.Error(), "move_error", moved.Error(), "restored_from", from, "mappings", len(recs))
		out.preserve = append(out.preserve, func() error {
			if err := os.Rename(path, aside); err != nil {
				return fmt.Errorf("the mapping store %s is corrupt and cannot be moved aside to %s, so it is not overwritten: %w", path, aside, err)
			}
			log.Warn("moved the corrupt mapping store aside", "file", path, "moved_to", aside)
			return nil
		})
	}
	out.keepConflicts(path, stamp, dropped, log)
	return out
}

// keepConflicts writes dropped records beside the store and says so; the
// store is then rewritten without them. If they cannot be written now,
// the write is retried before the store is next written.
func (l *loaded) keepConflicts(path, stamp string, dropped []Record, log *slog.Logger) {
	if len(dropped) == 0 {
		return
	}
	l.rewrite = true
	aside := path + conflictSuffix + stamp
	var names []string
	for _, r := range dropped {
		names = append(names, fmt.Sprintf("%s (ports %d, %d)", r.ID, r.Port1, r.Port2))
	}
	write := func() error {
		data, err := encodeStore(dropped)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(aside, data, 0o600, atomicfile.Options{}); err != nil {
			return fmt.Errorf("keep mappings that conflict with earlier ones (%s): %w", strings.Join(names, ", "), err)
		}
		return nil
	}
	const msg = "mapping store has mappings whose id or ports an earlier mapping already has; kept the first"
	if err := write(); err != nil {
		log.Error(msg+"; cannot move the rest aside yet, so the store will not be written until they are",
			"file", path, "dropped", strings.Join(names, ", "), "move_to", aside, "err", err)
		l.preserve = append(l.preserve, write)
		return
	}
	log.Error(msg+", moved the rest aside", "file", path, "dropped", strings.Join(names, ", "), "moved_to", aside)
}

// encodeStore is the store's content for recs.
func encodeStore(recs []Record) ([]byte, error) {
	if recs == nil {
		recs = []Record{}
	}
	return json.Marshal(storeFile{Mappings: recs})
}

func saveStore(path string, recs []Record) error {
	data, err := encodeStore(recs)
	if err != nil {
		return fmt.Errorf("encode mapping store: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600, atomicfile.Options{KeepPrevious: true}); err != nil {
		return fmt.Errorf("save mapping store: %w", err)
	}
	return nil
}
