package firewall_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
)

// On the appliance, api.allow is enforced in the kernel: other sources
// never reach the API port, while mapping ports stay open to everyone.
func TestAPIAllowOnlyListedSourcesReachTheAPI(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 8080, 6000)
	r := dropRules()
	r.APIAllow = []string{"10.77.0.2", "fd00:77::/64"}
	fw, err := apply(t, r, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	if err := dial(p, "10.77.0.2", 8080, connectGuard); err != nil {
		t.Errorf("listed source to the API port: %v", err)
	}
	dropped := counter(t, fw, firewall.CounterDropped)
	err = dial(p, "10.77.0.3", 8080, dropWait)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("unlisted source to the API port: %v, want its SYN dropped", err)
	} else if n := counter(t, fw, firewall.CounterDropped); n <= dropped {
		t.Errorf("unlisted source timed out but the firewall dropped nothing (%d -> %d)", dropped, n)
	}
	if err := dial(p, "10.77.0.3", 6000, connectGuard); err != nil {
		t.Errorf("unlisted source to a mapping port: %v, want it open to everyone", err)
	}

	// A network lets in every address in it.
	r.APIAllow = []string{"10.77.0.0/24"}
	if _, err := apply(t, r, firewall.Options{NetNS: p.server}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"10.77.0.2", "10.77.0.3"} {
		if err := dial(p, src, 8080, connectGuard); err != nil {
			t.Errorf("%s in 10.77.0.0/24 to the API port: %v", src, err)
		}
	}
}

func TestAPIAllowBadEntryIsRefused(t *testing.T) {
	r := dropRules()
	r.APIAllow = []string{"10.0.0.0/8", "controller.example"}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "allow[1]") {
		t.Errorf("Validate = %v, want an error naming allow[1]", err)
	}
}
