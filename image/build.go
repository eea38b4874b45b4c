package image

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/update"
)

// Options say what to build.
type Options struct {
	Board string // x86_64 or rpi
	Out   string // the .img to write
	// Binary is a prebuilt static iofog-connector for the board's
	// architecture; empty builds ./cmd/iofog-connector from the source tree.
	Binary string
	// Config is the user's config file (connector.cue, connector.hcl or
	// iofog-connector.conf by extension); empty uses examples/connector.cue
	// from the source tree, or the original's default JSON settings.
	Config string
	// Validate checks a config before it goes into the image (name is the
	// file name on the boot partition). Nil skips the check.
	Validate func(name string, data []byte) error
	CacheDir string // empty: DefaultCacheDir
	// Epoch is the time stamped on every file; zero takes SOURCE_DATE_EPOCH,
	// or the current time when that is unset.
	Epoch time.Time
	// Compress also writes Out.xz (xz -T0); its checksum goes in Out.sha256.
	Compress bool
	// Cmdline replaces the board's kernel command line when not empty.
	Cmdline string
	// Version names the system in its update bundle ("dev" when empty).
	Version string
	// SignKey, when set, signs an update bundle written beside the image
	// (FILE.update.tar): the same system, for the other slot of a box
	// running an older one.
	SignKey ed25519.PrivateKey
	// AcceptKeys are the public keys the image's system takes update
	// bundles from (carried in its initramfs at update.KeysFile).
	AcceptKeys []update.PublicKey
	Progress   Progress
	Log        *slog.Logger
}

// Result describes what Build wrote.
type Result struct {
	Image     string
	XZ        string // empty unless Options.Compress
	SHA256    string // the .sha256 file
	Manifest  string // the .manifest.txt file: Debian packages and our inputs
	Bundle    string // the signed update bundle; empty without Options.SignKey
	Board     Board
	Kernel    Kernel
	Initramfs *Initramfs
	Parts     []Part // what takes the space on the boot partition
}

// Part is one component's share of the boot partition.
type Part struct {
	What  string // kernel, initramfs, firmware, dtbs, uki-stub, config
	Bytes int64
}

// Progress is told when a long step starts; nil is silent.
type Progress interface {
	Step(name string, n, total int)
}

// ConfigNames returns the file names a config may have on the boot
// partition, in the appliance's order of preference.
func ConfigNames() []string {
	return []string{"connector.cue", "connector.hcl", "iofog-connector.conf"}
}

// DefaultConfigJSON is the original Connector's default settings, used when
// the source tree has no example config.
const DefaultConfigJSON = `{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}` + "\n"

// ConfigName returns the boot-partition name for a config file, by extension.
func ConfigName(p string) (string, error) {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".cue":
		return "connector.cue", nil
	case ".hcl":
		return "connector.hcl", nil
	case ".json", ".conf":
		return "iofog-connector.conf", nil
	}
	return "", fmt.Errorf("config %s: unknown format; name it *.cue, *.hcl, or *.json/*.conf", p)
}

