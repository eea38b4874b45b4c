// Package appliance is PID 1 of the appliance image: it mounts the kernel's
// file systems, loads the kernel modules the initramfs carries, finds and
// mounts the FAT boot partition, decides the config (falling back to the
// last good one), brings up the network, the clock, TLS and the firewall,
// runs the Connector as a supervised child, keeps STATUS.txt on the boot
// partition current, pings the hardware watchdog while the Connector is
// healthy, and powers off cleanly on request.
//
// PID 1 must never exit or panic (the kernel would panic with it), so every
// goroutine here recovers, logs and carries on, and Run ends only by
// powering off or rebooting the machine.
package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootconfig"
	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
	"github.com/eclipse-iofog/iofog-connector/appliance/datapart"
	"github.com/eclipse-iofog/iofog-connector/appliance/logfile"
	"github.com/eclipse-iofog/iofog-connector/appliance/reaper"
	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/appliance/watchdog"
	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/kmod"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Options configure Run.
type Options struct {
	Version string // shown on the console and in STATUS.txt
}

// Where things live on the appliance. The boot partition (FAT, IOFOG)
// holds what the user edits and reads and is mounted read-only; the data
// partition (ext4, IOFOG-DATA) holds everything the appliance keeps;
// everything else is the initramfs, in RAM.
const (
	BootDir      = "/boot"
	DataDir      = "/data"
	StatusFile   = "STATUS.txt"          // on the boot partition, rewritten in place
	LogFile      = "iofog-connector.log" // on the data partition
	StateSubdir  = "state"               // mapping store, last good config, last known time
	TLSSubdir    = "tls"                 // server-cert.pem, server-key.pem
	etcDir       = "/etc/iofog-connector"
	settingsFile = etcDir + "/iofog-connector.conf"
	volatileDir  = "/run/iofog" // stands in for the data partition when there is none
	// PageStatusFile is the status as JSON, for the Connector child's
	// status page; in RAM, rewritten on every change.
	PageStatusFile = volatileDir + "/status.json"
)

// Kernel command line keys.
const (
	argBoot      = "iofog.boot"      // boot partition: /dev/NAME or LABEL=NAME
	argData      = "iofog.data"      // data partition: /dev/NAME or LABEL=NAME
	argBootWait  = "iofog.bootwait"  // how long to wait for it, a Go duration
	argTestHooks = "iofog.testhooks" // 1: accept test commands on the console
	argLogLevel  = "iofog.loglevel"  // debug, info, warn, error
	// 0: leave /dev/watchdog alone. QEMU 7.2's Raspberry Pi watchdog model
	// resets the machine the moment the driver arms it.
	argWatchdog = "iofog.watchdog"
)

// defaultBootWait bounds the wait for the boot partition: SD cards and USB
// disks can take seconds to appear.
const defaultBootWait = 30 * time.Second

// system is the running appliance's state; one per boot.
type system struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	out     *output // console, and the log file if the config asks
	cmdline Cmdline
	self    string
	booted  time.Time

	reaper      *reaper.Reaper
	loader      *kmod.Loader    // nil when the initramfs has no module index
	modulesDone <-chan struct{} // closed when nftables and friends are loaded

	bootDev  string              // "" when no boot partition was found
	bootPart *bootpart.Partition // nil without one
	dataDev  string              // "" when no data partition was found
	dataDir  string              // DataDir, or volatileDir without a data partition
	stateDir string
	tlsDir   string
	cfg      *schema.Config
	cfgPath  string // what the Connector child is given with --config

	watchdog *watchdog.Feeder // nil without /dev/watchdog

	statusW  *status.Writer
	stMu     sync.Mutex
	st       status.Status
	printed  string // last status printed on the console
	pageJSON []byte // last content of PageStatusFile

	rebootArg string // for reboot(2): "0 tryboot" after a Pi update
}

