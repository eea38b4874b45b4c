// Package watchdog feeds a hardware watchdog (/dev/watchdog) while a health
// check passes, and stops feeding it once the check has failed for longer
// than a grace period, so that a Connector that cannot be brought back
// makes the board reset instead of sitting there dead.
package watchdog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultDevice is the kernel's first watchdog device.
const DefaultDevice = "/dev/watchdog"

// Device is an open watchdog: every write feeds it; writing the magic 'V'
// before closing disarms it (unless the driver is built with nowayout).
type Device interface {
	io.Writer
	io.Closer
}

// Open opens the watchdog device at path. Opening arms it.
func Open(path string) (Device, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open watchdog %s: %w", path, err)
	}
	return f, nil
}

// Feeder feeds Dev every Interval while Healthy reports true, and for Grace
// after it last did (time for the supervisor to restart the Connector).
type Feeder struct {
	Dev      Device
	Interval time.Duration
	Grace    time.Duration
	Healthy  func() bool
	Log      *slog.Logger
	// OnGiveUp, if set, is called once when feeding stops for good.
	OnGiveUp func(unhealthyFor time.Duration)

	mu       sync.Mutex
	disarmed bool
}

// Run feeds the watchdog until ctx ends or the health check has failed for
// longer than Grace. After it gives up the board resets when the hardware
// timer runs out; Run returns then.
func (f *Feeder) Run(ctx context.Context) {
	lastGood := time.Now() // boot counts as healthy: the Connector is starting
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	for {
		if f.Healthy() {
			lastGood = time.Now()
		}
		if bad := time.Since(lastGood); bad > f.Grace {
			f.Log.Error("the Connector has been unhealthy too long; no longer feeding the watchdog, the board will reset",
				"unhealthy_for", bad.Round(time.Second))
			if f.OnGiveUp != nil {
				f.OnGiveUp(bad)
			}
			return
		}
		if err := f.feed(); err != nil {
			f.Log.Warn("feeding the watchdog", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Feeder) feed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disarmed {
		return nil
	}
	_, err := f.Dev.Write([]byte{0})
	return err
}

// Disarm stops the watchdog (magic close) for a deliberate power-off or
// reboot, so it does not fire while the machine goes down.
func (f *Feeder) Disarm() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disarmed {
		return nil
	}
	f.disarmed = true
	_, err := f.Dev.Write([]byte("V"))
	if cerr := f.Dev.Close(); err == nil {
		err = cerr
	}
	return err
}
