// Package bootconfig decides which configuration the appliance runs with:
// the first config file found on the boot partition, or, when that one is
// invalid, the last config that was valid (kept under state/), or on a first
// boot the built-in default. Whatever it decides, it says which file it used,
// which it ignored, and every error with file:line:column.
package bootconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Names lists the config files the appliance looks for, first match wins.
// config.txt is the Pi firmware's and never ours.
func Names() []string {
	return []string{"connector.cue", "connector.hcl", "iofog-connector.conf"}
}

// lastGoodBase names the saved copy of the last valid config in the state
// directory; the extension is the original file's, so it loads the same way.
const lastGoodBase = "last-good"

// Source says where the running config came from.
type Source int

const (
	FromFile     Source = iota // the boot partition's file, valid
	FromLastGood               // the file is invalid; the last valid one runs
	FromDefault                // no valid config ever: the built-in default
)

func (s Source) String() string {
	switch s {
	case FromFile:
		return "file"
	case FromLastGood:
		return "last good config"
	default:
		return "built-in default"
	}
}

// Result is the decision and everything a person needs to understand it.
type Result struct {
	Config *schema.Config
	Source Source
	// File is the config file found on the boot partition (base name), ""
	// when there is none.
	File string
	// Ignored are other config files present that File shadows.
	Ignored []string
	// Path is the file the running config was read from ("" for the
	// built-in default): File on the boot partition or the saved last good.
	Path string
	// Errors are the problems with File (and with the last good copy, if
	// that was unusable too), one per line, "file:line:col: path: msg".
	Errors []string
	// Warnings are problems that did not change the decision (the last
	// good copy could not be saved, say).
	Warnings []string
}

// Valid reports whether the boot partition's file was used as written.
func (r Result) Valid() bool { return r.Source == FromFile }

// Load decides the config from bootDir (the mounted boot partition) and
// stateDir (where the last good copy lives). It never fails: the worst case
// is the built-in default with the reasons in Errors.
func Load(bootDir, stateDir string) Result {
	var r Result
	for _, n := range Names() {
		if _, err := os.Stat(filepath.Join(bootDir, n)); err != nil {
			continue
		}
		if r.File == "" {
			r.File = n
		} else {
			r.Ignored = append(r.Ignored, n)
		}
	}
	if r.File == "" {
		r.Config, r.Source = schema.Default(), FromDefault
		return r
	}

	path := filepath.Join(bootDir, r.File)
	data, err := os.ReadFile(path)
	var cfg *schema.Config
	if err == nil {
		cfg, err = schema.LoadBytes(r.File, data)
	} else {
		err = fmt.Errorf("%s: cannot read it: %w", r.File, err)
	}
	if err == nil {
		r.Config, r.Source, r.Path = cfg, FromFile, path
		if werr := saveLastGood(stateDir, r.File, data); werr != nil {
			r.Warnings = append(r.Warnings, werr.Error())
		}
		return r
	}
	r.Errors = append(r.Errors, errorLines(err)...)

	if lg, data, ok := findLastGood(stateDir); ok {
		cfg, err := schema.LoadBytes(filepath.Base(lg), data)
		if err == nil {
			r.Config, r.Source, r.Path = cfg, FromLastGood, lg
			return r
		}
		// Written by an older release whose schema was looser, say.
		r.Errors = append(r.Errors, errorLines(err)...)
	}
	r.Config, r.Source = schema.Default(), FromDefault
	return r
}

// errorLines turns a load error into one line per problem.
func errorLines(err error) []string {
	var es schema.Errors
	if errors.As(err, &es) {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.Error()
		}
		return out
	}
	return strings.Split(err.Error(), "\n")
}

// saveLastGood keeps a copy of a valid config, crash-safely, and removes
// copies with other extensions so exactly one last good config exists.
func saveLastGood(stateDir, name string, data []byte) error {
	ext := filepath.Ext(name)
	dst := filepath.Join(stateDir, lastGoodBase+ext)
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(data) {
		return nil // unchanged: no write to the card
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("save last good config: %w", err)
	}
	if err := atomicfile.Write(dst, data, 0o644, atomicfile.Options{KeepPrevious: true}); err != nil {
		return fmt.Errorf("save last good config: %w", err)
	}
	for _, n := range Names() {
		if other := filepath.Join(stateDir, lastGoodBase+filepath.Ext(n)); other != dst {
			if err := os.Remove(other); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale last good config: %w", err)
			}
			os.Remove(other + atomicfile.PrevSuffix)
		}
	}
	return nil
}

// findLastGood returns the saved last good config (or its previous
// generation, if a power loss damaged the current one).
func findLastGood(stateDir string) (string, []byte, bool) {
	for _, n := range Names() {
		p := filepath.Join(stateDir, lastGoodBase+filepath.Ext(n))
		if data, _, err := atomicfile.Read(p); err == nil {
			return p, data, true
		}
	}
	return "", nil, false
}
