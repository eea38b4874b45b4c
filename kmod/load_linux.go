package kmod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Loader loads modules from an index into the running kernel. It remembers
// what it loaded, so repeated requests (coldplug rounds, the kernel's own
// module requests) cost nothing. Safe for concurrent use.
type Loader struct {
	ix     *Index
	dir    string // the index's directory: module files are relative to it
	sysDir string // /sys/module, where loaded and builtin modules appear
	log    *slog.Logger

	mu     sync.Mutex
	loaded map[string]bool
}

// NewLoader returns a loader for the modules of ix, whose files are relative
// to dir. A nil log discards messages.
func NewLoader(ix *Index, dir string, log *slog.Logger) *Loader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Loader{ix: ix, dir: dir, sysDir: "/sys/module", log: log, loaded: map[string]bool{}}
}

// OpenLoader reads the index at IndexFile-style path p and returns a loader
// for the modules next to it.
func OpenLoader(p string, log *slog.Logger) (*Loader, error) {
	ix, err := ReadIndexFile(p)
	if err != nil {
		return nil, err
	}
	return NewLoader(ix, filepath.Dir(p), log), nil
}

// Index returns the loader's index.
func (l *Loader) Index() *Index { return l.ix }

// Load loads the named modules (names or aliases) and everything they need,
// in dependency order. It goes on past a module that fails, so one broken
// driver does not keep the others from loading, and returns all failures.
// A module that is already loaded (EEXIST) or finds no hardware (ENODEV)
// is not a failure.
func (l *Loader) Load(ctx context.Context, names ...string) error {
	return l.load(ctx, "", names...)
}

func (l *Loader) load(ctx context.Context, params string, names ...string) error {
	order, err := l.ix.Closure(names...)
	if err != nil {
		return err
	}
	var errs []error
	for i, name := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Parameters from the command line apply only to the module asked for.
		p := ""
		if i == len(order)-1 && len(names) == 1 {
			p = params
		}
		if err := l.loadOne(name, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Loader) loadOne(name, params string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loaded[name] {
		return nil
	}
	if _, err := os.Stat(filepath.Join(l.sysDir, name, "initstate")); err == nil {
		l.loaded[name] = true
		return nil
	}
	m, ok := l.ix.Module(name)
	if !ok {
		return fmt.Errorf("module %s is not in the index", name)
	}
	file := filepath.Join(l.dir, filepath.FromSlash(m.File))
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("loading module %s: %w", name, err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	switch {
	case err == nil:
		l.log.Debug("module loaded", "module", name)
	case errors.Is(err, unix.EEXIST):
	case errors.Is(err, unix.ENODEV):
		l.log.Debug("module found no device", "module", name)
	default:
		return fmt.Errorf("loading module %s from %s: %w", name, file, err)
	}
	l.loaded[name] = true
	return nil
}

// Modaliases returns the modalias strings of the devices under sysDir
// (normally /sys), sorted and without duplicates: bus devices, and class
// devices such as input devices, which have no bus directory (evdev binds
// to those).
func Modaliases(sysDir string) ([]string, error) {
	var files []string
	for _, pat := range []string{
		filepath.Join(sysDir, "bus", "*", "devices", "*", "modalias"),
		filepath.Join(sysDir, "class", "*", "*", "modalias"),
	} {
		m, err := filepath.Glob(pat)
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a device that went away
		}
		s := strings.TrimSpace(string(b))
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Coldplug loads the modules matching the devices present under sysDir, in
// rounds, because a loaded bus driver (virtio_pci, a USB host) brings new
// devices with it. It stops when a round loads nothing new.
func (l *Loader) Coldplug(ctx context.Context, sysDir string) error {
	var errs []error
	for round := 0; round < 8; round++ {
		aliases, err := Modaliases(sysDir)
		if err != nil {
			return err
		}
		var want []string
		for _, a := range aliases {
			for _, m := range l.ix.MatchAlias(a) {
				if !l.isLoaded(m) {
					want = append(want, m)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		if err := l.Load(ctx, want...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Loader) isLoaded(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loaded[name]
}

// Modprobe does what the kernel asks of /proc/sys/kernel/modprobe: its
// arguments are "[-q] [--] NAME [PARAM=VALUE...]". NAME may be an alias
// ("fs-vfat", "nft-expr-ct", "crypto-crc32c").
func (l *Loader) Modprobe(ctx context.Context, args []string) error {
	name, params, err := ParseModprobeArgs(args)
	if err != nil {
		return err
	}
	return l.load(ctx, params, name)
}

// ParseModprobeArgs splits modprobe's arguments into the module name and
// its parameters; flags (-q, -b, -v ...) are accepted and ignored.
func ParseModprobeArgs(args []string) (name, params string, err error) {
	var rest []string
	flags := true
	for _, a := range args {
		switch {
		case flags && a == "--":
			flags = false
		case flags && strings.HasPrefix(a, "-"):
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 {
		return "", "", errors.New("modprobe: no module name given")
	}
	return rest[0], strings.Join(rest[1:], " "), nil
}
