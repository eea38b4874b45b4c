package relaytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// EchoAgents keeps n agent connections on a public mapping's agent port
// (port1), authenticated with passcode, each echoing what it receives and
// reconnecting after its session ends, as an agent's pool does. They stop
// when the test ends.
func EchoAgents(t testing.TB, port int, passcode string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				conn, err := Agent(addr, passcode)
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				stop := context.AfterFunc(ctx, func() { conn.Close() })
				io.Copy(conn, conn)
				stop()
				conn.Close()
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// Agent dials addr and authenticates with passcode; it returns the
// connection once the Connector said AUTHORIZED.
func Agent(addr, passcode string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, passcode); err != nil {
		conn.Close()
		return nil, err
	}
	var ok [len("AUTHORIZED")]byte
	if _, err := io.ReadFull(conn, ok[:]); err != nil || string(ok[:]) != "AUTHORIZED" {
		conn.Close()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// RoundTrip connects to a public port, sends size bytes and reads as many
// back (from echoing agents), and closes; it fails the test on an error.
func RoundTrip(t testing.TB, port, size int) {
	t.Helper()
	if err := Exchange(port, size); err != nil {
		t.Fatal(err)
	}
}

// Exchange is RoundTrip returning its error, for use off the test's
// goroutine.
func Exchange(port, size int) error {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		return fmt.Errorf("public client: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	chunk := make([]byte, 16<<10)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	errc := make(chan error, 1)
	go func() {
		left := size
		for left > 0 {
			n := min(left, len(chunk))
			if _, err := conn.Write(chunk[:n]); err != nil {
				errc <- err
				return
			}
			left -= n
		}
		errc <- nil
	}()
	if _, err := io.CopyN(io.Discard, conn, int64(size)); err != nil {
		return fmt.Errorf("public client: read the echo of %d bytes: %w", size, err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("public client: write: %w", err)
	}
	return nil
}
