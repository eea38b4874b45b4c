package schema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
)

//go:embed connector.cue
var source string

// schemaFile is the name schema positions carry, so that they can be told
// apart from positions in the user's file.
const schemaFile = "schema:connector.cue"

// MaxSize is the largest config file Load accepts; real ones are a few KiB.
const MaxSize = 1 << 20

// MaxDepth is how deeply brackets may nest. Real configs nest four or five
// levels; evaluation time grows faster than linearly with depth, so a
// runaway file is refused before it is evaluated.
const MaxDepth = 64

// tooDeep returns the offset of the first bracket nested deeper than
// MaxDepth, or -1. Brackets inside double-quoted strings do not count; ones
// in comments do, which can only err on the side of refusing absurd files.
func tooDeep(data []byte) int {
	depth, inString, escaped := 0, false, false
	for i, b := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case inString && (b == '"' || b == '\n'):
			inString = false
		case inString:
		case b == '"':
			inString = true
		case b == '[' || b == '{' || b == '(':
			if depth++; depth > MaxDepth {
				return i
			}
		case b == ']' || b == '}' || b == ')':
			depth--
		}
	}
	return -1
}

// Source returns the CUE schema every config is checked against.
func Source() string { return source }

// DefaultSettings is the settings file the original Connector ships.
const DefaultSettings = `{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}`

// Default returns the original's shipped settings with every appliance
// setting at its default: what the daemon runs with when told to use no file
// and what the appliance boots with the first time.
func Default() *Config {
	cfg, err := LoadBytes("default", []byte(DefaultSettings))
	if err != nil {
		// The embedded schema and the constant above are tested together.
		panic("schema: built-in default does not validate: " + err.Error())
	}
	return cfg
}

// Load reads and validates a config file. The format follows the extension:
// .cue is CUE, .hcl is HCL, anything else (.conf, .json) is JSON. Invalid
// configs return Errors listing every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return LoadBytes(path, data)
}

// Format is the input format LoadBytes picks for a file name.
func Format(filename string) string {
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".cue":
		return "cue"
	case ".hcl":
		return "hcl"
	}
	return "json"
}

// LoadBytes is Load for content already in memory; filename picks the format
// and names the file in errors.
func LoadBytes(filename string, data []byte) (cfg *Config, err error) {
	c := newCollector(filename)
	if len(data) > MaxSize {
		c.add(token.NoPos, nil, fmt.Sprintf("file is %d bytes; a config may be at most %d", len(data), MaxSize))
		return nil, c.result()
	}
	if off := tooDeep(data); off >= 0 {
		tf := token.NewFile(filename, -1, len(data))
		tf.SetLinesForContent(data)
		c.add(tf.Pos(off, token.NoRelPos), nil, fmt.Sprintf("brackets nest deeper than %d levels; a config needs only a few", MaxDepth))
		return nil, c.result()
	}
	defer func() {
		// The CUE evaluator is a large body of code fed with user input; a
		// bug in it must cost one load, not the appliance.
		if r := recover(); r != nil {
			cfg = nil
			c.add(token.NoPos, nil, fmt.Sprintf("internal error while evaluating the config (%v); please report it with the file", r))
			err = c.result()
		}
	}()

	ctx := cuecontext.New()
	sch := ctx.CompileString(source, cue.Filename(schemaFile))
	if err := sch.Err(); err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	def := sch.LookupPath(cue.MakePath(cue.Def("Connector")))

	user, root := parseUser(ctx, c, filename, data)
	if user == nil {
		return nil, c.result()
	}
	l := &loader{
		c: c, def: def, user: user, patterns: patternTexts(sch),
		labels: map[string]token.Pos{}, values: map[string]token.Pos{},
		jsonLabels: Format(filename) == "json",
	}
	if st, ok := root.(*ast.StructLit); ok && st.Lbrace.IsValid() {
		l.values[""] = st.Lbrace
	}
	l.collectLabels(root, nil)
	return l.run()
}

