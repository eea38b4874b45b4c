// Command mkpkg builds the .deb and .rpm packages for amd64 and arm64 from the
// binaries `make build` left in OUT/linux-ARCH/iofog-connector.
//
//	go run ./cmd/mkpkg -out out -version v1.2.3
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/packaging"
)

func main() {
	out := flag.String("out", "out", "directory holding linux-ARCH/iofog-connector; packages are written here")
	version := flag.String("version", "", "version, as `git describe --tags --always --dirty` prints it (required)")
	flag.Parse()
	if err := run(*out, *version); err != nil {
		fmt.Fprintf(os.Stderr, "mkpkg: %v\n", err)
		os.Exit(1)
	}
}

func run(out, rawVersion string) error {
	if rawVersion == "" {
		return fmt.Errorf("-version is required")
	}
	version, err := packaging.Version(rawVersion)
	if err != nil {
		return fmt.Errorf("version %q: %w", rawVersion, err)
	}
	mtime, err := sourceDate()
	if err != nil {
		return err
	}
	for _, arch := range packaging.Arches() {
		opt := packaging.Options{
			Version: version,
			Arch:    arch,
			Binary:  filepath.Join(out, "linux-"+arch, "iofog-connector"),
			MTime:   mtime,
		}
		for _, f := range packaging.Formats() {
			var buf bytes.Buffer
			if err := packaging.Build(f, opt, &buf); err != nil {
				return err
			}
			path := filepath.Join(out, packaging.FileName(f, opt))
			if err := atomicfile.Write(path, buf.Bytes(), 0o644, atomicfile.Options{}); err != nil {
				return err
			}
			fmt.Printf("%s\t%d bytes\n", path, buf.Len())
		}
	}
	return nil
}

// sourceDate stamps files with $SOURCE_DATE_EPOCH when set, so rebuilding a
// commit gives the same packages; otherwise with the time of the build.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}
