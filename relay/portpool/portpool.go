// Package portpool hands out the Connector's mapping ports: the pool from
// the settings' ports minus exclude, lowest free port first, as the
// Controller expects (6000 then 6001 on a fresh default pool).
//
// The free set is a two-level bitmap over the 65536 port numbers: one bit
// per port, and a summary bit per 64-port word saying whether that word has
// any free port. Finding the lowest free port reads at most 16 summary words
// and one bitmap word, so every operation is O(1) whatever the pool's size.
//
// A Pool is not safe for concurrent use; the relay guards it with the same
// lock as its mappings.
package portpool

import (
	"container/heap"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

// ErrExhausted is returned by Take2 when fewer than two ports are free.
var ErrExhausted = errors.New("not enough available ports: fewer than two ports are free in the pool")

const (
	ports   = 1 << 16
	words   = ports / 64
	summary = words / 64
)

// Pool is the set of mapping ports and which of them are free.
type Pool struct {
	in    [words]uint64   // in the pool (ports minus exclude)
	free  [words]uint64   // in the pool, not used, not held
	sum   [summary]uint64 // bit w set when free[w] != 0
	used  [words]uint64   // taken or reserved by a mapping
	size  int
	nfree int

	held  map[uint16]time.Time // held by something else until then
	holds holdHeap             // the same, soonest first; stale entries are skipped
	now   func() time.Time
}

// New builds a pool from the settings' "N" / "A-B" ranges.
func New(portRanges, exclude []string) (*Pool, error) {
	p := &Pool{held: map[uint16]time.Time{}, now: time.Now}
	for _, r := range portRanges {
		lo, hi, err := schema.ParseRange(r)
		if err != nil {
			return nil, fmt.Errorf("port pool: ports: %w", err)
		}
		for port := int(lo); port <= int(hi); port++ {
			p.in[port>>6] |= 1 << (port & 63)
		}
	}
	for _, r := range exclude {
		lo, hi, err := schema.ParseRange(r)
		if err != nil {
			return nil, fmt.Errorf("port pool: exclude: %w", err)
		}
		for port := int(lo); port <= int(hi); port++ {
			p.in[port>>6] &^= 1 << (port & 63)
		}
	}
	for w := range p.in {
		p.free[w] = p.in[w]
		n := bits.OnesCount64(p.in[w])
		p.size += n
		if n > 0 {
			p.sum[w>>6] |= 1 << (w & 63)
		}
	}
	p.nfree = p.size
	return p, nil
}

// Size is the number of ports in the pool.
func (p *Pool) Size() int { return p.size }

// Contains reports whether port is in the pool (whatever its state).
func (p *Pool) Contains(port uint16) bool { return bit(&p.in, port) }

// Free is the number of ports free now.
func (p *Pool) Free() int {
	p.expire()
	return p.nfree
}

// Take2 takes the two lowest free ports, p1 < p2.
func (p *Pool) Take2() (p1, p2 uint16, err error) {
	p.expire()
	a := p.next(0)
	if a < 0 {
		return 0, 0, ErrExhausted
	}
	b := p.next(a + 1)
	if b < 0 {
		return 0, 0, ErrExhausted
	}
	p.use(uint16(a))
	p.use(uint16(b))
	return uint16(a), uint16(b), nil
}

// Reserve marks a port as used again, for a mapping restored from the
// store. A port something else held is taken over: the mapping owned it.
func (p *Pool) Reserve(port uint16) error {
	if !p.Contains(port) {
		return fmt.Errorf("port %d is not in the pool (ports minus exclude)", port)
	}
	if bit(&p.used, port) {
		return fmt.Errorf("port %d is already used by another mapping", port)
	}
	delete(p.held, port) // its heap entry goes stale
	p.use(port)
	return nil
}

// Release returns a used port to the pool. Ports not in use are left alone,
// so releasing twice is harmless.
func (p *Pool) Release(port uint16) {
	if !bit(&p.used, port) {
		return
	}
	p.used[port>>6] &^= 1 << (port & 63)
	p.setFree(port)
}

// Hold marks a pool port as held by something else (binding it failed) until
// the given time: Take2 skips it until then, and then it is free again, so a
// port is never lost for good. A used port that is held stops being used.
// Holding a held port keeps the later of the two times.
func (p *Pool) Hold(port uint16, until time.Time) {
	if !p.Contains(port) {
		return
	}
	if old, ok := p.held[port]; ok {
		if until.After(old) {
			p.held[port] = until
			heap.Push(&p.holds, hold{port, until})
		}
		return
	}
	if bit(&p.used, port) {
		p.used[port>>6] &^= 1 << (port & 63)
	} else {
		p.clearFree(port)
	}
	p.held[port] = until
	heap.Push(&p.holds, hold{port, until})
}

// expire frees the ports whose hold has run out.
func (p *Pool) expire() {
	if len(p.holds) == 0 {
		return
	}
	now := p.now()
	for len(p.holds) > 0 && !p.holds[0].until.After(now) {
		h := heap.Pop(&p.holds).(hold)
		if until, ok := p.held[h.port]; ok && until.Equal(h.until) {
			delete(p.held, h.port)
			p.setFree(h.port)
		}
	}
}

func (p *Pool) use(port uint16) {
	p.clearFree(port)
	p.used[port>>6] |= 1 << (port & 63)
}

func (p *Pool) setFree(port uint16) {
	w := port >> 6
	if p.free[w]&(1<<(port&63)) != 0 {
		return
	}
	p.free[w] |= 1 << (port & 63)
	p.sum[w>>6] |= 1 << (w & 63)
	p.nfree++
}

func (p *Pool) clearFree(port uint16) {
	w := port >> 6
	if p.free[w]&(1<<(port&63)) == 0 {
		return
	}
	p.free[w] &^= 1 << (port & 63)
	if p.free[w] == 0 {
		p.sum[w>>6] &^= 1 << (w & 63)
	}
	p.nfree--
}

// next returns the lowest free port >= from, or -1.
func (p *Pool) next(from int) int {
	if from >= ports {
		return -1
	}
	w := from >> 6
	if m := p.free[w] &^ (1<<(from&63) - 1); m != 0 {
		return w<<6 | bits.TrailingZeros64(m)
	}
	// The rest of this summary word, then whole summary words.
	w++
	for s := w >> 6; s < summary && w < words; s++ {
		m := p.sum[s]
		if s == w>>6 {
			m &^= 1<<(w&63) - 1
		}
		if m != 0 {
			fw := s<<6 | bits.TrailingZeros64(m)
			return fw<<6 | bits.TrailingZeros64(p.free[fw])
		}
	}
	return -1
}

func bit(set *[words]uint64, port uint16) bool {
	return set[port>>6]&(1<<(port&63)) != 0
}

type hold struct {
	port  uint16
	until time.Time
}

type holdHeap []hold

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *holdHeap) Push(x any)        { *h = append(*h, x.(hold)) }
func (h *holdHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
