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
	return serve(ctx, ln, target, 0)
}

// ServeCopy is Serve copying through a user-space buffer of bufSize bytes
// instead of splice(2): what a relay pays when it must look at every byte.
func ServeCopy(ctx context.Context, ln net.Listener, target string, bufSize int) error {
	if bufSize <= 0 {
		return fmt.Errorf("splice relay: copy buffer size %d is not positive", bufSize)
	}
	return serve(ctx, ln, target, bufSize)
}

func serve(ctx context.Context, ln net.Listener, target string, bufSize int) error {
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
			pipe(c.(*net.TCPConn), up.(*net.TCPConn), bufSize)
		}()
	}
}

// pipe copies both ways and passes each half-close on, so EOF reaches the far
// end exactly as it would without the relay.
func pipe(a, b *net.TCPConn, bufSize int) {
	done := make(chan struct{})
	go func() {
		copyHalf(b, a, bufSize)
		close(done)
	}()
	copyHalf(a, b, bufSize)
	<-done
}

// onlyReader hides the *net.TCPConn behind an io.Reader so io.CopyBuffer
// cannot splice.
type onlyReader struct{ io.Reader }

func copyHalf(dst, src *net.TCPConn, bufSize int) {
	var err error
	if bufSize > 0 {
		_, err = io.CopyBuffer(struct{ io.Writer }{dst}, onlyReader{src}, make([]byte, bufSize))
	} else {
		_, err = io.Copy(dst, src)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		// A reset on one side: tear down both so the other copy ends too.
		src.Close()
		dst.Close()
		return
	}
	dst.CloseWrite()
}
