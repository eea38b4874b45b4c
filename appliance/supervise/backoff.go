package supervise

import "time"

// Backoff spaces out restarts of a child that keeps failing: Min after the
// first failure, doubling on each failure after that up to Max, and back to
// Min once the child has stayed up for ResetAfter.
type Backoff struct {
	Min, Max, ResetAfter time.Duration

	next time.Duration
}

// Next returns how long to wait before restarting a child that ran for
// uptime before it ended.
func (b *Backoff) Next(uptime time.Duration) time.Duration {
	if b.next == 0 || uptime >= b.ResetAfter {
		b.next = b.Min
	}
	d := b.next
	b.next = min(b.next*2, b.Max)
	return d
}
