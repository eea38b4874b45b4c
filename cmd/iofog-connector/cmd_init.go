package main

import (
	"context"
	"fmt"

	"github.com/eclipse-iofog/iofog-connector/appliance"
	"github.com/eclipse-iofog/iofog-connector/kmod"
)

// runInit is the appliance's init: it returns only if powering off failed
// (and the kernel then panics and resets the board, which is the best left
// to do).
func runInit(env *cliEnv) int {
	return appliance.Run(appliance.Options{Version: fmt.Sprintf("%s (commit %s)", env.version, env.commit)})
}

// runModprobe is what the kernel runs for its own module requests
// (/proc/sys/kernel/modprobe points at a symlink to this binary named
// modprobe): "modprobe -q -- NAME". It loads from the initramfs's index.
func runModprobe(env *cliEnv, args []string) int {
	l, err := kmod.OpenLoader(kmod.IndexFile, nil)
	if err != nil {
		fmt.Fprintf(env.stderr, "modprobe: %v\n", err)
		return 1
	}
	if err := l.Modprobe(context.Background(), args); err != nil {
		fmt.Fprintf(env.stderr, "modprobe: %v\n", err)
		return 1
	}
	return 0
}
