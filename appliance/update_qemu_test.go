package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/qemu"
	"github.com/eclipse-iofog/iofog-connector/update"
)

// versionedBinary builds the appliance's binary stamped with version.
func versionedBinary(t *testing.T, dir, version string) string {
	t.Helper()
	root, err := image.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "iofog-connector-"+version)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid= -X main.version="+version, "-o", out, "./cmd/iofog-connector")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestUpdateInQEMU updates the real x86 image from v1 to v2 through the
// API under OVMF, whose variables persist across the VMs as a board's
// NVRAM does: v2 boots once on trial (BootNext), commits itself once
// healthy with the stored mapping back, and is the default from then on;
// the next update (v3) goes to slot A.
func TestUpdateInQEMU(t *testing.T) {
	cache := requireQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	keys := []update.PublicKey{update.Public(key)}
	ex, err := os.ReadFile(filepath.Join(mustRoot(t), "examples", "connector.cue"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "connector.cue")
	os.WriteFile(cfg, append(ex, []byte("\nupdate: commit_after: \"15s\"\n")...), 0o644)
	build := func(version string) *image.Result {
		res, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, version, "appliance.img"),
			Binary: versionedBinary(t, dir, version), Config: cfg, CacheDir: cache, Version: version, SignKey: key, AcceptKeys: keys})
		if err != nil {
			t.Fatalf("building %s: %v", version, err)
		}
		return res
	}
	v1, v2, v3 := build("v1"), build("v2"), build("v3")
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	forwards := []qemu.Forward{{Guest: 8080}}
	start := func() *qemu.VM {
		vm, err := qemu.Start(ctx, qemu.Options{Board: "x86_64", Image: v1.Image, Mode: qemu.UEFI, CacheDir: cache,
			Forward: forwards, Console: &consoleLog{t: t}, VarsFile: vars})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.Stop)
		forwards[0].Host = vm.HostPort(8080)
		return vm
	}

	vm := start()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	api := "http://" + vm.Addr(8080)
	add := addMapping(t, api)
	slots := updateStatus(t, api)
	if !strings.Contains(slots, "slot A: v1 (running, committed)") {
		t.Fatalf("slots on the first boot:\n%s\nconsole:\n%s", slots, vm.Console())
	}

	bundle, err := os.ReadFile(v2.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(api+"/api/v2/update", "application/x-tar", bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(reply), "ok: v2 written to slot B") {
		t.Fatalf("update reply:\n%s\nconsole:\n%s", reply, vm.Console())
	}
	// The appliance reboots into the trial; -no-reboot makes that QEMU's exit.
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatalf("the appliance did not reboot after the update: %v", err)
	}

	vm = start()
	waitConsole(ctx, t, vm, 0, `update committed.*`, bootTimeout)
	api = "http://" + vm.Addr(8080)
	slots = updateStatus(t, api)
	for _, want := range []string{"slot A: v1", "slot B: v2 (running, committed)", "last update: committed to v2 in slot B"} {
		if !strings.Contains(slots, want) {
			t.Errorf("slots after the commit lack %q:\n%s", want, slots)
		}
	}
	if st := status(t, api); st.Mappings != 1 {
		t.Errorf("v2 runs with %v mappings, want the 1 made on v1 (%v)", st.Mappings, add.ID)
	}
	command(t, api, "stop")
	vm.Wait(stepTimeout)

	// Committed: a plain boot runs v2 again.
	vm = start()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	api = "http://" + vm.Addr(8080)
	if slots := updateStatus(t, api); !strings.Contains(slots, "slot B: v2 (running, committed)") {
		t.Errorf("after a plain reboot:\n%s", slots)
	}

	// The next update goes back to slot A.
	bundle, _ = os.ReadFile(v3.Bundle)
	resp, err = http.Post(api+"/api/v2/update", "application/x-tar", bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	reply, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(reply), "ok: v3 written to slot A") {
		t.Fatalf("second update reply:\n%s", reply)
	}
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatal(err)
	}
	vm = start()
	waitConsole(ctx, t, vm, 0, `update committed.*`, bootTimeout)
	slots = updateStatus(t, "http://"+vm.Addr(8080))
	for _, want := range []string{"slot A: v3 (running, committed)", "slot B: v2", "last update: committed to v3 in slot A"} {
		if !strings.Contains(slots, want) {
			t.Errorf("after the second update, slots lack %q:\n%s", want, slots)
		}
	}
}

