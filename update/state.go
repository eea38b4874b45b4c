package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// The trial-boot state machine. What the firmware boots by default (the
// UEFI BootOrder, the Pi's config.txt) is the truth about which slot is
// committed; the record on the data partition says what the appliance was
// doing, so that whatever boots next can tell how the last attempt ended.
//
//	committed A ──write B──▶ writing ──verified──▶ written ──one-shot boot armed──▶ pending
//	pending ──reboot: firmware runs B once──▶ booted (B on trial, watchdog armed)
//	booted ──healthy for commit_after: firmware default := B──▶ committed B
//	pending|booted ──the old slot runs instead──▶ rolled back (committed A, failure recorded)
//	writing|written ──the old slot runs (a cut)──▶ committed A, "interrupted" recorded
//
// A power cut anywhere before the firmware default changes leaves A the
// default, so A boots; the one-shot boot (BootNext, tryboot) is consumed by
// the firmware whether or not B comes up.

// Phase is how far an update got.
type Phase string

const (
	PhaseWriting Phase = "writing" // the inactive slot is being written
	PhaseWritten Phase = "written" // written and read back; no boot armed yet
	PhasePending Phase = "pending" // the firmware will boot the slot once at the next reboot
	PhaseBooted  Phase = "booted"  // the slot runs on trial and has to prove healthy
)

// Result is how an update ended.
type Result string

const (
	ResultCommitted   Result = "committed"
	ResultRolledBack  Result = "rolled back"
	ResultInterrupted Result = "interrupted"
)

// SlotInfo is what a slot holds.
type SlotInfo struct {
	Version string `json:"version,omitempty"` // empty: unknown or half-written
	Bundle  string `json:"bundle,omitempty"`  // sha256 of the bundle it came from
}

// Trial is an update in progress.
type Trial struct {
	Slot    Slot      `json:"slot"`
	Version string    `json:"version"`
	Bundle  string    `json:"bundle"`
	Phase   Phase     `json:"phase"`
	Since   time.Time `json:"since"`
}

