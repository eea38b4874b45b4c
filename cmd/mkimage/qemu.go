package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/qemu"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// cmdQEMU boots an image interactively: the console on the terminal, the
// API and the config's port range forwarded to the same ports on 127.0.0.1
// (the API on a free port when its own is taken).
func cmdQEMU(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("mkimage qemu", flag.ContinueOnError)
	board := fl.String("board", "x86_64", "board: x86_64 or rpi")
	img := fl.String("image", "", "image to boot (default out/iofog-connector-BOARD.img, built if missing)")
	uefi := fl.Bool("uefi", false, "x86_64: boot through OVMF firmware like a real PC (slower)")
	virt := fl.Bool("virt", false, "rpi: boot the image's kernel on QEMU's arm64 virt machine (faster than raspi3b)")
	kvm := fl.Bool("kvm", false, "use KVM (not on machines where it does not work)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *img == "" {
		*img = "out/iofog-connector-" + *board + ".img"
		if _, err := os.Stat(*img); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "%s not found: building it\n", *img)
			if err := cmdBuild(ctx, []string{"--board", *board, "--out", *img, "--no-xz"}, stdout, stderr); err != nil {
				return err
			}
		}
	}
	cacheDir, err := image.DefaultCacheDir()
	if err != nil {
		return err
	}
	cfg, err := imageConfig(*img)
	if err != nil {
		return err
	}
	api := cfg.API.Port(cfg.Dev)
	fwd := []qemu.Forward{{Guest: api, Host: api}}
	ports, err := poolPorts(cfg.Ports)
	if err != nil {
		return err
	}
	for _, p := range ports {
		fwd = append(fwd, qemu.Forward{Guest: p, Host: p})
	}
	if !portFree(api) {
		fwd[0].Host = 0
	}
	mode := qemu.Direct
	switch {
	case *uefi:
		mode = qemu.UEFI
	case *virt:
		mode = qemu.Virt
	}
	vm, err := qemu.Start(ctx, qemu.Options{Board: *board, Image: *img, Mode: mode, CacheDir: cacheDir,
		Forward: fwd, Console: stdout, Interactive: true, KVM: *kvm})
	if err != nil {
		return err
	}
	defer vm.Stop()
	scheme := "https"
	if cfg.Dev {
		scheme = "http"
	}
	fmt.Fprintf(stderr, "booting %s (%s); Ctrl-C ends QEMU.\n  API: curl -d mappingid=all %s://127.0.0.1:%d/api/v2/status\n  mapping ports %s on 127.0.0.1\n",
		*img, *board, scheme, vm.HostPort(api), strings.Join(cfg.Ports, ","))
	select {
	case <-vm.Done():
		return vm.Wait(0)
	case <-ctx.Done():
		return nil
	}
}

// imageConfig reads and checks the config on an image's boot partition.
func imageConfig(img string) (*schema.Config, error) {
	for _, name := range image.ConfigNames() {
		data, err := image.ReadBootFile(img, name)
		if err != nil {
			continue
		}
		cfg, err := schema.LoadBytes(name, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", img, name, err)
		}
		return cfg, nil
	}
	return nil, fmt.Errorf("%s: no config (%s) on the boot partition", img, strings.Join(image.ConfigNames(), ", "))
}

// poolPorts expands "6000-6050" style ranges.
func poolPorts(ranges []string) ([]int, error) {
	var out []int
	for _, r := range ranges {
		lo, hi, found := strings.Cut(r, "-")
		if !found {
			hi = lo
		}
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || a > b || b-a > 1000 {
			return nil, fmt.Errorf("port range %q: want N or N-M (at most 1000 ports to forward)", r)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out, nil
}
