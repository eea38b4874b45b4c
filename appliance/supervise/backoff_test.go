package supervise

import (
	"testing"
	"time"
)

func TestBackoffDoublesCapsAndResets(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 30 * time.Second, ResetAfter: time.Minute}
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next(time.Second)) // keeps crashing quickly
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("restart delays = %v, want %v seconds", got, want)
		}
	}
	// A child that stayed up past ResetAfter starts the sequence again.
	if d := b.Next(2 * time.Minute); d != time.Second {
		t.Fatalf("after a long run the delay is %v, want 1s", d)
	}
	if d := b.Next(0); d != 2*time.Second {
		t.Fatalf("crash right after the reset: delay %v, want 2s", d)
	}
}
