package appliance

import (
	"io"
	"sync"

	"github.com/eclipse-iofog/iofog-connector/appliance/logfile"
)

// output is where the appliance's own log and the Connector's output go:
// always the console, and the boot partition's log file once the config
// asks for one.
type output struct {
	mu      sync.Mutex
	console io.Writer
	file    *logfile.Writer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.console.Write(p)
	if o.file != nil {
		// A full or failing card must not stop the console.
		_, _ = o.file.Write(p)
	}
	return n, err
}

func (o *output) setConsole(w io.Writer) {
	o.mu.Lock()
	o.console = w
	o.mu.Unlock()
}

func (o *output) setFile(f *logfile.Writer) {
	o.mu.Lock()
	o.file = f
	o.mu.Unlock()
}

// closeFile syncs and closes the log file; later output goes to the
// console only.
func (o *output) closeFile() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		o.file.Sync()
		o.file.Close()
		o.file = nil
	}
}