// Outcome is how the last update ended.
type Outcome struct {
	Version string    `json:"version"`
	Slot    Slot      `json:"slot"`
	Result  Result    `json:"result"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// Record is what the appliance keeps about updates on the data partition.
type Record struct {
	Slots     map[Slot]SlotInfo `json:"slots"`
	Committed Slot              `json:"committed"`
	Trial     *Trial            `json:"trial,omitempty"`
	Last      *Outcome          `json:"last,omitempty"`
	// Failed are the bundles (by sha256) whose trial failed: the
	// appliance does not try them again unless told to.
	Failed []string `json:"failed,omitempty"`
}

// maxFailed bounds the list of failed bundles kept.
const maxFailed = 16

// NewRecord is the record of a fresh image: slot A committed with the
// image's own version, slot B empty.
func NewRecord(version string) *Record {
	return &Record{Slots: map[Slot]SlotInfo{SlotA: {Version: version}, SlotB: {}}, Committed: SlotA}
}

// Observed is what the firmware says at boot.
type Observed struct {
	Running Slot // the slot this system was booted from; "" when unknown (fallback path)
	Default Slot // the slot the firmware boots when not told otherwise
	Version string
}

// Action is what the appliance has to do after Boot.
type Action int

const (
	// Run normally.
	ActionRun Action = iota
	// ActionProve: this is a trial boot. Keep the watchdog armed and
	// commit once healthy for the configured time.
	ActionProve
	// ActionRevert: a trial system is running again after it had already
	// booted once without committing. Reboot: the firmware's default is
	// the old slot.
	ActionRevert
)

// Boot advances the record for this boot and says what to do. It is
// pure: the caller saves the record before acting.
func (r *Record) Boot(o Observed, now time.Time) (Action, error) {
	if !o.Default.Valid() {
		return ActionRun, fmt.Errorf("the firmware's default slot is unknown (%q)", o.Default)
	}
	running := o.Running
	if running == "" {
		running = o.Default
	}
	t := r.Trial
	// The firmware is the truth about what is committed. A commit cut
	// after the firmware changed but before the record did ends here.
	if t != nil && t.Phase == PhaseBooted && o.Default == t.Slot && running == t.Slot {
		r.commit(now)
		return ActionRun, nil
	}
	r.Committed = o.Default
	if t == nil {
		if running == r.Committed && r.Slots[running].Version == "" && o.Version != "" {
			r.Slots[running] = SlotInfo{Version: o.Version}
		}
		return ActionRun, nil
	}
	switch {
	case running != t.Slot:
		switch t.Phase {
		case PhaseWriting, PhaseWritten:
			r.finish(ResultInterrupted, "the update was interrupted before its trial boot (power cut or restart); the slot was not booted", now)
			r.Slots[t.Slot] = SlotInfo{}
		case PhasePending:
			r.fail("the new system did not come up: the firmware booted the old slot again", now)
		case PhaseBooted:
			r.fail("the new system was not healthy in time (hang, crash or failed health check; reset by the watchdog)", now)
		}
		return ActionRun, nil
	case t.Phase == PhasePending || t.Phase == PhaseWritten:
		// Written counts too: the one-shot boot was armed, and the cut
		// came before the record said so.
		t.Phase, t.Since = PhaseBooted, now
		return ActionProve, nil
	case t.Phase == PhaseBooted:
		// Booted a second time without committing: the one-shot boot
		// was used up, so this boot was chosen by hand or by a fallback.
		r.fail("the new system restarted before it committed", now)
		return ActionRevert, nil
	default:
		// Still being written, yet this slot runs: it was chosen by hand.
		// Its content may be half-written; go back to the default.
		r.finish(ResultInterrupted, "booted a slot that was still being written", now)
		return ActionRevert, nil
	}
}

// Begin starts an update of the inactive slot. A bundle that failed its
// trial before is refused unless force is set.
func (r *Record) Begin(version, bundle string, force bool, now time.Time) (Slot, error) {
	if r.Trial != nil && (r.Trial.Phase == PhasePending || r.Trial.Phase == PhaseBooted) {
		return "", fmt.Errorf("an update to %s is already on trial in slot %s; wait until it commits or rolls back", r.Trial.Version, r.Trial.Slot)
	}
	if !force && slices.Contains(r.Failed, bundle) {
		return "", fmt.Errorf("this bundle (%s) failed its trial boot before; it is not tried again unless forced", short(bundle))
	}
	s := r.Committed.Other()
	r.Trial = &Trial{Slot: s, Version: version, Bundle: bundle, Phase: PhaseWriting, Since: now}
	r.Slots[s] = SlotInfo{}
	return s, nil
}

// Written records that the slot was written and read back correctly.
func (r *Record) Written() error {
	if r.Trial == nil || r.Trial.Phase != PhaseWriting {
		return errors.New("no slot is being written")
	}
	r.Trial.Phase = PhaseWritten
	r.Slots[r.Trial.Slot] = SlotInfo{Version: r.Trial.Version, Bundle: r.Trial.Bundle}
	return nil
}

// Armed records that the firmware will boot the slot once at the next
// reboot. Saved before the reboot.
func (r *Record) Armed() error {
	if r.Trial == nil || r.Trial.Phase != PhaseWritten {
		return errors.New("no written slot to arm")
	}
	r.Trial.Phase = PhasePending
	return nil
}

// Abort ends an update that failed before its trial boot (a write or
// read-back error), so the next one can start.
func (r *Record) Abort(reason string, now time.Time) {
	if r.Trial == nil {
		return
	}
	s := r.Trial.Slot
	r.finish(ResultInterrupted, reason, now)
	r.Slots[s] = SlotInfo{}
}

// Committed reports that the firmware's default is now the trial slot;
// the record follows. Call only after changing the firmware's default.
func (r *Record) Commit(now time.Time) error {
	if r.Trial == nil || r.Trial.Phase != PhaseBooted {
		return errors.New("no trial boot to commit")
	}
	r.commit(now)
	return nil
}

func (r *Record) commit(now time.Time) {
	r.Committed = r.Trial.Slot
	r.finish(ResultCommitted, "", now)
}

func (r *Record) fail(reason string, now time.Time) {
	if b := r.Trial.Bundle; b != "" && !slices.Contains(r.Failed, b) {
		r.Failed = append(r.Failed, b)
		if len(r.Failed) > maxFailed {
			r.Failed = r.Failed[len(r.Failed)-maxFailed:]
		}
	}
	r.finish(ResultRolledBack, reason, now)
}

func (r *Record) finish(res Result, reason string, now time.Time) {
	r.Last = &Outcome{Version: r.Trial.Version, Slot: r.Trial.Slot, Result: res, Reason: reason, At: now.UTC()}
	r.Trial = nil
}

// RecordFile is the record's name in the appliance's state directory.
const RecordFile = "update.json"

// LoadRecord reads the record at p; a missing file gives NewRecord.
func LoadRecord(p, version string) (*Record, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return NewRecord(version), nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if r.Slots == nil {
		r.Slots = map[Slot]SlotInfo{}
	}
	if !r.Committed.Valid() {
		r.Committed = SlotA
	}
	return &r, nil
}

// Save writes the record at p durably (atomically replaced, synced).
func (r *Record) Save(p string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(p, append(data, '\n'), 0o644, atomicfile.Options{})
}
