package watchdog

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A regular file stands in for /dev/watchdog: feeding is a write either way,
// so its size counts the feeds and its last byte shows the magic close.
func open(t *testing.T) (Device, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f, p
}

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return st.Size()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestFeedsWhileHealthyAndGivesUpAfterGrace(t *testing.T) {
	dev, p := open(t)
	var healthy atomic.Bool
	healthy.Store(true)
	gaveUp := make(chan time.Duration, 1)
	f := &Feeder{Dev: dev, Interval: 5 * time.Millisecond, Grace: 100 * time.Millisecond,
		Healthy: healthy.Load, Log: quiet(), OnGiveUp: func(d time.Duration) { gaveUp <- d }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()

	waitUntil(t, "three feeds while healthy", func() bool { return size(p) >= 3 })

	healthy.Store(false)
	select {
	case d := <-gaveUp:
		if d < f.Grace {
			t.Fatalf("gave up after %v unhealthy, before the %v grace", d, f.Grace)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("never gave up on an unhealthy Connector")
	}
	<-done // Run returned: nothing feeds the watchdog any more
	n := size(p)
	if err := f.Disarm(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if int64(len(b)) != n+1 || b[len(b)-1] != 'V' {
		t.Fatalf("after Disarm the device holds %q..., want the feeds then the magic 'V'", b[max(0, len(b)-4):])
	}
}

func TestDisarmStopsFeedingForShutdown(t *testing.T) {
	dev, p := open(t)
	f := &Feeder{Dev: dev, Interval: 5 * time.Millisecond, Grace: time.Hour, Healthy: func() bool { return true }, Log: quiet()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)
	waitUntil(t, "a feed", func() bool { return size(p) >= 1 })
	if err := f.Disarm(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if b[len(b)-1] != 'V' {
		t.Fatalf("last byte %q, want the magic close 'V'", b[len(b)-1])
	}
	// Run may still tick, but a disarmed feeder writes nothing more (the
	// device is closed; a write would re-arm a real watchdog).
	if err := f.feed(); err != nil {
		t.Fatalf("feed after Disarm: %v", err)
	}
	if b2, _ := os.ReadFile(p); len(b2) != len(b) {
		t.Fatal("fed after Disarm")
	}
}
