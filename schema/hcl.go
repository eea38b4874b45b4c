package schema

import (
	"fmt"
	"math/big"
	"sort"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// HCL shape (see README): top-level attributes for the five settings and
// hostname; a block per section (ntp, tls, firewall, api, log, relay);
// repeated blocks for list sections. hclLists maps those block types to the
// schema field that holds the list.
var hclLists = map[string]string{
	"network": "network", // network { name = "eth0" ... }, once per interface
	"route":   "routes",  // inside network
	"forward": "forward", // inside firewall
}

// hclConv turns an HCL file into the CUE syntax tree the other formats
// produce, with every node positioned at its place in the HCL text, so that
// one schema and one set of error messages serve all three formats.
type hclConv struct {
	c  *collector
	tf *token.File
	ok bool
}

func hclToCUE(c *collector, filename string, data []byte) (ast.Expr, bool) {
	tf := token.NewFile(filename, -1, len(data))
	tf.SetLinesForContent(data)
	h := &hclConv{c: c, tf: tf, ok: true}
	f, diags := hclsyntax.ParseConfig(data, filename, hcl.InitialPos)
	h.diags(diags)
	if diags.HasErrors() {
		return nil, false
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		c.add(token.NoPos, nil, "not an HCL native-syntax file")
		return nil, false
	}
	st := h.body(body, nil)
	st.Lbrace = h.pos(body.SrcRange.Start)
	return st, h.ok
}

func (h *hclConv) pos(p hcl.Pos) token.Pos {
	if p.Byte < 0 || p.Byte > h.tf.Size() {
		return token.NoPos
	}
	return h.tf.Pos(p.Byte, token.NoRelPos)
}

func (h *hclConv) fail(r hcl.Range, p path, msg string) {
	h.ok = false
	h.c.add(h.pos(r.Start), p, msg)
}

func (h *hclConv) diags(ds hcl.Diagnostics) {
	for _, d := range ds {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		r := hcl.Range{Start: hcl.InitialPos}
		if d.Subject != nil {
			r = *d.Subject
		}
		h.fail(r, nil, msg)
	}
}

func (h *hclConv) body(b *hclsyntax.Body, p path) *ast.StructLit {
	st := &ast.StructLit{}
	type item struct {
		at    int
		field *ast.Field
	}
	var items []item
	for name, a := range b.Attributes {
		v := h.expr(a.Expr, p.field(name))
		if v == nil {
			continue
		}
		items = append(items, item{a.NameRange.Start.Byte, h.field(name, a.NameRange, v)})
	}
	lists := map[string]*ast.ListLit{}
	single := map[string]hcl.Range{}
	for _, blk := range b.Blocks {
		r := blk.TypeRange
		if len(blk.Labels) > 0 {
			h.fail(blk.LabelRanges[0], p.field(blk.Type), fmt.Sprintf(
				"block %q takes no label; write settings inside the braces (e.g. name = %q)", blk.Type, blk.Labels[0]))
			continue
		}
		if field, isList := hclLists[blk.Type]; isList {
			l, seen := lists[field]
			if !seen {
				l = &ast.ListLit{Lbrack: h.pos(r.Start)}
				lists[field] = l
				items = append(items, item{r.Start.Byte, h.field(field, r, l)})
			}
			inner := h.body(blk.Body, p.field(field).idx(len(l.Elts)))
			inner.Lbrace = h.pos(r.Start)
			l.Elts = append(l.Elts, inner)
			continue
		}
		if first, dup := single[blk.Type]; dup {
			h.fail(r, p.field(blk.Type), fmt.Sprintf(
				"block %q appears twice (first at line %d); put all its settings in one block", blk.Type, first.Start.Line))
			continue
		}
		single[blk.Type] = r
		inner := h.body(blk.Body, p.field(blk.Type))
		inner.Lbrace = h.pos(r.Start)
		items = append(items, item{r.Start.Byte, h.field(blk.Type, r, inner)})
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].at < items[j].at })
	for _, it := range items {
		st.Elts = append(st.Elts, it.field)
	}
	return st
}

func (h *hclConv) field(name string, r hcl.Range, v ast.Expr) *ast.Field {
	label := ast.NewString(name)
	label.ValuePos = h.pos(r.Start)
	return &ast.Field{Label: label, Value: v}
}

// expr converts an HCL expression. Lists and objects are taken apart so
// that each element keeps its own position; everything else is evaluated
// with no variables or functions (a config is data).
func (h *hclConv) expr(e hclsyntax.Expression, p path) ast.Expr {
	switch e := e.(type) {
	case *hclsyntax.TupleConsExpr:
		l := &ast.ListLit{Lbrack: h.pos(e.OpenRange.Start)}
		for i, x := range e.Exprs {
			if v := h.expr(x, p.idx(i)); v != nil {
				l.Elts = append(l.Elts, v)
			}
		}
		return l
	case *hclsyntax.ObjectConsExpr:
		st := &ast.StructLit{Lbrace: h.pos(e.OpenRange.Start)}
		for _, it := range e.Items {
			k, diags := it.KeyExpr.Value(nil)
			h.diags(diags)
			if diags.HasErrors() {
				continue
			}
			if k.IsNull() || !k.IsKnown() || k.Type() != cty.String {
				h.fail(it.KeyExpr.Range(), p, "object keys must be names or strings")
				continue
			}
			name := k.AsString()
			v := h.expr(it.ValueExpr, p.field(name))
			if v == nil {
				continue
			}
			st.Elts = append(st.Elts, h.field(name, it.KeyExpr.Range(), v))
		}
		return st
	}
	v, diags := e.Value(nil)
	h.diags(diags)
	if diags.HasErrors() {
		return nil
	}
	return h.cty(v, e.Range(), p)
}

func (h *hclConv) cty(v cty.Value, r hcl.Range, p path) ast.Expr {
	pos := h.pos(r.Start)
	var out ast.Expr
	switch {
	case !v.IsKnown():
		h.fail(r, p, "value is not known when the config is read")
		return nil
	case v.IsNull():
		out = ast.NewNull()
	case v.Type() == cty.String:
		out = ast.NewString(v.AsString())
	case v.Type() == cty.Bool:
		out = ast.NewBool(v.True())
	case v.Type() == cty.Number:
		f := v.AsBigFloat()
		if f.IsInf() || f.MantExp(nil) > 64 || f.MantExp(nil) < -64 {
			h.fail(r, p, "number is out of range")
			return nil
		}
		if f.IsInt() {
			i, _ := f.Int(new(big.Int))
			out = ast.NewLit(token.INT, i.String())
		} else {
			out = ast.NewLit(token.FLOAT, f.Text('g', -1))
		}
	case v.Type().IsListType(), v.Type().IsTupleType(), v.Type().IsSetType():
		l := &ast.ListLit{}
		for i, it := 0, v.ElementIterator(); it.Next(); i++ {
			_, ev := it.Element()
			x := h.cty(ev, r, p.idx(i))
			if x == nil {
				return nil
			}
			l.Elts = append(l.Elts, x)
		}
		out = l
	case v.Type().IsObjectType(), v.Type().IsMapType():
		st := &ast.StructLit{}
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			x := h.cty(ev, r, p.field(k.AsString()))
			if x == nil {
				return nil
			}
			st.Elts = append(st.Elts, h.field(k.AsString(), r, x))
		}
		out = st
	default:
		h.fail(r, p, "unsupported kind of value: "+v.Type().FriendlyName())
		return nil
	}
	ast.SetPos(out, pos)
	return out
}