// Build builds one board's image.
func Build(ctx context.Context, o Options) (*Result, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := LookupBoard(o.Board)
	if err != nil {
		return nil, err
	}
	if o.Cmdline != "" {
		b.Cmdline = o.Cmdline
	}
	if o.Out == "" {
		return nil, errors.New("no output file given")
	}
	cacheDir := o.CacheDir
	if cacheDir == "" {
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	cache := Cache{Dir: cacheDir}
	epoch, err := epochOf(o.Epoch)
	if err != nil {
		return nil, err
	}
	steps := 5
	step := func(n int, name string) {
		log.Info(name, "board", b.Name)
		if o.Progress != nil {
			o.Progress.Step(name, n, steps)
		}
	}

	cfgName, cfgData, err := loadConfig(o.Config, o.Validate)
	if err != nil {
		return nil, err
	}
	k, err := cache.Kernel(b.DebArch)
	if err != nil {
		return nil, err
	}
	manifest, err := cache.Manifest()
	if err != nil {
		return nil, err
	}

	binary := o.Binary
	if binary == "" {
		step(1, "building iofog-connector for "+b.GOARCH)
		tmp, err := os.MkdirTemp("", "mkimage-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if binary, err = BuildBinary(ctx, b.GOARCH, tmp); err != nil {
			return nil, err
		}
	}

	step(2, "building the initramfs")
	initrd, err := BuildInitramfs(binary, k, b, File{Path: strings.TrimPrefix(update.KeysFile, "/"), Data: update.FormatKeyList(o.AcceptKeys)})
	if err != nil {
		return nil, err
	}
	kernel, err := os.ReadFile(k.Image)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel: %w", err)
	}

	step(3, "assembling the boot partition")
	// What the firmware loads, by the board's way of booting.
	var bootFiles []File
	var slotFiles []update.SourceFile // one slot's system: the update bundle's content
	parts := []Part{{"binary (in initramfs, uncompressed)", initrd.BinaryBytes}, {"modules (in initramfs, uncompressed)", initrd.ModuleBytes}}
	switch b.Boot {
	case BootUKI:
		stubPath, err := cache.UKIStub(b.DebArch)
		if err != nil {
			return nil, err
		}
		stub, err := os.ReadFile(stubPath)
		if err != nil {
			return nil, err
		}
		uki, err := BuildUKI(stub, []UKISection{
			{".osrel", []byte(osRelease(k))},
			{".cmdline", []byte(b.Cmdline + "\x00")},
			{".initrd", initrd.Data},
			{".linux", kernel},
		})
		if err != nil {
			return nil, err
		}
		// The fallback path and slot A start out the same system.
		bootFiles = append(bootFiles, File{Path: UKIPath, Data: uki}, File{Path: update.UKISlotPath(update.SlotA), Data: uki})
		slotFiles = append(slotFiles, update.SourceFile{Path: update.UKIFile, Data: uki})
		parts = append(parts, Part{"kernel", int64(len(kernel))}, Part{"initramfs (compressed)", int64(len(initrd.Data))}, Part{"uki stub", int64(len(stub))})
	case BootRaspi:
		fw, dtbs, err := raspiFiles(cache, k)
		if err != nil {
			return nil, err
		}
		var fwBytes, dtbBytes int64
		for _, f := range fw {
			fwBytes += int64(len(f.Data))
		}
		for _, f := range dtbs {
			dtbBytes += int64(len(f.Data))
		}
		// Firmware and command line are shared; kernel, initramfs and
		// device trees are slot A's (os_prefix in config.txt), and
		// tryboot.txt also names A until an update puts a trial there.
		bootFiles = append(bootFiles, fw...)
		slotFiles = append(slotFiles, update.SourceFile{Path: update.RaspiKernel, Data: kernel}, update.SourceFile{Path: update.RaspiInitrd, Data: initrd.Data})
		for _, d := range dtbs {
			slotFiles = append(slotFiles, update.SourceFile{Path: d.Path, Data: d.Data})
		}
		for _, f := range slotFiles {
			bootFiles = append(bootFiles, File{Path: update.RaspiSlotDir(update.SlotA) + "/" + f.Path, Data: f.Data})
		}
		bootFiles = append(bootFiles,
			File{Path: update.RaspiConfig, Data: update.RaspiConfigTxt(update.SlotA)},
			File{Path: update.RaspiTryboot, Data: update.RaspiConfigTxt(update.SlotA)},
			File{Path: "cmdline.txt", Data: []byte(b.Cmdline + "\n")},
		)
		parts = append(parts, Part{"kernel", int64(len(kernel))}, Part{"initramfs (compressed)", int64(len(initrd.Data))},
			Part{"firmware", fwBytes}, Part{"dtbs", dtbBytes})
	default:
		return nil, fmt.Errorf("board %s: unknown boot kind %d", b.Name, b.Boot)
	}
	parts = append(parts, Part{"config", int64(len(cfgData))})

	// Each partition's content, by its roles in the board's layout.
	contents := make([]*Contents, len(b.Layout.Partitions))
	for i, p := range b.Layout.Partitions {
		if p.FS != FAT32 {
			continue
		}
		c := &Contents{}
		if p.Roles&RoleBoot != 0 {
			c.Files = append(c.Files, bootFiles...)
		}
		if p.Roles&RoleConfig != 0 {
			// STATUS.txt is made here at its full size, so the appliance
			// only ever rewrites it in place: no FAT chain or directory
			// changes while it runs. tls/ is where a user puts their own
			// certificate.
			c.Files = append(c.Files, File{Path: cfgName, Data: cfgData}, File{Path: StatusFile, Data: StatusPlaceholder()})
			c.Dirs = append(c.Dirs, "tls")
		}
		contents[i] = c
	}
	if _, ok := b.Layout.Find(RoleConfig); !ok {
		return nil, fmt.Errorf("board %s: layout has no config partition", b.Name)
	}

	step(4, "writing "+o.Out)
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return nil, err
	}
	if err := WriteDisk(o.Out, b.DiskSize, b.Layout, contents, epoch); err != nil {
		return nil, err
	}
	res := &Result{Image: o.Out, Board: b, Kernel: k, Initramfs: initrd, Parts: parts}

	step(5, "checksums")
	if o.Compress {
		if res.XZ, err = compress(ctx, o.Out); err != nil {
			return nil, err
		}
	}
	if res.SHA256, err = writeSums(res.Image, res.XZ); err != nil {
		return nil, err
	}
	res.Manifest = o.Out + ".manifest.txt"
	binSum, err := fileSHA256(binary)
	if err != nil {
		return nil, err
	}
	m := fmt.Sprintf("%s# board %s, kernel %s\n# iofog-connector binary sha256 %s\n# initramfs sha256 %x\n# modules: %s\n",
		manifest, b.Name, k.ABI, binSum, sha256.Sum256(initrd.Data), strings.Join(initrd.Modules, " "))
	if err := os.WriteFile(res.Manifest, []byte(m), 0o644); err != nil {
		return nil, err
	}
	if o.SignKey != nil {
		if res.Bundle, err = writeBundle(o, b, epoch, slotFiles); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// UKIPath is where UEFI firmware looks for a bootloader on removable media,
// and where the x86 image's unified kernel image is.
const UKIPath = "EFI/BOOT/BOOTX64.EFI"

// Where slot A's kernel and initrd are on the Pi's boot partition, as
// the image is built.
const (
	RaspiKernel = "A/" + update.RaspiKernel
	RaspiInitrd = "A/" + update.RaspiInitrd
)

// RaspiConfigTxt is the Pi firmware's config.txt as the image is built:
// booting slot A.
func RaspiConfigTxt() string { return string(update.RaspiConfigTxt(update.SlotA)) }

// raspiFiles returns the Pi 3 and Pi 4 firmware and the device trees.
func raspiFiles(cache Cache, k Kernel) (fw, dtbs []File, err error) {
	fwDir, err := cache.RaspiFirmwareDir()
	if err != nil {
		return nil, nil, err
	}
	for _, name := range []string{"bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat"} {
		data, err := os.ReadFile(filepath.Join(fwDir, name))
		if err != nil {
			//lint:ignore ST1005 "Raspberry Pi" is a name and keeps its capitals at the start too
			return nil, nil, fmt.Errorf("Raspberry Pi firmware: %w", err)
		}
		fw = append(fw, File{Path: name, Data: data})
	}
	dtbDir, err := cache.DTBDir(k)
	if err != nil {
		return nil, nil, err
	}
	entries, err := os.ReadDir(dtbDir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".dtb") || !strings.Contains(e.Name(), "-rpi-") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dtbDir, e.Name()))
		if err != nil {
			return nil, nil, err
		}
		dtbs = append(dtbs, File{Path: e.Name(), Data: data})
	}
	if len(dtbs) == 0 {
		return nil, nil, fmt.Errorf("no Raspberry Pi device trees in %s", dtbDir)
	}
	return fw, dtbs, nil
}

