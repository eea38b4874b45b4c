package appliance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// Test hooks, enabled only by iofog.testhooks=1 on the kernel command line,
// are commands typed on the console (QEMU's serial port in tests):
//
//	iofog-test kill-connector   SIGKILL the Connector child (it must come back)
//	iofog-test status           print the current STATUS.txt between markers
//	iofog-test sync             write STATUS.txt and flush the boot partition now
//	iofog-test reboot           reboot cleanly
//
// Each answers with one line starting "iofog-test: ".
const (
	HookPrefix      = "iofog-test"
	HookStatusBegin = "iofog-test: status begin"
	HookStatusEnd   = "iofog-test: status end"
)

func (s *system) testHooks(ctx context.Context, c *connector, out chan<- string) {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if ctx.Err() != nil {
			return
		}
		f := strings.Fields(in.Text())
		if len(f) != 2 || f[0] != HookPrefix {
			continue
		}
		reply := func(format string, a ...any) {
			fmt.Fprintf(s.out, "iofog-test: "+format+"\n", a...)
		}
		switch f[1] {
		case "kill-connector":
			if c == nil {
				reply("kill-connector: no Connector")
				continue
			}
			pid := c.sup.Pid()
			if err := c.sup.Signal(syscall.SIGKILL); err != nil {
				reply("kill-connector: %v", err)
				continue
			}
			reply("kill-connector: killed pid %d", pid)
		case "status":
			var b strings.Builder
			b.WriteString(HookStatusBegin + "\n")
			if s.statusW != nil {
				b.Write(s.statusW.Current())
			}
			b.WriteString(HookStatusEnd + "\n")
			io.WriteString(s.out, b.String())
		case "sync":
			if s.statusW != nil {
				s.statusW.Flush()
			}
			syscall.Sync()
			reply("sync: done")
		case "reboot":
			reply("reboot: rebooting")
			out <- "reboot"
			return
		default:
			reply("unknown command %q", f[1])
		}
	}
}