// parseUser turns the file into a CUE value with positions into the file,
// whatever its format; root is the syntax tree for finding field names.
func parseUser(ctx *cue.Context, c *collector, filename string, data []byte) (*cue.Value, ast.Node) {
	var (
		root ast.Node
		v    cue.Value
	)
	switch Format(filename) {
	case "cue":
		f, err := parser.ParseFile(filename, data, parser.ParseComments)
		if err != nil {
			c.addCUE(err, nil)
			return nil, nil
		}
		root = f
		v = ctx.BuildFile(f)
	case "hcl":
		expr, ok := hclToCUE(c, filename, data)
		if !ok {
			return nil, nil
		}
		root = expr
		v = ctx.BuildExpr(expr)
	default:
		expr, err := cuejson.Extract(filename, data)
		if err != nil {
			c.addCUE(err, nil)
			return nil, nil
		}
		if _, ok := expr.(*ast.StructLit); !ok {
			c.add(expr.Pos(), nil, "the settings must be a JSON object {...}")
			return nil, nil
		}
		root = expr
		v = ctx.BuildExpr(expr)
	}
	if err := v.Err(); err != nil {
		c.addCUE(err, nil)
		return nil, nil
	}
	if err := v.Validate(); err != nil {
		// The file contradicts itself (possible in CUE) before the schema
		// is even involved.
		c.addCUE(err, nil)
		return nil, nil
	}
	if k := v.IncompleteKind(); k != cue.StructKind {
		c.add(v.Pos(), nil, "the config must be a set of fields, not "+kindName(k))
		return nil, nil
	}
	return &v, root
}

// decode turns the validated, defaulted value into a Config.
func decode(v cue.Value) (*Config, error) {
	b, err := v.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, err
	}
	if cfg.Exclude == nil {
		cfg.Exclude = []string{}
	}
	if cfg.Ports == nil {
		cfg.Ports = []string{}
	}
	return &cfg, nil
}

// addCUE records CUE errors (syntax or evaluation) with their positions in
// the user's file, in plain words.
func (c *collector) addCUE(err error, fallback func(path) token.Pos) {
	for _, e := range cueerrors.Errors(err) {
		p := cuePath(e.Path())
		pos := userPos(c.file, e)
		if !pos.IsValid() && fallback != nil {
			pos = fallback(p)
		}
		format, args := e.Msg()
		if format == "%d errors in empty disjunction:" {
			continue
		}
		msg := plainCUE(format, args)
		if strings.HasPrefix(format, "invalid JSON") {
			// Keep the parser's reason, drop the file name we print anyway.
			_, reason, _ := strings.Cut(e.Error(), ": ")
			msg = "invalid JSON: " + reason
		}
		c.add(pos, p, msg)
	}
}

// cuePath converts CUE's error path, dropping the schema's #Connector.
func cuePath(sels []string) path {
	var p path
	for _, s := range sels {
		if strings.HasPrefix(s, "#") {
			continue
		}
		if n, err := parseIndex(s); err == nil {
			p = p.idx(n)
			continue
		}
		p = p.field(strings.Trim(s, `"`))
	}
	return p
}

func parseIndex(s string) (int, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("not an index")
	}
	return strconv.Atoi(s)
}

// userPos picks the first of an error's positions that lies in the user's
// file (CUE also lists the schema lines involved).
func userPos(file string, e cueerrors.Error) token.Pos {
	if p := e.Position(); p.IsValid() && p.Filename() == file {
		return p
	}
	for _, p := range e.InputPositions() {
		if p.IsValid() && p.Filename() == file {
			return p
		}
	}
	return token.NoPos
}

func kindName(k cue.Kind) string {
	switch k {
	case cue.IntKind:
		return "a whole number"
	case cue.NumberKind, cue.FloatKind:
		return "a number"
	case cue.StringKind:
		return "a string"
	case cue.BoolKind:
		return "true or false"
	case cue.ListKind:
		return "a list"
	case cue.StructKind:
		return "an object"
	case cue.NullKind:
		return "null"
	case cue.BottomKind:
		return "an error"
	}
	// Several kinds: name them all.
	var names []string
	for _, one := range []cue.Kind{cue.BoolKind, cue.IntKind, cue.FloatKind, cue.StringKind, cue.ListKind, cue.StructKind, cue.NullKind} {
		if k&one != 0 {
			names = append(names, kindName(one))
		}
	}
	return strings.Join(names, " or ")
}
