package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
	"github.com/eclipse-iofog/iofog-connector/appliance/datapart"
	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/appliance/supervise"
	"github.com/eclipse-iofog/iofog-connector/netcfg"
	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
)

// powerAction is how the appliance ends.
type powerAction int

const (
	powerOff powerAction = iota
	reboot
)

func (a powerAction) String() string {
	if a == reboot {
		return "reboot"
	}
	return "power off"
}

// run brings up the network, time, TLS and the firewall, starts the
// Connector, and waits for a reason to stop.
func (s *system) run(ctx context.Context) powerAction {
	var nw *netcfg.Network
	s.stage("network", func() (err error) { nw, err = s.startNetwork(ctx); return err })
	s.stage("tls", func() error { return s.prepareTLS(ctx, nw) })
	s.stage("firewall", func() error {
		select { // nftables modules
		case <-s.modulesDone:
		case <-ctx.Done():
		}
		return s.applyFirewall()
	})
	if nw != nil {
		s.showNetwork(nw)
		s.goSafe("network status", func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-nw.Changes():
					s.showNetwork(nw)
				}
			}
		})
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	// Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		s.log.Debug("reboot(CAD_OFF)", "err", err)
	}
	power := make(chan string, 1)
	s.goSafe("power button", func() { watchPowerButton(ctx, s.log, power) })

	conn, err := s.newConnector()
	if err != nil {
		s.problem(err.Error())
		s.log.Error("cannot run the Connector", "err", err)
	}
	supCtx, stopConnector := context.WithCancel(ctx)
	supDone := make(chan error, 1)
	if conn != nil {
		s.goSafe("supervisor", func() { supDone <- s.superviseConnector(supCtx, conn.sup) })
		s.goSafe("health", func() { conn.watchHealth(supCtx) })
		s.startWatchdog(supCtx, conn)
	}
	up := s.startUpdates(ctx, conn)
	hooks := make(chan string, 1)
	if s.cmdline.Bool(argTestHooks) {
		s.log.Warn("test hooks enabled on the console", "arg", argTestHooks)
		s.goSafe("test hooks", func() { s.testHooks(ctx, conn, hooks) })
	}

	var action powerAction
	var why string
	supEnded := conn == nil
	for why == "" {
		select {
		case sig := <-sigs:
			why = "signal " + sig.String()
			if sig == syscall.SIGINT {
				action = reboot
			}
		case src := <-power:
			why = "power button (" + src + ")"
		case err := <-supDone:
			supEnded = true
			why = "the Connector stopped on request (commandline stop)"
			if !errors.Is(err, supervise.ErrStopped) {
				why = "the Connector supervisor ended: " + fmt.Sprint(err)
			}
		case arg := <-up.rebootC():
			why, action, s.rebootArg = "update", reboot, arg
		case h := <-hooks:
			why = "test hook " + h
			if h == "reboot" {
				action = reboot
			}
		}
	}
	s.log.Info("shutting down", "why", why, "then", action.String())
	s.setStatus(func(st *status.Status) { st.Connector.State = "stopping (" + why + ")" })
	stopConnector()
	if !supEnded {
		select {
		case <-supDone:
		case <-time.After(30 * time.Second):
			s.log.Error("the Connector did not stop within 30s; going on")
		}
	}
	if nw != nil {
		if err := nw.Close(); err != nil { // saves the last known time
			s.log.Warn("closing network", "err", err)
		}
	}
	s.setStatus(func(st *status.Status) {
		st.Connector.State = fmt.Sprintf("stopped at %s (%s; %s)", time.Now().UTC().Format("2006-01-02 15:04:05 UTC"), why, action)
	})
	return action
}

