package relay_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// pairedSession opens a public session through a raw pooled agent
// connection and returns both ends, with the first bytes already across.
func pairedSession(t *testing.T, m relaytest.Mapping) (pub, agent net.Conn) {
	t.Helper()
	agent = rawAgent(t, m.Port1, m.Passcode1)
	pub = dial(t, m.Port2)
	io.WriteString(pub, "hi")
	if got := readN(t, agent, 2); got != "hi" {
		t.Fatalf("agent got %q", got)
	}
	return pub, agent
}

// A public client that connects and never sends is closed after
// relay.public_wait, even while an agent connection is free.
func TestSilentPublicClientIsClosedAfterThePublicWait(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.PublicWait = schema.Duration{Duration: 300 * time.Millisecond}
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 1, 200000)
	rawAgent(t, m.Port1, m.Passcode1)
	expectClosed(t, dial(t, m.Port2), "silent public client")
	if got := metric(t, in, "iofog_connector_public_silent_timeouts_total"); got != 1 {
		t.Errorf("public_silent_timeouts_total = %v, want 1", got)
	}
}

// A public client over TLS that finishes its handshake and then says
// nothing must not take the only agent connection from one that speaks.
func TestIdleTLSClientHoldsNoAgent(t *testing.T) {
	certFile, keyFile, certPEM := selfSigned(t, "PKCS#8")
	cfg := relaytest.Config(t, 4)
	cfg.Dev = false
	in := relaytest.Start(t, relay.Options{Config: cfg, CertFile: certFile, KeyFile: keyFile})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	in.Client.Transport = &http.Transport{TLSClientConfig: tc}
	m := in.AddPublic(t, 1, 200000)

	agent := tls.Client(dial(t, m.Port1), tc)
	io.WriteString(agent, m.Passcode1)
	if got := readN(t, agent, 10); got != "AUTHORIZED" {
		t.Fatalf("agent got %q", got)
	}
	for range 2 {
		idle, err := tls.Dial("tcp", addr(m.Port2), tc)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
	}
	pub, err := tls.Dial("tcp", addr(m.Port2), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SetDeadline(time.Now().Add(hangGuard))
	io.WriteString(pub, "hello")
	agent.SetDeadline(time.Now().Add(hangGuard))
	if got := readN(t, agent, 5); got != "hello" {
		t.Fatalf("agent got %q; want the speaking client's bytes", got)
	}
}

// A peer that stops reading is cut after relay.write_timeout, in both
// directions, and the session's other side is closed with it.
func TestPeerThatStopsReadingIsClosedAfterTheWriteTimeout(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.WriteTimeout = schema.Duration{Duration: 300 * time.Millisecond}
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 2, 200000)
	// writeUntilError writes until the Connector gives up on the session;
	// the hang guard's deadline fails the test if it never does.
	writeUntilError := func(t *testing.T, c net.Conn, who string) {
		t.Helper()
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("%s: the session is still open after %s of writing into a reader that stopped", who, hangGuard)
				}
				return
			}
		}
	}
	t.Run("public client stops reading", func(t *testing.T) {
		_, agent := pairedSession(t, m)
		writeUntilError(t, agent, "agent")
	})
	t.Run("agent stops reading", func(t *testing.T) {
		pub, _ := pairedSession(t, m)
		writeUntilError(t, pub, "public client")
	})
	if got := metric(t, in, "iofog_connector_write_timeouts_total"); got != 2 {
		t.Errorf("write_timeouts_total = %v, want 2", got)
	}
}