// Run boots the appliance and returns only if powering off failed.
func Run(opts Options) int {
	s := &system{opts: opts, booted: time.Now(), level: new(slog.LevelVar)}
	s.out = &output{console: os.Stderr}
	if err := mountEarly(); err != nil {
		fmt.Fprintf(os.Stderr, "iofog-connector init: %v\n", err)
	}
	if c, err := openConsole(); err == nil {
		s.out.setConsole(c)
	} else {
		fmt.Fprintf(os.Stderr, "iofog-connector init: %v\n", err)
	}
	s.log = slog.New(slog.NewTextHandler(s.out, &slog.HandlerOptions{Level: s.level}))
	s.log.Info("iofog-connector appliance starting", "version", opts.Version, "pid", os.Getpid())

	b, _ := os.ReadFile("/proc/cmdline")
	s.cmdline = ParseCmdline(string(b))
	if lv, ok := s.cmdline[argLogLevel]; ok {
		if err := s.level.UnmarshalText([]byte(lv)); err != nil {
			s.log.Warn("ignoring bad log level on the kernel command line", "arg", argLogLevel, "value", lv)
		}
	}
	self, err := os.Executable()
	if err != nil {
		self = "/init"
	}
	s.self = self

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.reaper = reaper.New(s.log)
	s.goSafe("reaper", func() { s.reaper.Run(ctx) })

	action, ok := s.bootRecovering(ctx)
	if !ok {
		// The boot sequence itself broke. Whatever runs (the Connector,
		// likely) keeps running; wait for a request to stop.
		action = s.waitForStop()
	}
	return s.shutdown(action)
}

// bootRecovering runs boot and reports false if it panicked.
func (s *system) bootRecovering(ctx context.Context) (a powerAction, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("internal error in the boot sequence; waiting for SIGTERM or Ctrl-Alt-Del", "panic", r)
			s.problem(fmt.Sprintf("internal error in the boot sequence: %v (please report)", r))
			ok = false
		}
	}()
	return s.boot(ctx), true
}

// waitForStop is the last resort after a broken boot: SIGTERM powers off,
// SIGINT (Ctrl-Alt-Del) reboots.
func (s *system) waitForStop() powerAction {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	if sig := <-sigs; sig == syscall.SIGINT {
		return reboot
	}
	return powerOff
}

// goSafe runs fn in a goroutine that survives its panics: logged, and the
// system stays up.
func (s *system) goSafe(name string, fn func()) {
	go func() {
		defer s.recoverPanic(name)
		fn()
	}()
}

func (s *system) recoverPanic(where string) {
	if r := recover(); r != nil {
		s.log.Error("internal error recovered; the appliance keeps running", "in", where, "panic", r)
		s.problem(fmt.Sprintf("internal error in %s: %v (please report)", where, r))
	}
}

// stage runs one boot step, recovering from a panic in it, so one broken
// step costs that step and not the boot.
func (s *system) stage(name string, fn func() error) {
	defer s.recoverPanic(name)
	start := time.Now()
	err := fn()
	if err != nil {
		s.log.Error("boot step failed; continuing", "step", name, "err", err)
		s.problem(name + ": " + err.Error())
		return
	}
	s.log.Debug("boot step done", "step", name, "took", time.Since(start).Round(time.Millisecond))
}

// boot runs the boot sequence, then supervises until something asks for a
// power-off or reboot, and returns which.
func (s *system) boot(ctx context.Context) powerAction {
	s.stage("file limits", raiseFileLimits)
	s.stage("modprobe helper", func() error { return installModprobe(s.self) })
	s.stage("kernel modules", func() error { return s.loadModules(ctx) })
	s.modulesDone = s.loadRest(ctx)
	s.stage("boot partition", func() error { return s.mountBoot(ctx) })
	s.stage("data partition", func() error { return s.mountData(ctx) })
	s.goSafe("coldplug", func() { s.coldplugLater(ctx) })
	s.stage("config", s.loadConfig)
	s.setStatus(func(*status.Status) {})
	s.log.Info("boot partition and config ready", "since_boot", time.Since(s.booted).Round(time.Millisecond))

	return s.run(ctx)
}

