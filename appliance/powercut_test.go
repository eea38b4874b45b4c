package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/qemu"
)

// powerBootTimeout guards each boot of the power-cut test: twice the other
// tests' guard, because its many boots meet whatever else the machine runs.
const powerBootTimeout = 2 * bootTimeout

// powerCutConfig: dev mode (plain HTTP API on 8080) and a pool the churn
// cannot exhaust.
const powerCutConfig = `ports:   ["6000-6100"]
exclude: []
broker:  12345
address: "127.0.0.1"
dev:     true
`

// mapping is what the Controller was told when a mapping was acknowledged.
type mapping struct {
	ID           string
	Port1, Port2 int
	Pass1, Pass2 string
}

// TestPowerCut pulls the plug (SIGKILL of QEMU: no flush, no shutdown) on
// the real x86 image at random moments, during boot, during a churn of
// adds and removes, and right after an acknowledgement, and boots the same
// disk after each cut: every acknowledged mapping must be back with the
// same ports and passcodes, the API must add a new one, the FAT must pass
// fsck.fat -n right after the cut (the dirty flag aside) and after the
// next boot, and the data partition e2fsck -fn (checked after a clean
// power-off of that boot, so the journal has been replayed).
//
// IOFOG_POWERCUTS sets the number of cuts (default 3: make test; make
// test-long runs 20); IOFOG_POWERCUT_SEED replays a run's random moments.
func TestPowerCut(t *testing.T) {
	cache := requireQEMU(t)
	cuts := 3
	if v := os.Getenv("IOFOG_POWERCUTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("IOFOG_POWERCUTS=%q: want a positive number", v)
		}
		cuts = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("IOFOG_POWERCUT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("IOFOG_POWERCUT_SEED=%q: want a number", v)
		}
		seed = n
	}
	t.Logf("%d cuts, IOFOG_POWERCUT_SEED=%d", cuts, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cuts)*12*time.Minute+15*time.Minute)
	defer cancel()
	bin, err := image.BuildBinary(ctx, "amd64", dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "connector.cue")
	if err := os.WriteFile(cfg, []byte(powerCutConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, "appliance.img"), Binary: bin, Config: cfg, CacheDir: cache})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}

	acked := map[string]mapping{}
	// What a cut may or may not have kept: requests in flight when the
	// power went. They were never acknowledged, so either outcome is right.
	uncertain := map[string]bool{}
	var upTime time.Duration = 20 * time.Second
	lost, checked := 0, 0
	kinds := []string{"during boot", "during churn", "right after an acknowledgement"}
	for i := range cuts {
		kind := kinds[i%len(kinds)]
		ok := t.Run(fmt.Sprintf("cut %d %s", i+1, kind), func(t *testing.T) {
			vm, _ := boot(ctx, t, res.Image, cache, []qemu.Forward{{Guest: 8080}})
			api := "http://" + vm.Addr(8080)
			start := time.Now()
			switch kind {
			case "during boot":
				// Anywhere from the kernel's first lines to the API
				// being up (measured on an earlier boot).
				d := time.Duration(rng.Int64N(int64(upTime)))
				time.Sleep(d)
				t.Logf("cut %s after QEMU started", d.Round(time.Millisecond))
			case "during churn":
				waitConsole(ctx, t, vm, 0, `Connector is up.*`, powerBootTimeout)
				upTime = time.Since(start)
				// The plug is pulled while the churn runs, requests in flight.
				stop, done := make(chan struct{}), make(chan [2]int)
				crng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				go func() {
					a, r := churn(api, crng, acked, uncertain, stop)
					done <- [2]int{a, r}
				}()
				d := time.Duration(1000+rng.IntN(6000)) * time.Millisecond
				time.Sleep(d)
				vm.Stop()
				close(stop)
				n := <-done
				t.Logf("cut %s into a churn (%d adds and %d removes acknowledged); %d mappings expected", d, n[0], n[1], len(acked))
			case "right after an acknowledgement":
				waitConsole(ctx, t, vm, 0, `Connector is up.*`, powerBootTimeout)
				upTime = time.Since(start)
				m := addMapping(t, api)
				acked[m.ID] = m
				if d := rng.IntN(3); d > 0 {
					time.Sleep(time.Duration(d) * 100 * time.Millisecond)
				}
				t.Logf("cut right after mapping %s was acknowledged", m.ID)
			}
			vm.Stop() // SIGKILL: the plug is pulled
			if t.Failed() {
				return
			}
			// The FAT as a laptop finds it when the card is pulled now:
			// it has no journal, so this is the state that matters.
			for _, label := range []string{image.Label, image.ESPLabel} {
				if out, err := image.CheckPartition(res.Image, label); err != nil {
					t.Errorf("%s right after cut %d: %v\n%s", label, i+1, err, out)
				}
			}

			// The next boot of the same disk.
			vm, _ = boot(ctx, t, res.Image, cache, []qemu.Forward{{Guest: 8080}})
			api = "http://" + vm.Addr(8080)
			waitConsole(ctx, t, vm, 0, `Connector is up.*`, powerBootTimeout)
			list := listMappings(t, api)
			for id, want := range acked {
				got, ok := list[id]
				if !ok && uncertain[id] {
					delete(acked, id) // its remove was in flight, and it happened
					continue
				}
				checked++
				if !ok || got.Port1 != want.Port1 || got.Port2 != want.Port2 {
					lost++
					t.Errorf("acknowledged mapping %s (ports %d/%d) after the cut: %+v, present %v", id, want.Port1, want.Port2, got, ok)
				}
			}
			clear(uncertain)
			m := addMapping(t, api)
			acked[m.ID] = m
			command(t, api, "stop")
			if err := vm.Wait(stepTimeout); err != nil {
				t.Fatalf("after commandline stop: %v", err)
			}
			// Passcodes, as kept on the data partition.
			stored := storedMappings(t, res.Image)
			for id, want := range acked {
				got, ok := stored[id]
				if !ok || got != want {
					t.Errorf("mapping %s on the data partition: %+v (present %v); want %+v", id, got, ok, want)
				}
			}
			for id := range stored {
				if _, ok := acked[id]; !ok {
					// An add in flight at the cut that made it: fine, and
					// from now on it is expected.
					acked[id] = stored[id]
				}
			}
			for _, label := range []string{image.Label, image.ESPLabel, image.DataLabel} {
				if out, err := image.CheckPartition(res.Image, label); err != nil {
					t.Errorf("%s after cut %d: %v\n%s", label, i+1, err, out)
				}
			}
		})
		if !ok {
			break
		}
	}
	t.Logf("power-cut run: %d cuts, %d acknowledged mappings checked after them, %d lost; seed %d", cuts, checked, lost, seed)
}