func mustRoot(t *testing.T) string {
	root, err := image.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// updateStatus reads the slots' report. The update endpoints answer in
// plain text, streamed while a bundle is written, and only an appliance
// has them: they are not part of the control API that controlapi speaks,
// so this file reaches them over plain HTTP.
func updateStatus(t *testing.T, api string) string {
	t.Helper()
	resp, err := http.Get(api + "/api/v2/update/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestUpdateRollbackInQEMU sends an update whose system never comes up
// (its init exits, the kernel panics and resets): the firmware's one-shot
// boot is spent, the old slot boots by itself, records the failed attempt
// in STATUS.txt and the status API, keeps the mapping, and refuses to try
// the same bundle again unless forced.
func TestUpdateRollbackInQEMU(t *testing.T) {
	cache := requireQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	keys := []update.PublicKey{update.Public(key)}
	v1, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, "v1", "appliance.img"),
		Binary: versionedBinary(t, dir, "v1"), CacheDir: cache, Version: "v1", SignKey: key, AcceptKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	// A system whose init returns at once: the kernel panics.
	src := filepath.Join(dir, "broken.go")
	os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644)
	broken := filepath.Join(dir, "broken-init")
	cmd := exec.Command("go", "build", "-o", broken, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GO111MODULE=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	bad, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, "bad", "appliance.img"),
		Binary: broken, CacheDir: cache, Version: "v2-broken", SignKey: key, AcceptKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	forwards := []qemu.Forward{{Guest: 8080}}
	start := func() *qemu.VM {
		vm, err := qemu.Start(ctx, qemu.Options{Board: "x86_64", Image: v1.Image, Mode: qemu.UEFI, CacheDir: cache,
			Forward: forwards, Console: &consoleLog{t: t}, VarsFile: vars})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.Stop)
		forwards[0].Host = vm.HostPort(8080)
		return vm
	}
	post := func(api string, force bool) string {
		bundle, _ := os.ReadFile(bad.Bundle)
		u := api + "/api/v2/update"
		if force {
			u += "?force=1"
		}
		resp, err := http.Post(u, "application/x-tar", bytes.NewReader(bundle))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	vm := start()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	api := "http://" + vm.Addr(8080)
	addMapping(t, api)
	if reply := post(api, false); !strings.Contains(reply, "ok: v2-broken written to slot B") {
		t.Fatalf("update reply:\n%s", reply)
	}
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatalf("no reboot after the update: %v", err)
	}
	// The trial: the broken system panics; the image's panic=10 resets it.
	vm = start()
	waitConsole(ctx, t, vm, 0, `Kernel panic.*`, bootTimeout)
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatalf("the broken system did not reset: %v", err)
	}
	// The firmware's default is still slot A.
	vm = start()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	api = "http://" + vm.Addr(8080)
	slots := updateStatus(t, api)
	for _, want := range []string{"slot A: v1 (running, committed)", "last update: rolled back to v2-broken in slot B", "did not come up"} {
		if !strings.Contains(slots, want) {
			t.Errorf("slots after the rollback lack %q:\n%s", want, slots)
		}
	}
	if st := status(t, api); st.Mappings != 1 {
		t.Errorf("after the rollback: %v mappings, want 1", st.Mappings)
	}
	if reply := post(api, false); !strings.Contains(reply, "failed its trial boot before") {
		t.Errorf("the failed bundle again:\n%s", reply)
	}
	command(t, api, "stop")
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatal(err)
	}
	status, err := image.ReadBootFile(v1.Image, "STATUS.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "last update: rolled back to v2-broken") {
		t.Errorf("STATUS.txt does not report the rollback:\n%s", status)
	}
}

// TestUpdatePowerCutInQEMU pulls the plug (QEMU killed) while the bundle
// is being written to the inactive slot, and again during the trial boot
// of the new system: each time the next boot runs the old system with the
// mapping, and the record says how the attempt ended.
func TestUpdatePowerCutInQEMU(t *testing.T) {
	cache := requireQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	keys := []update.PublicKey{update.Public(key)}
	build := func(version string) *image.Result {
		res, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, version, "appliance.img"),
			Binary: versionedBinary(t, dir, version), CacheDir: cache, Version: version, SignKey: key, AcceptKeys: keys})
		if err != nil {
			t.Fatalf("building %s: %v", version, err)
		}
		return res
	}
	v1, v2 := build("v1"), build("v2")
	bundle, err := os.ReadFile(v2.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	forwards := []qemu.Forward{{Guest: 8080}}
	start := func() *qemu.VM {
		vm, err := qemu.Start(ctx, qemu.Options{Board: "x86_64", Image: v1.Image, Mode: qemu.UEFI, CacheDir: cache,
			Forward: forwards, Console: &consoleLog{t: t}, VarsFile: vars})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.Stop)
		forwards[0].Host = vm.HostPort(8080)
		return vm
	}
	// upload posts the bundle and returns the reply as it streams.
	upload := func(api string) *bufio.Scanner {
		resp, err := http.Post(api+"/api/v2/update?force=1", "application/x-tar", bytes.NewReader(bundle))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return bufio.NewScanner(resp.Body)
	}
	checkOld := func(vm *qemu.VM, outcome string) {
		t.Helper()
		waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
		api := "http://" + vm.Addr(8080)
		slots := updateStatus(t, api)
		for _, want := range []string{"slot A: v1 (running, committed)", outcome} {
			if !strings.Contains(slots, want) {
				t.Errorf("slots lack %q:\n%s", want, slots)
			}
		}
		if st := status(t, api); st.Mappings != 1 {
			t.Errorf("%v mappings, want 1", st.Mappings)
		}
	}

	vm := start()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
	api := "http://" + vm.Addr(8080)
	addMapping(t, api)

	// Cut 1: while slot B is written.
	sc := upload(api)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "write") {
			break
		}
	}
	vm.Stop()
	vm = start()
	checkOld(vm, "last update: interrupted to v2 in slot B")

	// Cut 2: the trial boot of v2, as it starts.
	api = "http://" + vm.Addr(8080)
	sc = upload(api)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	if !strings.HasPrefix(last, "ok:") {
		t.Fatalf("second upload: %s", last)
	}
	if err := vm.Wait(stepTimeout); err != nil {
		t.Fatal(err)
	}
	vm = start()
	waitConsole(ctx, t, vm, 0, `appliance starting.*version="v2`, bootTimeout)
	vm.Stop()
	vm = start()
	checkOld(vm, "last update: rolled back to v2 in slot B")
}
