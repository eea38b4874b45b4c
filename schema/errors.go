package schema

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue/token"
)

// Error is one problem in a config file, with where it is and what to change.
type Error struct {
	File   string
	Line   int // 1-based; 0 when the problem is the file as a whole
	Column int // 1-based byte column
	Path   string
	Msg    string
}

// Error prints "file:line:col: path: msg", the form editors and the
// appliance's STATUS.txt use.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	fmt.Fprintf(&b, ":%d:%d: ", e.Line, e.Column)
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one load, in file order.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// collector gathers errors for one file, dropping exact repeats (CUE reports
// some problems once per disjunct).
type collector struct {
	file string
	errs Errors
	seen map[string]bool
}

func newCollector(file string) *collector {
	return &collector{file: file, seen: map[string]bool{}}
}

func (c *collector) add(pos token.Pos, p path, msg string) {
	e := &Error{File: c.file, Path: p.String(), Msg: msg}
	if pos.IsValid() && pos.Line() > 0 {
		e.Line, e.Column = pos.Line(), pos.Column()
	} else {
		e.Line, e.Column = 1, 1
	}
	key := e.Error()
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.errs = append(c.errs, e)
}

func (c *collector) result() error {
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(i, j int) bool {
		a, b := c.errs[i], c.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return c.errs
}

// path is a field path inside the config: names and list indexes.
type path []elem

type elem struct {
	name  string
	index int
	isIdx bool
}

func (p path) field(name string) path {
	return append(p[:len(p):len(p)], elem{name: name})
}

func (p path) idx(i int) path {
	return append(p[:len(p):len(p)], elem{index: i, isIdx: true})
}

// String prints the path as network[0].addresses[1].
func (p path) String() string {
	var b strings.Builder
	for i, e := range p {
		if e.isIdx {
			b.WriteString("[" + strconv.Itoa(e.index) + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(e.name)
	}
	return b.String()
}
