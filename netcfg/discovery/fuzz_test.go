package discovery

import (
	"net"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/mdns"
)

// Answers come from anyone on the LAN: whatever they hold, an accepted one
// is a usable Connector and its version is printable and bounded.
func FuzzFromEntry(f *testing.F) {
	f.Add("edge-1._iofog-connector._tcp.local.", 8080, "mode=dev", "version=1.2.3")
	f.Add("x", 0, "", "")
	f.Add("a\\ b._iofog-connector._tcp.local.", 443, "mode=tls", "version=\x00\xff")
	f.Fuzz(func(t *testing.T, name string, port int, f1, f2 string) {
		c, ok := fromEntry(&mdns.ServiceEntry{Name: name, Port: port, AddrV4: net.IPv4(10, 0, 0, 1), InfoFields: []string{f1, f2}})
		if !ok {
			return
		}
		if c.Port < 1 || c.Port > 65535 || c.Addr() == nil {
			t.Fatalf("accepted %+v", c)
		}
		if len(c.Version) > 4*64+2 || !utf8.ValidString(c.Version) || strings.ContainsAny(c.Version, "\x00\n\r") {
			t.Fatalf("version %q not bounded or not printable", c.Version)
		}
	})
}
