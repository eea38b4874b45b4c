package appliance

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/update"
)

// An upload to the update endpoint on a Pi's boot partition (a directory
// here): progress lines, the slot written, the trial armed, the reboot
// asked for with the tryboot argument; a bundle signed by another key is
// refused with nothing written.
func TestUpdateEndpoint(t *testing.T) {
	boot, data := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(boot, update.RaspiConfig), update.RaspiConfigTxt(update.SlotA), 0o644)
	os.WriteFile(filepath.Join(boot, update.RaspiTryboot), update.RaspiConfigTxt(update.SlotA), 0o644)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s := &system{log: slog.New(slog.DiscardHandler), dataDir: data, stateDir: data, opts: Options{Version: "v1"}}
	fw := &update.Raspi{Boot: boot, DeviceTree: t.TempDir()}
	up := &updates{s: s, fw: fw, board: "rpi", reboot: make(chan string, 1),
		u: &update.Updater{FW: fw, Record: filepath.Join(data, update.RecordFile), Keys: []update.PublicKey{update.Public(key)}, Board: "rpi", Version: "v1"}}
	if _, _, err := up.u.Boot(time.Now()); err != nil {
		t.Fatal(err)
	}
	bundle := func(k ed25519.PrivateKey) []byte {
		var b bytes.Buffer
		if _, err := update.Write(&b, k, "v2", "rpi", time.Unix(0, 0), []update.SourceFile{{Path: update.RaspiKernel, Data: bytes.Repeat([]byte("k"), 100000)}, {Path: update.RaspiInitrd, Data: []byte("initrd")}}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}

	w := httptest.NewRecorder()
	up.handleApply(w, httptest.NewRequest(http.MethodPost, "/update", bytes.NewReader(bundle(other))))
	if !strings.Contains(w.Body.String(), "error: update bundle refused: signature does not match") {
		t.Fatalf("wrong key: %s", w.Body)
	}
	if _, err := os.Stat(filepath.Join(boot, "B")); !os.IsNotExist(err) || len(up.reboot) != 0 {
		t.Fatal("a refused bundle wrote the slot or asked for a reboot")
	}

	w = httptest.NewRecorder()
	up.handleApply(w, httptest.NewRequest(http.MethodPost, "/update", bytes.NewReader(bundle(key))))
	out := w.Body.String()
	for _, want := range []string{"verify 100%", "write 100%", "check 100%", "ok: v2 written to slot B"} {
		if !strings.Contains(out, want) {
			t.Errorf("reply lacks %q:\n%s", want, out)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(boot, "B", update.RaspiInitrd)); string(got) != "initrd" {
		t.Errorf("slot B initrd %q", got)
	}
	if arg := <-up.reboot; arg != "0 tryboot" {
		t.Errorf("reboot argument %q", arg)
	}
	if _, err := os.Stat(filepath.Join(data, updateSubdir)); !os.IsNotExist(err) {
		t.Error("the upload was left on the data partition")
	}
	rec, _ := up.u.Load()
	lines := strings.Join(describe(rec, update.SlotA, "v1"), "\n")
	if !strings.Contains(lines, "slot A: v1 (running, committed)") || !strings.Contains(lines, "slot B: v2 (trial pending)") {
		t.Errorf("status lines:\n%s", lines)
	}
}
