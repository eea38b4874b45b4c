package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Firmware is one board's way of holding two system slots and choosing
// which to boot: UEFI boot entries on x86, os_prefix and tryboot on the Pi.
type Firmware interface {
	// State says which slot this system was booted from ("" when the
	// firmware used a fallback path) and which it boots by default.
	State() (running, def Slot, err error)
	// Install writes the bundle's files into slot s, which does not run.
	Install(s Slot, r *Reader, progress func(n int64)) error
	// Check reads slot s back and compares it with the manifest.
	Check(s Slot, m *Manifest) error
	// ArmOnce makes the next reboot, and only that one, boot slot s.
	ArmOnce(s Slot) error
	// SetDefault makes slot s what the firmware boots from now on.
	SetDefault(s Slot) error
	// RebootArg is the argument for reboot(2) that makes the one-shot
	// boot happen ("tryboot" on the Pi; "" elsewhere).
	RebootArg() string
}

// Updater applies bundles and drives the state machine for one system.
type Updater struct {
	FW      Firmware
	Record  string      // path of the record on the data partition
	Keys    []PublicKey // accepted signers
	Board   string
	Version string // of the running system
	Log     *slog.Logger
}

func (u *Updater) log() *slog.Logger {
	if u.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Log
}

// Load reads the record (a fresh one for a box that never updated).
func (u *Updater) Load() (*Record, error) { return LoadRecord(u.Record, u.Version) }

// Boot runs once per boot, before the Connector starts: it reads what the
// firmware did, brings the record up to date and says whether this boot is
// a trial.
func (u *Updater) Boot(now time.Time) (Action, *Record, error) {
	rec, err := u.Load()
	if err != nil {
		return ActionRun, nil, err
	}
	running, def, err := u.FW.State()
	if err != nil {
		return ActionRun, rec, fmt.Errorf("reading the boot slots: %w", err)
	}
	act, err := rec.Boot(Observed{Running: running, Default: def, Version: u.Version}, now)
	if err != nil {
		return ActionRun, rec, err
	}
	if err := rec.Save(u.Record); err != nil {
		return act, rec, fmt.Errorf("saving the update record: %w", err)
	}
	return act, rec, nil
}

// Progress is told how far an apply got: phase "verify", "write" or
// "check", bytes done of total.
type Progress func(phase string, done, total int64)

// Apply verifies the bundle at path completely (nothing is written if it
// is refused), writes it to the inactive slot, reads it back, and arms a
// one-shot boot of that slot. The caller then reboots with RebootArg.
func (u *Updater) Apply(ctx context.Context, path string, force bool, progress Progress) (*Manifest, Slot, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	m, err := Verify(io.TeeReader(&ctxReader{ctx, &countReader{r: f, fn: func(n int64) { progress("verify", n, st.Size()) }}}, h), u.Keys, u.Board)
	if err != nil {
		return nil, "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	rec, err := u.Load()
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	slot, err := rec.Begin(m.Version, sum, force, now)
	if err != nil {
		return nil, "", &Refusal{Reason: err.Error()}
	}
	if err := rec.Save(u.Record); err != nil {
		return nil, "", err
	}
	abort := func(what string, err error) (*Manifest, Slot, error) {
		rec.Abort(fmt.Sprintf("%s slot %s failed: %v", what, slot, err), time.Now())
		if serr := rec.Save(u.Record); serr != nil {
			u.log().Error("saving the update record", "err", serr)
		}
		return nil, slot, fmt.Errorf("%s slot %s: %w (the running system is unchanged)", what, slot, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return abort("writing", err)
	}
	br, err := NewReader(&ctxReader{ctx, f}, u.Keys, u.Board)
	if err != nil {
		return abort("writing", err)
	}
	if err := u.FW.Install(slot, br, func(n int64) { progress("write", n, m.Total()) }); err != nil {
		return abort("writing", err)
	}
	progress("check", 0, m.Total())
	if err := u.FW.Check(slot, m); err != nil {
		return abort("reading back", err)
	}
	progress("check", m.Total(), m.Total())
	if err := rec.Written(); err != nil {
		return abort("recording", err)
	}
	if err := rec.Save(u.Record); err != nil {
		return abort("recording", err)
	}
	if err := u.FW.ArmOnce(slot); err != nil {
		// Whether the firmware took it is unknown; the record stays
		// "written", and the next boot tells which slot ran.
		return nil, slot, fmt.Errorf("arming the trial boot of slot %s: %w (reboot to find out whether it took; a new update may start meanwhile)", slot, err)
	}
	if err := rec.Armed(); err != nil {
		return nil, slot, err
	}
	if err := rec.Save(u.Record); err != nil {
		return nil, slot, err
	}
	u.log().Info("update written; the next reboot tries it once", "version", m.Version, "slot", slot)
	return m, slot, nil
}

// Commit makes the trial slot the firmware's default, then records it.
func (u *Updater) Commit(now time.Time) error {
	rec, err := u.Load()
	if err != nil {
		return err
	}
	if rec.Trial == nil || rec.Trial.Phase != PhaseBooted {
		return fmt.Errorf("no trial boot to commit")
	}
	if err := u.FW.SetDefault(rec.Trial.Slot); err != nil {
		return fmt.Errorf("making slot %s the default: %w", rec.Trial.Slot, err)
	}
	if err := rec.Commit(now); err != nil {
		return err
	}
	return rec.Save(u.Record)
}

type countReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.fn(c.n)
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
