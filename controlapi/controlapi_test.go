package controlapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

func TestEveryEndpointAgainstARealConnector(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 6)})
	ctx := context.Background()
	api := in.API

	st, err := api.Status(ctx)
	if err != nil || st.ID != "all" || st.Status != "running" || st.Mappings != 0 || st.AvailablePorts != 6 || st.Version != "test" {
		t.Fatalf("status: %+v, %v; want running, 0 mappings, 6 free ports, version test", st, err)
	}
	pub, err := api.Add(ctx, controlapi.Public(60, 200000))
	if err != nil || pub.Status != "ok" || pub.ID == "" || pub.Port1 == 0 || pub.Port2 == 0 || len(pub.Passcode1) != 36 || pub.Passcode2 != "" {
		t.Fatalf("add public: %+v, %v", pub, err)
	}
	priv, err := api.Add(ctx, controlapi.Private(1, 200000))
	if err != nil || len(priv.Passcode1) != 36 || len(priv.Passcode2) != 36 || priv.Passcode1 == priv.Passcode2 {
		t.Fatalf("add private: %+v, %v", priv, err)
	}
	ps, err := api.MappingStatus(ctx, pub.ID)
	if err != nil || ps.ID != pub.ID || ps.Public != "Active" || ps.Private != "Active" || ps.Private1 != "" {
		t.Errorf("status of the public mapping: %+v, %v", ps, err)
	}
	ps, err = api.MappingStatus(ctx, priv.ID)
	if err != nil || ps.Private1 != "Active" || ps.Private2 != "Active" || ps.Public != "" {
		t.Errorf("status of the private mapping: %+v, %v", ps, err)
	}
	l, err := api.List(ctx)
	if err != nil || len(l.Mappings) != 2 {
		t.Fatalf("list: %+v, %v; want 2 mappings", l, err)
	}
	types := map[string]string{}
	for _, m := range l.Mappings {
		types[m.ID] = m.Type
		if m.ID == pub.ID && (m.Port1 != pub.Port1 || m.Port2 != pub.Port2 || m.Max1 != 60 || m.Thresh1 != 200000 || !m.Active1 || !m.Active2) {
			t.Errorf("list entry of the public mapping: %+v", m)
		}
	}
	if types[pub.ID] != "public" || types[priv.ID] != "private" {
		t.Errorf("list types: %v", types)
	}
	if resp, err := api.Command(ctx, "status"); err != nil || resp != "Connector is up and running." {
		t.Errorf("commandline status: %q, %v", resp, err)
	}
	if resp, err := api.Command(ctx, "version"); err != nil || !strings.Contains(resp, "test") {
		t.Errorf("commandline version: %q, %v", resp, err)
	}
	rm, err := api.Remove(ctx, pub.ID)
	if err != nil || rm.Status != "ok" || rm.ID != pub.ID {
		t.Errorf("remove: %+v, %v", rm, err)
	}
	if st, err := api.Status(ctx); err != nil || st.Mappings != 1 || st.AvailablePorts != 4 {
		t.Errorf("status after remove: %+v, %v; want 1 mapping and 4 free ports", st, err)
	}
}

// Refusals come back as *Error with the Connector's message and status, as
// the CLI prints them.
func TestRefusalsAreErrors(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 2)})
	ctx := context.Background()
	check := func(what string, err error, status int) {
		t.Helper()
		var e *controlapi.Error
		if !errors.As(err, &e) || e.HTTPStatus != status || e.Message == "" {
			t.Errorf("%s: %v; want a refusal with HTTP %d and a message", what, err, status)
			return
		}
		if !strings.HasPrefix(err.Error(), "the Connector refused: ") {
			t.Errorf("%s: message %q", what, err)
		}
	}
	_, err := in.API.Remove(ctx, "no-such-mapping")
	check("remove of an unknown id", err, http.StatusNotFound)
	_, err = in.API.MappingStatus(ctx, "no-such-mapping")
	check("status of an unknown id", err, http.StatusNotFound)
	if _, err := in.API.Add(ctx, controlapi.Public(1, 1000)); err != nil {
		t.Fatal(err)
	}
	_, err = in.API.Add(ctx, controlapi.Public(1, 1000))
	check("add with no free ports", err, http.StatusInsufficientStorage)
}

