package update

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"time"
)

// A bundle is an uncompressed tar stream:
//
//	manifest.json   Manifest, as JSON
//	manifest.sig    the ed25519 signature of manifest.json's exact bytes (64 bytes)
//	FILE...         each file the manifest lists, in its order
//
// The signature covers the manifest, and the manifest the sha256 of each
// file, so one check of the signature and each file's hash covers it all.
// Uncompressed, because the kernel and initramfs inside already are.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.sig"
	// Format names this layout in the manifest; a bundle of another
	// format is refused rather than guessed at.
	Format = "iofog-connector-update/1"
)

// Limits on what a bundle may hold: a stranger's upload must not make the
// appliance read or keep more than this.
const (
	MaxManifest = 64 << 10
	MaxFiles    = 64
	MaxFileSize = 256 << 20
	MaxTotal    = 512 << 20
)

// Manifest describes a bundle: the system it carries and its files.
type Manifest struct {
	Format  string    `json:"format"`
	Version string    `json:"version"`
	Board   string    `json:"board"`
	Created time.Time `json:"created"`
	Files   []FileSum `json:"files"`
}

// FileSum is one file of a slot.
type FileSum struct {
	Path   string `json:"path"` // slash-separated, relative to the slot
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Total is the sum of the files' sizes.
func (m *Manifest) Total() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// ParseManifest decodes and checks a manifest: known format, a version
// and board, file paths that stay inside the slot, sizes and hashes well
// formed, within the limits.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifest {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", ManifestName, len(data), MaxManifest)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the JSON object", ManifestName)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%s: format %q, this system reads %q", ManifestName, m.Format, Format)
	}
	if m.Version == "" || len(m.Version) > 128 || strings.ContainsAny(m.Version, "\n\r\x00") {
		return nil, fmt.Errorf("%s: field version: empty, longer than 128 bytes, or not one line", ManifestName)
	}
	if m.Board == "" {
		return nil, fmt.Errorf("%s: field board: empty", ManifestName)
	}
	if len(m.Files) == 0 || len(m.Files) > MaxFiles {
		return nil, fmt.Errorf("%s: field files: %d files, want 1 to %d", ManifestName, len(m.Files), MaxFiles)
	}
	seen := map[string]bool{}
	var total int64
	for i, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return nil, fmt.Errorf("%s: files[%d].path: %w", ManifestName, i, err)
		}
		if seen[strings.ToLower(f.Path)] { // FAT is case-insensitive
			return nil, fmt.Errorf("%s: files[%d].path: %q listed twice", ManifestName, i, f.Path)
		}
		seen[strings.ToLower(f.Path)] = true
		if f.Size < 0 || f.Size > MaxFileSize {
			return nil, fmt.Errorf("%s: files[%d].size: %d, want 0 to %d", ManifestName, i, f.Size, MaxFileSize)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size || f.SHA256 != strings.ToLower(f.SHA256) {
			return nil, fmt.Errorf("%s: files[%d].sha256: want 64 lower-case hex digits", ManifestName, i)
		}
		total += f.Size
	}
	if total > MaxTotal {
		return nil, fmt.Errorf("%s: files add up to %d bytes, more than the %d allowed", ManifestName, total, MaxTotal)
	}
	return &m, nil
}

// checkPath accepts slot-relative paths of short, portable names: they end
// up on a FAT partition.
func checkPath(p string) error {
	if p == "" || len(p) > 128 {
		return fmt.Errorf("%q: empty or longer than 128 bytes", p)
	}
	if path.Clean(p) != p || strings.HasPrefix(p, "/") || p == "." || strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("%q: not a clean relative path", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." {
			return fmt.Errorf("%q: not a clean relative path", p)
		}
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return fmt.Errorf("%q: only letters, digits, '.', '_', '-' and '/' are allowed", p)
		}
	}
	return nil
}

// SourceFile is one file to put in a bundle.
type SourceFile struct {
	Path string
	Data []byte
}

// Write writes a signed bundle of files for board to w.
func Write(w io.Writer, key ed25519.PrivateKey, version, board string, created time.Time, files []SourceFile) (*Manifest, error) {
	m := &Manifest{Format: Format, Version: version, Board: board, Created: created.UTC()}
	for _, f := range files {
		sum := sha256.Sum256(f.Data)
		m.Files = append(m.Files, FileSum{Path: f.Path, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:])})
	}
	mdata, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	mdata = append(mdata, '\n')
	if _, err := ParseManifest(mdata); err != nil {
		return nil, fmt.Errorf("the bundle would be refused: %w", err)
	}
	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(ManifestName, mdata); err != nil {
		return nil, err
	}
	if err := put(SignatureName, ed25519.Sign(key, mdata)); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := put(f.Path, f.Data); err != nil {
			return nil, err
		}
	}
	return m, tw.Close()
}

// Refusal is why a bundle was not accepted. Nothing was written when it
// is returned.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return "update bundle refused: " + r.Reason }

func refuse(format string, args ...any) error {
	return &Refusal{Reason: fmt.Sprintf(format, args...)}
}

