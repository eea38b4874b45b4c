package relay

import (
	"fmt"
	"testing"
	"time"
)

func TestEventRingIsBoundedAndNewestFirst(t *testing.T) {
	var r eventRing
	t0 := time.Now()
	for i := range 1000 {
		r.add(Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: "added", Mapping: fmt.Sprint(i), Text: "x"})
	}
	evs := r.list()
	if len(evs) != eventCap {
		t.Fatalf("%d events kept, want the last %d", len(evs), eventCap)
	}
	if evs[0].Mapping != "999" || evs[eventCap-1].Mapping != fmt.Sprint(1000-eventCap) {
		t.Errorf("events run from %s to %s, want 999 down to %d", evs[0].Mapping, evs[eventCap-1].Mapping, 1000-eventCap)
	}
}

func TestEventRingCoalescesOnlyRecentRepeats(t *testing.T) {
	var r eventRing
	t0 := time.Now()
	e := Event{Kind: "refused", Mapping: "m", Text: "wrong passcode"}
	e.Time = t0
	r.add(e)
	e.Time = t0.Add(time.Second)
	r.add(e)
	e.Time = t0.Add(time.Second + coalesceWithin)
	r.add(e)
	evs := r.list()
	if len(evs) != 2 || evs[0].Count != 1 || evs[1].Count != 2 {
		t.Errorf("got %+v, want a repeat within %s coalesced (count 2) and a later one apart", evs, coalesceWithin)
	}
}
