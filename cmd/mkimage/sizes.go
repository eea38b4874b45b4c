package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/kmod"
)

// cmdSizes builds both images and reports what takes the space.
func cmdSizes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("mkimage sizes", flag.ContinueOnError)
	out := fl.String("out", "", "directory for the images (default: a temporary one)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mkimage-sizes-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, b := range image.Boards() {
		res, err := image.Build(ctx, image.Options{Board: b.Name, Out: filepath.Join(dir, "iofog-connector-"+b.Name+".img"),
			Validate: validateConfig, Compress: true, Epoch: sourceEpoch(ctx)})
		if err != nil {
			return err
		}
		img, _ := os.Stat(res.Image)
		xz, _ := os.Stat(res.XZ)
		fmt.Fprintf(tw, "%s (kernel %s)\t\t\n", b.Name, res.Kernel.ABI)
		fmt.Fprintf(tw, "  image\t%s\t\n", mib(img.Size()))
		fmt.Fprintf(tw, "  image.xz (download)\t%s\t\n", mib(xz.Size()))
		for _, p := range res.Parts {
			fmt.Fprintf(tw, "  %s\t%s\t\n", p.What, mib(p.Bytes))
		}
		fmt.Fprintf(tw, "  initramfs uncompressed\t%s\t\n", mib(res.Initramfs.Uncompressed))
		fmt.Fprintf(tw, "  modules carried\t%d\t\n", len(res.Initramfs.Modules))
		big, err := biggestModules(res, 5)
		if err != nil {
			return err
		}
		for _, m := range big {
			fmt.Fprintf(tw, "    %s\t%s\t\n", m.name, mib(m.size))
		}
	}
	return tw.Flush()
}

type modSize struct {
	name string
	size int64
}

func biggestModules(res *image.Result, n int) ([]modSize, error) {
	ix, err := kmod.Scan(res.Kernel.ModulesDir)
	if err != nil {
		return nil, err
	}
	var out []modSize
	for _, name := range res.Initramfs.Modules {
		m, _ := ix.Module(name)
		st, err := os.Stat(filepath.Join(res.Kernel.ModulesDir, m.File))
		if err != nil {
			return nil, err
		}
		out = append(out, modSize{name, st.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].size > out[j].size })
	return out[:min(n, len(out))], nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
