package relay_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// The Controller v1.3.1 requests captured in docs/protocol.md §3.8, byte for byte.
const (
	capturedAddPublic = "POST /api/v2/mapping/add HTTP/1.1\r\n" +
		"Content-Type: application/x-www-form-urlencoded\r\n" +
		"Content-Length: 110\r\n" +
		"Host: 127.0.0.1:8080\r\n" +
		"Connection: keep-alive\r\n\r\n" +
		"mapping=%7B%22type%22%3A%22public%22%2C%22maxconnections%22%3A60%2C%22heartbeatabsencethreshold%22%3A200000%7D"
	capturedAddPrivate = "POST /api/v2/mapping/add HTTP/1.1\r\n" +
		"Content-Type: application/x-www-form-urlencoded\r\n" +
		"Content-Length: 209\r\n" +
		"Host: 127.0.0.1:8080\r\n" +
		"Connection: keep-alive\r\n\r\n" +
		"mapping=%7B%22type%22%3A%22private%22%2C%22maxconnectionsport1%22%3A1%2C%20%22maxconnectionsport2%22%3A1%2C%20%22heartbeatabsencethresholdport1%22%3A200000%2C%20%22heartbeatabsencethresholdport2%22%3A200000%7D"
	capturedRemoveUnknown = "POST /api/v2/mapping/remove HTTP/1.1\r\n" +
		"Content-Type: application/x-www-form-urlencoded\r\n" +
		"Content-Length: 46\r\n" +
		"Host: 127.0.0.1:8080\r\n" +
		"Connection: keep-alive\r\n\r\n" +
		"mappingid=c1474958-09e3-44ac-87b5-3cb431c70c77"
)

func removeRequest(id string) string {
	body := "mappingid=" + id
	return fmt.Sprintf("POST /api/v2/mapping/remove HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n\r\n%s", len(body), body)
}

// rawClient sends requests as bytes on one keep-alive connection, as the
// Controller does.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func newRawClient(t *testing.T, addr string) *rawClient {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawClient) do(req string) (int, string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, req); err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.Close {
		c.t.Errorf("the Connector closed the keep-alive connection after %q", strings.SplitN(req, "\r\n", 2)[0])
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.t.Errorf("Content-Type %q, want application/json", ct)
	}
	return resp.StatusCode, string(body)
}

var (
	uuidRE = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
	// Compact JSON in the original's key order.
	addPublicRE  = regexp.MustCompile(`^\{"status":"ok","id":"(` + uuidRE + `)","port1":(\d+),"port2":(\d+),"passcode1":"(` + uuidRE + `)","passcode2":"","timestamp":(\d{13})\}$`)
	addPrivateRE = regexp.MustCompile(`^\{"status":"ok","id":"(` + uuidRE + `)","port1":(\d+),"port2":(\d+),"passcode1":"(` + uuidRE + `)","passcode2":"(` + uuidRE + `)","timestamp":(\d{13})\}$`)
	removeRE     = regexp.MustCompile(`^\{"status":"ok","id":"(` + uuidRE + `)","timestamp":(\d{13})\}$`)
)