func (s *system) loadModules(ctx context.Context) error {
	l, err := kmod.OpenLoader(kmod.IndexFile, s.log.With("part", "kmod"))
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("no kernel module index in the initramfs; relying on built-in drivers", "index", kmod.IndexFile)
		return nil
	}
	if err != nil {
		return err
	}
	s.loader = l
	ix := l.Index()
	var errs []error
	// The RNG first: early getrandom blocks until the pool is seeded, and
	// a hardware RNG seeds it in milliseconds instead of a second or more.
	for _, rng := range []string{"virtio_rng", "bcm2835_rng", "iproc_rng200"} {
		if _, ok := ix.Module(rng); ok {
			if err := l.Load(ctx, rng); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Drivers for the hardware that is there, found by modalias, in rounds
	// (a bus driver brings new devices). Drivers for absent hardware are
	// never loaded: under emulation each costs a noticeable fraction of a
	// second.
	if err := l.Coldplug(ctx, "/sys"); err != nil {
		errs = append(errs, err)
	}
	// The boot partition needs FAT and its code pages before anything
	// else, the data partition ext4's checksums.
	if err := l.Load(ctx, present(ix, slices.Concat(bootpart.Modules(), datapart.Modules()))...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loadRest loads the rest of the board's modules while the boot goes on:
// first those no device asks for (nftables and the like; the returned
// channel closes then, and the firewall waits for it), then the board's
// drivers that modalias matching did not pick, in case a device shows no
// modalias. Under emulation this overlaps seconds of module loading with
// the DHCP wait, and drivers for absent hardware never delay the Connector.
func (s *system) loadRest(ctx context.Context) <-chan struct{} {
	ready := make(chan struct{})
	if s.loader == nil {
		close(ready)
		return ready
	}
	s.goSafe("kernel modules", func() {
		defer func() {
			select {
			case <-ready:
			default:
				close(ready)
			}
		}()
		ix := s.loader.Index()
		var services, drivers []string
		for _, name := range ix.Load {
			if m, ok := ix.Module(name); ok && isDeviceDriver(m) {
				drivers = append(drivers, name)
			} else {
				services = append(services, name)
			}
		}
		start := time.Now()
		if err := s.loader.Load(ctx, services...); err != nil {
			s.log.Warn("some kernel modules did not load", "err", err)
			s.problem("kernel modules: " + err.Error())
		}
		close(ready)
		s.log.Debug("board service modules loaded", "took", time.Since(start).Round(time.Millisecond))
		if err := s.loader.Load(ctx, drivers...); err != nil {
			s.log.Debug("board drivers", "err", err)
		}
		s.log.Debug("all board modules loaded", "took", time.Since(start).Round(time.Millisecond))
	})
	return ready
}

// present keeps the names the index knows (a module built into the kernel
// needs no loading, and an image may leave one out).
func present(ix *kmod.Index, names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := ix.Module(n); ok {
			out = append(out, n)
		}
	}
	return out
}

// isDeviceDriver reports whether a module binds to devices by modalias
// ("pci:v...", "usb:v...", "of:N*T*C...", "virtio:d..."), as opposed to
// modules named by what they provide ("fs-vfat", "nft-expr-ct").
func isDeviceDriver(m kmod.Module) bool {
	for _, a := range m.Aliases {
		if strings.Contains(a, ":") && !strings.HasPrefix(a, "devname:") {
			return true
		}
	}
	return false
}

// coldplugLater runs more modalias rounds after boot, for devices that
// appear late (USB hubs settle over seconds).
func (s *system) coldplugLater(ctx context.Context) {
	for _, d := range []time.Duration{3 * time.Second, 10 * time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		s.coldplug(ctx)
	}
}

// coldplug loads drivers for devices that appeared since the last round.
func (s *system) coldplug(ctx context.Context) {
	if s.loader == nil {
		return
	}
	if err := s.loader.Coldplug(ctx, "/sys"); err != nil {
		s.log.Debug("coldplug", "err", err)
	}
}

func (s *system) mountBoot(ctx context.Context) error {
	wait := defaultBootWait
	if v, ok := s.cmdline[argBootWait]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			wait = d
		}
	}
	f := bootpart.Finder{Spec: bootpart.Spec(s.cmdline[argBoot])}
	dev, err := f.Wait(ctx, wait, func() { s.coldplug(ctx) })
	if err != nil {
		return fmt.Errorf("%w; running without it: config is the built-in default (check the card, or set %s= on the kernel command line)", err, argBoot)
	}
	if err := bootpart.Mount(dev, BootDir); err != nil {
		return err
	}
	s.bootDev, s.bootPart = dev, &bootpart.Partition{Dir: BootDir}
	s.log.Info("boot partition mounted read-only", "device", dev, "at", BootDir)
	return nil
}