// A client that sends its request and shuts down its write side gets the
// whole reply; an agent that does the same still gets the client's bytes.
func TestHalfCloseIsPassedOn(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 2, 200000)
	t.Run("public client", func(t *testing.T) {
		agent := rawAgent(t, m.Port1, m.Passcode1)
		pub := dial(t, m.Port2)
		io.WriteString(pub, "request")
		pub.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(agent)
		if err != nil || string(got) != "request" {
			t.Fatalf("agent read %q, %v; want the request and then end of stream", got, err)
		}
		io.WriteString(agent, "reply")
		agent.Close()
		if got, err := io.ReadAll(pub); err != nil || string(got) != "reply" {
			t.Fatalf("public client read %q, %v; want the reply", got, err)
		}
	})
	t.Run("agent", func(t *testing.T) {
		pub, agent := pairedSession(t, m)
		io.WriteString(agent, "reply")
		agent.(*net.TCPConn).CloseWrite()
		if got, err := io.ReadAll(pub); err != nil || string(got) != "reply" {
			t.Fatalf("public client read %q, %v; want the reply and then end of stream", got, err)
		}
		io.WriteString(pub, "more")
		pub.(*net.TCPConn).CloseWrite()
		if got, err := io.ReadAll(agent); err != nil || string(got) != "more" {
			t.Fatalf("agent read %q, %v; want the client's bytes after its own half-close", got, err)
		}
	})
}

// While paired, bytes from the public client keep the agent connection
// alive: an upload the agent only reads outlives its heartbeat threshold.
func TestUploadOnlySessionOutlivesTheHeartbeatThreshold(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	const threshold = 1000 // ms
	m := in.AddPublic(t, 1, threshold)
	pub, agent := pairedSession(t, m)
	// Three thresholds of upload, a write every tenth of one.
	for i := range 30 {
		if _, err := io.WriteString(pub, "u"); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if got := readN(t, agent, 1); got != "u" {
			t.Fatalf("agent got %q", got)
		}
		time.Sleep(threshold / 10 * time.Millisecond)
	}
	io.WriteString(agent, "done")
	if got := readN(t, pub, 4); got != "done" {
		t.Fatalf("public client got %q", got)
	}
}

// The agent client's BEAT can arrive merged with the reply behind it: the
// heartbeats are stripped, the reply arrives intact.
func TestLeadingBeatsAreStrippedFromAgentPayload(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 1, 200000)
	pub, agent := pairedSession(t, m)
	const reply = "HTTP/1.0 200 OK\r\n\r\n"
	io.WriteString(agent, "BEAT"+reply)
	if got := readN(t, pub, len(reply)); got != reply {
		t.Fatalf("public client got %q, want %q", got, reply)
	}
	io.WriteString(agent, "BEATBEAT"+reply)
	if got := readN(t, pub, len(reply)); got != reply {
		t.Fatalf("public client got %q, want %q", got, reply)
	}
	// A bulk reply (spliced) with a heartbeat in front of it.
	big := bytes.Repeat([]byte("x"), 64<<10)
	agent.Write(append([]byte("BEAT"), big...))
	if got := readN(t, pub, len(big)); got != string(big) {
		t.Fatalf("public client got %d bytes starting %q", len(got), got[:8])
	}
}

// An agent connection that dies (reset) after it was handed a client's
// first bytes and before answering: the client and its bytes go to the next
// idle agent connection.
func TestClientMovesToAnotherAgentWhenItsAgentDies(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 2, 200000)
	var first atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		agent := rawAgent(t, m.Port1, m.Passcode1)
		wg.Go(func() {
			buf := make([]byte, 16)
			n, err := agent.Read(buf)
			if err != nil {
				return
			}
			if first.CompareAndSwap(false, true) {
				agent.(*net.TCPConn).SetLinger(0) // dies: a reset, as a crashed agent's kernel sends
				agent.Close()
				return
			}
			io.WriteString(agent, "re:"+string(buf[:n]))
		})
	}
	pub := dial(t, m.Port2)
	io.WriteString(pub, "req")
	if got := readN(t, pub, 6); got != "re:req" {
		t.Fatalf("public client got %q", got)
	}
	pub.Close()
	wg.Wait()
	if got := metric(t, in, "iofog_connector_public_session_moves_total"); got != 1 {
		t.Errorf("public_session_moves_total = %v, want 1", got)
	}
}