// churn adds and removes mappings until stop is closed or a request fails
// (the power went), recording what was acknowledged. A remove that got no
// answer is uncertain: the mapping may be there after the cut or not.
func churn(api string, rng *rand.Rand, acked map[string]mapping, uncertain map[string]bool, stop <-chan struct{}) (adds, removes int) {
	c := control(api)
	ctx := context.Background()
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := len(acked)
		var victim string
		if n > 0 && (n > 8 || rng.IntN(3) == 0) {
			for id := range acked {
				victim = id
				break
			}
		}
		if victim != "" {
			uncertain[victim] = true
			_, err := c.Remove(ctx, victim)
			var refused *controlapi.Error
			if err != nil && !errors.As(err, &refused) {
				return // no answer: the power went
			}
			if err == nil {
				delete(acked, victim)
				delete(uncertain, victim)
				removes++
			}
			continue
		}
		r, err := c.Add(ctx, publicMapping)
		if err != nil {
			return
		}
		m := mappingOf(r)
		acked[m.ID] = m
		adds++
	}
}

var publicMapping = controlapi.Public(2, 200000)

func mappingOf(r controlapi.AddReply) mapping {
	return mapping{ID: r.ID, Port1: int(r.Port1), Port2: int(r.Port2), Pass1: r.Passcode1, Pass2: r.Passcode2}
}

func addMapping(t *testing.T, api string) mapping {
	t.Helper()
	r, err := control(api).Add(context.Background(), publicMapping)
	if err != nil {
		t.Fatalf("mapping add: %v", err)
	}
	return mappingOf(r)
}

func listMappings(t *testing.T, api string) map[string]mapping {
	t.Helper()
	l, err := control(api).List(context.Background())
	if err != nil {
		t.Fatalf("mapping list: %v", err)
	}
	out := map[string]mapping{}
	for _, m := range l.Mappings {
		out[m.ID] = mapping{ID: m.ID, Port1: int(m.Port1), Port2: int(m.Port2)}
	}
	return out
}

// storedMappings reads the mapping store off the image's data partition.
func storedMappings(t *testing.T, img string) map[string]mapping {
	t.Helper()
	data, err := image.ReadDataFile(img, "state/configs.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Mappings []struct {
			ID    string `json:"id"`
			Port1 int    `json:"port1"`
			Port2 int    `json:"port2"`
			Pass1 string `json:"passcodeport1"`
			Pass2 string `json:"passcodeport2"`
		} `json:"mappings"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("state/configs.json on the data partition: %v\n%s", err, data)
	}
	out := map[string]mapping{}
	for _, m := range f.Mappings {
		out[m.ID] = mapping{ID: m.ID, Port1: m.Port1, Port2: m.Port2, Pass1: m.Pass1, Pass2: m.Pass2}
	}
	return out
}
