package portpool

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func mustNew(t testing.TB, ports, exclude []string) *Pool {
	t.Helper()
	p, err := New(ports, exclude)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFreshDefaultPool(t *testing.T) {
	p := mustNew(t, []string{"6000-6050"}, nil)
	if p.Size() != 51 || p.Free() != 51 {
		t.Fatalf("size %d free %d, want 51 51", p.Size(), p.Free())
	}
	a, b, err := p.Take2()
	if err != nil || a != 6000 || b != 6001 {
		t.Fatalf("first Take2 = %d, %d, %v; the Controller expects 6000, 6001", a, b, err)
	}
	a, b, _ = p.Take2()
	if a != 6002 || b != 6003 {
		t.Fatalf("second Take2 = %d, %d; want 6002, 6003", a, b)
	}
	if p.Free() != 47 {
		t.Fatalf("free %d, want 47", p.Free())
	}
}

func TestExcludeAndGaps(t *testing.T) {
	p := mustNew(t, []string{"7000", "6000-6063", "6200-6300"}, []string{"6000", "6002-6062", "6250-6300"})
	var got []uint16
	for {
		a, b, err := p.Take2()
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, a, b)
	}
	// 6001, 6063, then 6200-6249 (50 ports), then 7000: 53 ports, 26 pairs.
	if len(got) != 52 || got[0] != 6001 || got[1] != 6063 || got[2] != 6200 || got[51] != 6249 {
		t.Fatalf("took %d ports: %v", len(got), got)
	}
	if p.Free() != 1 {
		t.Fatalf("free %d, want 1 (port 7000)", p.Free())
	}
	if !p.Contains(7000) || p.Contains(6000) || p.Contains(6250) || p.Contains(1) {
		t.Error("Contains disagrees with ports minus exclude")
	}
}

func TestReleaseReusesLowest(t *testing.T) {
	p := mustNew(t, []string{"6000-6050"}, nil)
	for range 3 {
		p.Take2()
	}
	p.Release(6002)
	p.Release(6003)
	p.Release(6003) // twice is harmless
	p.Release(9999) // not in the pool
	if a, b, _ := p.Take2(); a != 6002 || b != 6003 {
		t.Fatalf("got %d, %d; want the released 6002, 6003", a, b)
	}
	if p.Free() != 45 {
		t.Fatalf("free %d, want 45", p.Free())
	}
}

func TestReserve(t *testing.T) {
	p := mustNew(t, []string{"6000-6050"}, []string{"6010"})
	if err := p.Reserve(6000); err != nil {
		t.Fatal(err)
	}
	if err := p.Reserve(6000); err == nil {
		t.Error("reserving a used port twice succeeded")
	}
	if err := p.Reserve(6010); err == nil {
		t.Error("reserving an excluded port succeeded")
	}
	if err := p.Reserve(7000); err == nil {
		t.Error("reserving a port outside the pool succeeded")
	}
	if a, b, _ := p.Take2(); a != 6001 || b != 6002 {
		t.Fatalf("got %d, %d; want 6001, 6002 after restoring 6000", a, b)
	}
}

func TestHoldSkipsThenFrees(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := mustNew(t, []string{"6000-6050"}, nil)
	p.now = func() time.Time { return now }

	a, b, _ := p.Take2() // 6000, 6001; binding 6000 fails
	p.Hold(a, now.Add(time.Minute))
	p.Release(b)
	if p.Free() != 50 {
		t.Fatalf("free %d, want 50 while 6000 is held", p.Free())
	}
	if a, b, _ = p.Take2(); a != 6001 || b != 6002 {
		t.Fatalf("got %d, %d; want 6001, 6002 skipping held 6000", a, b)
	}
	p.Hold(6003, now.Add(90*time.Second)) // a free port can be held too
	p.Hold(6003, now.Add(10*time.Second)) // an earlier time does not shorten it

	for _, step := range []struct {
		at   time.Duration
		a, b uint16
	}{
		{59 * time.Second, 6004, 6005}, // 6000 and 6003 still held
		{60 * time.Second, 6000, 6006}, // 6000's hold is over
		{90 * time.Second, 6003, 6007}, // and 6003's
	} {
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(step.at)
		if a, b, _ = p.Take2(); a != step.a || b != step.b {
			t.Fatalf("at +%v got %d, %d; want %d, %d", step.at, a, b, step.a, step.b)
		}
	}
	if len(p.held) != 0 || len(p.holds) != 0 {
		t.Fatalf("holds left behind: %v", p.held)
	}
}

func TestReserveTakesOverHold(t *testing.T) {
	now := time.Now()
	p := mustNew(t, []string{"6000-6050"}, nil)
	p.now = func() time.Time { return now }
	p.Hold(6000, now.Add(time.Minute))
	if err := p.Reserve(6000); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	// The stale hold must not free the port the mapping now owns.
	if a, _, _ := p.Take2(); a == 6000 {
		t.Fatal("a reserved port was handed out again when its old hold expired")
	}
}

