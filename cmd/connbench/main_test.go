package main

import (
	"io"
	"math"
	"testing"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-only", "memory", "-skip", "socat,haproxy", "-idle", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.phases["memory"] || o.phases["streams"] || o.phases["setup"] {
		t.Errorf("-only memory gave phases %v", o.phases)
	}
	if !o.skipPeer["socat"] || !o.skipPeer["haproxy"] || o.skipPeer["connector"] {
		t.Errorf("-skip socat,haproxy gave %v", o.skipPeer)
	}
	for _, bad := range [][]string{{"-only", "stream"}, {"-rounds", "0"}, {"-idle", "-1"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted it", bad)
		}
	}
}

// Medians, not means: one round disturbed by other work must not move the
// reported figure.
func TestMedian(t *testing.T) {
	if got := median([]float64{1, 100, 2}); got != 2 {
		t.Errorf("median of 1, 100, 2 = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 4, 1, 3, 2 = %v, want 2.5", got)
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median of nothing = %v, want NaN", got)
	}
}
