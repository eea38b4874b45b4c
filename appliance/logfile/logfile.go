// Package logfile is a size-capped log file with one older generation:
// when NAME would grow past the cap it becomes NAME.1 (replacing the old
// one) and a new NAME starts. On an SD card that is all the history worth
// its wear; the console has the rest.
package logfile

import (
	"fmt"
	"os"
	"sync"
)

// Writer appends to Path, rotating at MaxSize bytes. Safe for concurrent
// use. Use Open.
type Writer struct {
	path    string
	maxSize int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (appends to) path, capped at maxSize bytes per generation.
func Open(path string, maxSize int64) (*Writer, error) {
	if maxSize <= 0 {
		return nil, fmt.Errorf("log file %s: size cap %d must be positive", path, maxSize)
	}
	w := &Writer{path: path, maxSize: maxSize}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would take the file past the cap.
// A single write larger than the cap is truncated to it.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if int64(len(p)) > w.maxSize {
		p = p[:w.maxSize]
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	if w.f == nil {
		if err := w.open(); err != nil {
			return 0, err
		}
	}
	m, err := w.f.Write(p)
	w.size += int64(m)
	if err != nil {
		return m, fmt.Errorf("write log file: %w", err)
	}
	return n, nil
}

func (w *Writer) rotate() error {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("rotate log file: %w", err)
	}
	return w.open()
}

// Sync flushes the file to the device.
func (w *Writer) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	return w.f.Sync()
}

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
