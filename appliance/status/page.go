package status

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// The appliance is PID 1 and the Connector its child: the child's status
// page learns what only PID 1 knows (config verdict, network, clock,
// firewall, restarts of the child) from a JSON copy of Status that PID 1
// keeps current in RAM (/run), rewritten whenever it changes.

// MaxEvents bounds Status.Events.
const MaxEvents = 32

// maxJSON bounds what ReadJSON reads: a Status with every field full is a
// few KiB.
const maxJSON = 1 << 20

// Event is something PID 1 saw happen: the Connector child restarted, the
// config was refused.
type Event struct {
	Time time.Time
	Kind string // "restart", "config"
	Text string
}

// AddEvent appends e, dropping the oldest beyond MaxEvents.
func (s *Status) AddEvent(e Event) {
	s.Events = append(s.Events, e)
	if n := len(s.Events) - MaxEvents; n > 0 {
		s.Events = append([]Event(nil), s.Events[n:]...)
	}
}

// EncodeJSON is the form WriteJSON stores.
func EncodeJSON(s Status) ([]byte, error) { return json.Marshal(s) }

// WriteJSON replaces the file at path with data from EncodeJSON, atomically
// (a reader never sees half of it).
func WriteJSON(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o644, atomicfile.Options{})
}

// ReadJSON reads a file WriteJSON wrote.
func ReadJSON(path string) (Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return Status{}, fmt.Errorf("read appliance status %s: %w", path, err)
	}
	if len(data) > maxJSON {
		return Status{}, fmt.Errorf("appliance status %s: larger than %d bytes", path, maxJSON)
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return Status{}, fmt.Errorf("appliance status %s: %w", path, err)
	}
	return s, nil
}
