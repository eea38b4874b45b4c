package tunnel_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// BenchmarkPublicBurst sends bursts of 4x the pool's size in public
// sessions at once and reports the median and p99 session time: a tunnel
// that paused before replacing a used connection would drain its pool and
// show it in p99.
func BenchmarkPublicBurst(b *testing.B) {
	const pool, burst = 60, 240
	in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 2), Logger: relaytest.Quiet()})
	m := in.AddPublic(b, pool, 60000)
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				io.ReadFull(c, buf)
				c.Write(buf)
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tn := tunnel.New(tunnel.Options{BackoffMin: 10 * time.Millisecond, BackoffMax: time.Second})
	go tn.RunConfig(ctx, tunnel.Config{Mode: "public", Host: "127.0.0.1", Port: m.Port1, Passcode: m.Passcode1,
		ConnectionCount: pool, LocalHost: "127.0.0.1", LocalPort: svc.Addr().(*net.TCPAddr).Port, DevMode: true})
	var times []time.Duration
	var mu sync.Mutex
	b.ResetTimer()
	for range b.N {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		if err := tn.Wait(wctx, func(s tunnel.Stats) bool { return s.Idle == pool }); err != nil {
			b.Fatal(err)
		}
		wcancel()
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				start := time.Now()
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port2))
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				c.Write([]byte("hello"))
				if _, err := io.ReadAll(c); err != nil {
					b.Error(err)
				}
				mu.Lock()
				times = append(times, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "ms-p99")
}
