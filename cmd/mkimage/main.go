// Command mkimage builds the appliance's disk images, rewrites the config in
// a built image, reports what takes the space, and boots an image under QEMU.
//
//	mkimage --board x86_64|rpi [--config FILE] [--binary PATH] --out FILE.img
//	mkimage config --image FILE.img --config FILE
//	mkimage sizes [--out DIR]
//	mkimage qemu --board x86_64|rpi [--image FILE.img] [--uefi|--virt]
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/schema"
	"github.com/eclipse-iofog/iofog-connector/update"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "build"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "build":
		err = cmdBuild(ctx, args, stdout, stderr)
	case "config":
		err = cmdConfig(ctx, args, stdout)
	case "sizes":
		err = cmdSizes(ctx, args, stdout, stderr)
	case "qemu":
		err = cmdQEMU(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "mkimage: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "mkimage:", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  mkimage --board x86_64|rpi [--config FILE] [--binary PATH] [--sign-key KEY] [--version V] --out FILE.img
      build an image (also FILE.img.xz, FILE.img.sha256, FILE.img.manifest.txt)
      and its signed update bundle FILE.update.tar
  mkimage config --image FILE.img --config FILE
      replace the config on a built image's IOFOG partition (and remake
      FILE.img.xz, when there is one, and FILE.img.sha256)
  mkimage sizes [--out DIR]
      build both images and report what takes the space
  mkimage qemu --board x86_64|rpi [--image FILE.img] [--uefi | --virt]
      boot an image under QEMU with the API and port range reachable on 127.0.0.1
`)
}

// validateConfig checks a config as the appliance will: the same schema.
func validateConfig(name string, data []byte) error {
	_, err := schema.LoadBytes(name, data)
	return err
}

// quiet says whether to leave out the progress bar: not a terminal, or CI.
func quiet(w io.Writer) bool {
	if os.Getenv("CI") == "true" {
		return true
	}
	f, ok := w.(*os.File)
	if !ok {
		return true
	}
	st, err := f.Stat()
	return err != nil || st.Mode()&os.ModeCharDevice == 0
}

// sourceEpoch makes builds reproducible by default: without
// SOURCE_DATE_EPOCH, files carry the time of the last commit.
func sourceEpoch(ctx context.Context) time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0)
		}
	}
	out, err := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(n, 0)
		}
	}
	return time.Time{}
}

func cmdBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fl.SetOutput(stderr)
	board := fl.String("board", "", "board: x86_64 or rpi")
	out := fl.String("out", "", "image file to write (.img)")
	bin := fl.String("binary", "", "prebuilt static iofog-connector for the board (default: build ./cmd/iofog-connector)")
	cfg := fl.String("config", "", "config for the boot partition (default: examples/connector.cue)")
	noXZ := fl.Bool("no-xz", false, "skip writing FILE.img.xz")
	signKey := fl.String("sign-key", "", "ed25519 private key (PEM) that signs the update bundle; the image accepts bundles signed by it\n(default: a test key, update-test.key beside the image, made if missing)")
	acceptKeys := fl.String("accept-keys", "", "file of more public keys (one \"ed25519:BASE64\" a line) the image accepts bundles from")
	version := fl.String("version", "dev", "system version named in the update bundle")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *board == "" || *out == "" {
		return errors.New("--board and --out are required (mkimage help)")
	}
	epoch := sourceEpoch(ctx)
	if os.Getenv("SOURCE_DATE_EPOCH") == "" && !epoch.IsZero() {
		// go-diskfs stamps directories from SOURCE_DATE_EPOCH itself.
		os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch.Unix(), 10))
	}
	key, err := signingKey(*signKey, *out, stderr)
	if err != nil {
		return err
	}
	accept := []update.PublicKey{update.Public(key)}
	if *acceptKeys != "" {
		data, err := os.ReadFile(*acceptKeys)
		if err != nil {
			return err
		}
		more, err := update.ParseKeyList(*acceptKeys, data)
		if err != nil {
			return err
		}
		accept = append(accept, more...)
	}
	o := image.Options{
		Board: *board, Out: *out, Binary: *bin, Config: *cfg, Validate: validateConfig,
		Epoch: epoch, Compress: !*noXZ, Version: *version, SignKey: key, AcceptKeys: accept,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if !quiet(stderr) {
		o.Progress = newBar(stderr, *board)
	}
	res, err := image.Build(ctx, o)
	if err != nil {
		return err
	}
	if p, ok := o.Progress.(*bar); ok {
		p.done()
	}
	fmt.Fprintf(stdout, "%s (kernel %s, %d modules)\n", res.Image, res.Kernel.ABI, len(res.Initramfs.Modules))
	fmt.Fprintf(stdout, "%s (update bundle %s, signed by key %s)\n", res.Bundle, *version, update.Public(key).ID())
	return nil
}

func cmdConfig(ctx context.Context, args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("mkimage config", flag.ContinueOnError)
	img := fl.String("image", "", "built image to change")
	cfg := fl.String("config", "", "new config (connector.cue, connector.hcl or iofog-connector.conf; by extension)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *img == "" || *cfg == "" {
		return errors.New("--image and --config are required")
	}
	files, err := image.RewriteConfig(ctx, *img, *cfg, validateConfig)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: config replaced with %s; rewritten: %s\n", *img, *cfg, strings.Join(files, ", "))
	return nil
}

// signingKey loads the key given, or the test key beside the image
// (making it the first time), and says so: a test key is fine for a lab,
// not for boxes in the field.
func signingKey(p, out string, stderr io.Writer) (ed25519.PrivateKey, error) {
	if p != "" {
		return update.LoadSigningKey(p)
	}
	p = filepath.Join(filepath.Dir(out), "update-test.key")
	if _, err := os.Stat(p); err == nil {
		fmt.Fprintf(stderr, "mkimage: signing the update bundle with the test key %s (give --sign-key for your own)\n", p)
		return update.LoadSigningKey(p)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	k, err := update.GenerateKey(p)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "mkimage: generated a test signing key %s (public key %s.pub); give --sign-key for your own\n", p, p)
	return k, nil
}
