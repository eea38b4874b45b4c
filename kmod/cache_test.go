package kmod

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
)

// cachedModules returns the module directory of the fetched Debian kernel for
// arch. Missing cache fails the test (run make fetch) unless IOFOG_SKIP_QEMU=1,
// the switch for everything that needs the fetched kernels.
func cachedModules(t *testing.T, arch string) *Index {
	t.Helper()
	cache := os.Getenv("IOFOG_CACHE")
	if cache == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(filepath.Dir(wd), ".cache") // kmod/ sits at the repo root
	}
	abi, err := os.ReadFile(filepath.Join(cache, arch, "kernel.abi"))
	if err != nil {
		testenv.Missing(t, testenv.SkipQEMU, fmt.Sprintf("no fetched %s kernel in %s: run make fetch: %v", arch, cache, err))
	}
	ix, err := Scan(filepath.Join(cache, arch, "lib", "modules", strings.TrimSpace(string(abi))))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestDebianKernelNftablesOrder(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			ix := cachedModules(t, arch)
			// The firewall's expressions, as the kernel requests them.
			order, err := ix.Closure("nft-expr-ct", "nft-expr-limit", "nft-chain-2-nat", "nft-expr-masq", "nf_tables")
			if err != nil {
				t.Fatal(err)
			}
			// Without crc32c first, nf_tables fails to load (libcrc32c's softdep).
			for _, p := range [][2]string{
				{"crc32c_generic", "libcrc32c"}, {"libcrc32c", "nf_tables"}, {"nfnetlink", "nf_tables"},
				{"nf_tables", "nft_ct"}, {"nf_conntrack", "nft_ct"}, {"nf_nat", "nft_chain_nat"}, {"nf_tables", "nft_masq"},
			} {
				if !before(order, p[0], p[1]) {
					t.Errorf("%s load order %v: want %s before %s", arch, order, p[0], p[1])
				}
			}
			if slices.Contains(order, "crc32c_intel") != (arch == "amd64") {
				t.Errorf("%s: crc32c alias resolved to %v; crc32c_intel belongs on amd64 only", arch, order)
			}
		})
	}
}

func TestDebianKernelAliases(t *testing.T) {
	ix := cachedModules(t, "amd64")
	cases := map[string]string{
		// QEMU's devices, as /sys shows them.
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": "virtio_pci",
		"virtio:d00000001v00001AF4":                             "virtio_net",
		"virtio:d00000002v00001AF4":                             "virtio_blk",
		"virtio:d00000004v00001AF4":                             "virtio_rng",
		"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00": "e1000e",
		"fs-vfat": "vfat",
	}
	for alias, want := range cases {
		if got := ix.MatchAlias(alias); !slices.Contains(got, want) {
			t.Errorf("MatchAlias(%q) = %v; want it to include %s", alias, got, want)
		}
	}
	arm := cachedModules(t, "arm64")
	for alias, want := range map[string]string{
		"platform:bcm2835-wdt":                              "bcm2835_wdt", // created by the PM driver, not the DT
		"of:NmmcT(null)Cbrcm,bcm2835-sdhci":                 "sdhci_iproc",
		"usb:v0424pEC00d0200dcFFdsc00dpFFicFFisc00ipFFin00": "smsc95xx",
	} {
		if got := arm.MatchAlias(alias); !slices.Contains(got, want) {
			t.Errorf("arm64 MatchAlias(%q) = %v; want it to include %s", alias, got, want)
		}
	}
}
