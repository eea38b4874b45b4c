package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// The CLI streams a bundle through the Connector's API to the init's
// update socket and shows the progress both ways; the exit code says
// whether the update was applied.
func TestUpdateThroughAPI(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "update.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var force string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /update", func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		force = r.URL.Query().Get("force")
		if bytes.HasPrefix(got, []byte("bad")) {
			fmt.Fprintln(w, "error: update bundle refused: signature does not match")
			return
		}
		fmt.Fprintf(w, "received %d bytes\nwrite 100%%\nok: v2 written to slot B and verified\n", len(got))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"lines":["slot A: v1 (running, committed)","slot B: (empty)"]}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Update: updateProxy(sock)})
	bundle := filepath.Join(t.TempDir(), "x.update.tar")
	data := bytes.Repeat([]byte("bundle"), 100000)
	os.WriteFile(bundle, data, 0o644)

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cmdUpdate(context.Background(), &cliEnv{stdout: &out, stderr: &errb}, args)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("--to", in.Base, bundle, "--force")
	if code != 0 || !strings.Contains(out, "ok: v2 written to slot B") || !strings.Contains(errs, "upload 100%") {
		t.Fatalf("update: exit %d\n%s\n%s", code, out, errs)
	}
	if !bytes.Equal(got, data) || force != "1" {
		t.Fatalf("the init got %d bytes (want %d), force %q", len(got), len(data), force)
	}
	os.WriteFile(bundle, []byte("bad bundle"), 0o644)
	if code, out, _ := run("--to", in.Base, bundle); code != 1 || !strings.Contains(out, "refused") {
		t.Fatalf("refused bundle: exit %d: %s", code, out)
	}
	if code, out, _ := run("--to", in.Base, "status"); code != 0 || !strings.Contains(out, "slot A: v1 (running, committed)\nslot B: (empty)\n") {
		t.Fatalf("status: exit %d: %s", code, out)
	}

	// A Connector on a plain host has no update endpoint, and says so.
	plain := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	if code, _, errs := run("--to", plain.Base, "status"); code != 1 || !strings.Contains(errs, "appliance feature") {
		t.Fatalf("plain host: exit %d: %s", code, errs)
	}
}
