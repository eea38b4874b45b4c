package appliance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/powerbutton"
	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/appliance/watchdog"
	"log/slog"
)

// watchdogGrace is how long the Connector may be unhealthy (crashing,
// restarting with backoff up to 30 s) before the board is left to reset.
const watchdogGrace = 3 * time.Minute

// startWatchdog feeds /dev/watchdog, if the board has one, while the
// Connector's API answers.
func (s *system) startWatchdog(ctx context.Context, c *connector) {
	if v, set := s.cmdline[argWatchdog]; set && !s.cmdline.Bool(argWatchdog) {
		s.log.Warn("hardware watchdog left alone", "arg", argWatchdog+"="+v)
		return
	}
	dev, err := watchdog.Open(watchdog.DefaultDevice)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("no hardware watchdog", "device", watchdog.DefaultDevice)
		return
	}
	if err != nil {
		s.log.Warn("hardware watchdog unusable", "err", err)
		return
	}
	s.watchdog = &watchdog.Feeder{
		Dev: dev, Interval: 5 * time.Second, Grace: watchdogGrace,
		Healthy: func() bool { return c.healthy(30 * time.Second) },
		Log:     s.log.With("part", "watchdog"),
		OnGiveUp: func(d time.Duration) {
			s.problem(fmt.Sprintf("the Connector was unhealthy for %s; stopped feeding the watchdog so the board resets", d.Round(time.Second)))
			if s.statusW != nil {
				s.statusW.Flush()
			}
		},
	}
	s.log.Info("feeding the hardware watchdog while the Connector is healthy", "device", watchdog.DefaultDevice, "grace", watchdogGrace)
	s.goSafe("watchdog", func() { s.watchdog.Run(ctx) })
	s.setStatus(func(st *status.Status) {})
}

func (s *system) disarmWatchdog() {
	if s.watchdog == nil {
		return
	}
	if err := s.watchdog.Disarm(); err != nil {
		s.log.Warn("disarming the watchdog", "err", err)
	}
}

// watchPowerButton reports a press of any power key. Input devices appear
// when their drivers load, so it looks again for a while if none is there.
func watchPowerButton(ctx context.Context, log *slog.Logger, pressed chan<- string) {
	for try := 0; ; try++ {
		devs := powerbutton.Devices("/sys/class/input", "/dev/input")
		if len(devs) > 0 {
			log.Info("power button watched", "devices", devs)
			if err := powerbutton.Watch(ctx, devs, pressed); err != nil && ctx.Err() == nil {
				log.Warn("power button", "err", err)
			}
			return
		}
		if try == 6 {
			log.Info("no power button found; shut down with `iofog-connector stop`, SIGTERM or Ctrl-Alt-Del")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}
