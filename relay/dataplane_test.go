package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// hangGuard only stops a hung test; no test asserts how fast anything is.
const hangGuard = 60 * time.Second

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func dial(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr(port))
	if err != nil {
		t.Fatalf("dial %d: %v", port, err)
	}
	c.SetDeadline(time.Now().Add(hangGuard))
	t.Cleanup(func() { c.Close() })
	return c
}

// rawAgent authenticates like an agent, byte by byte, and fails the test
// unless the Connector answers AUTHORIZED.
func rawAgent(t *testing.T, port int, passcode string) net.Conn {
	t.Helper()
	c := dial(t, port)
	if _, err := io.WriteString(c, passcode); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("AUTHORIZED"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "AUTHORIZED" {
		t.Fatalf("agent on port %d: got %q, %v; want AUTHORIZED", port, got, err)
	}
	return c
}

// expectClosed reads until the Connector closes the connection; it fails
// if payload arrives instead.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %s", what, hangGuard)
	}
	if err == nil {
		t.Fatalf("%s: read %q, want the connection closed", what, buf[:n])
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: got %q, %v", n, b, err)
	}
	return string(b)
}

func metric(t *testing.T, in *relaytest.Instance, name string) float64 {
	t.Helper()
	resp, err := in.Client.Get(in.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("metric %s not served", name)
	return 0
}

func startHTTPService(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// runAgents runs an agent client for a public mapping until the test ends
// and waits until n connections are pooled.
func runAgents(t *testing.T, m relaytest.Mapping, n, localPort int, tweak func(*agentclient.Config)) *agentclient.Client {
	t.Helper()
	cfg := agentclient.Config{Mode: "public", Host: "127.0.0.1", Port: m.Port1, Passcode: m.Passcode1,
		ConnectionCount: n, LocalHost: "127.0.0.1", LocalPort: localPort,
		HeartbeatFrequency: 20000, HeartbeatAbsenceThreshold: 60000, DevMode: true}
	if tweak != nil {
		tweak(&cfg)
	}
	cl, err := agentclient.New(cfg, agentclient.Options{RetryDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, hangGuard)
	defer wcancel()
	if err := cl.WaitAuthorized(wctx, n); err != nil {
		t.Fatalf("agents not pooled: %v (stats %+v)", err, cl.Stats())
	}
	return cl
}

func TestPublicMappingServesManyConcurrentClients(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	runAgents(t, m, 60, startHTTPService(t), nil)

	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: hangGuard}
	const clients = 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	sem := make(chan struct{}, 100)
	for i := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			body := fmt.Sprintf("payload-%d", i)
			resp, err := hc.Post(fmt.Sprintf("http://%s/c%d", addr(m.Port2), i), "text/plain", strings.NewReader(body))
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("POST /c%d %s", i, body); string(got) != want {
				errs <- fmt.Errorf("client %d got %q, want %q", i, got, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := metric(t, in, "iofog_connector_public_sessions_total"); got < clients {
		t.Errorf("public_sessions_total %v, want at least %d", got, clients)
	}
}

func TestWrongPasscodesAreRejected(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPrivate(t, 200000)
	cases := map[string]struct {
		port int
		send string
	}{
		"other side's passcode": {m.Port1, m.Passcode2},
		"wrong passcode":        {m.Port2, strings.Repeat("0", 36)},
		"short passcode":        {m.Port1, m.Passcode1[:20]},
		"passcode plus newline": {m.Port1, "\n" + m.Passcode1[:35]},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, tc.port)
			io.WriteString(c, tc.send)
			if cw, ok := c.(*net.TCPConn); ok && len(tc.send) < 36 {
				cw.CloseWrite() // a short passcode then nothing more
			}
			expectClosed(t, c, name)
		})
	}
	if got := metric(t, in, "iofog_connector_auth_failures_total"); got != float64(len(cases)) {
		t.Errorf("auth_failures_total %v, want %d", got, len(cases))
	}
	// The passcode may arrive in pieces (§6.7).
	c := dial(t, m.Port1)
	for _, part := range []string{m.Passcode1[:1], m.Passcode1[1:17], m.Passcode1[17:]} {
		io.WriteString(c, part)
		time.Sleep(10 * time.Millisecond) // separate segments; not a timing assertion
	}
	if got := readN(t, c, 10); got != "AUTHORIZED" {
		t.Errorf("passcode in three pieces: got %q", got)
	}
}

func TestBeatIsEchoedAndNeverForwarded(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPrivate(t, 200000)
	a := rawAgent(t, m.Port1, m.Passcode1)
	b := rawAgent(t, m.Port2, m.Passcode2)
	for range 3 {
		io.WriteString(a, "BEAT")
		if got := readN(t, a, 4); got != "BEAT" {
			t.Fatalf("echo: got %q, want BEAT", got)
		}
	}
	io.WriteString(a, "hello")
	if got := readN(t, b, 5); got != "hello" {
		t.Fatalf("the other side got %q, want hello (a BEAT was forwarded)", got)
	}
	io.WriteString(b, "world")
	if got := readN(t, a, 5); got != "world" {
		t.Fatalf("got %q, want world", got)
	}
}

// A BEAT that arrives while payload flows to the agent is not echoed, so
// the echo can never merge into the payload the agent hands to its
// microservice; once the session is quiet, echoes resume.
func TestBeatNeverMergesIntoPayload(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	pub := dial(t, m.Port2)
	for i := range 50 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 1000)
		if _, err := pub.Write(chunk); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(chunk))
		if _, err := io.ReadFull(agent, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, chunk) {
			t.Fatalf("chunk %d: agent read %q..., want %q... (an echo merged into the payload)", i, got[:8], chunk[:8])
		}
		io.WriteString(agent, "BEAT") // right after payload: must not be echoed
	}
	// Quiet now: keep beating until the Connector echoes.
	echoed := make(chan error, 1)
	go func() {
		b := make([]byte, 4)
		_, err := io.ReadFull(agent, b)
		if err == nil && string(b) != "BEAT" {
			err = fmt.Errorf("agent read %q after the payload, want BEAT", b)
		}
		echoed <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-echoed:
			if err != nil {
				t.Fatal(err)
			}
			break wait
		case <-tick.C:
			io.WriteString(agent, "BEAT")
		}
	}
	io.WriteString(agent, "pong")
	if got := readN(t, pub, 4); got != "pong" {
		t.Fatalf("public client read %q, want pong: a BEAT was forwarded", got)
	}
}

