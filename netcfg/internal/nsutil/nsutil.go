// Package nsutil runs code inside a network namespace. Sockets and
// /proc/sys/net files belong to the namespace of the thread that opens them,
// so the work happens on a locked OS thread switched into the namespace.
package nsutil

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn inside ns, or directly when ns is 0 (the caller's namespace).
func Do(ns netns.NsHandle, fn func() error) error {
	if ns == 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// A fresh goroutine: if switching back fails, its thread stays
		// locked and exits with it instead of serving other goroutines.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
