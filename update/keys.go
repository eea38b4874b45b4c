// Package update is the appliance's in-place update: signed bundles (a
// system for one slot), the A/B slot layout of each board, and the
// trial-boot state machine that commits a new system only once it has
// proved healthy and otherwise leaves the firmware to boot the old one.
//
// mkimage signs bundles; the appliance verifies and applies them. Nothing
// here touches the data partition's state beyond the update record.
package update

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeyPrefix starts a public key written on one line, as the config's
// update.keys and the image's key list take it: "ed25519:" and the raw
// 32-byte key in standard base64.
const KeyPrefix = "ed25519:"

// KeysFile is where the image's initramfs carries the public keys the
// system accepts bundles from, one per line.
const KeysFile = "/etc/iofog-connector/update-keys.pub"

// PublicKey is a key bundles may be signed with.
type PublicKey ed25519.PublicKey

// String is the one-line form, "ed25519:BASE64".
func (k PublicKey) String() string { return KeyPrefix + base64.StdEncoding.EncodeToString(k) }

// ID is a short fingerprint for messages: the first 8 bytes of the key's
// sha256, in hex.
func (k PublicKey) ID() string {
	s := sha256.Sum256(k)
	return hex.EncodeToString(s[:8])
}

// ParsePublicKey reads the one-line form "ed25519:BASE64" or a PEM
// "PUBLIC KEY" block (as `openssl pkey -pubout` writes it).
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, KeyPrefix); ok {
		b, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, fmt.Errorf("update key %q: not base64 after %q: %w", short(s), KeyPrefix, err)
		}
		if len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("update key %q: %d bytes, an ed25519 public key has %d", short(s), len(b), ed25519.PublicKeySize)
		}
		return PublicKey(b), nil
	}
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("update key: PEM block %q: %w", blk.Type, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("update key: a %T, not an ed25519 key", k)
		}
		return PublicKey(ek), nil
	}
	return nil, fmt.Errorf("update key %q: want %q followed by base64, or a PEM PUBLIC KEY", short(s), KeyPrefix)
}

// ParseKeyList reads one key per line ("ed25519:BASE64"); blank lines and
// lines starting with # are skipped. name is used in errors.
func ParseKeyList(name string, data []byte) ([]PublicKey, error) {
	var keys []PublicKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParsePublicKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return keys, nil
}

// FormatKeyList writes keys in ParseKeyList's format.
func FormatKeyList(keys []PublicKey) []byte {
	var b bytes.Buffer
	b.WriteString("# Public keys this system accepts update bundles from (ed25519).\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s\n", k)
	}
	return b.Bytes()
}

// LoadSigningKey reads an ed25519 private key from a PEM file ("PRIVATE
// KEY", PKCS #8, as `openssl genpkey -algorithm ed25519` and GenerateKey
// write it).
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the signing key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block (want an ed25519 PRIVATE KEY, e.g. from openssl genpkey -algorithm ed25519)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, not an ed25519 key", path, k)
	}
	return ek, nil
}

// GenerateKey makes a new signing key and writes it to path (mode 0600,
// refusing to overwrite), with the public key beside it in path.pub.
func GenerateKey(path string) (ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing the new signing key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path+".pub", FormatKeyList([]PublicKey{PublicKey(pub)}), 0o644); err != nil {
		return nil, err
	}
	return priv, nil
}

// Public returns a signing key's public half.
func Public(k ed25519.PrivateKey) PublicKey { return PublicKey(k.Public().(ed25519.PublicKey)) }

var errNoKeys = errors.New("no update keys: this system accepts no bundles (the image carries none and the config adds none)")

func short(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}
