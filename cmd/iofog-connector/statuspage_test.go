package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// The status page in a real browser, from a real daemon that runs as the
// appliance runs it (with PID 1's status file), with a public mapping that
// carries traffic and a private route with one agent: a person sees the
// mappings, the graph drawing itself as the page refreshes, and the config
// error the appliance reports. Screenshots land in out/.
func TestStatusPageInABrowser(t *testing.T) {
	chromium := testenv.RequireChromium(t)

	// What PID 1 writes (appliance.PageStatusFile): a config with a
	// mistake, so the appliance runs on its last good config.
	statusFile := filepath.Join(t.TempDir(), "status.json")
	st := status.Status{
		Version: "1.2.3-test", Booted: time.Now().Add(-3 * time.Hour), Clock: "SNTP pool.ntp.org",
		Config: status.Config{File: "connector.cue", Using: "last good config (state/last-good.cue)", Errors: []string{
			`connector.cue:4:10: broker: must be a whole number, not a string`,
			`connector.cue:7:3: prots: unknown field "prots"; did you mean "ports"? <script>alert(1)</script>`,
		}},
		Interfaces: []status.Interface{
			{Name: "eth0", State: "up (DHCP)", MAC: "b8:27:eb:12:34:56", Addrs: []string{"192.168.1.57/24", "fd00::57/64"}},
			{Name: "wlan0", State: "no carrier"},
		},
		Firewall:  "on",
		Connector: status.Connector{State: "running", Restarts: 1},
	}
	st.AddEvent(status.Event{Time: time.Now().Add(-2 * time.Hour), Kind: "config", Text: "connector.cue is invalid (2 problem(s)); running on the last good config"})
	st.AddEvent(status.Event{Time: time.Now().Add(-time.Hour), Kind: "restart", Text: "Connector restarted: exit status 2 after 1h0m0s"})
	data, err := status.EncodeJSON(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statusFile, data, 0o644); err != nil {
		t.Fatal(err)
	}

	apiPort := freeTCPPort(t)
	conf := fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true,"api":{"http_port":%d}}`,
		relaytest.FreePorts(t, 6), apiPort)
	base := "http://127.0.0.1:" + strconv.Itoa(apiPort)
	startDaemonForPage(t, conf, base, "--appliance-status", statusFile)
	pub := addMapping(t, base, `{"type":"public","maxconnections":8,"heartbeatabsencethreshold":200000}`)
	priv := addMapping(t, base, `{"type":"private","maxconnectionsport1":1,"maxconnectionsport2":1,"heartbeatabsencethresholdport1":200000,"heartbeatabsencethresholdport2":200000}`)
	relaytest.EchoAgents(t, pub.Port1, pub.Passcode1, 3)
	// Both sides of the private route, and bytes across it.
	side1, err := relaytest.Agent("127.0.0.1:"+strconv.Itoa(priv.Port1), priv.Passcode1)
	if err != nil {
		t.Fatal(err)
	}
	defer side1.Close()
	side2, err := relaytest.Agent("127.0.0.1:"+strconv.Itoa(priv.Port2), priv.Passcode2)
	if err != nil {
		t.Fatal(err)
	}
	defer side2.Close()
	const across = 300_000
	go side1.Write(make([]byte, across))
	side2.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.CopyN(io.Discard, side2, across); err != nil {
		t.Fatalf("private route: %v", err)
	}
	relaytest.RoundTrip(t, pub.Port2, 1<<20)

	// Traffic keeps flowing while the browser watches, in uneven bursts so
	// the graph has a shape.
	ctx, stopTraffic := context.WithCancel(context.Background())
	trafficDone := make(chan error, 1)
	go func() {
		defer close(trafficDone)
		start := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			// A different load in each 5 s sampling interval.
			load := []int{1, 4, 2, 6, 3}[int(time.Since(start)/(5*time.Second))%5]
			if err := relaytest.Exchange(pub.Port2, load*(128<<10)); err != nil && ctx.Err() == nil {
				trafficDone <- err
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(50+i%7*60) * time.Millisecond):
			}
		}
	}()
	defer func() {
		stopTraffic()
		if err := <-trafficDone; err != nil {
			t.Errorf("traffic: %v", err)
		}
	}()

	bctx, cancel := browser(t, chromium)
	defer cancel()
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	first, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('.asof').textContent`))
	if err != nil {
		t.Fatal(err)
	}
	// The page updates itself in place, without a reload.
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](
		fmt.Sprintf(`window.notReloaded === true && document.querySelector('.asof').textContent !== %q`, first),
		chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatalf("the page did not refresh itself in place (%s): %v", first, err)
	}
	// The graph needs two samples of the counters (5 s apart); the page
	// refreshes itself every 5 s. A line appears only if both work.
	line, err := chromedp.Run(bctx, chromedp.Poll[string](
		fmt.Sprintf(`(document.querySelector('#m-%s path.line.from') || {}).getAttribute ? document.querySelector('#m-%s path.line.from').getAttribute('d') : ''`, pub.ID, pub.ID),
		chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute)))
	if err != nil || !strings.HasPrefix(line, "M") {
		t.Fatalf("the public mapping's graph never drew a line (page refresh or sampling broken): %q %v", line, err)
	}
	// Let a few more intervals in, for a screenshot with a shape.
	time.Sleep(12 * time.Second)

	text := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return s
	}
	pubCard := text(fmt.Sprintf(`document.getElementById('m-%s').innerText`, pub.ID))
	for _, want := range []string{"PUBLIC", strconv.Itoa(pub.Port1), strconv.Itoa(pub.Port2), "listening", "8 allowed", "in total", "TO AGENTS\n", "FROM AGENTS\n", " MB\n", "last agent seen just now"} {
		if !strings.Contains(pubCard, want) {
			t.Errorf("public mapping card lacks %q:\n%s", want, pubCard)
		}
	}
	privCard := text(fmt.Sprintf(`document.getElementById('m-%s').innerText`, priv.ID))
	for _, want := range []string{"PRIVATE", "connected",
		"port " + strconv.Itoa(priv.Port1) + " agent " + side1.LocalAddr().String() + " relayed",
		"port " + strconv.Itoa(priv.Port2) + " agent " + side2.LocalAddr().String() + " relayed",
		"300 kB", // to agents and from agents: the bytes crossed once
	} {
		if !strings.Contains(privCard, want) {
			t.Errorf("private route card lacks %q:\n%s", want, privCard)
		}
	}
	app := text(`document.getElementById('appliance').innerText`)
	for _, want := range []string{
		"connector.cue: invalid", "last good config",
		"connector.cue:4:10: broker: must be a whole number, not a string",
		`did you mean "ports"? <script>alert(1)</script>`, // shown as text, not run
		"eth0", "192.168.1.57/24", "fd00::57/64", "wlan0", "SNTP pool.ntp.org", "FIREWALL\non", "restarted 1×",
	} {
		if !strings.Contains(app, want) {
			t.Errorf("appliance section lacks %q:\n%s", want, app)
		}
	}
	events := text(`document.getElementById('events').innerText`)
	for _, want := range []string{"ADDED", "public mapping added on ports " + strconv.Itoa(pub.Port1), "RESTART", "CONFIG", "STARTED"} {
		if !strings.Contains(events, want) {
			t.Errorf("events lack %q:\n%s", want, events)
		}
	}
	html := text(`document.documentElement.outerHTML`)
	for _, secret := range []string{pub.Passcode1, priv.Passcode1, priv.Passcode2} {
		if strings.Contains(html, secret) {
			t.Errorf("the page shows a passcode")
		}
	}
	if n := text(`String(document.scripts.length)`); n != "1" {
		t.Errorf("page has %s scripts, want only its own", n)
	}
	if stale := text(`String(document.body.classList.contains('stale'))`); stale != "false" {
		t.Errorf("page says the Connector does not answer")
	}

	out := outDir(t)
	shot := func(name string, w, h int64, scale float64) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.EmulateViewport(w, h, chromedp.EmulateScale(scale))); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		file := filepath.Join(out, name)
		if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", file)
	}
	shot("statuspage-desktop.png", 1280, 900, 1)
	shot("statuspage-phone.png", 390, 844, 2)
}

