package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/update"
)

// UpdateSocket is where PID 1 takes update bundles: the Connector's API
// passes POST /api/v2/update through to it (so api.allow applies), and it
// answers GET /status with the slots.
const UpdateSocket = "/run/iofog/update.sock"

const (
	espDir       = "/run/iofog/esp"
	updateSubdir = "update" // on the data partition: the upload being applied
	espLabel     = "IOFOG-EFI"
)

// updates is the appliance's side of in-place updates.
type updates struct {
	s     *system
	u     *update.Updater
	fw    update.Firmware
	board string
	mu    sync.Mutex // one apply at a time
	// reboot asks the main loop to reboot with the firmware's argument.
	reboot chan string
}

// windowed runs a firmware's writes inside the FAT's read-write window.
type windowed struct {
	update.Firmware
	part *bootpart.Partition
}

func (w windowed) Install(s update.Slot, r *update.Reader, p func(int64)) error {
	return w.part.WritableBulk(func() error { return w.Firmware.Install(s, r, p) })
}
func (w windowed) ArmOnce(s update.Slot) error {
	return w.part.Writable(func() error { return w.Firmware.ArmOnce(s) })
}
func (w windowed) SetDefault(s update.Slot) error {
	return w.part.Writable(func() error { return w.Firmware.SetDefault(s) })
}

// setupUpdates finds the board's slots; nil when this box cannot update
// in place (no UEFI variables, no boot partition).
func (s *system) setupUpdates(ctx context.Context) (*updates, error) {
	if s.dataDev == "" {
		return nil, errors.New("no data partition to keep the update record on")
	}
	up := &updates{s: s, reboot: make(chan string, 1)}
	switch runtime.GOARCH {
	case "amd64":
		up.board = "x86_64"
		fw, err := s.efiFirmware(ctx)
		if err != nil {
			return nil, err
		}
		up.fw = fw
	case "arm64":
		up.board = "rpi"
		if s.bootPart == nil {
			return nil, errors.New("no boot partition")
		}
		if _, err := os.Stat(filepath.Join(BootDir, update.RaspiConfig)); err != nil {
			return nil, fmt.Errorf("no %s on the boot partition", update.RaspiConfig)
		}
		up.fw = windowed{&update.Raspi{Boot: BootDir, DeviceTree: "/proc/device-tree"}, s.bootPart}
	default:
		return nil, fmt.Errorf("no update slots for %s", runtime.GOARCH)
	}
	keys, err := s.updateKeys()
	if err != nil {
		return nil, err
	}
	// The version alone, as bundles name it ("v1.2.0", not "v1.2.0 (commit ...)").
	version := s.opts.Version
	if f := strings.Fields(version); len(f) > 0 {
		version = f[0]
	}
	up.u = &update.Updater{FW: up.fw, Record: filepath.Join(s.stateDir, update.RecordFile), Keys: keys,
		Board: up.board, Version: version, Log: s.log.With("part", "update")}
	return up, nil
}

// efiFirmware mounts efivarfs and the ESP and finds the ESP on its disk.
func (s *system) efiFirmware(ctx context.Context) (update.Firmware, error) {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return nil, errors.New("not booted through UEFI")
	}
	if s.loader != nil {
		_ = s.loader.Load(ctx, present(s.loader.Index(), []string{"efivarfs"})...)
	}
	if err := unix.Mount("efivarfs", update.EFIVars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("mounting efivarfs: %w", err)
	}
	dev, err := bootpart.Finder{Spec: bootpart.Spec("LABEL=" + espLabel)}.Find()
	if err != nil {
		return nil, err
	}
	if err := bootpart.Mount(dev, espDir); err != nil {
		return nil, err
	}
	name := filepath.Base(dev)
	nb, err := os.ReadFile("/sys/class/block/" + name + "/partition")
	if err != nil {
		return nil, fmt.Errorf("%s: partition number: %w", dev, err)
	}
	var n uint32
	fmt.Sscan(strings.TrimSpace(string(nb)), &n)
	sysPath, err := filepath.EvalSymlinks("/sys/class/block/" + name)
	if err != nil {
		return nil, err
	}
	disk, err := update.GPTPartition("/dev/"+filepath.Base(filepath.Dir(sysPath)), n)
	if err != nil {
		return nil, err
	}
	return windowed{&update.EFI{Vars: update.EFIVars, ESP: espDir, Disk: disk}, &bootpart.Partition{Dir: espDir}}, nil
}

