package update

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testBundle(t testing.TB, key ed25519.PrivateKey, board string, files []SourceFile) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Write(&b, key, "v2.0.0", board, time.Unix(1700000000, 0), files); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var someFiles = []SourceFile{{Path: "linux.efi", Data: bytes.Repeat([]byte("kernel"), 5000)}, {Path: "dtbs/a.dtb", Data: []byte("tree")}}

func TestBundleRoundTrip(t *testing.T) {
	key := testKey(t)
	data := testBundle(t, key, "x86_64", someFiles)
	m, err := Verify(bytes.NewReader(data), []PublicKey{Public(testKey(t)), Public(key)}, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "v2.0.0" || m.Board != "x86_64" || len(m.Files) != 2 || m.Total() != int64(len(someFiles[0].Data)+4) {
		t.Fatalf("manifest %+v", m)
	}
	r, err := NewReader(bytes.NewReader(data), []PublicKey{Public(key)}, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		f, fr, err := r.Next()
		if err == io.EOF {
			if i != 2 {
				t.Fatalf("%d files", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(fr)
		if err != nil {
			t.Fatal(err)
		}
		if f.Path != someFiles[i].Path || !bytes.Equal(got, someFiles[i].Data) {
			t.Fatalf("file %d: %s, %d bytes", i, f.Path, len(got))
		}
	}
}

// Every way a bundle can be wrong is refused with a Refusal that says why,
// before any file's content is handed out when the manifest is at fault.
func TestBundleRefused(t *testing.T) {
	key, other := testKey(t), testKey(t)
	good := testBundle(t, key, "x86_64", someFiles)
	keys := []PublicKey{Public(key)}

	// Flip one byte inside the first file's content (after the two
	// header+manifest+signature records).
	corrupt := bytes.Clone(good)
	idx := bytes.Index(corrupt, []byte("kernelkernel"))
	corrupt[idx] ^= 1

	// A bundle whose manifest lists a file that is not there.
	var missing bytes.Buffer
	mw := newTarWriter(&missing)
	mw.put(t, ManifestName, mustManifest(t, good))
	mw.put(t, SignatureName, extractSig(t, good))
	mw.put(t, someFiles[0].Path, someFiles[0].Data)
	mw.close(t)

	cases := []struct {
		name  string
		data  []byte
		keys  []PublicKey
		board string
		want  string
	}{
		{"wrong key", good, []PublicKey{Public(other)}, "x86_64", "does not match any"},
		{"no keys", good, nil, "x86_64", "no update keys"},
		{"other board", good, keys, "rpi", `for board "x86_64", this is "rpi"`},
		{"truncated in the manifest", good[:700], keys, "x86_64", "truncated"},
		{"truncated in a file", good[:len(good)/2], keys, "x86_64", "truncated"},
		{"truncated before the end marker", good[:len(good)-1024-512], keys, "x86_64", ""},
		{"end marker cut off", good[:len(good)-1024], keys, "x86_64", "end-of-archive"},
		{"half the end marker", good[:len(good)-512], keys, "x86_64", "end-of-archive"},
		{"corrupt file", corrupt, keys, "x86_64", "sha256"},
		{"empty", nil, keys, "x86_64", "truncated, or not a bundle"},
		{"not a tar", []byte(strings.Repeat("garbage ", 200)), keys, "x86_64", "not a bundle"},
		{"unsigned", unsigned(t, good), keys, "x86_64", "want manifest.sig next"},
		{"file missing", missing.Bytes(), keys, "x86_64", "ends before dtbs/a.dtb"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(c.data), c.keys, c.board)
			if err == nil {
				t.Fatal("accepted")
			}
			if !IsRefusal(err) {
				t.Fatalf("not a refusal: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// unsigned rebuilds a bundle without its signature entry.
func unsigned(t *testing.T, good []byte) []byte {
	t.Helper()
	r, err := NewReader(bytes.NewReader(good), nil, "")
	if err == nil || r != nil {
		t.Fatal("reader without keys")
	}
	// Re-encode the manifest and files with no manifest.sig.
	var b bytes.Buffer
	tw := newTarWriter(&b)
	m := mustManifest(t, good)
	tw.put(t, ManifestName, m)
	for _, f := range someFiles {
		tw.put(t, f.Path, f.Data)
	}
	tw.close(t)
	return b.Bytes()
}

// A changed manifest (another version, the same files) no longer matches
// its signature.
func TestManifestTampered(t *testing.T) {
	key := testKey(t)
	good := testBundle(t, key, "x86_64", someFiles)
	m := mustManifest(t, good)
	var parsed Manifest
	if err := json.Unmarshal(m, &parsed); err != nil {
		t.Fatal(err)
	}
	parsed.Board = "rpi"
	m2, _ := json.Marshal(parsed)
	sig := extractSig(t, good)
	var b bytes.Buffer
	tw := newTarWriter(&b)
	tw.put(t, ManifestName, m2)
	tw.put(t, SignatureName, sig)
	for _, f := range someFiles {
		tw.put(t, f.Path, f.Data)
	}
	tw.close(t)
	_, err := Verify(&b, []PublicKey{Public(key)}, "rpi")
	if err == nil || !strings.Contains(err.Error(), "signature does not match") {
		t.Fatalf("tampered manifest: %v", err)
	}
}

func TestManifestRules(t *testing.T) {
	base := func() Manifest {
		return Manifest{Format: Format, Version: "v1", Board: "x86_64",
			Files: []FileSum{{Path: "a.efi", Size: 1, SHA256: strings.Repeat("ab", 32)}}}
	}
	bad := map[string]func(*Manifest){
		"format":       func(m *Manifest) { m.Format = "other/1" },
		"no version":   func(m *Manifest) { m.Version = "" },
		"multi-line":   func(m *Manifest) { m.Version = "v1\nv2" },
		"no files":     func(m *Manifest) { m.Files = nil },
		"dotdot":       func(m *Manifest) { m.Files[0].Path = "../x" },
		"absolute":     func(m *Manifest) { m.Files[0].Path = "/x" },
		"unclean":      func(m *Manifest) { m.Files[0].Path = "a//b" },
		"odd char":     func(m *Manifest) { m.Files[0].Path = "a b" },
		"negative":     func(m *Manifest) { m.Files[0].Size = -1 },
		"too big":      func(m *Manifest) { m.Files[0].Size = MaxFileSize + 1 },
		"short hash":   func(m *Manifest) { m.Files[0].SHA256 = "abcd" },
		"upper hash":   func(m *Manifest) { m.Files[0].SHA256 = strings.Repeat("AB", 32) },
		"twice (case)": func(m *Manifest) { m.Files = append(m.Files, FileSum{Path: "A.EFI", SHA256: strings.Repeat("ab", 32)}) },
	}
	m := base()
	data, _ := json.Marshal(m)
	if _, err := ParseManifest(data); err != nil {
		t.Fatalf("base manifest: %v", err)
	}
	for name, change := range bad {
		m := base()
		change(&m)
		data, _ := json.Marshal(m)
		if _, err := ParseManifest(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseManifest([]byte(`{"format":"` + Format + `","extra":1}`)); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "update.key")
	k, err := GenerateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKey(p); err == nil {
		t.Fatal("GenerateKey overwrote a key")
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	k2, err := LoadSigningKey(p)
	if err != nil || !k.Equal(k2) {
		t.Fatalf("reloaded key: %v", err)
	}
	pubs, err := os.ReadFile(p + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	list, err := ParseKeyList("update.key.pub", pubs)
	if err != nil || len(list) != 1 || !bytes.Equal(list[0], Public(k)) {
		t.Fatalf("public key list %v: %v", list, err)
	}
	one, err := ParsePublicKey(Public(k).String())
	if err != nil || !bytes.Equal(one, Public(k)) {
		t.Fatalf("one-line key: %v", err)
	}
	_, err = ParseKeyList("keys.pub", []byte("# c\n\ned25519:AAAA\n"))
	if err == nil || !strings.Contains(err.Error(), "keys.pub:3:") {
		t.Fatalf("bad key list error %v does not name the line", err)
	}
	if _, err := ParsePublicKey("rsa:AAAA"); err == nil {
		t.Fatal("accepted a non-ed25519 key")
	}
}
