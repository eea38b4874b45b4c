package tunnel_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// fakeAgent plays the ioFog agent's side of the container API: the config
// endpoint, the control websocket and the message websocket.
type fakeAgent struct {
	t   *testing.T
	id  string
	srv *httptest.Server

	mu      sync.Mutex
	config  string
	control *websocket.Conn
	message *websocket.Conn

	received    chan []byte   // IoMessages the tunnel posted
	controlAcks chan struct{} // 0xB answers to control signals
	msgAcks     atomic.Int64  // 0xB frames on the message socket
	msgConns    atomic.Int64  // message websockets opened by the tunnel
	configGets  atomic.Int64
}

func newFakeAgent(t *testing.T, id string, cfg tunnel.Config) *fakeAgent {
	a := &fakeAgent{t: t, id: id, received: make(chan []byte, 1000), controlAcks: make(chan struct{}, 10)}
	a.setConfig(cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/config/get", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ID string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ID != id {
			http.Error(w, `{"error":"unknown id"}`, http.StatusBadRequest)
			return
		}
		a.configGets.Add(1)
		a.mu.Lock()
		defer a.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"config": a.config})
	})
	mux.HandleFunc("/v2/control/socket/id/"+id, func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		a.mu.Lock()
		a.control = ws
		a.mu.Unlock()
		for {
			_, p, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			if len(p) == 1 && p[0] == 0xB {
				a.controlAcks <- struct{}{}
			}
		}
	})
	mux.HandleFunc("/v2/message/socket/id/"+id, func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(64 << 20)
		a.mu.Lock()
		a.message = ws
		a.mu.Unlock()
		a.msgConns.Add(1)
		n := 0
		for {
			_, p, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			switch {
			case len(p) == 1 && p[0] == 0xB:
				a.msgAcks.Add(1)
			case len(p) >= 5 && p[0] == 0xD:
				if int(binary.BigEndian.Uint32(p[1:5])) != len(p)-5 {
					t.Errorf("agent %s: message frame length %d, carries %d", id, binary.BigEndian.Uint32(p[1:5]), len(p)-5)
				}
				a.received <- bytes.Clone(p[5:])
				n++
				// As the agent does: a receipt with the id and time it gave the message.
				ws.Write(context.Background(), websocket.MessageBinary,
					tunnel.ReceiptFrame(tunnel.Receipt{ID: fmt.Sprintf("%s-%d", id, n), Timestamp: time.Now().UnixMilli()}))
			}
		}
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) setConfig(cfg tunnel.Config) {
	b, _ := json.Marshal(cfg)
	a.mu.Lock()
	a.config = string(b)
	a.mu.Unlock()
}

func (a *fakeAgent) ws(control bool) *websocket.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	if control {
		return a.control
	}
	return a.message
}

// send posts a message to the tunnel as the agent does, and waits until the
// websocket is up.
func (a *fakeAgent) send(ctx context.Context, msg []byte) error {
	for a.ws(false) == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	f := append([]byte{0xD, 0, 0, 0, 0}, msg...)
	binary.BigEndian.PutUint32(f[1:5], uint32(len(msg)))
	return a.ws(false).Write(ctx, websocket.MessageBinary, f)
}

func runFromAgent(t *testing.T, ctx context.Context, a *fakeAgent) *tunnel.Tunnel {
	tn := tunnel.New(tunnel.Options{Logger: relaytest.Logger(t), BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- tn.RunFromAgent(ctx, tunnel.Agent{URL: a.srv.URL, ID: a.id}) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunFromAgent: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("tunnel did not stop")
		}
	})
	return tn
}