// updateKeys are the image's keys and the config's.
func (s *system) updateKeys() ([]update.PublicKey, error) {
	var keys []update.PublicKey
	if data, err := os.ReadFile(update.KeysFile); err == nil {
		k, err := update.ParseKeyList(update.KeysFile, data)
		if err != nil {
			return nil, err
		}
		keys = k
	}
	for i, line := range s.cfg.Update.Keys {
		k, err := update.ParsePublicKey(line)
		if err != nil {
			return nil, fmt.Errorf("config update.keys[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// startUpdates runs the state machine for this boot and serves the
// update socket. On a trial boot it commits once the system has been
// healthy for update.commit_after, and reboots into the old slot when it
// is not healthy by twice that (the hardware watchdog resets a hang).
func (s *system) startUpdates(ctx context.Context, conn *connector) *updates {
	up, err := s.setupUpdates(ctx)
	if err != nil {
		s.log.Info("in-place updates not available", "why", err)
		s.setStatus(func(st *status.Status) { st.Update = []string{"not available: " + err.Error()} })
		return nil
	}
	act, rec, err := up.u.Boot(time.Now())
	if err != nil {
		s.problem("update record: " + err.Error())
	}
	up.show(rec)
	switch act {
	case update.ActionRevert:
		s.log.Error("this slot is on trial a second time without committing; back to the committed slot")
		up.reboot <- ""
	case update.ActionProve:
		s.goSafe("update trial", func() { up.prove(ctx, conn) })
	}
	s.goSafe("update socket", func() { up.serve(ctx) })
	return up
}

// show puts the record in STATUS.txt.
func (up *updates) show(rec *update.Record) {
	if rec == nil {
		return
	}
	running, _, _ := up.fw.State()
	up.s.setStatus(func(st *status.Status) { st.Update = describe(rec, running, up.u.Version) })
}

func describe(rec *update.Record, running update.Slot, version string) []string {
	var lines []string
	if running == "" {
		// Booted through the fallback path (EFI/BOOT/BOOTX64.EFI, the
		// image's first system): that is the committed slot when the
		// versions agree, as on a fresh box.
		if rec.Slots[rec.Committed].Version == version {
			running = rec.Committed
		} else {
			lines = append(lines, "running: the fallback boot path ("+version+"), not a slot")
		}
	}
	for _, sl := range []update.Slot{update.SlotA, update.SlotB} {
		v := rec.Slots[sl].Version
		if v == "" {
			v = "(empty)"
		}
		var tags []string
		if sl == running {
			tags = append(tags, "running")
		}
		if sl == rec.Committed {
			tags = append(tags, "committed")
		}
		if rec.Trial != nil && rec.Trial.Slot == sl {
			tags = append(tags, "trial "+string(rec.Trial.Phase))
		}
		line := "slot " + string(sl) + ": " + v
		if len(tags) > 0 {
			line += " (" + strings.Join(tags, ", ") + ")"
		}
		lines = append(lines, line)
	}
	if l := rec.Last; l != nil {
		line := fmt.Sprintf("last update: %s to %s in slot %s at %s", l.Result, l.Version, l.Slot, l.At.Format("2006-01-02 15:04:05 UTC"))
		if l.Reason != "" {
			line += ": " + l.Reason
		}
		lines = append(lines, line)
	}
	return lines
}

// prove waits for the trial system to be healthy for commit_after in a
// row: the Connector's API answering with every stored mapping reopened.
func (up *updates) prove(ctx context.Context, conn *connector) {
	s := up.s
	need := s.cfg.Update.CommitAfter.Duration
	if need <= 0 {
		need = 2 * time.Minute
	}
	stored := storedMappings(filepath.Join(s.stateDir, relay.StoreFile))
	s.log.Info("trial boot of an update: committing once healthy", "for", need, "stored_mappings", stored)
	deadline := time.Now().Add(2*need + time.Minute)
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		ok := conn != nil && conn.healthy(10*time.Second)
		if ok {
			s.stMu.Lock()
			ok = s.st.Connector.Mappings >= stored
			s.stMu.Unlock()
		}
		switch {
		case ok && since.IsZero():
			since = time.Now()
		case !ok:
			since = time.Time{}
		}
		if ok && time.Since(since) >= need {
			if err := up.u.Commit(time.Now()); err != nil {
				s.problem("committing the update: " + err.Error())
				return
			}
			rec, _ := up.u.Load()
			up.show(rec)
			s.log.Info("update committed", "version", s.opts.Version)
			return
		}
		if time.Now().After(deadline) {
			s.problem("the update was not healthy in time; rebooting into the committed slot")
			up.reboot <- ""
			return
		}
	}
}

func storedMappings(p string) int {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	var f struct {
		Mappings []json.RawMessage `json:"mappings"`
	}
	if json.Unmarshal(data, &f) != nil {
		return 0
	}
	return len(f.Mappings)
}

// serve takes bundles on the update socket.
func (up *updates) serve(ctx context.Context) {
	os.Remove(UpdateSocket)
	if err := os.MkdirAll(filepath.Dir(UpdateSocket), 0o755); err != nil {
		return
	}
	l, err := net.Listen("unix", UpdateSocket)
	if err != nil {
		up.s.log.Warn("update socket", "err", err)
		return
	}
	os.Chmod(UpdateSocket, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /update", up.handleApply)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		rec, err := up.u.Load()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		running, _, _ := up.fw.State()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"board": up.board, "running": running, "record": rec, "lines": describe(rec, running, up.u.Version)})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	srv.Serve(l)
}

// maxUpload bounds what an upload may store on the data partition.
const maxUpload = update.MaxTotal + update.MaxManifest + 1<<20

// handleApply stores the upload on the data partition, applies it and
// answers with progress lines; the box then reboots into the trial.
func (up *updates) handleApply(w http.ResponseWriter, r *http.Request) {
	if !up.mu.TryLock() {
		http.Error(w, "an update is already being applied", http.StatusConflict)
		return
	}
	defer up.mu.Unlock()
	dir := filepath.Join(up.s.dataDir, updateSubdir)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "upload.tar")
	f, err := os.Create(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	n, err := io.Copy(f, io.LimitReader(r.Body, maxUpload+1))
	f.Close()
	if err != nil {
		http.Error(w, "receiving the bundle: "+err.Error(), http.StatusBadRequest)
		return
	}
	if n > maxUpload {
		http.Error(w, fmt.Sprintf("bundle larger than %d bytes", maxUpload), http.StatusRequestEntityTooLarge)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fl, _ := w.(http.Flusher)
	say := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		if fl != nil {
			fl.Flush()
		}
	}
	last := map[string]int64{}
	progress := func(phase string, done, total int64) {
		if total <= 0 {
			return
		}
		pct := done * 100 / total
		if pct/10 != last[phase]/10 || (pct == 100 && last[phase] != 100) {
			last[phase] = pct
			say("%s %d%%", phase, pct)
		}
	}
	say("received %d bytes", n)
	m, slot, err := up.u.Apply(r.Context(), p, r.URL.Query().Get("force") == "1", progress)
	rec, _ := up.u.Load()
	up.show(rec)
	if err != nil {
		up.s.log.Warn("update not applied", "err", err)
		say("error: %v", err)
		return
	}
	say("ok: %s written to slot %s and verified; rebooting to try it once (it commits itself when healthy, else the box returns to the current system)", m.Version, slot)
	up.s.log.Info("update applied; rebooting into the trial", "version", m.Version, "slot", slot)
	select {
	case up.reboot <- up.fw.RebootArg():
	default:
	}
}

func (up *updates) rebootC() chan string {
	if up == nil {
		return nil
	}
	return up.reboot
}

// rebootWithArg restarts with an argument for the firmware driver
// (LINUX_REBOOT_CMD_RESTART2): on the Pi, "0 tryboot" makes the firmware
// read tryboot.txt once.
func rebootWithArg(arg string) error {
	p, err := unix.BytePtrFromString(arg)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2,
		unix.LINUX_REBOOT_CMD_RESTART2, uintptr(unsafe.Pointer(p)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
