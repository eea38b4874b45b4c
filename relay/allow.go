package relay

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

// refusalLogEvery bounds the log lines that refused API clients cause: one
// line per interval at most, with the count since the last line.
const refusalLogEvery = time.Minute

// guard lets only the sources in api.allow (and this host, over loopback)
// use the API and /metrics. The others get 403 with the Controller's error
// shape and the connection is closed.
//
// Why 403 rather than a bare close: a Controller counts both as a failed
// call and tries another Connector, but a JSON error that says what
// happened is what an operator sees when a Controller's address is missing
// from the list (in curl, or in the Controller's error), where a close
// looks like a network fault. A Controller must never be sent a body that
// is not JSON: it parses every reply.
func (c *Connector) guard(next http.Handler) (http.Handler, error) {
	if len(c.cfg.API.Allow) == 0 {
		return next, nil
	}
	allow := make([]netip.Prefix, 0, len(c.cfg.API.Allow))
	for i, s := range c.cfg.API.Allow {
		p, err := schema.ParseAllow(s)
		if err != nil {
			return nil, fmt.Errorf("api.allow[%d]: %w", i, err)
		}
		allow = append(allow, p)
	}
	var (
		mu      sync.Mutex
		last    time.Time
		pending int
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src, ok := sourceAddr(r.RemoteAddr)
		if ok && allowed(allow, src) {
			next.ServeHTTP(w, r)
			return
		}
		c.apiRefused.Inc()
		mu.Lock()
		pending++
		if now := time.Now(); now.Sub(last) >= refusalLogEvery {
			c.log.Warn("refused API requests from sources not in api.allow", "source", src.String(), "path", r.URL.Path,
				"count", pending, "since_last_line", refusalLogEvery.String())
			last, pending = now, 0
		}
		mu.Unlock()
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusForbidden, fmt.Sprintf("source address %s may not use this Connector's API (api.allow)", src))
	}), nil
}

func sourceAddr(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(host)
		return a.Unmap(), err == nil
	}
	return ap.Addr().Unmap(), true
}

// allowed: loopback always (this host's own CLI and supervisor), else the
// first prefix that contains the address.
func allowed(allow []netip.Prefix, a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	a = a.WithZone("")
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
