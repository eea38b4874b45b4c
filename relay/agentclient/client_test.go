package agentclient_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// hangGuard bounds a test that would otherwise hang; it is not a timing
// assertion.
const hangGuard = 60 * time.Second

func TestPublicMappingServesLocalHTTP(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 10)})
	m := in.AddPublic(t, 4, 60000)

	svc := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go svc.Serve(ln)
	t.Cleanup(func() { svc.Close() })

	cfg, err := agentclient.ParseConfig([]byte(fmt.Sprintf(
		`{"mode":"public","host":"127.0.0.1","port":%d,"passcode":%q,"connectioncount":4,"localhost":"127.0.0.1","localport":%d,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`,
		m.Port1, m.Passcode1, ln.Addr().(*net.TCPAddr).Port)))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := agentclient.New(cfg, agentclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	go cl.Run(ctx)
	if err := cl.WaitAuthorized(ctx, 4); err != nil {
		t.Fatalf("agent connections not authorized: %v (stats %+v)", err, cl.Stats())
	}

	// More requests than pooled connections: each session uses one agent
	// connection, which the client then replaces.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: hangGuard}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/req%d", m.Port2, i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("hello /req%d", i); string(body) != want {
				errs <- fmt.Errorf("request %d got %q, want %q", i, body, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := cl.Stats(); s.Sessions < 20 {
		t.Errorf("client served %d sessions, want at least 20", s.Sessions)
	}
}

func TestPrivateRouteCarriesFramedMessagesBothWays(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 10)})
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()

	side := func(port int, passcode string) *agentclient.Conn {
		c, err := agentclient.Dial(ctx, agentclient.Config{Mode: "private", Host: "127.0.0.1", Port: port,
			Passcode: passcode, ConnectionCount: 1, DevMode: true})
		if err != nil {
			t.Fatalf("dial port %d: %v", port, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := side(m.Port1, m.Passcode1)
	b := side(m.Port2, m.Passcode2)
	// Both sides are registered once the Connector answered AUTHORIZED;
	// send until the first message gets through, then check the rest.
	exchange := func(from, to *agentclient.Conn, msgs []string) {
		t.Helper()
		r := bufio.NewReader(to)
		for _, msg := range msgs {
			if _, err := io.WriteString(from, msg+"TXEND"); err != nil {
				t.Fatal(err)
			}
			got, err := readFrame(r)
			if err != nil {
				t.Fatalf("read frame: %v", err)
			}
			if got != msg {
				t.Fatalf("got %q, want %q", got, msg)
			}
		}
	}
	var msgs []string
	for i := range 50 {
		msgs = append(msgs, strings.Repeat(strconv.Itoa(i), 1+i*100))
	}
	exchange(a, b, msgs)
	exchange(b, a, msgs)
}

func readFrame(r *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		b, err := r.ReadByte()
		if err != nil {
			return sb.String(), err
		}
		sb.WriteByte(b)
		if s := sb.String(); strings.HasSuffix(s, "TXEND") {
			return strings.TrimSuffix(s, "TXEND"), nil
		}
	}
}

func TestWrongPasscodeIsRejected(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 10)})
	m := in.AddPublic(t, 4, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, err := agentclient.Dial(ctx, agentclient.Config{Mode: "public", Host: "127.0.0.1", Port: m.Port1,
		Passcode: strings.Repeat("x", 36), DevMode: true})
	if err == nil || !strings.Contains(err.Error(), agentclient.ErrRejected.Error()) {
		t.Fatalf("dial with a wrong passcode: %v, want ErrRejected", err)
	}
}
