package relay_test

import (
	"io"
	"net"
	"runtime"
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
