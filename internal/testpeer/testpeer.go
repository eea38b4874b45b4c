// Package testpeer is the one server that tests put at the far end of a
// connection: an echo service, a sink, or any handler, accepting on a real
// listener until the test ends.
package testpeer

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve accepts connections on ln until the test ends and runs handle on
// each in its own goroutine, closing the connection when handle returns.
// At cleanup it closes ln and every connection still open, and waits for
// the handlers, so no test leaves goroutines or sockets behind.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Echo writes back every byte it reads until the other side stops sending.
func Echo(c net.Conn) { io.Copy(c, c) }

// Close hangs up at once: a port that accepts and nothing more.
func Close(net.Conn) {}

// Echoing listens on a free loopback port, echoes on every connection until
// the test ends, and returns the port.
func Echoing(t testing.TB) int {
	t.Helper()
	return Listen(t, Echo)
}

// Listen listens on a free loopback port, serves every connection with
// handle until the test ends, and returns the port.
func Listen(t testing.TB, handle func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("test peer: listen on loopback: %v", err)
	}
	Serve(t, ln, handle)
	return ln.Addr().(*net.TCPAddr).Port
}
