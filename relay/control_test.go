package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// storeGate holds store writes while armed: it stands for an SD card that
// takes its time with an fsync.
type storeGate struct {
	mu      sync.Mutex
	release chan struct{} // nil: writes go through
	entered chan struct{}
}

func newStoreGate() *storeGate { return &storeGate{entered: make(chan struct{}, 16)} }

func (g *storeGate) hook() {
	g.mu.Lock()
	rel := g.release
	g.mu.Unlock()
	if rel != nil {
		g.entered <- struct{}{}
		<-rel
	}
}

// arm holds every store write from now until open.
func (g *storeGate) arm() {
	g.mu.Lock()
	g.release = make(chan struct{})
	g.mu.Unlock()
}

// open lets held and later writes through.
func (g *storeGate) open() {
	g.mu.Lock()
	if g.release != nil {
		close(g.release)
		g.release = nil
	}
	g.mu.Unlock()
}

// waitHeld waits until a store write is being held.
func (g *storeGate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(hangGuard):
		t.Fatal("no store write started")
	}
}

type reply struct {
	code int
	body map[string]any
	err  error
}

// postAsync posts from another goroutine and delivers the reply.
func postAsync(in *relaytest.Instance, path string, form url.Values) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		resp, err := in.Client.PostForm(in.Base+path, form)
		if err != nil {
			ch <- reply{err: err}
			return
		}
		defer resp.Body.Close()
		var body map[string]any
		err = json.NewDecoder(resp.Body).Decode(&body)
		ch <- reply{code: resp.StatusCode, body: body, err: err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan reply, what string) reply {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(hangGuard):
		t.Fatalf("%s: no reply", what)
		return reply{}
	}
}

// readersAnswer checks that status, mapping list and /metrics answer, with
// the mapping table as it was before the held change.
func readersAnswer(t *testing.T, in *relaytest.Instance, wantMappings int, known relaytest.Mapping) {
	t.Helper()
	code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if code != 200 || st["status"] != "running" || st["mappings"] != float64(wantMappings) {
		t.Errorf("status all while a store write is held: HTTP %d %v, want running with %d mappings", code, st, wantMappings)
	}
	code, st = in.Post(t, "/api/v2/status", url.Values{"mappingid": {known.ID}})
	if code != 200 || st["public"] != "Active" {
		t.Errorf("status of %s while a store write is held: HTTP %d %v", known.ID, code, st)
	}
	code, list := in.Post(t, "/api/v2/mapping/list", nil)
	if ms, _ := list["mappings"].([]any); code != 200 || len(ms) != wantMappings {
		t.Errorf("mapping list while a store write is held: HTTP %d %v, want %d mappings", code, list, wantMappings)
	}
	if n := metric(t, in, `iofog_connector_mappings{type="public"}`); n != float64(wantMappings) {
		t.Errorf("/metrics while a store write is held: %v public mappings, want %d", n, wantMappings)
	}
}

// Status, mapping list and /metrics never wait for a store write: an add
// or a remove that is stuck in its fsync holds none of them up.
func TestReadersDoNotWaitForAStoreWrite(t *testing.T) {
	g := newStoreGate()
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 6), BeforeStoreWrite: g.hook})
	defer g.open()
	first := in.AddPublic(t, 60, 200000)

	g.arm()
	added := postAsync(in, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	g.waitHeld(t)
	readersAnswer(t, in, 1, first) // not acknowledged yet, so not shown yet
	g.open()
	r := await(t, added, "held add")
	if r.code != 200 || r.body["status"] != "ok" {
		t.Fatalf("held add, once let through: HTTP %d %v", r.code, r.body)
	}
	readersAnswer(t, in, 2, first)

	g.arm()
	removed := postAsync(in, "/api/v2/mapping/remove", url.Values{"mappingid": {r.body["id"].(string)}})
	g.waitHeld(t)
	readersAnswer(t, in, 2, first) // not removed until stored
	g.open()
	if r := await(t, removed, "held remove"); r.code != 200 {
		t.Fatalf("held remove, once let through: HTTP %d %v", r.code, r.body)
	}
	readersAnswer(t, in, 1, first)
}

