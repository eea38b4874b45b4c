package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// peerEvent is a kind of log line that a remote peer can cause at will.
type peerEvent int

const (
	evAuthFailed peerEvent = iota
	evAgentFull
	evAuthorizedLost
	evBeatTimeout
	evWaitTimeout
	evSilentTimeout
	evWriteTimeout
	evLimit
	evAcceptFailed
	evPrivateReplaced
	nPeerEvents
)

// logGate keeps peer-caused log lines of one mapping from flooding the log
// (and the SD card, with log.file on): the first line of a kind is written,
// the rest within the interval are only counted, and one summary line with
// the count and the last one's attributes ends the interval. Counters in
// /metrics are kept apart from this and stay exact.
type logGate struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	stop   bool
	events [nPeerEvents]gated
}

type gated struct {
	since      time.Time   // start of the current interval; zero: none open
	suppressed int         // lines not written in it
	timer      *time.Timer // writes the summary at the interval's end
	level      slog.Level
	msg        string
	args       []any // of the last suppressed line
}

func newLogGate(log *slog.Logger, every time.Duration) *logGate {
	return &logGate{log: log, every: every}
}

// emit writes the line, or counts it when one of its kind was written
// within the interval.
func (g *logGate) emit(ev peerEvent, level slog.Level, msg string, args ...any) {
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	g.mu.Lock()
	e := &g.events[ev]
	if e.since.IsZero() || now.Sub(e.since) >= g.every {
		e.since = now
		g.mu.Unlock()
		g.log.Log(context.Background(), level, msg, args...)
		return
	}
	e.suppressed++
	e.level, e.msg, e.args = level, msg, args
	if e.timer == nil && !g.stop {
		e.timer = time.AfterFunc(e.since.Add(g.every).Sub(now), func() { g.flush(ev) })
	}
	g.mu.Unlock()
}

// flush writes the summary of an interval. The next interval starts now, so
// a flood that goes on yields one summary line per interval.
func (g *logGate) flush(ev peerEvent) {
	g.mu.Lock()
	e := &g.events[ev]
	e.timer = nil
	n, level, msg, args := e.suppressed, e.level, e.msg, e.args
	e.suppressed, e.args = 0, nil
	if n > 0 {
		e.since = time.Now()
	} else {
		e.since = time.Time{}
	}
	g.mu.Unlock()
	if n > 0 {
		g.log.Log(context.Background(), level, msg, append(args, "repeated", n, "within", g.every)...)
	}
}

// close writes the pending summaries at once (the mapping is going away).
func (g *logGate) close() {
	g.mu.Lock()
	g.stop = true
	var pending []peerEvent
	for i := range g.events {
		if t := g.events[i].timer; t != nil && t.Stop() {
			pending = append(pending, peerEvent(i))
		}
	}
	g.mu.Unlock()
	for _, ev := range pending {
		g.flush(ev)
	}
}
