// Command mkimage builds the appliance's disk images, rewrites the config in
// one, reports what takes the space, and boots one under QEMU.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/eclipse-iofog/iofog-connector/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	fl := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	board := fl.String("board", "x86_64", "board: x86_64 or rpi")
	out := fl.String("out", "", "image file to write")
	bin := fl.String("binary", "", "prebuilt iofog-connector for the board (default: build it)")
	cfg := fl.String("config", "", "config file to put on the boot partition")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	res, err := image.Build(ctx, image.Options{Board: *board, Out: *out, Binary: *bin, Config: *cfg,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		return 1
	}
	fmt.Println(res.Image)
	return 0
}