// Something other than a Connector on the API port: an error that says the
// reply was not JSON, not a refusal and not a success.
func TestReplyThatIsNotJSONIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>It works!</html>")
	}))
	defer srv.Close()
	_, err := controlapi.New(srv.URL, srv.Client()).Status(context.Background())
	var e *controlapi.Error
	if err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("got %v; want a not-JSON error", err)
	}
}

// The client's add requests are the bytes Controller v1.3.1 sends
// (docs/protocol.md §3.8), so whatever a Connector accepts from a
// Controller it accepts from us, and the other way round.
func TestAddSendsWhatTheControllerSends(t *testing.T) {
	bodies := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != controlapi.PathAdd ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Errorf("got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		bodies <- string(b)
		io.WriteString(w, `{"status":"ok","id":"x","port1":6000,"port2":6001,"passcode1":"a","passcode2":"","timestamp":1}`)
	}))
	defer srv.Close()
	api := controlapi.New(srv.URL, srv.Client())
	for _, tc := range []struct {
		req  controlapi.AddRequest
		want string
	}{
		{controlapi.Public(60, 200000),
			"mapping=%7B%22type%22%3A%22public%22%2C%22maxconnections%22%3A60%2C%22heartbeatabsencethreshold%22%3A200000%7D"},
		{controlapi.Private(1, 200000),
			"mapping=%7B%22type%22%3A%22private%22%2C%22maxconnectionsport1%22%3A1%2C%20%22maxconnectionsport2%22%3A1%2C%20%22heartbeatabsencethresholdport1%22%3A200000%2C%20%22heartbeatabsencethresholdport2%22%3A200000%7D"},
	} {
		r, err := api.Add(context.Background(), tc.req)
		if err != nil || r.Port1 != 6000 || r.Port2 != 6001 {
			t.Fatalf("add: %+v, %v", r, err)
		}
		if got := <-bodies; got != tc.want {
			t.Errorf("body\n got %s\nwant %s", got, tc.want)
		}
	}
}

// Every reply type holds every field the Connector sends, in its order: a
// reply decoded and encoded again is the Connector's bytes exactly. A field
// added on one side only fails here.
func TestRepliesRoundTripTheConnectorsBytes(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 6)})
	ctx := context.Background()
	pub, err := in.API.Add(ctx, controlapi.Public(60, 200000))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := in.API.Add(ctx, controlapi.Private(1, 200000))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		form url.Values
		into any
	}{
		{controlapi.PathAdd, controlapi.Public(2, 1000).Form(), &controlapi.AddReply{}},
		{controlapi.PathStatus, url.Values{"mappingid": {"all"}}, &controlapi.StatusReply{}},
		{controlapi.PathStatus, url.Values{"mappingid": {pub.ID}}, &controlapi.MappingStatusReply{}},
		{controlapi.PathStatus, url.Values{"mappingid": {priv.ID}}, &controlapi.MappingStatusReply{}},
		{controlapi.PathList, nil, &controlapi.ListReply{}},
		{controlapi.PathCommandline, url.Values{"command": {"help"}}, &controlapi.CommandReply{}},
		{controlapi.PathRemove, url.Values{"mappingid": {pub.ID}}, &controlapi.RemoveReply{}},
	} {
		code, body, err := in.API.Post(ctx, tc.path, tc.form)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s %v: HTTP %d, %v", tc.path, tc.form, code, err)
		}
		if err := json.Unmarshal(body, tc.into); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		again, _ := json.Marshal(tc.into)
		if !bytes.Equal(again, body) {
			t.Errorf("%s %v:\nConnector sent %s\n  typed reply %s", tc.path, tc.form, body, again)
		}
	}
}
