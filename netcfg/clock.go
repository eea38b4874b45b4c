package netcfg

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/netcfg/sntp"
)

// restoreClock moves the clock forward to the last known time when it is
// behind it: a board without a battery-backed clock boots in 1970, which
// makes every certificate look not yet valid.
func (n *Network) restoreClock() {
	if n.opts.TimeFile == "" {
		return
	}
	data, fromPrev, err := atomicfile.Read(n.opts.TimeFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			n.log.Warn("read last known time", "path", n.opts.TimeFile, "err", err)
		}
		return
	}
	saved, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(data)))
	if err != nil {
		n.log.Warn("last known time file is not an RFC 3339 time; ignoring it", "path", n.opts.TimeFile, "err", err)
		return
	}
	now := time.Now()
	if !now.Before(saved) {
		return
	}
	if n.opts.SetClock == nil {
		n.log.Info("clock is behind the last known time (not setting it)", "now", now, "saved", saved)
		return
	}
	if err := n.opts.SetClock(saved); err != nil {
		n.log.Error("set clock to last known time", "err", err)
		return
	}
	n.mu.Lock()
	n.clock.Restored = saved
	n.mu.Unlock()
	n.log.Info("clock restored from last known time", "was", now.UTC().Format(time.RFC3339), "now", saved.UTC().Format(time.RFC3339), "previous_generation", fromPrev)
}

// saveTime writes the current time to the time file.
func (n *Network) saveTime() error {
	if n.opts.TimeFile == "" {
		return nil
	}
	now := time.Now().UTC().Format(time.RFC3339Nano) + "\n"
	return atomicfile.Write(n.opts.TimeFile, []byte(now), 0o644, atomicfile.Options{KeepPrevious: true})
}

// runClock keeps the clock right: measure against the first server that
// answers, step the clock when the offset exceeds StepThreshold, repeat
// every SyncInterval (sooner, with backoff, while it fails), and save the
// time file every SaveInterval.
func (n *Network) runClock(ctx context.Context) {
	save := time.NewTicker(n.opts.SaveInterval)
	defer save.Stop()
	backoff := 2 * time.Second
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-save.C:
			if err := n.saveTime(); err != nil {
				n.log.Warn("save last known time", "err", err)
			}
			continue
		case <-n.ntpKick:
			// DHCP may have brought servers; try now unless recently synced.
			n.mu.Lock()
			synced := !n.clock.Synced.IsZero()
			n.mu.Unlock()
			if synced {
				continue
			}
		case <-next.C:
		}
		n.mu.Lock()
		servers := n.ntpServersLocked()
		n.mu.Unlock()
		if len(servers) == 0 {
			next.Reset(n.opts.SyncInterval) // woken early by ntpKick when DHCP offers some
			continue
		}
		if n.syncClock(ctx, servers) {
			backoff = 2 * time.Second
			next.Reset(n.opts.SyncInterval)
			if err := n.saveTime(); err != nil {
				n.log.Warn("save last known time", "err", err)
			}
		} else {
			next.Reset(backoff)
			backoff = min(backoff*2, 5*time.Minute)
		}
		n.notify()
	}
}

func (n *Network) syncClock(ctx context.Context, servers []string) bool {
	var lastErr error
	for _, s := range servers {
		r, err := sntp.Query(ctx, s, sntp.Options{NetNS: n.opts.NetNS})
		if err != nil {
			lastErr = err
			n.log.Warn("sntp", "server", s, "err", err)
			continue
		}
		stepped := false
		if r.Offset.Abs() >= n.opts.StepThreshold && n.opts.SetClock != nil {
			if err := n.opts.SetClock(time.Now().Add(r.Offset)); err != nil {
				n.log.Error("set clock", "err", err)
				lastErr = err
				continue
			}
			stepped = true
		}
		n.log.Info("sntp", "server", s, "offset", r.Offset, "rtt", r.RTT, "stratum", r.Stratum, "stepped", stepped)
		n.mu.Lock()
		n.clock.Synced, n.clock.Server, n.clock.Offset, n.clock.Err = time.Now(), s, r.Offset, ""
		n.mu.Unlock()
		return true
	}
	n.mu.Lock()
	n.clock.Err = lastErr.Error()
	n.mu.Unlock()
	return false
}
