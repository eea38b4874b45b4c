package testpeer_test

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
)

// The echo answers, and the end of the test hangs up on connections that
// are still open, so none outlives the test that made it.
func TestEchoAndCleanupClosesOpenConnections(t *testing.T) {
	var c net.Conn
	t.Run("inner", func(t *testing.T) {
		port := testpeer.Echoing(t)
		var err error
		c, err = net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "hello")
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
			t.Fatalf("echo: %q, %v", b, err)
		}
	})
	defer c.Close()
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the test ended: read %d bytes, %v; want EOF", n, err)
	}
}