func osRelease(k Kernel) string {
	return "NAME=\"iofog-connector appliance\"\nID=iofog-connector\nPRETTY_NAME=\"iofog-connector (Linux " + k.ABI + ")\"\n"
}

// loadConfig returns the config's boot-partition name and content.
func loadConfig(p string, validate func(string, []byte) error) (string, []byte, error) {
	name, data := "iofog-connector.conf", []byte(DefaultConfigJSON)
	if p == "" {
		if root, err := RepoRoot(); err == nil {
			ex := filepath.Join(root, "examples", "connector.cue")
			if b, err := os.ReadFile(ex); err == nil {
				p, name, data = ex, "connector.cue", b
			} else if !errors.Is(err, fs.ErrNotExist) {
				return "", nil, err
			}
		}
	} else {
		var err error
		if name, err = ConfigName(p); err != nil {
			return "", nil, err
		}
		if data, err = os.ReadFile(p); err != nil {
			return "", nil, fmt.Errorf("reading config: %w", err)
		}
	}
	if validate != nil {
		if err := validate(name, data); err != nil {
			where := p
			if where == "" {
				where = "built-in default config"
			}
			return "", nil, fmt.Errorf("config %s is not valid, image not built: %w", where, err)
		}
	}
	return name, data, nil
}

func epochOf(t time.Time) (time.Time, error) {
	if !t.IsZero() {
		return t.UTC(), nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Now().UTC(), nil
}

// BuildBinary builds a static iofog-connector for goarch into dir, as the
// image wants it: no cgo, no paths or build IDs in it.
func BuildBinary(ctx context.Context, goarch, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("building iofog-connector needs the source tree (or pass a prebuilt binary): %w", err)
	}
	out := filepath.Join(dir, "iofog-connector-"+goarch)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=",
		"-o", out, "./cmd/iofog-connector")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/iofog-connector for linux/%s: %w\n%s", goarch, err, stderr.String())
	}
	return out, nil
}