// The page is served over HTTPS when dev is false, shows when the
// certificate expires, and the control API beside it is unchanged.
func TestStatusPageOverHTTPS(t *testing.T) {
	tlsDir := t.TempDir()
	certPEM, keyPEM, err := certs.Generate(certs.Request{Names: []string{"connector.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WritePair(tlsDir, certPEM, keyPEM, false); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	apiPort := freeTCPPort(t)
	conf := fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":false,"api":{"https_port":%d}}`,
		relaytest.FreePorts(t, 4), apiPort)
	startDaemon(t, conf, "--tls-dir", tlsDir)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "connector.example"}}}
	base := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "expires " + cert.NotAfter.UTC().Format("2006-01-02")
	if resp.StatusCode != 200 || !strings.Contains(string(body), want) || !strings.Contains(string(body), "TLS: HTTPS API") {
		t.Errorf("GET / over HTTPS: %d; want the page with %q and the TLS mode", resp.StatusCode, want)
	}
	resp, err = client.PostForm(base+"/api/v2/status", url.Values{"mappingid": {"all"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"status":"running"`) {
		t.Errorf("status API beside the page: %s", body)
	}
	// Any other path is still the API's JSON 404.
	resp, err = client.Get(base + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /index.html: %d %s, want the API's JSON 404", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// startDaemonForPage runs `iofog-connector run` with conf and flags only
// run takes, until the test ends, and waits until base/ answers.
func startDaemonForPage(t *testing.T, conf, base string, runFlags ...string) {
	t.Helper()
	dir := t.TempDir()
	confFile := filepath.Join(dir, "iofog-connector.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- cmdRun(ctx, &cliEnv{stdout: logs, stderr: logs, version: "1.2.3-test"},
			append([]string{"--config", confFile, "--state-dir", filepath.Join(dir, "state")}, runFlags...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exit:
		case <-time.After(time.Minute):
			t.Error("daemon did not stop")
		}
	})
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := http.Get(base + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case code := <-exit:
			t.Fatalf("run exited %d before serving the page:\n%s", code, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not serving the page after a minute:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type added struct {
	ID                   string
	Port1, Port2         int
	Passcode1, Passcode2 string
}

func addMapping(t *testing.T, base, js string) added {
	t.Helper()
	var r controlapi.AddReply
	if err := controlapi.New(base, nil).Call(context.Background(), "/api/v2/mapping/add", url.Values{"mapping": {js}}, &r); err != nil {
		t.Fatalf("mapping add %s: %v", js, err)
	}
	return added{r.ID, int(r.Port1), int(r.Port2), r.Passcode1, r.Passcode2}
}

// browser starts headless Chromium as root can run it: no sandbox, a fresh
// profile, and nothing that reaches the network by itself.
func browser(t *testing.T, path string) (context.Context, context.CancelFunc) {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless, chromedp.DisableGPU, chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute)
	return ctx, func() { cancelTimeout(); cancelCtx(); cancelAlloc() }
}

// outDir is the repository's out/, where screenshots go.
func outDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "out"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