func TestSilentAgentIsClosedAfterItsThreshold(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 300)
	silent := rawAgent(t, m.Port1, m.Passcode1)
	expectClosed(t, silent, "silent agent")
	if got := metric(t, in, "iofog_connector_heartbeat_timeouts_total"); got != 1 {
		t.Errorf("heartbeat_timeouts_total %v, want 1", got)
	}
	if got := metric(t, in, `iofog_connector_agent_connections{state="idle"}`); got != 0 {
		t.Errorf("idle agent connections %v after the timeout, want 0", got)
	}
}

func TestAgentThatBeatsStaysConnected(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPrivate(t, 1500)
	a := rawAgent(t, m.Port1, m.Passcode1)
	b := rawAgent(t, m.Port2, m.Passcode2)
	// Beat for three thresholds; every beat is answered, the link stays.
	for range 30 {
		io.WriteString(a, "BEAT")
		if got := readN(t, a, 4); got != "BEAT" {
			t.Fatalf("got %q, want BEAT", got)
		}
		time.Sleep(150 * time.Millisecond)
	}
	io.WriteString(a, "still here")
	// b was silent for the same time and is gone; a's bytes are dropped
	// (nobody on the other side) or b reads them before its close.
	expectClosedOrData(t, b)
	if got := metric(t, in, "iofog_connector_heartbeat_timeouts_total"); got != 1 {
		t.Errorf("heartbeat_timeouts_total %v, want 1 (only the silent side)", got)
	}
}

func expectClosedOrData(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("silent side still open after %s", hangGuard)
	}
}

func TestMaxConnectionsCountsOnlyAuthenticated(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 2, 200000)
	for range 5 {
		dial(t, m.Port1) // connected, never authenticated
	}
	rawAgent(t, m.Port1, m.Passcode1)
	rawAgent(t, m.Port1, m.Passcode1)
	third := dial(t, m.Port1)
	io.WriteString(third, m.Passcode1)
	expectClosed(t, third, "third authenticated connection with maxconnections 2")
}