func (s *system) loadConfig() error {
	bootDir := BootDir
	if s.bootDev == "" {
		bootDir = volatileDir
	}
	r := bootconfig.Load(bootDir, s.stateDir)
	s.cfg = r.Config
	for _, w := range r.Warnings {
		s.problem(w)
	}
	using := r.Source.String()
	switch r.Source {
	case bootconfig.FromFile:
		using = r.File
	case bootconfig.FromLastGood:
		using = "last good config (" + strings.TrimPrefix(r.Path, s.dataDir+"/") + ")"
	}
	s.setStatus(func(st *status.Status) {
		st.Config = status.Config{File: r.File, Ignored: r.Ignored, Using: using, Valid: r.Valid(), Errors: r.Errors}
		if !r.Valid() {
			st.AddEvent(status.Event{Time: time.Now(), Kind: "config",
				Text: fmt.Sprintf("%s is invalid (%d problem(s)); running on the %s", r.File, len(r.Errors), using)})
		}
	})
	switch {
	case r.File == "":
		s.log.Info("no config file on the boot partition; using the built-in default", "looked_for", strings.Join(bootconfig.Names(), ", "))
	case r.Valid():
		s.log.Info("config", "file", r.File, "ignored", r.Ignored)
	default:
		s.log.Error("config file is invalid; running on the "+using, "file", r.File)
		for _, e := range r.Errors {
			s.log.Error("config error: " + e)
		}
	}
	if len(r.Ignored) > 0 {
		s.log.Warn("other config files are ignored", "using", r.File, "ignored", r.Ignored)
	}
	if lv := s.cfg.Log.Level; lv != "" {
		if _, set := s.cmdline[argLogLevel]; !set {
			_ = s.level.UnmarshalText([]byte(lv))
		}
	}

	// The original's five-key settings file, for the CLI and for anyone who
	// looks; the Connector child reads the full config, so the appliance
	// settings (API ports, firewall) reach it too.
	settings, err := schema.CompileSettings(s.cfg, true)
	if err != nil {
		return fmt.Errorf("compile settings: %w", err)
	}
	if err := os.MkdirAll(etcDir, 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(settingsFile, settings, 0o644, atomicfile.Options{}); err != nil {
		return err
	}
	s.cfgPath = settingsFile
	if r.Path != "" {
		data, err := os.ReadFile(r.Path)
		if err != nil {
			return fmt.Errorf("copy config for the Connector: %w", err)
		}
		full := filepath.Join(etcDir, "connector"+filepath.Ext(r.Path))
		if err := atomicfile.Write(full, data, 0o644, atomicfile.Options{}); err != nil {
			return err
		}
		s.cfgPath = full
	}

	if s.cfg.Log.File && s.dataDev != "" {
		w, err := logfile.Open(filepath.Join(DataDir, LogFile), int64(s.cfg.Log.MaxSize)*1024)
		if err != nil {
			return err
		}
		s.out.setFile(w)
	}
	return nil
}

// problem records something a person should know in STATUS.txt.
func (s *system) problem(msg string) {
	s.setStatus(func(st *status.Status) { st.Problems = append(st.Problems, msg) })
}

// writePageStatus keeps PageStatusFile equal to st. Caller holds stMu, so
// writes land in order. The file is in RAM: a write costs microseconds.
func (s *system) writePageStatus(st status.Status) {
	data, err := status.EncodeJSON(st)
	if err != nil || bytes.Equal(data, s.pageJSON) {
		return
	}
	err = os.MkdirAll(filepath.Dir(PageStatusFile), 0o755)
	if err == nil {
		err = status.WriteJSON(PageStatusFile, data)
	}
	if err != nil {
		s.log.Debug("cannot write the status page's status file", "file", PageStatusFile, "err", err)
		return
	}
	s.pageJSON = data
}

// setStatus changes the status, writes STATUS.txt if due and shows it on
// the console when it changed.
func (s *system) setStatus(change func(*status.Status)) {
	s.stMu.Lock()
	change(&s.st)
	s.st.Version = s.opts.Version
	if s.st.Booted.IsZero() {
		s.st.Booted = s.booted
	}
	s.st.BootDev = s.bootDev
	s.st.DataDev = s.dataDev
	st := s.st
	st.Problems = append([]string(nil), s.st.Problems...)
	w := s.statusW
	text := string(status.Render(st))
	show := text != s.printed
	s.printed = text
	s.writePageStatus(st)
	s.stMu.Unlock()
	if w != nil {
		w.Update(st)
	}
	if show && w != nil {
		// The console shows what STATUS.txt says, as it changes.
		var b strings.Builder
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			b.WriteString("status| " + l + "\n")
		}
		io.WriteString(s.out, b.String())
	}
}