// A full Connector refuses an add at once with 507 and the reason, without
// waiting for anything (here: another add held in its store write), so a
// Controller moves on to another Connector.
func TestFullConnectorRefusesAddAtOnce(t *testing.T) {
	g := newStoreGate()
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), BeforeStoreWrite: g.hook})
	defer g.open()
	in.AddPublic(t, 60, 200000)
	g.arm()
	held := postAsync(in, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	g.waitHeld(t) // it holds the pool's last two ports

	code, r := in.Post(t, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	msg, _ := r["errormessage"].(string)
	if code != http.StatusInsufficientStorage || r["status"] != "failed" ||
		!strings.Contains(msg, "not enough available ports") || !strings.Contains(msg, "0 free ports") {
		t.Errorf("add on a full Connector: HTTP %d %v; want 507, status failed, and the reason", code, r)
	}
	g.open()
	if r := await(t, held, "held add"); r.code != 200 {
		t.Fatalf("held add: HTTP %d %v", r.code, r.body)
	}
}

// Slow request bodies cannot hold the API: a client that trickles its body
// is closed after api.read_timeout, one idle between requests after
// api.idle_timeout, and the API answers everyone else meanwhile.
func TestSlowAPIClientsAreClosed(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.API.ReadTimeout = schema.Duration{Duration: time.Second}
	cfg.API.IdleTimeout = schema.Duration{Duration: time.Second}
	in := relaytest.Start(t, relay.Options{Config: cfg})

	const slow = 20
	var wg sync.WaitGroup
	defer wg.Wait()
	conns := make([]net.Conn, slow)
	for i := range conns {
		c, err := net.Dial("tcp", in.APIAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(hangGuard))
		conns[i] = c
		if _, err := io.WriteString(c, "POST /api/v2/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nmappingid=a"); err != nil {
			t.Fatal(err)
		}
		// One body byte every 100 ms until the Connector hangs up: the
		// body would take 100 s.
		wg.Go(func() {
			for {
				time.Sleep(100 * time.Millisecond)
				if _, err := c.Write([]byte("l")); err != nil {
					return
				}
			}
		})
	}
	// The API serves others while the slow ones trickle.
	code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if code != 200 || st["status"] != "running" {
		t.Errorf("status during the slow clients: HTTP %d %v", code, st)
	}
	for i, c := range conns {
		// Whatever the Connector answers, it must then close (the read
		// deadline set at dial time only stops a hung test).
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Errorf("slow client %d: still open after %s", i, hangGuard)
		}
		c.Close()
	}

	// An idle kept-alive connection is closed too.
	c := newRawClient(t, in.APIAddr().String())
	if code, _ := c.do("POST /api/v2/status HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\nmappingid=all"); code != 200 {
		t.Fatalf("status on a kept-alive connection: HTTP %d", code)
	}
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	if n, err := c.r.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("idle API connection still open (read %d, %v)", n, err)
	}
	code, st = in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if code != 200 || st["status"] != "running" {
		t.Errorf("status after the slow clients: HTTP %d %v", code, st)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// logBuffer collects a Connector's log lines (and passes them to t.Log).
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogBuffer(t *testing.T) (*logBuffer, *slog.Logger) {
	lb := &logBuffer{t: t}
	return lb, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// storeRecord is a stored mapping with valid passcodes.
func storeRecord(id string, p1, p2 int) relay.Record {
	return relay.Record{ID: id, Port1: uint16(p1), Port2: uint16(p2), MaxConnectionsPort1: 60,
		PasscodePort1: fmt.Sprintf("%08d-0000-4000-8000-000000000000", p1), HeartbeatAbsenceThresholdPort1: 200000}
}

func writeStore(t *testing.T, path string, recs ...relay.Record) []byte {
	t.Helper()
	data, err := json.Marshal(map[string]any{"mappings": recs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

func poolPorts(t *testing.T, cfg *schema.Config) []int {
	lo, hi, err := schema.ParseRange(cfg.Ports[0])
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for p := int(lo); p <= int(hi); p++ {
		out = append(out, p)
	}
	return out
}

// Two stored mappings that share a port: the first is kept, the other is
// moved aside (named in the log, kept in a file) and its other port is
// free again; no add is ever given a port a mapping holds.
func TestStoredMappingsSharingAPortKeepTheFirst(t *testing.T) {
	cfg, dir := relaytest.Config(t, 6), t.TempDir()
	p := poolPorts(t, cfg)
	a, b, c := storeRecord("aaaa", p[0], p[1]), storeRecord("bbbb", p[1], p[2]), storeRecord("cccc", p[3], p[4])
	writeStore(t, filepath.Join(dir, relay.StoreFile), a, b, c)
	logs, log := newLogBuffer(t)
	in := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Logger: log})

	_, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if st["mappings"] != 2.0 || st["availablePorts"] != 2.0 {
		t.Errorf("status all = %v, want 2 mappings (aaaa, cccc) and 2 free ports", st)
	}
	if code, _ := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"bbbb"}}); code != 404 {
		t.Errorf("the conflicting mapping bbbb is served (HTTP %d)", code)
	}
	if !strings.Contains(logs.String(), "bbbb (ports "+strconv.Itoa(p[1])+", "+strconv.Itoa(p[2])+")") {
		t.Errorf("the log does not name the mapping moved aside")
	}
	aside, _ := filepath.Glob(filepath.Join(dir, relay.StoreFile+".conflicts-*"))
	if len(aside) != 1 {
		t.Fatalf("conflicting mapping not kept beside the store: %v", aside)
	}
	var kept struct{ Mappings []relay.Record }
	if data, err := os.ReadFile(aside[0]); err != nil || json.Unmarshal(data, &kept) != nil ||
		len(kept.Mappings) != 1 || kept.Mappings[0] != b {
		t.Errorf("%s holds %v (%v), want bbbb whole", aside[0], kept, err)
	}
	m := in.AddPublic(t, 60, 200000)
	if got := []int{m.Port1, m.Port2}; got[0] != p[2] || got[1] != p[5] {
		t.Errorf("new mapping got ports %v, want the free ones %d and %d", got, p[2], p[5])
	}
	in.Remove(t, "cccc")
	in.Remove(t, m.ID)
	for range 2 {
		m := in.AddPublic(t, 60, 200000)
		for _, port := range []int{m.Port1, m.Port2} {
			if port == p[0] || port == p[1] {
				t.Errorf("an add was given port %d, which aaaa holds", port)
			}
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, relay.StoreFile))
	if strings.Contains(string(data), "bbbb") || !strings.Contains(string(data), "aaaa") {
		t.Errorf("store after the changes: %s", data)
	}
}