// When a session ends the agent's slot is free before the agent can see
// the end, so an agent at maxconnections that redials at once is admitted.
func TestAgentRedialingAfterASessionIsNeverRefusedAsFull(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	m := in.AddPublic(t, 1, 200000)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	for i := range 100 {
		pub := dial(t, m.Port2)
		io.WriteString(pub, "x")
		if got := readN(t, agent, 1); got != "x" {
			t.Fatalf("session %d: agent got %q", i, got)
		}
		io.WriteString(agent, "y")
		readN(t, pub, 1)
		pub.Close()
		if _, err := io.ReadAll(agent); err != nil {
			t.Fatalf("session %d: agent: %v", i, err)
		}
		next := dial(t, m.Port1)
		io.WriteString(next, m.Passcode1)
		got := make([]byte, 10)
		if _, err := io.ReadFull(next, got); err != nil {
			t.Fatalf("session %d: agent redialing at once was refused (%v); agent_rejected_full_total %v",
				i, err, metric(t, in, "iofog_connector_agent_rejected_full_total"))
		}
		agent.Close()
		agent = next
	}
}

// lineLog collects log lines for tests that count them.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			out = append(out, line)
		}
	}
	return out
}

var repeatedRE = regexp.MustCompile(`repeated=(\d+)`)

