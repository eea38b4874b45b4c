package qemu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse-iofog/iofog-connector/image"
)

// Mode is how an image is booted.
type Mode int

const (
	// Direct boots the image's own kernel and initrd with QEMU's -kernel
	// (the fast path), with the image attached as the disk or SD card:
	// x86_64 on q35, rpi on raspi3b.
	Direct Mode = iota
	// UEFI boots the whole x86 disk image through OVMF firmware, as a real
	// board would (slower: the firmware and the in-guest kernel
	// decompression take seconds under emulation).
	UEFI
	// Virt boots the rpi image's arm64 kernel on QEMU's generic arm64
	// machine (cortex-a72) with virtio devices: faster than raspi3b.
	Virt
)

func (m Mode) String() string {
	switch m {
	case Direct:
		return "direct"
	case UEFI:
		return "uefi"
	case Virt:
		return "virt"
	case Raspi4:
		return "raspi4b"
	}
	return "mode" + strconv.Itoa(int(m))
}

// Forward is a guest TCP port reachable on the host's loopback.
type Forward struct {
	Guest int
	Host  int // 0: pick a free port
}

// Options say what to boot.
type Options struct {
	Board    string // x86_64 or rpi
	Image    string // the built .img (the VM writes to it, as to a real disk)
	Mode     Mode
	CacheDir string // the kernel cache: firmware for UEFI, unpacked kernels
	Forward  []Forward
	// Console also receives the serial console (a test log, a terminal).
	Console io.Writer
	// Cmdline is appended to the image's kernel command line (Direct and
	// Virt modes only; a UEFI boot uses what the UKI carries).
	Cmdline  string
	MemoryMB int  // default 512 (1024 on raspi3b, which insists)
	KVM      bool // use KVM instead of emulation (never on these machines)
	// Devices are extra QEMU devices (-device), e.g. "i6300esb" for a
	// hardware watchdog.
	Devices []string
	// Interactive connects the console to the terminal (stdin too).
	Interactive bool
	// Boot, when set, is what x86_64 Direct mode loads instead of the
	// image's own kernel, initrd and command line: for a system that is not
	// an appliance image (the Debian system the package tests install on).
	Boot *Boot
	Log  *slog.Logger
	// VarsFile keeps the UEFI variables (boot entries, BootNext) across
	// VMs on the same disk, as a real board's NVRAM does; made from
	// OVMF's template when missing. Empty: fresh variables per VM.
	VarsFile string
}

// VM is a running QEMU.
type VM struct {
	cmd   *exec.Cmd
	ports map[int]int
	tmp   string

	mu      sync.Mutex
	console []byte
	changed chan struct{} // closed and replaced on every console write

	done    chan struct{}
	exitErr error
	stop    sync.Once
}