func TestNewRejectsBadRanges(t *testing.T) {
	for _, tc := range [][2][]string{
		{{"6050-6000"}, nil}, {{"x"}, nil}, {{"6000-6050"}, {"70000"}}, {{""}, nil},
	} {
		if _, err := New(tc[0], tc[1]); err == nil {
			t.Errorf("New(%q, %q) accepted", tc[0], tc[1])
		}
	}
}

// TestAgainstModel runs random operations on a large pool and on a plain
// map, and compares every answer.
func TestAgainstModel(t *testing.T) {
	now := time.Unix(0, 0)
	p := mustNew(t, []string{"1-65535"}, []string{"80", "443", "1000-1999", "8080"})
	p.now = func() time.Time { return now }
	type state int
	const (
		free state = iota
		used
		held
	)
	const out state = -1
	model := make([]state, 65536)
	heldUntil := map[uint16]time.Time{}
	for port := range model {
		if port == 0 || !p.Contains(uint16(port)) {
			model[port] = out
		}
	}
	lowest2 := func() []uint16 {
		var low []uint16
		for port := 1; port <= 65535 && len(low) < 2; port++ {
			if model[port] == free {
				low = append(low, uint16(port))
			}
		}
		return low
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var taken []uint16
	for i := range 20000 {
		for port, until := range heldUntil {
			if !until.After(now) {
				model[port] = free
				delete(heldUntil, port)
			}
		}
		switch op := rng.IntN(10); {
		case op < 5:
			want := lowest2()
			a, b, err := p.Take2()
			if len(want) < 2 {
				if err == nil {
					t.Fatalf("op %d: Take2 succeeded with %d free", i, len(want))
				}
				continue
			}
			if err != nil || a != want[0] || b != want[1] {
				t.Fatalf("op %d: Take2 = %d, %d, %v; want %v", i, a, b, err, want)
			}
			model[a], model[b] = used, used
			taken = append(taken, a, b)
		case op < 8 && len(taken) > 0:
			k := rng.IntN(len(taken))
			port := taken[k]
			taken = append(taken[:k], taken[k+1:]...)
			if model[port] == used {
				p.Release(port)
				model[port] = free
			}
		case op < 9:
			port := uint16(rng.IntN(65535) + 1)
			if model[port] == out {
				continue
			}
			until := now.Add(time.Duration(rng.IntN(100)) * time.Second)
			p.Hold(port, until)
			if old, ok := heldUntil[port]; !ok || until.After(old) {
				heldUntil[port] = until
			}
			model[port] = held
		default:
			now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
		}
		if i%1000 == 0 {
			n := 0
			for _, st := range model {
				if st == free {
					n++
				}
			}
			if p.Free() != n {
				t.Fatalf("op %d: Free() = %d, model has %d", i, p.Free(), n)
			}
		}
	}
}

func bigPool(b *testing.B) *Pool {
	p, err := New([]string{"2000-61999"}, nil) // 60,000 ports
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkTake2Release: one mapping added and removed on an empty pool.
func BenchmarkTake2Release(b *testing.B) {
	p := bigPool(b)
	for b.Loop() {
		x, y, err := p.Take2()
		if err != nil {
			b.Fatal(err)
		}
		p.Release(x)
		p.Release(y)
	}
}

// BenchmarkTake2ReleaseNearlyFull: the only free ports are at the top of a
// 60,000-port pool, the worst case for finding the lowest free port.
func BenchmarkTake2ReleaseNearlyFull(b *testing.B) {
	p := bigPool(b)
	for p.Free() > 2 {
		p.Take2()
	}
	for b.Loop() {
		x, y, err := p.Take2()
		if err != nil {
			b.Fatal(err)
		}
		p.Release(x)
		p.Release(y)
	}
}

// BenchmarkFill: taking every pair of a 60,000-port pool, per pair.
func BenchmarkFill(b *testing.B) {
	p := bigPool(b)
	for b.Loop() {
		if _, _, err := p.Take2(); err != nil {
			b.StopTimer()
			p = bigPool(b)
			b.StartTimer()
		}
	}
}

// BenchmarkHoldExpire: a port held and later freed, with 1,000 holds
// pending.
func BenchmarkHoldExpire(b *testing.B) {
	p := bigPool(b)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	for i := range 1000 {
		p.Hold(uint16(30000+i), now.Add(time.Hour))
	}
	port := uint16(2000)
	for b.Loop() {
		p.Hold(port, now.Add(time.Second))
		now = now.Add(time.Second)
		p.Free()
		port++
		if port > 20000 {
			port = 2000
		}
	}
}