func fileSHA256(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// compress writes img.xz beside img.
func compress(ctx context.Context, img string) (string, error) {
	cmd := exec.CommandContext(ctx, "xz", "-T0", "-6", "-k", "-f", img)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compressing %s with xz (apt-get install xz-utils): %w: %s", img, err, out)
	}
	return img + ".xz", nil
}

// writeSums writes img.sha256 in sha256sum's format, naming the files
// without a directory, so `sha256sum -c` works from the directory they are in.
func writeSums(img, xz string) (string, error) {
	var lines strings.Builder
	for _, p := range []string{img, xz} {
		if p == "" {
			continue
		}
		sum, err := fileSHA256(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&lines, "%s  %s\n", sum, filepath.Base(p))
	}
	return img + ".sha256", os.WriteFile(img+".sha256", []byte(lines.String()), 0o644)
}

// StatusFile is the report the appliance keeps on the config partition.
const StatusFile = "STATUS.txt"

// StatusSize is STATUS.txt's fixed size: the appliance rewrites it in
// place, padded, and never grows it.
const StatusSize = status.FileSize

// StatusPlaceholder is STATUS.txt as the image build makes it.
func StatusPlaceholder() []byte {
	text := "ioFog Connector appliance\n=========================\nNot booted yet. The appliance rewrites this file at every boot.\n"
	return status.Pad([]byte(text), StatusSize)
}

// BundlePath is where the update bundle of the image at img goes.
func BundlePath(img string) string { return strings.TrimSuffix(img, ".img") + ".update.tar" }

// writeBundle writes the signed update bundle of one slot's system beside
// the image, through a temporary file so a failed build leaves no half.
func writeBundle(o Options, b Board, epoch time.Time, files []update.SourceFile) (string, error) {
	p := BundlePath(o.Out)
	version := o.Version
	if version == "" {
		version = "dev"
	}
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	if _, err := update.Write(f, o.SignKey, version, b.Name, epoch, files); err != nil {
		f.Close()
		return "", fmt.Errorf("writing the update bundle: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}
