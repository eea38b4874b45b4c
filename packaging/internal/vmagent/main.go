// Command vmagent runs inside the Debian test system the package tests boot
// under QEMU, and lets the test on the host run shell commands and copy files
// in, over one TCP port that QEMU forwards to the host's loopback only. It is
// test equipment: it is never packaged and never runs on a user's machine.
//
//	POST /run?timeout=SECONDS   body: a shell script; reply: JSON {exit, output}
//	PUT  /file?path=P&mode=0644 body: the file's content
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Bounds on what one request may make the agent hold.
const (
	maxScript = 1 << 20
	maxFile   = 256 << 20
	maxOutput = 4 << 20
)

func main() {
	addr := flag.String("listen", ":7777", "address to serve on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", run)
	mux.HandleFunc("PUT /file", putFile)
	fmt.Printf("iofog-vm-agent: listening on %s\n", *addr)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// Result is the reply to /run.
type Result struct {
	Exit   int    `json:"exit"`
	Output string `json:"output"`
}

func run(w http.ResponseWriter, r *http.Request) {
	script, err := io.ReadAll(io.LimitReader(r.Body, maxScript+1))
	if err != nil || len(script) > maxScript {
		http.Error(w, "script unreadable or larger than 1 MiB", http.StatusBadRequest)
		return
	}
	timeout := 5 * time.Minute
	if s := r.URL.Query().Get("timeout"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			http.Error(w, "timeout: want seconds", http.StatusBadRequest)
			return
		}
		timeout = time.Duration(n) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", string(script))
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "TERM=dumb",
	}
	cmd.Dir = "/root"
	out := &capped{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// Children that outlive the shell (a daemon it started) must not keep
	// the request open.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	res := Result{Output: out.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.Exit = exit.ExitCode()
	default:
		res.Exit = -1
		res.Output += "\niofog-vm-agent: " + err.Error()
	}
	if ctx.Err() != nil {
		res.Output += fmt.Sprintf("\niofog-vm-agent: killed after %s", timeout)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

func putFile(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if !filepath.IsAbs(p) {
		http.Error(w, "path: want an absolute path", http.StatusBadRequest)
		return
	}
	mode, err := strconv.ParseUint(r.URL.Query().Get("mode"), 8, 32)
	if err != nil {
		http.Error(w, "mode: want octal permissions", http.StatusBadRequest)
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	tmp := p + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(mode))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	n, err := io.Copy(f, io.LimitReader(r.Body, maxFile+1))
	if err == nil && n > maxFile {
		err = errors.New("file larger than 256 MiB")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, os.FileMode(mode))
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "wrote %s (%d bytes)\n", p, n)
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - len(c.buf)
	if room > len(p) {
		room = len(p)
	}
	c.buf = append(c.buf, p[:room]...)
	c.dropped += len(p) - room
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped > 0 {
		return string(c.buf) + fmt.Sprintf("\n[%d more bytes of output dropped]", c.dropped)
	}
	return string(c.buf)
}