// Binary returns the qemu-system program for a board.
func Binary(board string) string {
	if board == "rpi" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// Available says why QEMU cannot run here, or nil.
func Available(board string) error {
	if _, err := exec.LookPath(Binary(board)); err != nil {
		pkg := map[string]string{"rpi": "qemu-system-arm"}[board]
		if pkg == "" {
			pkg = "qemu-system-x86"
		}
		return fmt.Errorf("%s not found: apt-get install %s", Binary(board), pkg)
	}
	return nil
}

// Ready says whether a board can boot here: QEMU installed and the kernel
// cache fetched. It returns the cache directory.
func Ready(board string) (string, error) {
	if err := Available(board); err != nil {
		return "", err
	}
	dir, err := image.DefaultCacheDir()
	if err != nil {
		return "", err
	}
	if _, err := (image.Cache{Dir: dir}).Manifest(); err != nil {
		return "", fmt.Errorf("no kernel cache (run make fetch): %w", err)
	}
	return dir, nil
}

// Start boots o.Image. The VM is killed when ctx ends; call Stop when done
// (it is safe to call more than once).
func Start(ctx context.Context, o Options) (*VM, error) {
	if err := Available(o.Board); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tmp, err := os.MkdirTemp("", "iofog-qemu-")
	if err != nil {
		return nil, err
	}
	vm := &VM{ports: map[int]int{}, tmp: tmp, changed: make(chan struct{}), done: make(chan struct{})}
	args, err := vm.args(o)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	bin := Binary(o.Board)
	var env []string
	if o.Mode == Raspi4 {
		if bin, env, err = Raspi4QEMU(o.CacheDir); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	var stderr strings.Builder
	out := io.Writer(consoleWriter{vm})
	if o.Console != nil {
		out = io.MultiWriter(consoleWriter{vm}, o.Console)
	}
	cmd.Stdout = out
	cmd.Stderr = &stderr
	if o.Interactive {
		cmd.Stdin = os.Stdin
	}
	log.Debug("starting qemu", "cmd", cmd.String())
	if err := cmd.Start(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("starting %s: %w", Binary(o.Board), err)
	}
	vm.cmd = cmd
	go func() {
		err := cmd.Wait()
		if err != nil && stderr.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		vm.exitErr = err
		os.RemoveAll(tmp)
		close(vm.done)
	}()
	return vm, nil
}

func (vm *VM) args(o Options) ([]string, error) {
	mem := o.MemoryMB
	switch {
	case mem != 0:
	case o.Board == "rpi" && o.Mode == Direct:
		mem = 1024 // raspi3b has exactly 1 GiB
	case o.Mode == Raspi4:
		mem = 2048 // raspi4b insists on 2 GiB
	default:
		mem = 512
	}
	// The human monitor on a private socket lets tests press the power
	// button (system_powerdown) as a user would.
	args := []string{"-m", strconv.Itoa(mem), "-display", "none", "-no-reboot",
		"-monitor", "unix:" + filepath.Join(vm.tmp, "monitor.sock") + ",server=on,wait=off"}
	if o.KVM {
		args = append(args, "-accel", "kvm")
	} else {
		// Single-threaded TCG: raspi3b takes 2 s to boot with it, up to 22 s without.
		args = append(args, "-accel", "tcg,thread=single")
	}

	netdev := "user,id=n0,restrict=on"
	for _, f := range o.Forward {
		h := f.Host
		if h == 0 {
			var err error
			if h, err = freePort(); err != nil {
				return nil, err
			}
		}
		vm.ports[f.Guest] = h
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", h, f.Guest)
	}
	args = append(args, "-netdev", netdev)
	for _, d := range o.Devices {
		args = append(args, "-device", d)
	}
	drive := func(iface string) string {
		return "if=" + iface + ",format=raw,file=" + o.Image
	}

	writeTmp := func(name string, data []byte) (string, error) {
		p := filepath.Join(vm.tmp, name)
		return p, os.WriteFile(p, data, 0o644)
	}
	direct := func(b *Boot, cmdline string) ([]string, error) {
		k, err := writeTmp("kernel", b.Kernel)
		if err != nil {
			return nil, err
		}
		i, err := writeTmp("initrd", b.Initrd)
		if err != nil {
			return nil, err
		}
		a := []string{"-kernel", k, "-initrd", i, "-append", cmdline}
		if b.DTB != nil {
			d, err := writeTmp("dtb", b.DTB)
			if err != nil {
				return nil, err
			}
			a = append(a, "-dtb", d)
		}
		return a, nil
	}
	// A kernel panic ends QEMU (with -no-reboot) at once rather than after
	// the image's panic=10.
	extra := strings.TrimSpace("panic=-1 " + o.Cmdline)

	switch {
	case o.Board == "x86_64" && o.Mode == Direct:
		b := o.Boot
		if b == nil {
			var err error
			if b, err = ExtractBoot(o.Image, o.Board, o.CacheDir); err != nil {
				return nil, err
			}
		}
		// On a starved host the emulated timer can miss the kernel's
		// IO-APIC timer check, which then panics ("IO-APIC + timer doesn't
		// work"); virtual machines commonly skip that check.
		d, err := direct(b, b.Cmdline+" no_timer_check "+extra)
		if err != nil {
			return nil, err
		}
		args = append(args, "-machine", "q35", "-nodefaults", "-serial", "stdio")
		args = append(args, d...)
		args = append(args, "-drive", drive("virtio"), "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci")
	case o.Board == "x86_64" && o.Mode == UEFI:
		cache := image.Cache{Dir: o.CacheDir}
		code, varsTmpl, err := cache.OVMF()
		if err != nil {
			return nil, err
		}
		vars, err := os.ReadFile(varsTmpl)
		if err != nil {
			return nil, err
		}
		varsCopy := o.VarsFile
		if varsCopy == "" {
			varsCopy, err = writeTmp("OVMF_VARS.fd", vars)
		} else if _, serr := os.Stat(varsCopy); serr != nil {
			err = os.WriteFile(varsCopy, vars, 0o644)
		}
		if err != nil {
			return nil, err
		}
		args = append(args, "-machine", "q35", "-nodefaults", "-serial", "stdio",
			"-drive", "if=pflash,format=raw,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,file="+varsCopy,
			"-drive", drive("virtio"), "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci")
	case o.Board == "rpi" && o.Mode == Direct:
		b, err := ExtractBoot(o.Image, o.Board, o.CacheDir)
		if err != nil {
			return nil, err
		}
		// QEMU's raspi3b watchdog model resets the machine the moment the
		// watchdog is started (it has no timer), which -no-reboot turns
		// into QEMU exiting: the appliance leaves /dev/watchdog alone when
		// told iofog.watchdog=off.
		d, err := direct(b, b.Cmdline+" iofog.watchdog=off "+extra)
		if err != nil {
			return nil, err
		}
		// The image's last console is ttyS1 (the mini UART, QEMU's second
		// serial port): that is /dev/console, where the appliance writes.
		args = append(args, "-M", "raspi3b", "-serial", "null", "-serial", "stdio")
		args = append(args, d...)
		// usbnet names a NIC with a locally administered MAC (QEMU's
		// default 52:54:...) usb0; a universally administered one makes it
		// eth0, as the Pi's own smsc95xx/lan78xx are.
		args = append(args, "-drive", drive("sd"), "-device", "usb-net,netdev=n0,mac=50:54:00:12:34:56")
	case o.Board == "rpi" && o.Mode == Raspi4:
		b, err := ExtractBoot(o.Image, o.Board, o.CacheDir)
		if err != nil {
			return nil, err
		}
		if b.DTB, err = image.ReadBootFile(o.Image, "A/bcm2711-rpi-4-b.dtb"); err != nil {
			return nil, err
		}
		// No watchdog (the appliance would find none it can use),
		// clk_ignore_unused: the clocks QEMU does not model stay on.
		d, err := direct(b, "console=ttyAMA0,115200 clk_ignore_unused iofog.watchdog=off loglevel=4 "+extra)
		if err != nil {
			return nil, err
		}
		if err := raspi4DTB(d[len(d)-1]); err != nil {
			return nil, err
		}
		args = append(args, "-M", "raspi4b", "-serial", "stdio", "-serial", "null")
		args = append(args, d...)
		args = append(args, "-drive", drive("sd"))
	case o.Board == "rpi" && o.Mode == Virt:
		b, err := ExtractBoot(o.Image, o.Board, o.CacheDir)
		if err != nil {
			return nil, err
		}
		b.DTB = nil
		d, err := direct(b, "console=ttyAMA0,115200 loglevel=4 "+extra)
		if err != nil {
			return nil, err
		}
		args = append(args, "-M", "virt", "-cpu", "cortex-a72", "-nodefaults", "-serial", "stdio")
		args = append(args, d...)
		args = append(args, "-drive", "if=none,id=disk,format=raw,file="+o.Image, "-device", "virtio-blk-pci,drive=disk",
			"-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci")
	default:
		return nil, fmt.Errorf("board %s cannot boot in mode %d", o.Board, o.Mode)
	}
	return args, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port for hostfwd: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// consoleWriter records console output (QEMU's stdout) into its VM.
type consoleWriter struct{ vm *VM }

func (w consoleWriter) Write(p []byte) (int, error) {
	vm := w.vm
	vm.mu.Lock()
	vm.console = append(vm.console, p...)
	close(vm.changed)
	vm.changed = make(chan struct{})
	vm.mu.Unlock()
	return len(p), nil
}

// Console returns everything the serial console printed so far.
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return string(vm.console)
}

// HostPort returns the loopback port forwarded to guest port g.
func (vm *VM) HostPort(g int) int { return vm.ports[g] }

// Addr returns "127.0.0.1:PORT" for guest port g.
func (vm *VM) Addr(g int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.ports[g])) }