func TestCapturedControllerRequestsOnOneConnection(t *testing.T) {
	cfg := relaytest.Config(t, 10)
	in := relaytest.Start(t, relay.Options{Config: cfg})
	c := newRawClient(t, in.APIAddr().String())
	before := time.Now().UnixMilli()

	code, body := c.do(capturedAddPublic)
	pub := addPublicRE.FindStringSubmatch(body)
	if code != 200 || pub == nil {
		t.Fatalf("public add: HTTP %d %s", code, body)
	}
	code, body = c.do(capturedAddPrivate)
	priv := addPrivateRE.FindStringSubmatch(body)
	if code != 200 || priv == nil {
		t.Fatalf("private add: HTTP %d %s", code, body)
	}
	var ts struct{ Timestamp int64 }
	json.Unmarshal([]byte(body), &ts)
	if ts.Timestamp < before || ts.Timestamp > time.Now().UnixMilli() {
		t.Errorf("timestamp %d is not epoch milliseconds of now", ts.Timestamp)
	}
	lo, _, _ := strings.Cut(cfg.Ports[0], "-")
	if pub[2] != lo {
		t.Errorf("public mapping got port1 %s; the pool's lowest port is %s", pub[2], lo)
	}
	if pub[2] == priv[2] || pub[3] == priv[3] || priv[4] == priv[5] {
		t.Errorf("ports or passcodes reused: public %v private %v", pub[1:], priv[1:])
	}

	// The captured remove names a mapping this Connector never had.
	code, body = c.do(capturedRemoveUnknown)
	var e map[string]any
	if err := json.Unmarshal([]byte(body), &e); err != nil || code < 300 || e["status"] != "failed" || e["errormessage"] == nil {
		t.Fatalf("remove of an unknown id: HTTP %d %s; want non-2xx and a failed JSON with errormessage", code, body)
	}

	// The store holds both, with the original's field names and the
	// private mapping's own port2 limit.
	data, err := os.ReadFile(filepath.Join(in.Opts.StateDir, relay.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	var store struct {
		Mappings []map[string]any `json:"mappings"`
	}
	if err := json.Unmarshal(data, &store); err != nil {
		t.Fatalf("store: %v\n%s", err, data)
	}
	if len(store.Mappings) != 2 {
		t.Fatalf("store has %d mappings, want 2:\n%s", len(store.Mappings), data)
	}
	wantKeys := []string{"id", "port1", "port2", "maxconnectionsport1", "maxconnectionsport2", "passcodeport1",
		"passcodeport2", "heartbeatabsencethresholdport1", "heartbeatabsencethresholdport2"}
	for _, m := range store.Mappings {
		if len(m) != len(wantKeys) {
			t.Errorf("store record has keys %v, want exactly %v", m, wantKeys)
		}
		for _, k := range wantKeys {
			if _, ok := m[k]; !ok {
				t.Errorf("store record lacks %q: %v", k, m)
			}
		}
	}
	if p := store.Mappings[0]; p["maxconnectionsport1"] != 60.0 || p["maxconnectionsport2"] != 0.0 ||
		p["heartbeatabsencethresholdport1"] != 200000.0 || p["heartbeatabsencethresholdport2"] != 0.0 || p["passcodeport2"] != "" {
		t.Errorf("public record %v", p)
	}
	if p := store.Mappings[1]; p["maxconnectionsport1"] != 1.0 || p["maxconnectionsport2"] != 1.0 ||
		p["heartbeatabsencethresholdport2"] != 200000.0 {
		t.Errorf("private record %v", p)
	}

	for _, id := range []string{pub[1], priv[1]} {
		code, body = c.do(removeRequest(id))
		m := removeRE.FindStringSubmatch(body)
		if code != 200 || m == nil || m[1] != id {
			t.Fatalf("remove %s: HTTP %d %s", id, code, body)
		}
	}
	if code, body := c.do(removeRequest(pub[1])); code < 300 || !strings.Contains(body, `"status":"failed"`) {
		t.Errorf("second remove of %s: HTTP %d %s, want an error", pub[1], code, body)
	}
}

func TestStatusAndCommandline(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 10), Version: "9.9.9"})
	pub := in.AddPublic(t, 60, 200000)
	priv := in.AddPrivate(t, 200000)

	// The installer's poll (docs/protocol.md §3.4) greps the literal text.
	body := postRaw(t, in, "/api/v2/status", "application/x-www-form-urlencoded", "mappingid=all")
	if !strings.Contains(body, `"status":"running"`) {
		t.Errorf("status all: %s lacks the literal \"status\":\"running\"", body)
	}
	if !regexp.MustCompile(`^\{"id":"all","timestamp":\d{13},"status":"running","mappings":2,"version":"9.9.9","availablePorts":6\}$`).MatchString(body) {
		t.Errorf("status all: %s", body)
	}
	// Form parsed whatever the Content-Type says.
	body = postRaw(t, in, "/api/v2/status", "text/plain", "mappingid="+pub.ID)
	if !regexp.MustCompile(`^\{"id":"` + pub.ID + `","timestamp":\d{13},"public":"Active","private":"Active"\}$`).MatchString(body) {
		t.Errorf("status public: %s", body)
	}
	body = postRaw(t, in, "/api/v2/status", "", "mappingid="+priv.ID)
	if !regexp.MustCompile(`^\{"id":"` + priv.ID + `","timestamp":\d{13},"private1":"Active","private2":"Active"\}$`).MatchString(body) {
		t.Errorf("status private: %s", body)
	}
	code, r := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"nope"}})
	if code < 300 || r["status"] != "failed" || r["errormessage"] == nil {
		t.Errorf("status of unknown id: HTTP %d %v", code, r)
	}

	for cmd, want := range map[string]string{
		"status": "Connector is up and running.", "version": "9.9.9", "-v": "9.9.9", "--version": "9.9.9",
		"help": "Usage", "-?": "Usage", "bogus": "Usage",
	} {
		code, r := in.Post(t, "/api/v2/commandline", url.Values{"command": {cmd}, "params": {""}})
		if resp, _ := r["response"].(string); code != 200 || !strings.Contains(resp, want) {
			t.Errorf("commandline %s: HTTP %d %v, want a response containing %q", cmd, code, r, want)
		}
	}
}