func testMessage(t *testing.T, i int) []byte {
	m := tunnel.IoMessage{ID: fmt.Sprintf("msg-%d", i), Tag: "t", GroupID: "g", SequenceNumber: int64(i), SequenceTotal: 1000,
		Priority: 1, Timestamp: time.Now().UnixMilli(), Publisher: "publisher-uuid", InfoType: "text", InfoFormat: "utf-8",
		ContextData: []byte("ctx"), ContentData: random(t, (i*7919)%(256<<10))}
	if i%5 == 0 {
		m.ContentData = append(m.ContentData, "TXEND in the middle TXEND"...) // the framing must not be fooled
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFromAgentCarriesIoMessagesDev(t *testing.T) { testFromAgentCarriesIoMessages(t, true) }
func TestFromAgentCarriesIoMessagesTLS(t *testing.T) { testFromAgentCarriesIoMessages(t, false) }

func testFromAgentCarriesIoMessages(t *testing.T, dev bool) {
	in, cert := connector(t, dev, 2)
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	// The Controller's private configs: localhost iofog, localport 0.
	cfgA := agentConfig("private", m.Port1, m.Passcode1, 1, 0, dev, cert)
	cfgB := agentConfig("private", m.Port2, m.Passcode2, 1, 0, dev, cert)
	cfgA.LocalHost, cfgB.LocalHost = "iofog", "iofog"
	agA, agB := newFakeAgent(t, "container-a", cfgA), newFakeAgent(t, "container-b", cfgB)
	ta, tb := runFromAgent(t, ctx, agA), runFromAgent(t, ctx, agB)
	for _, tn := range []*tunnel.Tunnel{ta, tb} {
		if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Authorized == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40
	var sent [][]byte
	for i := range n {
		msg := testMessage(t, i)
		sent = append(sent, msg)
		if err := agA.send(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case got := <-agB.received:
			if !bytes.Equal(got, sent[i]) {
				t.Fatalf("message %d arrived changed or out of order (%d bytes, sent %d)", i, len(got), len(sent[i]))
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d messages arrived", i, n)
		}
	}
	// The other way too.
	back := testMessage(t, 1001)
	if err := agB.send(ctx, back); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-agA.received:
		if !bytes.Equal(got, back) {
			t.Fatal("reply message changed")
		}
	case <-ctx.Done():
		t.Fatal("reply message did not arrive")
	}
	// Every message the agent posted was acknowledged, and so was every
	// receipt the receiving agent sent.
	if err := ta.Wait(ctx, func(s tunnel.Stats) bool { return agA.msgAcks.Load() == n+1 && agB.msgAcks.Load() == n+1 }); err != nil {
		t.Fatalf("acks: agent A got %d, agent B got %d, want %d each: %v", agA.msgAcks.Load(), agB.msgAcks.Load(), n+1, err)
	}
	if s := tb.Stats(); s.MessagesIn != n || s.ReceiptsAcked != n || s.MessagesOut != 1 {
		t.Errorf("receiving tunnel stats %+v, want %d in, %d receipts, 1 out", s, n, n)
	}
	if extra := len(agB.received); extra != 0 {
		t.Errorf("%d messages arrived twice", extra)
	}
}

func TestFromAgentFollowsNewConfig(t *testing.T) {
	in, _ := connector(t, true, 4)
	m1, m2 := in.AddPublic(t, 2, 60000), in.AddPublic(t, 2, 60000)
	svc := closingService(t, func(req []byte) []byte { return append([]byte("echo "), req...) })
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	ag := newFakeAgent(t, "net", agentConfig("public", m1.Port1, m1.Passcode1, 2, svc, true, ""))
	tn := runFromAgent(t, ctx, ag)
	if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Idle == 2 }); err != nil {
		t.Fatal(err)
	}
	if got, err := publicRequest(m1.Port2, true, []byte("first mapping...")); err != nil || string(got) != "echo first mapping..." {
		t.Fatalf("through the first mapping: %q, %v", got, err)
	}
	// The Controller moves the container to another mapping; the agent
	// signals it on the control websocket.
	ag.setConfig(agentConfig("public", m2.Port1, m2.Passcode1, 2, svc, true, ""))
	for ag.ws(true) == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := ag.ws(true).Write(ctx, websocket.MessageBinary, []byte{0xC}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ag.controlAcks:
	case <-ctx.Done():
		t.Fatal("control signal not acknowledged")
	}
	if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Generation == 2 && s.Idle == 2 }); err != nil {
		t.Fatal(err)
	}
	if got, err := publicRequest(m2.Port2, true, []byte("second mapping..")); err != nil || string(got) != "echo second mapping.." {
		t.Fatalf("through the second mapping: %q, %v", got, err)
	}
}

