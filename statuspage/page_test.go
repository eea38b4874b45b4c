package statuspage

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

const hostile = `<script>alert("x")</script>`

func get(t *testing.T, p *Page) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// startWithTraffic runs a real Connector with a public mapping that carried
// traffic through echoing agents, and a private mapping.
func startWithTraffic(t *testing.T) (*relaytest.Instance, relaytest.Mapping, relaytest.Mapping) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 8), Logger: relaytest.Quiet()})
	pub := in.AddPublic(t, 4, 200000)
	priv := in.AddPrivate(t, 200000)
	relaytest.EchoAgents(t, pub.Port1, pub.Passcode1, 2)
	relaytest.RoundTrip(t, pub.Port2, 300_000)
	counted(t, in, 300_000)
	return in, pub, priv
}

// counted waits until the Connector has counted n bytes each way: a chunk
// is counted once its write returns, which can be just after the echo of
// the last bytes reached the client.
func counted(t *testing.T, in *relaytest.Instance, n int64) {
	t.Helper()
	guard := time.Now().Add(10 * time.Second)
	for {
		var to, from int64
		in.EachTraffic(func(_ string, a, b int64) { to, from = to+a, from+b })
		if to == n && from == n {
			return
		}
		if time.Now().After(guard) {
			t.Fatalf("the Connector counted %d bytes to agents and %d from agents, want %d each", to, from, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPageShowsMappingsTrafficAndNoSecrets(t *testing.T) {
	in, pub, priv := startWithTraffic(t)
	p, err := New(Options{Connector: in.Connector, Hostname: func() (string, error) { return "edge-7", nil }})
	if err != nil {
		t.Fatal(err)
	}
	// Two samples around more traffic give the graph one interval.
	t0 := time.Now()
	p.hist.sample(t0, in.EachTraffic)
	relaytest.RoundTrip(t, pub.Port2, 200_000)
	counted(t, in, 500_000)
	p.hist.sample(t0.Add(5*time.Second), in.EachTraffic)

	resp, body := get(t, p)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"edge-7", "version <b>test</b>", "dev: plain HTTP and TCP",
		pub.ID, priv.ID, ">public<", ">private<",
		itoa(pub.Port1), itoa(pub.Port2), itoa(priv.Port1), itoa(priv.Port2),
		"4 allowed", "2 in total", // agents allowed; public sessions ever
		"<dt>to agents</dt><dd>500 kB", "<dt>from agents</dt><dd>500 kB", // 300,000 + 200,000 bytes each way
		"no agent",                   // the private route's sides
		`class="line to" d="M`,       // the graph has a line
		"to agents <b>40.0 kB/s</b>", // 200,000 bytes in the 5 s interval
		"mapping added on ports",
		"Connector started",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, secret := range []string{pub.Passcode1, priv.Passcode1, priv.Passcode2} {
		if secret != "" && strings.Contains(body, secret) {
			t.Errorf("page shows a passcode %q", secret)
		}
	}
	// The figures are the ones /metrics serves.
	metrics := fetch(t, in.Base+"/metrics")
	if !strings.Contains(metrics, `iofog_connector_relayed_bytes_total{direction="to_agent"} 500000`) {
		t.Errorf("/metrics disagrees with the page's 500 kB to agents:\n%s", grep(metrics, "relayed_bytes"))
	}
}

func TestPageEscapesHostileStrings(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	dir := t.TempDir()
	file := filepath.Join(dir, "status.json")
	st := status.Status{
		Config: status.Config{File: "connector.cue", Using: "built-in default", Errors: []string{
			"connector.cue:3:9: hostname: " + hostile,
		}},
		Interfaces: []status.Interface{{Name: "eth0" + hostile, State: "up", Addrs: []string{"192.0.2.7/24"}}},
		Clock:      "SNTP " + hostile,
		Firewall:   "on",
		Problems:   []string{"tls: " + hostile},
	}
	st.AddEvent(status.Event{Time: time.Now(), Kind: "restart", Text: "Connector restarted: " + hostile})
	writeStatus(t, file, st)
	p, err := New(Options{Connector: in.Connector, ApplianceStatus: file,
		Hostname: func() (string, error) { return "box" + hostile, nil }})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, p)
	if strings.Contains(body, hostile) || strings.Contains(body, "<script>alert") {
		t.Fatalf("page carries a hostile string unescaped:\n%s", body)
	}
	for _, want := range []string{
		"box&lt;script&gt;",
		"connector.cue:3:9: hostname: &lt;script&gt;",
		"eth0&lt;script&gt;", "192.0.2.7/24",
		"SNTP &lt;script&gt;",
		"Connector restarted: &lt;script&gt;",
		"tls: &lt;script&gt;",
		"connector.cue: invalid",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The only script is the page's own, and the CSP allows exactly it.
	scripts := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(body, -1)
	if len(scripts) != 1 {
		t.Fatalf("page has %d inline scripts, want 1", len(scripts))
	}
	sum := sha256.Sum256([]byte(scripts[0][1]))
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
		t.Errorf("CSP %q does not allow the page's script", csp)
	}
}

func TestPageSaysWhenApplianceStatusIsMissing(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	p, err := New(Options{Connector: in.Connector, ApplianceStatus: filepath.Join(t.TempDir(), "none.json")})
	if err != nil {
		t.Fatal(err)
	}
	_, body := get(t, p)
	if !strings.Contains(body, "the appliance has not written its status yet") {
		t.Errorf("page does not say the appliance status is missing")
	}
}

func TestOnlyGetAndHead(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	p, err := New(Options{Connector: in.Connector})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", rec.Code)
	}
	rec = httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/", nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD /: %d with %d bytes, want 200 and no body", rec.Code, rec.Body.Len())
	}
}

func writeStatus(t *testing.T, file string, st status.Status) {
	t.Helper()
	data, err := status.EncodeJSON(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func itoa(n int) string { return strconv.Itoa(n) }

// BenchmarkRender100Mappings is the cost of one page view (one refresh of
// an open page) with 100 mappings and a full graph history.
func BenchmarkRender100Mappings(b *testing.B) {
	in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 200), Logger: relaytest.Quiet()})
	for range 100 {
		in.AddPublic(b, 2, 200000)
	}
	p, err := New(Options{Connector: in.Connector})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range DefaultSamples {
		p.hist.sample(now.Add(time.Duration(i)*DefaultInterval), in.EachTraffic)
	}
	// Every mapping busy: the graph draws all its paths.
	for _, s := range p.hist.per {
		for i := range s.to {
			s.to[i], s.from[i] = int64(i*i*1000), int64(i*7000)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	b.ReportAllocs()
	b.ResetTimer()
	var size int
	for range b.N {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "gzip-bytes/page")
}