func TestPublicClientWithNoAgentIsClosedAfterTheWait(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.PublicWait = schema.Duration{Duration: 200 * time.Millisecond}
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 60, 200000)
	pub := dial(t, m.Port2)
	io.WriteString(pub, "GET / HTTP/1.0\r\n\r\n")
	expectClosed(t, pub, "public client with no agent")
	if got := metric(t, in, "iofog_connector_public_wait_timeouts_total"); got != 1 {
		t.Errorf("public_wait_timeouts_total %v, want 1", got)
	}
}

func TestPublicClientIsServedWhenAnAgentArrivesInTheWait(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.PublicWait = schema.Duration{Duration: hangGuard}
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 60, 200000)
	pub := dial(t, m.Port2)
	first := "GET /first-bytes HTTP/1.0\r\n\r\n"
	io.WriteString(pub, first)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	if got := readN(t, agent, len(first)); got != first {
		t.Fatalf("agent got %q, want the client's first bytes %q", got, first)
	}
	io.WriteString(agent, "reply")
	if got := readN(t, pub, 5); got != "reply" {
		t.Fatalf("public client got %q", got)
	}
}

func TestClosingEitherSideClosesTheOther(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)

	agent := rawAgent(t, m.Port1, m.Passcode1)
	pub := dial(t, m.Port2)
	io.WriteString(pub, "x")
	readN(t, agent, 1)
	agent.Close()
	expectClosed(t, pub, "public client after its agent connection closed")

	agent = rawAgent(t, m.Port1, m.Passcode1)
	pub = dial(t, m.Port2)
	io.WriteString(pub, "y")
	readN(t, agent, 1)
	pub.Close()
	expectClosed(t, agent, "agent connection after its public client closed")
}

func TestRemoveDuringTrafficClosesEverythingAndFreesThePorts(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	runAgents(t, m, 8, testpeer.Echoing(t), nil)

	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr(m.Port2))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(hangGuard))
			buf := make([]byte, 4096)
			for i := 0; ; i++ {
				if _, err := c.Write(buf); err != nil {
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Error("session still open after its mapping was removed")
					}
					return
				}
				if i == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	for range 8 {
		<-started
	}
	in.Remove(t, m.ID)
	wg.Wait()
	for _, p := range []int{m.Port1, m.Port2} {
		if c, err := net.Dial("tcp", addr(p)); err == nil {
			c.Close()
			t.Errorf("port %d still accepts connections after remove", p)
		}
	}
	_, r := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if r["availablePorts"] != 4.0 || r["mappings"] != 0.0 {
		t.Errorf("after remove: %v, want all 4 ports free and no mappings", r)
	}
	// The freed ports are handed out again.
	m2 := in.AddPublic(t, 60, 200000)
	if m2.Port1 != m.Port1 {
		t.Errorf("new mapping got port %d, want the freed %d", m2.Port1, m.Port1)
	}
}

func TestPortHeldByAnotherProgramIsSkipped(t *testing.T) {
	cfg := relaytest.Config(t, 6)
	lo, _, _ := strings.Cut(cfg.Ports[0], "-")
	busy, err := net.Listen("tcp", ":"+lo)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 60, 200000)
	if strconv.Itoa(m.Port1) == lo || strconv.Itoa(m.Port2) == lo {
		t.Fatalf("mapping got the busy port %s: %+v", lo, m)
	}
	rawAgent(t, m.Port1, m.Passcode1)
	// The other ports are still handed out.
	m2 := in.AddPrivate(t, 200000)
	if strconv.Itoa(m2.Port1) == lo || strconv.Itoa(m2.Port2) == lo {
		t.Fatalf("second mapping got the busy port %s: %+v", lo, m2)
	}
}

