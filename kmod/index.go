package kmod

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// IndexFile is where the image puts the index in the initramfs; module files
// are named relative to its directory.
const IndexFile = "/lib/modules/index.json"

// Module is one module file and what it needs.
type Module struct {
	Name     string   `json:"name"`
	File     string   `json:"file"` // slash-separated, relative to the index's directory
	Depends  []string `json:"depends,omitempty"`
	SoftPre  []string `json:"pre,omitempty"`
	SoftPost []string `json:"post,omitempty"`
	Aliases  []string `json:"aliases,omitempty"`
}

// Index is a set of modules with their dependencies and aliases, and the
// names of modules built into the kernel (which need no loading).
type Index struct {
	Kernel  string   `json:"kernel,omitempty"` // uname -r of the kernel the modules are for
	Modules []Module `json:"modules"`
	Builtin []string `json:"builtin,omitempty"`
	// Load is the order in which the board's modules are loaded at boot.
	Load []string `json:"load,omitempty"`

	byName  map[string]int
	builtin map[string]bool
}

// NewIndex builds an index from modules (sorted by name, so the written
// index does not depend on directory walk order).
func NewIndex(kernel string, mods []Module, builtin []string) (*Index, error) {
	ix := &Index{Kernel: kernel, Modules: slices.Clone(mods), Builtin: slices.Clone(builtin)}
	slices.SortFunc(ix.Modules, func(a, b Module) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(ix.Builtin)
	ix.Builtin = slices.Compact(ix.Builtin)
	if err := ix.init(); err != nil {
		return nil, err
	}
	return ix, nil
}

func (ix *Index) init() error {
	ix.byName = make(map[string]int, len(ix.Modules))
	for i, m := range ix.Modules {
		if m.Name == "" || m.File == "" {
			return fmt.Errorf("module index: entry %d has no name or file", i)
		}
		if prev, dup := ix.byName[m.Name]; dup {
			return fmt.Errorf("module index: %s appears twice (%s and %s)", m.Name, ix.Modules[prev].File, m.File)
		}
		ix.byName[m.Name] = i
	}
	ix.builtin = make(map[string]bool, len(ix.Builtin))
	for _, b := range ix.Builtin {
		ix.builtin[b] = true
	}
	return nil
}

// Scan reads every .ko under dir (a /lib/modules/<version> directory) and
// the modules.builtin list if there is one.
func Scan(dir string) (*Index, error) {
	var mods []Module
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		info, err := ReadInfo(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		mods = append(mods, Module{
			Name: info.Name, File: filepath.ToSlash(rel), Depends: info.Depends,
			SoftPre: info.SoftPre, SoftPost: info.SoftPost, Aliases: info.Aliases,
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning kernel modules in %s: %w", dir, err)
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("no kernel modules (*.ko) under %s", dir)
	}
	builtin, err := readBuiltin(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	return NewIndex(filepath.Base(dir), mods, builtin)
}

// readBuiltin reads modules.builtin (one kernel/.../name.ko per line); a
// missing file means no list.
func readBuiltin(p string) ([]string, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			names = append(names, Normalize(strings.TrimSuffix(path.Base(line), ".ko")))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return names, nil
}

// Module returns the module called name ('-' and '_' are the same).
func (ix *Index) Module(name string) (Module, bool) {
	i, ok := ix.byName[Normalize(name)]
	if !ok {
		return Module{}, false
	}
	return ix.Modules[i], true
}

// IsBuiltin says whether name is built into the kernel.
func (ix *Index) IsBuiltin(name string) bool { return ix.builtin[Normalize(name)] }

// Resolve turns a module name or an alias (as the kernel's module requests
// and softdeps use: "crc32c", "fs-vfat", "nft-expr-1-ct",
// "pci:v00008086d...") into module names. A builtin name resolves to nothing
// and no error.
func (ix *Index) Resolve(nameOrAlias string) ([]string, error) {
	if m, ok := ix.Module(nameOrAlias); ok {
		return []string{m.Name}, nil
	}
	if ix.IsBuiltin(nameOrAlias) {
		return nil, nil
	}
	if matches := ix.MatchAlias(nameOrAlias); len(matches) > 0 {
		return matches, nil
	}
	return nil, fmt.Errorf("no kernel module named %q or with that alias (kernel %s)", nameOrAlias, ix.Kernel)
}

// MatchAlias returns the modules with an alias pattern matching s (a
// modalias from /sys/bus/*/devices/*/modalias, or a name like "fs-vfat"),
// in index order.
func (ix *Index) MatchAlias(s string) []string {
	var out []string
	for _, m := range ix.Modules {
		for _, pat := range m.Aliases {
			if globMatch(pat, s) {
				out = append(out, m.Name)
				break
			}
		}
	}
	return out
}

// globMatch matches a module alias pattern (fnmatch: * ? [...]) against s.
// path.Match does that; modaliases contain no '/', and a malformed pattern
// simply matches nothing.
func globMatch(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

// Closure returns the modules to load for names, in load order: each
// module's softdep pre: modules and dependencies before it, its softdep
// post: modules after it. A name that is neither a module, a builtin nor an
// alias is an error; a softdep that resolves to nothing is skipped, as
// modprobe does.
func (ix *Index) Closure(names ...string) ([]string, error) {
	c := closure{ix: ix, state: map[string]int{}}
	for _, n := range names {
		if err := c.want(n, "", true); err != nil {
			return nil, err
		}
	}
	return c.order, nil
}

type closure struct {
	ix    *Index
	state map[string]int // 1 visiting, 2 done
	order []string
}

func (c *closure) want(nameOrAlias, neededBy string, hard bool) error {
	mods, err := c.ix.Resolve(nameOrAlias)
	if err != nil {
		if !hard {
			return nil
		}
		if neededBy != "" {
			return fmt.Errorf("%s needs %w", neededBy, err)
		}
		return err
	}
	for _, m := range mods {
		if err := c.visit(m); err != nil {
			return err
		}
	}
	return nil
}

func (c *closure) visit(name string) error {
	if c.state[name] != 0 {
		// Done, or a softdep cycle (a module whose post: names a module that
		// wants it first): loading it once is enough.
		return nil
	}
	c.state[name] = 1
	m, _ := c.ix.Module(name)
	for _, p := range m.SoftPre {
		if err := c.want(p, name, false); err != nil {
			return err
		}
	}
	for _, d := range m.Depends {
		if err := c.want(d, name, true); err != nil {
			return err
		}
	}
	c.order = append(c.order, name)
	c.state[name] = 2
	for _, p := range m.SoftPost {
		if err := c.want(p, name, false); err != nil {
			return err
		}
	}
	return nil
}

// Subset returns an index holding only the named modules (builtins kept),
// with load as its boot load order.
func (ix *Index) Subset(names []string, load []string) (*Index, error) {
	mods := make([]Module, 0, len(names))
	for _, n := range names {
		m, ok := ix.Module(n)
		if !ok {
			return nil, fmt.Errorf("subset: no module %q in the index", n)
		}
		mods = append(mods, m)
	}
	sub, err := NewIndex(ix.Kernel, mods, ix.Builtin)
	if err != nil {
		return nil, err
	}
	sub.Load = slices.Clone(load)
	return sub, nil
}

// Write writes the index as JSON.
func (ix *Index) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(ix)
}

// ReadIndex reads an index written by Write.
func ReadIndex(r io.Reader) (*Index, error) {
	var ix Index
	if err := json.NewDecoder(r).Decode(&ix); err != nil {
		return nil, fmt.Errorf("reading module index: %w", err)
	}
	for i, m := range ix.Modules {
		if strings.HasPrefix(m.File, "/") || slices.Contains(strings.Split(m.File, "/"), "..") {
			return nil, fmt.Errorf("module index: %s: file %q must stay inside the index's directory", m.Name, ix.Modules[i].File)
		}
	}
	if err := ix.init(); err != nil {
		return nil, err
	}
	return &ix, nil
}

// ReadIndexFile reads the index at p.
func ReadIndexFile(p string) (*Index, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("opening module index: %w", err)
	}
	defer f.Close()
	ix, err := ReadIndex(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return ix, nil
}
