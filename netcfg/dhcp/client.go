// Package dhcp is a DHCPv4 client for one interface: it gets a lease
// (DISCOVER, OFFER, REQUEST, ACK), renews it at T1 with the server that
// granted it, rebinds with any server at T2, and gives it up when it expires
// or a server refuses it, then starts over. The wire protocol is
// insomniacslk/dhcp's nclient4 over a raw packet socket, so it works on an
// interface with no address yet.
//
// The client does not touch the interface itself: it reports each lease to
// Config.Bound and each loss to Config.Lost, and the caller (package netcfg)
// programs addresses and routes. Run returns when its context ends (the
// caller cancels it on carrier loss and starts a new Run when the carrier
// comes back).
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"

	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
)

// Config configures Run.
type Config struct {
	Interface string
	// NetNS is the namespace the interface is in; 0 means ours.
	NetNS netns.NsHandle
	// Hostname, when set, is sent to the server (option 12) so it can
	// register us in DNS.
	Hostname string
	Log      *slog.Logger
	// Bound is called with every new or renewed lease; Lost with a lease
	// that expired or was refused. They run on Run's goroutine.
	Bound func(*Lease)
	Lost  func(*Lease)
	// Timeout is how long one message waits for an answer before it is
	// sent again (doubling, three tries). Default 4s.
	Timeout time.Duration
	// MaxBackoff caps the wait between failed attempts to get a lease.
	// Default 32s.
	MaxBackoff time.Duration
}

// wanted lists the options we ask servers for.
func wanted() []dhcpv4.OptionCode {
	return []dhcpv4.OptionCode{
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionHostName, dhcpv4.OptionNTPServers,
		dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionIPAddressLeaseTime,
		dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
	}
}

// Run keeps a lease on the interface until ctx ends. It returns ctx's error,
// or an error if the interface cannot be used at all.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 4 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 32 * time.Second
	}
	log := cfg.Log.With("interface", cfg.Interface)
	c, err := openClient(cfg)
	if err != nil {
		return err
	}
	defer c.Close()

	mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(wanted()...)}
	if cfg.Hostname != "" && ValidName(cfg.Hostname) {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(cfg.Hostname)))
	}

	backoff := time.Second
	for {
		log.Info("dhcp: discovering")
		nl, err := c.Request(ctx, mods...)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("dhcp: no lease yet", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(backoff*2, cfg.MaxBackoff)
			continue
		}
		lease, err := ParseACK(nl.ACK, time.Now())
		if err != nil {
			log.Warn("dhcp: unusable lease", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(backoff*2, cfg.MaxBackoff)
			continue
		}
		backoff = time.Second
		log.Info("dhcp: bound", "address", lease.Address, "server", lease.Server,
			"lease", lease.Duration, "routes", len(lease.Routes), "dns", lease.DNS, "domain", lease.Domain, "hostname", lease.Hostname)
		cfg.Bound(lease)
		// keep returns when the lease is gone (or ctx ended).
		if err := keep(ctx, c, cfg, log, lease, nl, mods); err != nil {
			return err
		}
	}
}

// keep renews and rebinds until the lease is lost. It returns nil when a new
// DISCOVER is needed, ctx's error when ctx ends.
func keep(ctx context.Context, c *nclient4.Client, cfg Config, log *slog.Logger, lease *Lease, nl *nclient4.Lease, mods []dhcpv4.Modifier) error {
	for {
		if !sleepUntil(ctx, lease.RenewAt()) {
			return ctx.Err()
		}
		// Renewing: ask the granting server until T2, then any server until
		// expiry. Between tries wait half the time left (RFC 2131 4.4.5),
		// but at least a second.
		next, err := retryUntil(ctx, lease.RebindAt(), func(actx context.Context) (*nclient4.Lease, error) {
			log.Info("dhcp: renewing", "address", lease.Address, "server", lease.Server)
			return c.Renew(actx, nl, mods...)
		})
		if next == nil && err == nil && ctx.Err() == nil {
			next, err = retryUntil(ctx, lease.ExpiresAt(), func(actx context.Context) (*nclient4.Lease, error) {
				log.Info("dhcp: rebinding", "address", lease.Address)
				return rebind(actx, c, nl, mods)
			})
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var nak *nclient4.ErrNak
		switch {
		case errors.As(err, &nak):
			log.Warn("dhcp: server refused our lease", "address", lease.Address, "message", nak.Nak.Message())
			cfg.Lost(lease)
			return nil
		case next == nil:
			log.Warn("dhcp: lease expired", "address", lease.Address)
			cfg.Lost(lease)
			return nil
		}
		nlease, perr := ParseACK(next.ACK, time.Now())
		if perr != nil || nlease.Address.Addr() != lease.Address.Addr() {
			log.Warn("dhcp: renewal changed or broke the lease; starting over", "err", perr)
			cfg.Lost(lease)
			return nil
		}
		log.Info("dhcp: renewed", "address", nlease.Address, "lease", nlease.Duration)
		lease, nl = nlease, next
		cfg.Bound(lease)
	}
}

// retryUntil calls try until it returns a lease or a NAK, or until deadline.
func retryUntil(ctx context.Context, deadline time.Time, try func(context.Context) (*nclient4.Lease, error)) (*nclient4.Lease, error) {
	for time.Until(deadline) > 0 {
		actx, cancel := context.WithDeadline(ctx, deadline)
		l, err := try(actx)
		cancel()
		if err == nil {
			return l, nil
		}
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) || ctx.Err() != nil {
			return nil, err
		}
		wait := min(max(time.Until(deadline)/2, time.Second), time.Until(deadline))
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
	return nil, nil
}

// rebind asks any server to extend the lease (RFC 2131 4.4.5, REBINDING):
// a REQUEST with our address in ciaddr and no server identifier.
func rebind(ctx context.Context, c *nclient4.Client, nl *nclient4.Lease, mods []dhcpv4.Modifier) (*nclient4.Lease, error) {
	req, err := dhcpv4.NewRenewFromAck(nl.ACK, append(mods,
		dhcpv4.WithoutOption(dhcpv4.OptionServerIdentifier),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))...)
	if err != nil {
		return nil, fmt.Errorf("build rebind request: %w", err)
	}
	resp, err := c.SendAndRead(ctx, c.RemoteAddr(), req,
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		return nil, err
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return nil, &nclient4.ErrNak{Offer: nl.Offer, Nak: resp}
	}
	return &nclient4.Lease{Offer: resp, ACK: resp, CreationTime: time.Now()}, nil
}

// openClient opens the raw socket in the interface's namespace; the socket
// stays there whichever thread uses it afterwards.
func openClient(cfg Config) (*nclient4.Client, error) {
	var c *nclient4.Client
	err := nsutil.Do(cfg.NetNS, func() error {
		ifc, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return fmt.Errorf("dhcp on %s: %w", cfg.Interface, err)
		}
		c, err = nclient4.New(cfg.Interface,
			nclient4.WithHWAddr(ifc.HardwareAddr),
			nclient4.WithTimeout(cfg.Timeout),
			nclient4.WithRetry(3))
		if err != nil {
			return fmt.Errorf("dhcp on %s: open raw socket: %w (needs CAP_NET_RAW)", cfg.Interface, err)
		}
		return nil
	})
	return c, err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool { return sleep(ctx, time.Until(at)) }