func TestRestartReopensMappingsAndAgentsReconnect(t *testing.T) {
	cfg := relaytest.Config(t, 6)
	dir := t.TempDir()
	first := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir})
	pubM := first.AddPublic(t, 60, 200000)
	privM := first.AddPrivate(t, 200000)
	svc := startHTTPService(t)
	cl := runAgents(t, pubM, 4, svc, nil)
	get := func() {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: hangGuard}
		resp, err := hc.Get("http://" + addr(pubM.Port2) + "/again")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "GET /again " {
			t.Fatalf("got %q", body)
		}
	}
	get()
	first.Stop(t)

	second := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir})
	code, r := second.Post(t, "/api/v2/status", url.Values{"mappingid": {pubM.ID}})
	if code != 200 || r["public"] != "Active" || r["private"] != "Active" {
		t.Fatalf("public mapping after restart: %d %v", code, r)
	}
	// The same passcodes on the same ports still authenticate.
	rawAgent(t, privM.Port1, privM.Passcode1)
	rawAgent(t, privM.Port2, privM.Passcode2)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := cl.WaitAuthorized(ctx, 4); err != nil {
		t.Fatalf("agents did not reconnect: %v", err)
	}
	get()
}

func TestCrossTalk(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 30)})
	echo := testpeer.Echoing(t)
	var ms []relaytest.Mapping
	for range 10 {
		m := in.AddPublic(t, 60, 200000)
		runAgents(t, m, 10, echo, nil)
		ms = append(ms, m)
	}
	// Meanwhile other mappings come and go, with an agent connecting to each.
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := in.API.Add(context.Background(), controlapi.Public(60, 200000))
			if err != nil {
				t.Errorf("churn add: %v", err)
				return
			}
			c, err := net.Dial("tcp", addr(int(r.Port1)))
			if err == nil {
				io.WriteString(c, r.Passcode1)
			}
			if _, err := in.API.Remove(context.Background(), r.ID); err != nil {
				t.Errorf("churn remove: %v", err)
				return
			}
			if c != nil {
				c.Close()
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	for i := range 100 {
		m := ms[i%len(ms)]
		wg.Go(func() {
			c, err := net.Dial("tcp", addr(m.Port2))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(hangGuard))
			mine := make([]byte, 256<<10)
			rand.Read(mine)
			copy(mine, fmt.Sprintf("session %d ", i))
			errc := make(chan error, 1)
			go func() {
				for off := 0; off < len(mine); off += 8192 {
					if _, err := c.Write(mine[off : off+8192]); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			got := make([]byte, len(mine))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			if err := <-errc; err != nil {
				t.Errorf("session %d write: %v", i, err)
			}
			if !bytes.Equal(got, mine) {
				t.Errorf("session %d got bytes that are not its own (first: %q)", i, got[:16])
			}
		})
	}
	wg.Wait()
	close(stop)
	if n := <-churned; n == 0 {
		t.Error("no mapping was added and removed during the traffic")
	}
}

func TestPrivateRouteResumesWithAReconnectedSide(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPrivate(t, 200000)
	a := rawAgent(t, m.Port1, m.Passcode1)
	b := rawAgent(t, m.Port2, m.Passcode2)
	io.WriteString(a, "one")
	if got := readN(t, b, 3); got != "one" {
		t.Fatalf("got %q", got)
	}
	// b's agent lost its link without the Connector noticing and dials
	// again: the new connection takes over, the old one is closed.
	b2 := rawAgent(t, m.Port2, m.Passcode2)
	expectClosed(t, b, "replaced private connection")
	io.WriteString(a, "two")
	if got := readN(t, b2, 3); got != "two" {
		t.Fatalf("reconnected side got %q", got)
	}
	io.WriteString(b2, "back")
	if got := readN(t, a, 4); got != "back" {
		t.Fatalf("got %q", got)
	}
}

// A public client that connects and stays silent holds no agent connection:
// pairing happens on its first bytes.
func TestSilentPublicClientHoldsNoAgent(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 1, 200000)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	dial(t, m.Port2) // never sends
	// Give the Connector time to take up the silent client first; the
	// outcome is checked below, not the time.
	time.Sleep(200 * time.Millisecond)
	pub := dial(t, m.Port2)
	io.WriteString(pub, "hello")
	if got := readN(t, agent, 5); got != "hello" {
		t.Fatalf("agent got %q", got)
	}
}
