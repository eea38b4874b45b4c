package relay_test

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// A stranger hammering a mapping port with wrong passcodes must neither
// grow the event history nor push the adds and removes out of it.
func TestRefusalFloodIsCoalescedInTheEventHistory(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Logger: relaytest.Quiet()})
	m := in.AddPublic(t, 2, 200000)
	const n = 150
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port1))
	for i := range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "%036d", i)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, conn) // the Connector closes it
		conn.Close()
	}
	evs := in.Events()
	var refused, added int
	for _, e := range evs {
		switch e.Kind {
		case "refused":
			refused += e.Count
			if e.Mapping != m.ID || e.Remote == "" {
				t.Errorf("refusal event without mapping or remote: %+v", e)
			}
		case "added":
			added++
		}
	}
	if refused != n || added != 1 {
		t.Errorf("events count %d refusals and %d adds, want %d and 1: %+v", refused, added, n, evs)
	}
	if len(evs) > 3 {
		t.Errorf("%d refusals took %d event slots; want them coalesced: %+v", n, len(evs), evs)
	}
	for _, e := range evs {
		if e.Text == "" || e.Time.IsZero() {
			t.Errorf("event without text or time: %+v", e)
		}
	}
}

func TestMappingViewsCarryNoPasscodeAndMatchTheAPI(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 6), Logger: relaytest.Quiet()})
	pub := in.AddPublic(t, 3, 200000)
	priv := in.AddPrivate(t, 200000)
	a, err := relaytest.Agent(net.JoinHostPort("127.0.0.1", strconv.Itoa(priv.Port1)), priv.Passcode1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	vs := in.Mappings()
	if len(vs) != 2 || vs[0].ID != pub.ID || vs[1].ID != priv.ID {
		t.Fatalf("Mappings() = %+v, want the public then the private mapping", vs)
	}
	if vs[0].Type != "public" || vs[0].Port1 != uint16(pub.Port1) || vs[0].Max1 != 3 || !vs[0].Listening1 || !vs[0].Listening2 {
		t.Errorf("public view %+v", vs[0])
	}
	p := vs[1]
	if !p.Sides[0].Connected || p.Sides[0].Remote != a.LocalAddr().String() || p.Sides[1].Connected || p.AgentsIdle != 1 {
		t.Errorf("private view %+v: want side 1 held by %s, side 2 empty, one idle agent", p, a.LocalAddr())
	}
	if p.LastAgentSeen.IsZero() {
		t.Errorf("private view: last agent seen not set after an agent authenticated")
	}
	s := fmt.Sprintf("%+v", vs)
	for _, secret := range []string{pub.Passcode1, priv.Passcode1, priv.Passcode2} {
		if strings.Contains(s, secret) {
			t.Errorf("a mapping view carries a passcode: %s", s)
		}
	}
}
