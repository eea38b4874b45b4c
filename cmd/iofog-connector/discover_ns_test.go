package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/netcfg/discovery"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// dispatchEnv, when set, makes the test binary run the command line it
// holds (arguments separated by US, 0x1f) instead of the tests: a daemon a test
// starts inside a network namespace.
const dispatchEnv = "IOFOG_TEST_DISPATCH"

func TestMain(m *testing.M) {
	if line, ok := os.LookupEnv(dispatchEnv); ok {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := dispatch(ctx, &cliEnv{stdout: os.Stdout, stderr: os.Stderr, version: "9.9.9-test", commit: "test"}, strings.Split(line, "\x1f"))
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// inNS runs fn on an OS thread switched into ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// twoHostLAN makes two namespaces joined by a veth pair, 10.78.0.1/24 and
// 10.78.0.2/24, with lo up and a multicast route on the LAN.
func twoHostLAN(t *testing.T) (a, b netns.NsHandle) {
	var nss [2]netns.NsHandle
	for i := range nss {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // the thread is left in the new namespace and dies with the goroutine
			ns, err := netns.New()
			nss[i] = ns
			errc <- err
		}()
		if err := <-errc; err != nil {
			t.Fatalf("create network namespace: %v", err)
		}
		ns := nss[i]
		t.Cleanup(func() { ns.Close() })
	}
	ha, err := netlink.NewHandleAt(nss[0], unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(nss[1], unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan0", PeerNamespace: netlink.NsFd(nss[1])}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for i, h := range []*netlink.Handle{ha, hb} {
		for _, name := range []string{"lo", "lan0"} {
			l, err := h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if name == "lan0" {
				addr, _ := netlink.ParseAddr(fmt.Sprintf("10.78.0.%d/24", i+1))
				if err := h.AddrAdd(l, addr); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			if name == "lan0" {
				_, mc, _ := net.ParseCIDR("224.0.0.0/4")
				if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: mc}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return nss[0], nss[1]
}

// The daemon announces itself on the LAN when discovery is on (the
// default) and stays silent when the config turns it off.
func TestDaemonAnnouncesUnlessDisabled(t *testing.T) {
	testenv.RequireRoot(t, "CAP_NET_ADMIN and CAP_SYS_ADMIN to create network namespaces")
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter (util-linux) is needed to start the daemon in a namespace: %v", err)
	}
	a, b := twoHostLAN(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, discovery string
		want            bool
	}{{"default", "", true}, {"disabled", `,"discovery":{"enabled":false}`, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			apiPort := 18080
			conf := filepath.Join(dir, "c.conf")
			os.WriteFile(conf, []byte(fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true,"api":{"http_port":%d}%s}`,
				relaytest.FreePorts(t, 4), apiPort, tc.discovery)), 0o644)
			// A duplicate for the child: the *os.File closes its fd when
			// collected, and the namespace handle must outlive it.
			fd, err := unix.Dup(int(a))
			if err != nil {
				t.Fatal(err)
			}
			nsFile := os.NewFile(uintptr(fd), "netns")
			defer nsFile.Close()
			cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", self)
			cmd.ExtraFiles = []*os.File{nsFile}
			cmd.Env = append(os.Environ(), dispatchEnv+"="+strings.Join([]string{"run", "--config", conf, "--state-dir", dir}, "\x1f"))
			var logs lockedBuffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			// No Pdeathsig: it fires when the forking thread exits, and
			// the namespace helpers end the threads they lock.
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(30 * time.Second):
					cmd.Process.Kill()
					t.Error("daemon did not stop on SIGTERM")
				}
			}()
			// Up when its API answers inside its namespace.
			up := false
			for end := time.Now().Add(60 * time.Second); time.Now().Before(end) && !up; time.Sleep(100 * time.Millisecond) {
				inNS(a, func() error {
					c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", apiPort), time.Second)
					if err == nil {
						c.Close()
						up = true
					}
					return nil
				})
			}
			if !up {
				t.Fatalf("daemon API not up in its namespace; its output:\n%s", logs.String())
			}
			var found []discovery.Connector
			for range 3 {
				inNS(b, func() error {
					found, err = discovery.Browse(context.Background(), 2*time.Second, nil)
					return nil
				})
				if len(found) > 0 || !tc.want {
					break
				}
			}
			if !tc.want {
				if len(found) != 0 {
					t.Fatalf("found %+v although discovery is off", found)
				}
				return
			}
			if len(found) != 1 || found[0].Port != apiPort || !found[0].Dev || found[0].Version != "9.9.9-test" ||
				!found[0].Addr().Equal(net.ParseIP("10.78.0.1")) {
				t.Fatalf("found %+v (%v); want the daemon at 10.78.0.1:%d, dev, version 9.9.9-test\n%s", found, err, apiPort, logs.String())
			}
		})
	}
}
