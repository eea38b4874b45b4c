// Package splice is the reference relay the Connector is measured against:
// accept, dial the target, two io.Copy between *net.TCPConn. Between two TCP
// sockets io.Copy uses splice(2), so this is the practical ceiling for a
// user-space relay; it has no protocol, no pooling and no limits on purpose.
package splice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Serve relays every connection accepted on ln to a fresh connection to
// target, until ctx ends. It closes ln when it returns.
func Serve(ctx context.Context, ln net.Listener, target string) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var d net.Dialer
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("splice relay: accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			up, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				return // the client sees its connection close, as with any relay whose target is down
			}
			defer up.Close()
			pipe(c.(*net.TCPConn), up.(*net.TCPConn))
		}()
	}
}

// pipe copies both ways and passes each half-close on, so EOF reaches the far
// end exactly as it would without the relay.
func pipe(a, b *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		copyHalf(b, a)
		close(done)
	}()
	copyHalf(a, b)
	<-done
}

func copyHalf(dst, src *net.TCPConn) {
	_, err := io.Copy(dst, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		// A reset on one side: tear down both so the other copy ends too.
		src.Close()
		dst.Close()
		return
	}
	dst.CloseWrite()
}