// A message bigger than the tunnel accepts from its agent is refused (the
// websocket is dropped and reopened), and the messages after it still go
// through.
func TestAgentMessageOverTheLimitIsRefused(t *testing.T) {
	in, _ := connector(t, true, 2)
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	agA := newFakeAgent(t, "a", agentConfig("private", m.Port1, m.Passcode1, 1, 0, true, ""))
	agB := newFakeAgent(t, "b", agentConfig("private", m.Port2, m.Passcode2, 1, 0, true, ""))
	opts := tunnel.Options{Logger: relaytest.Logger(t), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaxMessage: 4096}
	for _, ag := range []*fakeAgent{agA, agB} {
		tn := tunnel.New(opts)
		done := make(chan error, 1)
		go func() { done <- tn.RunFromAgent(ctx, tunnel.Agent{URL: ag.srv.URL, ID: ag.id}) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	big := (&tunnel.IoMessage{ID: "big", ContentData: make([]byte, 8192)})
	bigB, _ := big.Encode()
	if err := agA.send(ctx, bigB); err != nil {
		t.Fatal(err)
	}
	// The tunnel drops the socket on the big frame and opens a new one.
	for agA.msgConns.Load() < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the tunnel kept the socket that sent an oversize message")
		case <-time.After(10 * time.Millisecond):
		}
	}
	small, _ := (&tunnel.IoMessage{ID: "small", ContentData: []byte("after the big one")}).Encode()
	if err := agA.send(ctx, small); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-agB.received:
		if !bytes.Equal(got, small) {
			t.Fatalf("got %d bytes, want the small message (the big one must not arrive)", len(got))
		}
	case <-ctx.Done():
		t.Fatal("nothing arrived after the oversize message")
	}
}

// The other end of a private route may be another agent's older network
// container. One kind sends bare IoMessages, each followed by TXEND in a
// write of its own, and waits for ACK; another wraps each message as on
// the websocket (0xD, length) and expects no ACK. The tunnel takes both,
// acknowledges only the first kind, and sends bare messages and TXEND.
func TestFromAgentSpeaksToOlderContainers(t *testing.T) {
	in, _ := connector(t, true, 2)
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	ag := newFakeAgent(t, "new", agentConfig("private", m.Port2, m.Passcode2, 1, 0, true, ""))
	tn := runFromAgent(t, ctx, ag)
	if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Authorized == 1 }); err != nil {
		t.Fatal(err)
	}
	old, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port1))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(hangGuard))
	io.WriteString(old, m.Passcode1)
	auth := make([]byte, 10)
	if _, err := io.ReadFull(old, auth); err != nil || string(auth) != "AUTHORIZED" {
		t.Fatalf("old container not authorized: %q %v", auth, err)
	}
	wrapped, bare := testMessage(t, 7), testMessage(t, 8)
	frame := append([]byte{0xD, 0, 0, 0, 0}, wrapped...)
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(wrapped)))
	old.Write(append(frame, "TXEND"...))
	old.Write(bare)
	old.Write([]byte("TXEND"))
	for i, want := range [][]byte{wrapped, bare} {
		select {
		case got := <-ag.received:
			if !bytes.Equal(got, want) {
				t.Fatalf("message %d from the old container arrived changed", i)
			}
		case <-ctx.Done():
			t.Fatalf("message %d from the old container did not arrive", i)
		}
	}
	back := testMessage(t, 9)
	if err := ag.send(ctx, back); err != nil {
		t.Fatal(err)
	}
	// One ACK (for the bare message only), then the message and TXEND.
	want := append(append([]byte("ACK"), back...), "TXEND"...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(old, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		n := min(len(got), 16)
		t.Fatalf("old container read %q..., want ACK, the message, TXEND", got[:n])
	}
}