// A flood of failed authentications costs a few log lines whose counts add
// up exactly; the metric counts every one.
func TestAuthFailureFloodIsSummarisedInTheLog(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.LogInterval = schema.Duration{Duration: 300 * time.Millisecond}
	logs := &lineLog{}
	in := relaytest.Start(t, relay.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	m := in.AddPublic(t, 1, 200000)
	const flood = 200
	start := time.Now()
	for range flood {
		c := dial(t, m.Port1)
		io.WriteString(c, strings.Repeat("0", 36))
		io.ReadAll(c)
		c.Close()
	}
	took := time.Since(start)
	const msg = "agent authentication failed"
	// Wait for the last summary: the counts in the lines add up to the
	// flood.
	deadline := time.Now().Add(hangGuard)
	var lines []string
	for {
		lines = logs.lines(msg)
		total := 0
		for _, l := range lines {
			total++
			if mm := repeatedRE.FindStringSubmatch(l); mm != nil {
				n, _ := strconv.Atoi(mm[1])
				total += n - 1
			}
		}
		if total == flood {
			break
		}
		if total > flood || time.Now().After(deadline) {
			t.Fatalf("log lines account for %d failures, want %d:\n%s", total, flood, strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One line when it starts, then one summary per interval, plus the
	// interval the flood ended in.
	if max := 2 + int(took/(300*time.Millisecond)) + 1; len(lines) > max {
		t.Errorf("%d log lines for %d failures in %v, want at most %d", len(lines), flood, took, max)
	}
	if got := metric(t, in, "iofog_connector_auth_failures_total"); got != flood {
		t.Errorf("auth_failures_total = %v, want %d", got, flood)
	}
}

// Past relay.max_unauthenticated the oldest silent connection is closed to
// make room; past relay.max_waiting with every waiting client having sent
// bytes, the newcomer is refused. Both are counted.
func TestPendingLimitsEvictTheOldestAndRefuseWhenAllWait(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.MaxUnauthenticated = 4
	cfg.Relay.MaxWaiting = 2
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 1, 200000)
	var silent []net.Conn
	for range 4 {
		silent = append(silent, dial(t, m.Port1))
	}
	// Let the Connector take up all four first, so their order is known;
	// the outcome is checked below, not the time.
	time.Sleep(200 * time.Millisecond)
	rawAgent(t, m.Port1, m.Passcode1) // the fifth: the oldest silent one makes room
	expectClosed(t, silent[0], "oldest unauthenticated connection")
	if got := metric(t, in, `iofog_connector_connections_evicted_total{limit="unauthenticated"}`); got != 1 {
		t.Errorf("evicted{unauthenticated} = %v, want 1", got)
	}

	// The agent is busy; two clients wait for it with their bytes sent.
	pairedPub := dial(t, m.Port2)
	io.WriteString(pairedPub, "a")
	for range 2 {
		w := dial(t, m.Port2)
		io.WriteString(w, "b")
	}
	time.Sleep(200 * time.Millisecond)
	expectClosed(t, dial(t, m.Port2), "public client past max_waiting")
	if got := metric(t, in, `iofog_connector_connections_refused_total{limit="waiting"}`); got != 1 {
		t.Errorf("refused{waiting} = %v, want 1", got)
	}
}

// With the agent client's real write pattern (a BEAT write on its timer,
// payload writes as its service answers, in the middle of sessions too)
// nothing but whole BEATs ever reaches a public client: no byte is lost or
// reordered. A BEAT that the Connector reads glued to the start or end of a
// reply is stripped; one that lands between two writes of a reply, inside
// one read, cannot be told from payload in the 1.x protocol and stays. The
// test logs how often each happens, the figures the README quotes.
func TestAgentClientHeartbeatsInsideSessions(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	m := in.AddPublic(t, 4, 200000)
	const freqMS = 2 // the Controller's 20 s, 10,000 times as often, to meet many replies
	runAgents(t, m, 4, startHTTPService(t), func(c *agentclient.Config) { c.HeartbeatFrequency = freqMS })
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: hangGuard}
	const sessions = 2000
	inside := 0
	start := time.Now()
	for i := range sessions {
		resp, err := hc.Get(fmt.Sprintf("http://%s/s%d", addr(m.Port2), i))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("GET /s%d ", i)
		if string(body) != want {
			if strings.ReplaceAll(string(body), "BEAT", "") != want {
				t.Fatalf("session %d: got %q, want %q: bytes lost or changed, not only a heartbeat added", i, body, want)
			}
			inside++
		}
	}
	took := time.Since(start)
	stripped := metric(t, in, "iofog_connector_heartbeats_in_payload_total")
	beats := 4 * float64(took/time.Millisecond) / freqMS
	t.Logf("%d HTTP sessions in %v, 4 agent connections sending BEAT every %d ms (about %.0f BEATs): %v glued to a reply and stripped, %d inside a reply (%.2f%% of sessions, %.3f%% of BEATs)",
		sessions, took.Round(time.Millisecond), freqMS, beats, stripped, inside, 100*float64(inside)/sessions, 100*float64(inside)/beats)
}

// Past relay.max_connections a new connection is closed at once and
// counted; the API still answers.
func TestMaxConnectionsRefusesNewcomers(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.MaxConnections = 3
	in := relaytest.Start(t, relay.Options{Config: cfg})
	m := in.AddPublic(t, 1, 200000)
	for range 3 {
		dial(t, m.Port1)
	}
	// Let the Connector take up the first three; the outcome is checked
	// below, not the time.
	time.Sleep(200 * time.Millisecond)
	expectClosed(t, dial(t, m.Port2), "connection past max_connections")
	if got := metric(t, in, `iofog_connector_connections_refused_total{limit="connections"}`); got != 1 {
		t.Errorf("refused{connections} = %v, want 1", got)
	}
}

// The newest idle agent connection may have been closed by its agent a
// moment before a client arrives: the client's bytes go to the next one.
func TestClientOfAnAgentConnectionThatHadClosedGoesToTheNext(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	m := in.AddPublic(t, 8, 200000)
	for i := range 200 {
		next := rawAgent(t, m.Port1, m.Passcode1)
		closing := rawAgent(t, m.Port1, m.Passcode1) // newest: taken first
		closing.Close()
		pub := dial(t, m.Port2)
		msg := fmt.Sprintf("req-%03d", i)
		io.WriteString(pub, msg)
		if got := readN(t, next, len(msg)); got != msg {
			t.Fatalf("round %d: the next agent connection got %q, want %q", i, got, msg)
		}
		io.WriteString(next, "ok")
		if got := readN(t, pub, 2); got != "ok" {
			t.Fatalf("round %d: client got %q", i, got)
		}
		pub.Close()
		next.Close()
	}
}