// A stored mapping on the API's port cannot take it: the Connector starts,
// serves the API, and shows that port inactive with the reason.
func TestStoredMappingOnTheAPIPort(t *testing.T) {
	cfg, dir := relaytest.Config(t, 4), t.TempDir()
	apiLo, _, _ := schema.ParseRange(relaytest.FreePorts(t, 1))
	cfg.API.HTTPPort = int(apiLo)
	p := poolPorts(t, cfg)
	writeStore(t, filepath.Join(dir, relay.StoreFile), storeRecord("onapi", int(apiLo), p[0]), storeRecord("fine", p[1], p[2]))
	g := &gate{}
	in := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Gate: g})
	if in.APIAddr().(*net.TCPAddr).Port != int(apiLo) {
		t.Fatalf("API on %v, want port %d", in.APIAddr(), apiLo)
	}
	code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if code != 200 || st["status"] != "running" || st["mappings"] != 2.0 {
		t.Errorf("status all: HTTP %d %v", code, st)
	}
	// Public mapping: "private" is its agents' port, port1.
	_, st = in.Post(t, "/api/v2/status", url.Values{"mappingid": {"onapi"}})
	if st["private"] != "Inactive" || st["public"] != "Active" {
		t.Errorf("status of the mapping on the API port: %v, want private Inactive, public Active", st)
	}
	list, err := in.API.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Mappings {
		switch m.ID {
		case "onapi":
			if m.Active1 || !strings.Contains(m.Inactive1, "API port") || !m.Active2 {
				t.Errorf("mapping list entry %+v: want port1 inactive, with the reason", m)
			}
		case "fine":
			if !m.Active1 || m.Inactive1 != "" {
				t.Errorf("mapping list entry %+v", m)
			}
		}
	}
	for _, port := range g.open {
		if int(port) == int(apiLo) {
			t.Errorf("the API port was opened as a mapping port in the firewall (it would bypass api.allow)")
		}
	}
	in.Remove(t, "onapi")
	for _, port := range g.closed {
		if int(port) == int(apiLo) {
			t.Errorf("removing the mapping closed the API port in the firewall")
		}
	}
	if code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}}); code != 200 || st["mappings"] != 1.0 {
		t.Errorf("API after removing the mapping: HTTP %d %v", code, st)
	}
}
