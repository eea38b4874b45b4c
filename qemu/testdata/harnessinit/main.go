// Command harnessinit is a minimal PID 1 for testing the image builder and
// the QEMU harness without the appliance: it loads the image's modules with
// kmod (acting as the kernel's modprobe too), mounts the boot partition,
// brings up eth0 as QEMU's user network expects, and serves TCP port 7000:
// a client gets a report line, and sending "poweroff" powers the VM off.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
	"github.com/eclipse-iofog/iofog-connector/kmod"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	if filepath.Base(os.Args[0]) == "modprobe" {
		l, err := kmod.OpenLoader(kmod.IndexFile, nil)
		if err == nil {
			err = l.Modprobe(context.Background(), os.Args[1:])
		}
		if err != nil {
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Println("HARNESS: error:", err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, typ string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	ctx := context.Background()
	l, err := kmod.OpenLoader(kmod.IndexFile, nil)
	if err != nil {
		return err
	}
	if err := l.Load(ctx, l.Index().Load...); err != nil {
		fmt.Println("HARNESS: boot modules:", err)
	}
	// Coldplug until the disk and eth0 show up (USB enumerates late).
	var boot string
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
		if err := l.Coldplug(ctx, "/sys"); err != nil {
			fmt.Println("HARNESS: coldplug:", err)
		}
		// The IOFOG FAT, by label (the second partition on x86, after the ESP).
		boot, _ = bootpart.Finder{}.Find()
		if _, err := os.Stat("/sys/class/net/eth0"); err == nil && boot != "" {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := os.MkdirAll("/boot", 0o755); err != nil {
		return err
	}
	if err := unix.Mount(boot, "/boot", "vfat", 0, ""); err != nil {
		return fmt.Errorf("mount %q on /boot: %w", boot, err)
	}
	ents, _ := os.ReadDir("/boot")
	var files []string
	for _, e := range ents {
		files = append(files, e.Name())
	}
	sort.Strings(files)
	mods, _ := os.ReadFile("/proc/modules")
	report := fmt.Sprintf("modules=%d boot=%s", strings.Count(string(mods), "\n"), strings.Join(files, ","))
	fmt.Println("HARNESS:", report)

	if err := network(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ":7000")
	if err != nil {
		return err
	}
	fmt.Println("HARNESS: ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		fmt.Fprintln(c, report)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.TrimSpace(line) == "poweroff" {
			fmt.Println("HARNESS: powering off")
			_ = unix.Unmount("/boot", 0)
			return nil
		}
	}
}

// network sets QEMU user networking's fixed guest address.
func network() error {
	for _, name := range []string{"lo", "eth0"} {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("up %s: %w", name, err)
		}
		if name == "eth0" {
			addr, _ := netlink.ParseAddr("10.0.2.15/24")
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("address on eth0: %w", err)
			}
		}
	}
	return nil
}
