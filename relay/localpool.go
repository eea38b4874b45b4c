package relay

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// localPool is a stand-in port pool used until relay/portpool lands.
type localPool struct {
	ports []uint16
	used  map[uint16]bool
	held  map[uint16]time.Time
}

func newLocalPool(ranges, exclude []string) (*localPool, error) {
	set := map[uint16]bool{}
	parse := func(s string) (uint16, uint16, error) {
		a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
		lo, err := strconv.ParseUint(a, 10, 16)
		if err != nil {
			return 0, 0, fmt.Errorf("port range %q: %w", s, err)
		}
		hi := lo
		if ok {
			if hi, err = strconv.ParseUint(b, 10, 16); err != nil {
				return 0, 0, fmt.Errorf("port range %q: %w", s, err)
			}
		}
		return uint16(lo), uint16(hi), nil
	}
	for _, r := range ranges {
		lo, hi, err := parse(r)
		if err != nil {
			return nil, err
		}
		for p := int(lo); p <= int(hi); p++ {
			set[uint16(p)] = true
		}
	}
	for _, r := range exclude {
		lo, hi, err := parse(r)
		if err != nil {
			return nil, err
		}
		for p := int(lo); p <= int(hi); p++ {
			delete(set, uint16(p))
		}
	}
	lp := &localPool{used: map[uint16]bool{}, held: map[uint16]time.Time{}}
	for p := range set {
		lp.ports = append(lp.ports, p)
	}
	sort.Slice(lp.ports, func(i, j int) bool { return lp.ports[i] < lp.ports[j] })
	return lp, nil
}

func (l *localPool) avail(p uint16, now time.Time) bool {
	if l.used[p] {
		return false
	}
	if t, ok := l.held[p]; ok {
		if now.Before(t) {
			return false
		}
		delete(l.held, p)
	}
	return true
}

func (l *localPool) Take2() (uint16, uint16, error) {
	now := time.Now()
	var got []uint16
	for _, p := range l.ports {
		if l.avail(p, now) {
			got = append(got, p)
			if len(got) == 2 {
				l.used[got[0]], l.used[got[1]] = true, true
				return got[0], got[1], nil
			}
		}
	}
	return 0, 0, errors.New("fewer than two free ports")
}

func (l *localPool) Reserve(p uint16) error {
	if !l.Contains(p) {
		return fmt.Errorf("port %d is not in the pool", p)
	}
	if l.used[p] {
		return fmt.Errorf("port %d is already in use", p)
	}
	l.used[p] = true
	return nil
}

func (l *localPool) Release(p uint16)               { delete(l.used, p) }
func (l *localPool) Hold(p uint16, until time.Time) { delete(l.used, p); l.held[p] = until }

func (l *localPool) Free() int {
	now, n := time.Now(), 0
	for _, p := range l.ports {
		if l.avail(p, now) {
			n++
		}
	}
	return n
}

func (l *localPool) Contains(p uint16) bool {
	i := sort.Search(len(l.ports), func(i int) bool { return l.ports[i] >= p })
	return i < len(l.ports) && l.ports[i] == p
}
