package appliance_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkStatusPage fetches the status page from a booted appliance through
// the forwarded API port and checks that it shows each of wants and none
// of secrets (passcodes).
func checkStatusPage(t *testing.T, api string, secrets []string, wants ...string) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get(api + "/")
	if err != nil {
		t.Fatalf("GET / (the status page): %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / (the status page): HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	page := string(body)
	// Kept for a person to open: the page needs nothing but itself.
	if err := os.MkdirAll(filepath.Join("..", "out"), 0o755); err == nil {
		os.WriteFile(filepath.Join("..", "out", "statuspage-appliance.html"), body, 0o644)
	}
	for _, want := range wants {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(page, s) {
			t.Errorf("status page shows a passcode")
		}
	}
	if t.Failed() {
		t.Logf("status page:\n%s", page)
	}
}
