package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// bar draws a one-line progress bar on a terminal.
type bar struct {
	w     io.Writer
	label string
}

func newBar(w io.Writer, label string) *bar { return &bar{w: w, label: label} }

// Step implements image.Progress.
func (b *bar) Step(name string, n, total int) {
	const width = 20
	filled := width * (n - 1) / total
	fmt.Fprintf(b.w, "\r\033[K%-7s [%s%s] %d/%d %s", b.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), n, total, name)
}

func (b *bar) done() { fmt.Fprint(b.w, "\r\033[K") }

func portFree(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
