package appliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
	"github.com/eclipse-iofog/iofog-connector/appliance/datapart"
	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
)

// dataWait bounds the wait for the data partition once the boot partition
// is there: both are on the same card.
const dataWait = 10 * time.Second

// mountData mounts the data partition, grows it to fill the card, moves
// what an older card kept on the FAT onto it, and points the state, TLS,
// status and log paths where they belong. Without a data partition the
// appliance runs on RAM and says so: nothing it changes survives a reboot.
func (s *system) mountData(ctx context.Context) error {
	s.dataDir = volatileDir
	defer s.setPaths()
	if s.bootDev == "" {
		return nil // already reported: no card
	}
	f := datapart.Finder(strings.TrimPrefix(s.cmdline[argData], "LABEL="))
	if v := s.cmdline[argData]; v != "" && !strings.HasPrefix(v, "LABEL=") {
		f.Spec = bootpart.Spec(v)
	}
	dev, err := f.Wait(ctx, dataWait, func() { s.coldplug(ctx) })
	if err != nil {
		s.seedVolatile()
		return fmt.Errorf("%w; mappings, TLS keys and the last good config live in RAM and are lost at the next reboot (flash a current image)", err)
	}
	if err := datapart.Mount(dev, DataDir); err != nil {
		s.seedVolatile()
		return fmt.Errorf("%w; mappings live in RAM and are lost at the next reboot", err)
	}
	s.dataDev, s.dataDir = dev, DataDir
	s.log.Info("data partition mounted", "device", dev, "at", DataDir)

	start := time.Now()
	g, gerr := datapart.Grow(dev, DataDir, "/sys/class/block")
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case gerr != nil:
		s.log.Warn("data partition not grown; it keeps working at its current size", "err", gerr)
	case g.Grown():
		s.log.Info("data partition grown to fill the disk", "disk", g.Disk, "partition_from", g.PartitionFrom, "partition_to", g.PartitionTo,
			"fs_from", g.FSFrom, "fs_to", g.FSTo, "took", took)
	}
	if g.FSTo > 0 {
		s.setStatus(func(st *status.Status) { st.Data = fmt.Sprintf("(ext4, %d MiB)", g.FSTo>>20) })
	}
	if err := s.migrate(); err != nil {
		return fmt.Errorf("moving state from the boot partition to the data partition: %w (the copies on the data partition are used; the boot partition keeps its own)", err)
	}
	return nil
}

// setPaths derives the state, TLS and status paths from where things are.
func (s *system) setPaths() {
	s.stateDir = filepath.Join(s.dataDir, StateSubdir)
	s.tlsDir = filepath.Join(s.dataDir, TLSSubdir)
	for _, d := range []string{s.stateDir, s.tlsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			s.log.Error("cannot create directory", "dir", d, "err", err)
		}
	}
	// The user's own certificate on the boot partition wins over a
	// generated one.
	if s.bootPart != nil {
		userTLS := filepath.Join(BootDir, TLSSubdir)
		if exists(filepath.Join(userTLS, certs.CertFile)) && exists(filepath.Join(userTLS, certs.KeyFile)) {
			s.tlsDir = userTLS
		}
	}
	w := &status.Writer{Path: filepath.Join(volatileDir, StatusFile), MinInterval: 10 * time.Second, OnError: func(err error) {
		s.log.Error("cannot write status file", "err", err)
	}}
	if s.bootPart != nil {
		w.Path = filepath.Join(BootDir, StatusFile)
		if err := s.ensureStatusFile(); err != nil {
			s.log.Error("cannot make STATUS.txt on the boot partition", "err", err)
		}
		boot := s.bootPart
		w.Save = func(b []byte) error { return boot.RewriteInPlace(StatusFile, b, status.Pad) }
	} else if err := os.MkdirAll(volatileDir, 0o755); err != nil {
		s.log.Error("cannot create directory", "dir", volatileDir, "err", err)
	}
	s.stMu.Lock()
	s.statusW = w
	s.stMu.Unlock()
}

// ensureStatusFile puts back a STATUS.txt someone deleted (or emptied) on
// a laptop, at its full size: a one-off change of the FAT at boot, in a
// synchronous window, so that every later write is in place.
func (s *system) ensureStatusFile() error {
	p := filepath.Join(BootDir, StatusFile)
	if st, err := os.Stat(p); err == nil && st.Size() >= status.FileSize/4 {
		return nil
	}
	s.log.Warn("STATUS.txt is missing or too small on the boot partition; making it again", "size", status.FileSize)
	return s.bootPart.Writable(func() error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(status.Pad(nil, status.FileSize)); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// legacy is what a card of the first layout kept on its FAT, relative to
// the boot partition, and where it goes on the data partition. tls/ stays:
// a pair there is used as the user's own, as before, and a laptop can
// still reach it.
var legacy = []struct{ from, to string }{
	{StateSubdir, StateSubdir},
	{LogFile, LogFile},
	{LogFile + ".1", LogFile + ".1"},
}

// migrate moves the state an older card kept on the FAT to the data
// partition: every file is copied and fsynced first; only then are the
// FAT copies removed (with the FAT briefly writable and synchronous). A
// file the data partition already has is newer there and is kept.
func (s *system) migrate() error {
	var moved, removeLater []string
	for _, l := range legacy {
		src := filepath.Join(BootDir, l.from)
		st, err := os.Stat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		var files []string
		if st.IsDir() {
			ents, err := os.ReadDir(src)
			if err != nil {
				return err
			}
			for _, e := range ents {
				// Leftover temporary files of an interrupted write are no state.
				if e.Type().IsRegular() && !strings.Contains(e.Name(), ".tmp-") {
					files = append(files, e.Name())
				}
				removeLater = append(removeLater, filepath.Join(l.from, e.Name()))
			}
			if l.from == StateSubdir {
				removeLater = append(removeLater, l.from)
			}
		} else {
			files = []string{""}
			removeLater = append(removeLater, l.from)
		}
		for _, name := range files {
			from, to := filepath.Join(src, name), filepath.Join(DataDir, l.to, name)
			if exists(to) {
				continue
			}
			data, err := os.ReadFile(from)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
				return err
			}
			if err := atomicfile.Write(to, data, 0o600, atomicfile.Options{}); err != nil {
				return err
			}
			moved = append(moved, filepath.Join(l.from, name))
		}
	}
	if len(removeLater) == 0 {
		return nil
	}
	if err := atomicfile.SyncDir(DataDir); err != nil {
		return err
	}
	// Children before their directories.
	err := s.bootPart.Writable(func() error {
		var errs []error
		for i := len(removeLater) - 1; i >= 0; i-- {
			if err := os.Remove(filepath.Join(BootDir, removeLater[i])); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	s.log.Info("moved state from the boot partition to the data partition", "files", moved, "removed_from_boot", len(removeLater))
	return err
}

// seedVolatile copies what the boot partition holds of an older card's
// state into RAM, so a card without a data partition still starts with
// its mappings (and keeps none of the changes).
func (s *system) seedVolatile() {
	if s.bootPart == nil {
		return
	}
	for _, sub := range []string{StateSubdir, TLSSubdir} {
		ents, err := os.ReadDir(filepath.Join(BootDir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(BootDir, sub, e.Name()))
			if err != nil {
				continue
			}
			dst := filepath.Join(volatileDir, sub, e.Name())
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
				_ = os.WriteFile(dst, data, 0o600)
			}
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