func postRaw(t *testing.T, in *relaytest.Instance, path, ctype, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.Base+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := in.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Errorf("POST %s %q: HTTP %d %s", path, body, resp.StatusCode, b)
	}
	return string(b)
}

func TestErrorsHaveTheControllersShape(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 3)})
	check := func(name string, resp *http.Response, err error, wantCode int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer resp.Body.Close()
		var e map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("%s: body is not JSON: %v", name, err)
		}
		if resp.StatusCode != wantCode || e["status"] != "failed" || e["errormessage"] == "" || e["errormessage"] == nil {
			t.Errorf("%s: HTTP %d %v, want %d with status failed and an errormessage", name, resp.StatusCode, e, wantCode)
		}
	}
	resp, err := in.Client.Post(in.Base+"/api/v2/nothing", "application/x-www-form-urlencoded", nil)
	check("unknown path", resp, err, 404)
	resp, err = in.Client.Get(in.Base + "/api/v2/status")
	check("GET status", resp, err, 405)
	for name, mapping := range map[string]string{
		"bad JSON":           `{"type":`,
		"other type":         `{"type":"mirror","maxconnections":1,"heartbeatabsencethreshold":1}`,
		"missing key":        `{"type":"public","maxconnections":60}`,
		"number as string":   `{"type":"public","maxconnections":"60","heartbeatabsencethreshold":200000}`,
		"negative":           `{"type":"private","maxconnectionsport1":-1,"maxconnectionsport2":1,"heartbeatabsencethresholdport1":1,"heartbeatabsencethresholdport2":1}`,
		"private, missing 2": `{"type":"private","maxconnectionsport1":1,"heartbeatabsencethresholdport1":1,"heartbeatabsencethresholdport2":1}`,
	} {
		resp, err := in.Client.PostForm(in.Base+"/api/v2/mapping/add", url.Values{"mapping": {mapping}})
		check(name, resp, err, 400)
	}
	resp, err = in.Client.PostForm(in.Base+"/api/v2/mapping/add", url.Values{})
	check("no mapping field", resp, err, 400)

	// Three ports: one mapping fits, the second does not (the original's 507).
	in.AddPublic(t, 60, 200000)
	resp, err = in.Client.PostForm(in.Base+"/api/v2/mapping/add", url.Values{"mapping": {`{"type":"public","maxconnections":60,"heartbeatabsencethreshold":200000}`}})
	check("pool exhausted", resp, err, http.StatusInsufficientStorage)
}

func TestCommandlineStopRepliesThenStops(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	code, r := in.Post(t, "/api/v2/commandline", url.Values{"command": {"stop"}})
	if code != 200 || r["response"] == nil {
		t.Fatalf("stop: HTTP %d %v", code, r)
	}
	done, err := in.Wait(time.Minute)
	if !done {
		t.Fatal("Run did not return after commandline stop")
	}
	if err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port1)); err == nil {
		t.Error("mapping port still accepts connections after stop")
	}
	// The store survives the stop.
	data, err := os.ReadFile(filepath.Join(in.Opts.StateDir, relay.StoreFile))
	if err != nil || !strings.Contains(string(data), m.Passcode1) {
		t.Errorf("store after stop: %v %s", err, data)
	}
}