// WaitFor waits until the console shows a line matching re, and returns the
// match. It fails if QEMU exits first or timeout passes (a guard against a
// hung boot, not a performance check); the error carries the console's end.
func (vm *VM) WaitFor(ctx context.Context, re *regexp.Regexp, timeout time.Duration) (string, error) {
	return vm.WaitForAfter(ctx, 0, re, timeout)
}

// WaitForAfter is WaitFor looking only at console output after offset
// (a length of Console() taken earlier).
func (vm *VM) WaitForAfter(ctx context.Context, offset int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		vm.mu.Lock()
		out := vm.console
		if offset > len(out) {
			offset = len(out)
		}
		m := re.Find(out[offset:])
		changed := vm.changed
		vm.mu.Unlock()
		if m != nil {
			return string(m), nil
		}
		select {
		case <-changed:
		case <-vm.done:
			// Look once more: the last output may have come with the exit.
			if m := re.Find([]byte(vm.Console()[offset:])); m != nil {
				return string(m), nil
			}
			return "", fmt.Errorf("QEMU exited (%v) before the console showed %q; console ends:\n%s", vm.exitErr, re, vm.tail(40))
		case <-timer.C:
			return "", fmt.Errorf("console did not show %q within %s; console ends:\n%s", re, timeout, vm.tail(40))
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (vm *VM) tail(lines int) string {
	l := strings.Split(strings.TrimRight(vm.Console(), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Wait waits for QEMU to exit by itself (the guest powered off) and returns
// how it exited; it gives up when timeout passes.
func (vm *VM) Wait(timeout time.Duration) error {
	select {
	case <-vm.done:
		return vm.exitErr
	default:
	}
	select {
	case <-vm.done:
		return vm.exitErr
	case <-time.After(timeout):
		return fmt.Errorf("QEMU still running after %s; console ends:\n%s", timeout, vm.tail(20))
	}
}

// PowerButton presses the machine's power button (ACPI on x86), as a user
// would to shut the appliance down.
func (vm *VM) PowerButton() error {
	return vm.monitor("system_powerdown")
}

// monitor sends one command to QEMU's human monitor.
func (vm *VM) monitor(command string) error {
	c, err := net.DialTimeout("unix", filepath.Join(vm.tmp, "monitor.sock"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("QEMU monitor: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Wait for the banner's prompt, so the command is read as one.
	buf := make([]byte, 4096)
	var seen []byte
	for !strings.Contains(string(seen), "(qemu)") {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("QEMU monitor: waiting for its prompt: %w", err)
		}
		seen = append(seen, buf[:n]...)
	}
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return fmt.Errorf("QEMU monitor: %s: %w", command, err)
	}
	// The command is done when the next prompt shows.
	seen = seen[:0]
	for !strings.Contains(string(seen), "(qemu)") {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("QEMU monitor: %s: %w", command, err)
		}
		seen = append(seen, buf[:n]...)
	}
	return nil
}

// Stop kills QEMU if it still runs and waits for it to go.
func (vm *VM) Stop() {
	vm.stop.Do(func() {
		select {
		case <-vm.done:
		default:
			_ = vm.cmd.Process.Kill()
			<-vm.done
		}
	})
}