// superviseConnector runs the supervisor, and runs it again should it
// panic: PID 1 must not lose its child.
func (s *system) superviseConnector(ctx context.Context, sup *supervise.Supervisor) error {
	for {
		err, panicked := func() (err error, panicked bool) {
			defer func() {
				if r := recover(); r != nil {
					s.log.Error("supervisor panicked; restarting it", "panic", r)
					panicked = true
				}
			}()
			return sup.Run(ctx), false
		}()
		if !panicked {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (s *system) startNetwork(ctx context.Context) (*netcfg.Network, error) {
	return netcfg.Start(ctx, netcfg.Options{
		Interfaces:  s.cfg.Network,
		Hostname:    s.cfg.Hostname,
		NTP:         s.cfg.NTP,
		NTPFallback: "pool.ntp.org",
		RootDir:     "/",
		TimeFile:    filepath.Join(s.stateDir, "last-time"),
		Logger:      s.log.With("part", "net"),
		SetHostname: netcfg.SetSystemHostname,
		SetClock:    netcfg.SetSystemClock,
	})
}

// showNetwork puts interfaces, addresses, the API URL and the clock into
// the status.
func (s *system) showNetwork(nw *netcfg.Network) {
	ns := nw.State()
	var ifs []status.Interface
	var first netip.Addr
	for _, i := range ns.Interfaces {
		st := "up"
		if !i.Carrier {
			st = "no carrier"
		}
		var addrs []string
		for _, a := range i.Addresses {
			addrs = append(addrs, a.String())
			if !first.IsValid() || (first.Is6() && a.Addr().Is4()) {
				first = a.Addr()
			}
		}
		if i.Lease != nil {
			st += " (DHCP)"
		}
		ifs = append(ifs, status.Interface{Name: i.Name, State: st, MAC: i.MAC, Addrs: addrs})
	}
	clock := "not synchronised"
	switch {
	case !ns.Clock.Synced.IsZero():
		clock = "SNTP " + ns.Clock.Server
	case !ns.Clock.Restored.IsZero():
		clock = "last known time from before the reboot; SNTP not reached yet"
	}
	api := ""
	if first.IsValid() {
		scheme := "https"
		if s.cfg.Dev {
			scheme = "http"
		}
		api = fmt.Sprintf("%s://%s/api/v2/", scheme, netip.AddrPortFrom(first, uint16(s.cfg.API.Port(s.cfg.Dev))))
	}
	s.setStatus(func(st *status.Status) {
		st.Interfaces, st.APIURL, st.Clock = ifs, api, clock
		if clock != "not synchronised" {
			// The clock may have jumped from 1970 (no RTC) since PID 1
			// started; the monotonic time since then still holds.
			st.Booted = time.Now().Add(-time.Since(s.booted)).Truncate(time.Second)
		}
	})
}

// prepareTLS makes sure tls/ holds a certificate and key. The appliance
// generates a self-signed pair whenever tls.mode is "auto" or "generate"
// and none exists, in dev mode too: the user can hand the certificate to
// the Controller before switching dev off, and switching needs no extra
// step. In dev mode it is made in the background so boot never waits on
// entropy; without dev mode the Connector needs it before it starts.
func (s *system) prepareTLS(ctx context.Context, nw *netcfg.Network) error {
	certPath := filepath.Join(s.tlsDir, certs.CertFile)
	keyPath := filepath.Join(s.tlsDir, certs.KeyFile)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	have := cerr == nil && kerr == nil
	if have {
		s.setStatus(func(st *status.Status) { st.TLS = tlsLine(s, "tls/"+certs.CertFile) })
		return nil
	}
	if s.cfg.TLS.Mode == "files" {
		if s.cfg.Dev {
			return nil
		}
		return fmt.Errorf("tls.mode is \"files\" but %s or %s is missing: copy them to tls/ on the IOFOG partition, or set tls.mode to \"auto\"", certs.CertFile, certs.KeyFile)
	}
	gen := func() error {
		req := certs.Request{Names: slices.Clone(s.cfg.TLS.Names), Now: certTime(time.Now())}
		if s.cfg.Hostname != "" {
			req.Names = append(req.Names, s.cfg.Hostname)
		}
		if nw != nil {
			if h := nw.State().Hostname; h != "" && !slices.Contains(req.Names, h) {
				req.Names = append(req.Names, h)
			}
		}
		if len(req.Names) == 0 {
			req.Names = []string{"iofog-connector"}
		}
		for _, ip := range s.cfg.TLS.IPs {
			if a := net.ParseIP(ip); a != nil {
				req.IPs = append(req.IPs, a)
			}
		}
		if nw != nil {
			// The addresses it has now: a Controller registered by address
			// then verifies the name too.
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = nw.WaitAddress(wctx)
			cancel()
			for _, i := range nw.State().Interfaces {
				for _, a := range i.Addresses {
					req.IPs = append(req.IPs, a.Addr().AsSlice())
				}
			}
		}
		cert, key, err := certs.Generate(req)
		if err != nil {
			return err
		}
		if err := certs.WritePair(s.tlsDir, cert, key, false); err != nil {
			return err
		}
		s.log.Info("generated a self-signed TLS certificate; give tls/"+certs.CertFile+" to the Controller", "dir", s.tlsDir)
		s.setStatus(func(st *status.Status) { st.TLS = tlsLine(s, "tls/"+certs.CertFile+" (generated at boot)") })
		return nil
	}
	if s.cfg.Dev {
		s.goSafe("tls", func() {
			if err := gen(); err != nil {
				s.log.Warn("generating a TLS certificate for later use failed", "err", err)
			}
		})
		return nil
	}
	return gen()
}

// certTime is the start of a generated certificate's validity. A board
// without a clock battery reads 1970 until SNTP answers, and a certificate
// dated from then would have expired long before anyone uses it, so the
// validity never starts before 2025.
func certTime(now time.Time) time.Time {
	floor := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if now.Before(floor) {
		return floor
	}
	return now
}

func tlsLine(s *system, what string) string {
	if s.cfg.Dev {
		return what + " (not used: dev mode is on)"
	}
	return what
}

func (s *system) applyFirewall() error {
	if !s.cfg.Firewall.On(true) {
		s.log.Warn("firewall off by config: every port of this machine is reachable")
		s.setStatus(func(st *status.Status) { st.Firewall = "off (by config)" })
		return nil
	}
	fw, err := firewall.Apply(firewall.RulesFromConfig(s.cfg, true), firewall.Options{})
	if err != nil {
		s.setStatus(func(st *status.Status) { st.Firewall = "failed: " + err.Error() })
		return err
	}
	s.setStatus(func(st *status.Status) { st.Firewall = "on" })
	s.log.Info("firewall applied", "table", fw.Table(), "api_port", s.cfg.API.Port(s.cfg.Dev), "broker", strconv.Itoa(s.cfg.Broker))
	return nil
}

// shutdown stops what is left, makes the boot partition safe to lose power
// on, and powers off or reboots. It returns only if that fails.
func (s *system) shutdown(action powerAction) int {
	defer s.recoverPanic("shutdown")
	if s.statusW != nil {
		s.statusW.Flush()
	}
	s.out.closeFile()
	// Anything else still running (there should be nothing).
	_ = syscall.Kill(-1, syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	_ = syscall.Kill(-1, syscall.SIGKILL)
	s.reaper.ReapAll()
	if s.dataDev != "" {
		if err := datapart.Unmount(DataDir); err != nil {
			s.log.Error("data partition", "err", err)
		}
	}
	if s.bootDev != "" {
		if err := bootpart.Unmount(BootDir); err != nil {
			s.log.Error("boot partition", "err", err)
		}
	}
	unix.Sync()
	s.disarmWatchdog()
	s.log.Info("goodbye", "action", action.String(), "uptime", time.Since(s.booted).Round(time.Millisecond))
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if action == reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if action == reboot && s.rebootArg != "" {
		err := rebootWithArg(s.rebootArg)
		s.log.Error("could not reboot with "+s.rebootArg, "err", err)
	}
	err := unix.Reboot(cmd)
	s.log.Error("could not "+action.String(), "err", err)
	return 1
}
