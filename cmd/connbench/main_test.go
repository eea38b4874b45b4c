package main

import (
	"io"
	"math"
	"testing"
	"time"
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

// A relay's setup cost is its CPU over every session of every round; a relay
// whose CPU cannot be read (two processes, or none of its own) has no figure
// rather than zero.
func TestSetupCPU(t *testing.T) {
	b := &bench{setups: map[int]map[string]*setupRuns{1: {
		pSplice:    {cpu: 300 * time.Millisecond, sessions: 3000},
		pSplice2:   {rates: []float64{1000}},
		pConnector: {cpu: 0, sessions: 0},
	}}}
	if got := b.setupCPU(1, pSplice); got != 100 {
		t.Errorf("300 ms over 3000 sessions = %v µs per session, want 100", got)
	}
	for _, name := range []string{pSplice2, pConnector, pHAProxy} {
		if got := b.setupCPU(1, name); !math.IsNaN(got) {
			t.Errorf("%s without CPU readings: %v µs per session, want NaN", name, got)
		}
	}
}
