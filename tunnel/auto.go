package tunnel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eclipse-iofog/iofog-connector/netcfg/discovery"
)

// AutoHost in a config's host field means: use the first Connector that
// announces itself on the LAN in the config's mode (dev or TLS).
const AutoHost = "auto"

// autoBrowse is how long each look for a Connector on the LAN listens.
const autoBrowse = 3 * time.Second

// ResolveAuto returns cfg with an "auto" host replaced by the address of
// the first Connector found on the LAN in cfg's mode, looking once.
func ResolveAuto(ctx context.Context, cfg Config) (Config, error) {
	if cfg.Host != AutoHost {
		return cfg, nil
	}
	found, err := discovery.Browse(ctx, autoBrowse, nil)
	if err != nil {
		return cfg, err
	}
	for _, c := range found {
		if c.Dev == cfg.DevMode && c.Addr() != nil {
			cfg.Host = c.Addr().String()
			return cfg, nil
		}
	}
	mode := "TLS"
	if cfg.DevMode {
		mode = "dev"
	}
	return cfg, fmt.Errorf("host auto: no Connector in %s mode answered on the LAN (%d in the other mode)", mode, len(found))
}

// resolveAuto looks until a Connector is found or ctx is done: agents may
// start before the Connector does.
func (r *runner) resolveAuto(ctx context.Context) error {
	b := backoff{min: r.t.opts.BackoffMin, max: r.t.opts.BackoffMax}
	for {
		cfg, err := ResolveAuto(ctx, r.cfg)
		if err == nil {
			tc, err := cfg.TLSConfig()
			if err != nil {
				return err
			}
			r.log.Info("found a Connector on the LAN", "host", cfg.Host)
			r.cfg, r.tls = cfg, tc
			r.log = r.t.log.With("connector", cfg.Addr(), "mode", cfg.Mode)
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		d := b.next()
		r.log.Warn("no Connector found on the LAN yet; looking again", "err", err, "retry_in", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