// IsRefusal reports whether err says a bundle was not accepted.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// Reader reads a bundle: the manifest first, checked against the keys
// and the board, then each file with its hash checked as it is read.
type Reader struct {
	tr       *tar.Reader
	src      *counter
	end      int64 // where the last file's data ended in the stream
	Manifest *Manifest
	Signer   PublicKey
	next     int
}

// NewReader reads and checks the manifest and its signature: a bundle for
// another board, unsigned, or signed by a key not in keys is refused here,
// before any file is read.
func NewReader(r io.Reader, keys []PublicKey, board string) (*Reader, error) {
	if len(keys) == 0 {
		return nil, &Refusal{Reason: errNoKeys.Error()}
	}
	src := &counter{r: r}
	tr := tar.NewReader(src)
	mdata, err := readEntry(tr, ManifestName, MaxManifest)
	if err != nil {
		return nil, err
	}
	sig, err := readEntry(tr, SignatureName, ed25519.SignatureSize)
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, refuse("%s: %d bytes, an ed25519 signature has %d", SignatureName, len(sig), ed25519.SignatureSize)
	}
	var signer PublicKey
	for _, k := range keys {
		if ed25519.Verify(ed25519.PublicKey(k), mdata, sig) {
			signer = k
			break
		}
	}
	if signer == nil {
		return nil, refuse("signature does not match any of the %d accepted update keys (sign with a key the image carries, or add its public key to update.keys in the config)", len(keys))
	}
	m, err := ParseManifest(mdata)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if m.Board != board {
		return nil, refuse("bundle is for board %q, this is %q", m.Board, board)
	}
	return &Reader{tr: tr, src: src, Manifest: m, Signer: signer}, nil
}

// readEntry reads the next tar entry, which must be a regular file called
// name of at most max bytes.
func readEntry(tr *tar.Reader, name string, max int64) ([]byte, error) {
	hdr, err := tr.Next()
	if err == io.EOF {
		return nil, refuse("ends before %s (truncated, or not a bundle)", name)
	}
	if err != nil {
		return nil, refuse("reading %s: %v (truncated, or not a bundle)", name, err)
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg {
		return nil, refuse("want %s next, found %q (not a bundle?)", name, hdr.Name)
	}
	if hdr.Size > max {
		return nil, refuse("%s: %d bytes, at most %d allowed", name, hdr.Size, max)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, refuse("reading %s: %v (truncated?)", name, err)
	}
	return b, nil
}

// Next returns the next file and a reader of its content, which fails at
// its end if the content does not match the manifest's hash. It returns
// io.EOF after the last file, having checked nothing follows.
func (r *Reader) Next() (FileSum, io.Reader, error) {
	if r.next == len(r.Manifest.Files) {
		if _, err := r.tr.Next(); err != io.EOF {
			return FileSum{}, nil, refuse("data after the last file the manifest lists")
		}
		// archive/tar takes a stream that stops where the end marker
		// (two zero blocks) should start as complete; a bundle must
		// have it, so a cut-off upload is never taken for whole.
		if r.src.n < (r.end+511)/512*512+1024 {
			return FileSum{}, nil, refuse("ends without the end-of-archive marker (truncated)")
		}
		return FileSum{}, nil, io.EOF
	}
	want := r.Manifest.Files[r.next]
	r.next++
	hdr, err := r.tr.Next()
	if err == io.EOF {
		return want, nil, refuse("ends before %s (truncated)", want.Path)
	}
	if err != nil {
		return want, nil, refuse("reading %s: %v (truncated?)", want.Path, err)
	}
	if hdr.Name != want.Path || hdr.Typeflag != tar.TypeReg {
		return want, nil, refuse("want %s next, found %q", want.Path, hdr.Name)
	}
	if hdr.Size != want.Size {
		return want, nil, refuse("%s: %d bytes, the manifest says %d", want.Path, hdr.Size, want.Size)
	}
	return want, &hashReader{r: r.tr, h: sha256.New(), want: want, done: func() { r.end = r.src.n }}, nil
}

type hashReader struct {
	r    io.Reader
	h    hash.Hash
	want FileSum
	n    int64
	done func()
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if err == io.EOF {
		if h.n != h.want.Size {
			return n, refuse("%s: %d bytes, the manifest says %d (truncated)", h.want.Path, h.n, h.want.Size)
		}
		if got := hex.EncodeToString(h.h.Sum(nil)); got != h.want.SHA256 {
			return n, refuse("%s: sha256 %s, the manifest says %s", h.want.Path, got, h.want.SHA256)
		}
		h.done()
	} else if err != nil {
		return n, refuse("reading %s: %v (truncated?)", h.want.Path, err)
	}
	return n, err
}

// Verify reads a whole bundle and checks everything: signature, board,
// every file's size and hash, nothing missing or extra. It writes nothing;
// the appliance runs it over the stored upload before touching a slot.
func Verify(r io.Reader, keys []PublicKey, board string) (*Manifest, error) {
	br, err := NewReader(r, keys, board)
	if err != nil {
		return nil, err
	}
	for {
		_, fr, err := br.Next()
		if err == io.EOF {
			return br.Manifest, nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, fr); err != nil {
			return nil, err
		}
	}
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
