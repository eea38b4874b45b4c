package relay

import (
	"log/slog"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Accepted data connections carry the keepalive settings of the listener.
func TestAcceptedConnectionsHaveKeepAlive(t *testing.T) {
	c := &Connector{cfg: &schema.Config{}, log: slog.New(slog.DiscardHandler)}
	ln, err := c.listen(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, _ := conn.(*net.TCPConn).SyscallConn()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepIdle.Seconds())},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepInterval.Seconds())},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepCount},
	} {
		var got int
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) })
		if gerr != nil || got != o.want {
			t.Errorf("%s on an accepted connection: %d, %v; want %d", o.name, got, gerr, o.want)
		}
	}
}
