package relay_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// These run the Connector and its peers in one process, so they show the
// Connector's own costs, not ratios against other relays (cmd/connbench
// does that against the built binary).

// BenchmarkIdleAgentConnections reports the Go memory (heap plus goroutine
// stacks) per idle authenticated agent connection. The peers' side is plain
// sockets with no goroutines, so nearly all of it is the Connector's.
func BenchmarkIdleAgentConnections(b *testing.B) {
	const conns = 5000 // two descriptors each in this one process
	in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 2), Logger: relaytest.Quiet()})
	m := in.AddPublic(b, conns, 200000)
	for b.Loop() {
		before := memInUse()
		held := make([]net.Conn, 0, conns)
		reply := make([]byte, 10)
		for range conns {
			c, err := net.Dial("tcp", addr(m.Port1))
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(c, m.Passcode1)
			if _, err := io.ReadFull(c, reply); err != nil {
				b.Fatal(err)
			}
			held = append(held, c)
		}
		b.ReportMetric(float64(memInUse()-before)/conns, "bytes/conn")
		for _, c := range held {
			c.Close()
		}
	}
}

func memInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkPublicSession measures one public session's throughput in each
// direction through a public mapping.
func BenchmarkPublicSession(b *testing.B) {
	for _, dir := range []string{"public-to-agent", "agent-to-public"} {
		b.Run(dir, func(b *testing.B) {
			in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 2), Logger: relaytest.Quiet()})
			m := in.AddPublic(b, 60, 200000)
			agent, err := net.Dial("tcp", addr(m.Port1))
			if err != nil {
				b.Fatal(err)
			}
			defer agent.Close()
			io.WriteString(agent, m.Passcode1)
			io.ReadFull(agent, make([]byte, 10))
			pub, err := net.Dial("tcp", addr(m.Port2))
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			pub.Write([]byte("x"))
			io.ReadFull(agent, make([]byte, 1))
			src, dst := pub, agent
			if dir == "agent-to-public" {
				src, dst = agent, pub
			}
			const chunk = 1 << 20
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			done := make(chan error, 1)
			go func() {
				// A plain read loop: io.Discard's ReadFrom reads 8 KiB at a time.
				rbuf := make([]byte, chunk)
				for left := int64(b.N) * chunk; left > 0; {
					n, err := dst.Read(rbuf[:min(left, chunk)])
					left -= int64(n)
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			b.ResetTimer()
			for range b.N {
				if _, err := src.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
			case <-time.After(hangGuard):
				b.Fatal("receiver stuck")
			}
		})
	}
}

// BenchmarkAgentHandshake measures dial, passcode, AUTHORIZED and close.
func BenchmarkAgentHandshake(b *testing.B) {
	in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 2), Logger: relaytest.Quiet()})
	m := in.AddPublic(b, 1<<20, 200000)
	reply := make([]byte, 10)
	for b.Loop() {
		c, err := net.Dial("tcp", addr(m.Port1))
		if err != nil {
			b.Fatal(err)
		}
		io.WriteString(c, m.Passcode1)
		if _, err := io.ReadFull(c, reply); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkPublicSessionSetup measures whole 1-byte sessions through a
// pooled public mapping, as cmd/connbench's setup figure does: the client
// connects, sends a byte, reads the echo and closes; the agent side echoes,
// waits for the end and replaces its used connection by dialling a fresh
// one, as a real agent does. Besides allocations it reports the goroutines
// started per session; the peers here start none of their own per session,
// so those are the Connector's.
func BenchmarkPublicSessionSetup(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrent=%d", conc), func(b *testing.B) {
			const pool = 16
			in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 2), Logger: relaytest.Quiet()})
			m := in.AddPublic(b, pool, 200000)
			ctx, cancel := context.WithCancel(context.Background())
			var agents sync.WaitGroup
			defer func() { cancel(); agents.Wait() }()
			for range pool {
				agents.Add(1)
				go func() {
					defer agents.Done()
					echoAgent(ctx, addr(m.Port1), m.Passcode1)
				}()
			}
			waitIdle(b, in, pool)
			created := goroutinesCreated()
			b.ReportAllocs()
			b.ResetTimer()
			var next atomic.Int64
			var clients sync.WaitGroup
			errs := make(chan error, conc)
			for range conc {
				clients.Add(1)
				go func() {
					defer clients.Done()
					for next.Add(1) <= int64(b.N) {
						if err := echoSession(addr(m.Port2)); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			clients.Wait()
			b.StopTimer()
			b.ReportMetric(float64(goroutinesCreated()-created-uint64(conc))/float64(b.N), "goroutines/op")
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
		})
	}
}

// echoSession is one public client's session: connect, one byte, its echo,
// close.
func echoSession(a string) error {
	c, err := net.Dial("tcp", a)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	b := []byte{'e'}
	if _, err := c.Write(b); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	return nil
}

// echoAgent keeps one authenticated agent connection: it echoes a session's
// first byte, reads until the client's end reaches it, closes and dials a
// fresh connection, until ctx ends.
func echoAgent(ctx context.Context, a, passcode string) {
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", a)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		io.WriteString(c, passcode)
		if _, err := io.ReadFull(c, buf[:len("AUTHORIZED")]); err == nil {
			if n, err := c.Read(buf[:1]); err == nil && n == 1 {
				if _, err := c.Write(buf[:1]); err == nil {
					for err == nil {
						_, err = c.Read(buf)
					}
				}
			}
		}
		stop()
		c.Close()
	}
}

// waitIdle waits until the Connector holds n idle agent connections.
func waitIdle(b *testing.B, in *relaytest.Instance, n int) {
	b.Helper()
	const name = `iofog_connector_agent_connections{state="idle"} `
	end := time.Now().Add(hangGuard)
	for time.Now().Before(end) {
		resp, err := in.Client.Get(in.Base + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, name); ok {
				if f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64); f >= float64(n) {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("fewer than %d agent connections idle after %s", n, hangGuard)
}

func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
