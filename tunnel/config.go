// Package tunnel is the agent side of the Connector: a drop-in for the ioFog
// agents' network container. It keeps authenticated connections to a
// Connector mapping (a pool for a public mapping, one route for a private
// one), sends heartbeats, reconnects after silence, and carries the payload
// to the local microservice, to a local port, or, when it runs beside an
// ioFog agent, to and from the agent's message websocket as IoMessages.
package tunnel

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

// Config is the JSON the Controller writes for an agent's network container
// (PROTOCOL.md §5).
type Config struct {
	Mode                      string `json:"mode"`
	Host                      string `json:"host"`
	Port                      int    `json:"port"`
	Passcode                  string `json:"passcode"`
	ConnectionCount           int    `json:"connectioncount"`
	LocalHost                 string `json:"localhost"`
	LocalPort                 int    `json:"localport"`
	HeartbeatFrequency        int    `json:"heartbeatfrequency"`        // milliseconds
	HeartbeatAbsenceThreshold int    `json:"heartbeatabsencethreshold"` // milliseconds
	DevMode                   bool   `json:"devmode"`
	// Cert is the Connector's certificate: PEM, or the base64 body without
	// its BEGIN/END lines as the Controller sends it. It is the only trusted
	// root when DevMode is false.
	Cert string `json:"cert,omitempty"`
}

// Defaults the Controller writes; used when a config leaves them at 0.
const (
	DefaultHeartbeatFrequency = 20 * time.Second
	DefaultAbsenceThreshold   = 60 * time.Second
	// MaxConnectionCount bounds the pool one config can ask for, so a bad
	// config cannot make the tunnel open an unbounded number of sockets.
	MaxConnectionCount = 1024
	// maxConfigSize bounds what is read from a config file or the agent.
	maxConfigSize = 1 << 20
)

// ParseConfig decodes and checks a config. name (a file name, or where the
// config came from) and the line of the offending field are in every error.
func ParseConfig(name string, data []byte) (Config, error) {
	if len(data) > maxConfigSize {
		return Config{}, fmt.Errorf("%s: config is %d bytes, more than the %d allowed", name, len(data), maxConfigSize)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return Config{}, fmt.Errorf("%s:%d: field %s: %s is not a JSON %s", name, lineAt(data, te.Offset), te.Field, te.Value, te.Type)
		case errors.As(err, &se):
			return Config{}, fmt.Errorf("%s:%d: not valid JSON: %v", name, lineAt(data, se.Offset), se)
		default:
			return Config{}, fmt.Errorf("%s: not a JSON object: %v", name, err)
		}
	}
	if dec.More() {
		return Config{}, fmt.Errorf("%s:%d: text after the JSON object", name, lineAt(data, dec.InputOffset()))
	}
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return Config{}, fmt.Errorf("%s:%d: %w", name, fieldLine(data, fe.Field), err)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// FieldError names the config field that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "field " + e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate reports the first field that makes the config unusable.
func (c Config) Validate() error {
	switch {
	case c.Mode != "public" && c.Mode != "private":
		return fieldErr("mode", "%q is neither \"public\" nor \"private\"", c.Mode)
	case c.Host == "":
		return fieldErr("host", "empty; give the Connector's address, or \"auto\" to find one on the LAN")
	case c.Port <= 0 || c.Port > 65535:
		return fieldErr("port", "%d is not a TCP port", c.Port)
	case len(c.Passcode) != wire.PasscodeLen:
		return fieldErr("passcode", "%d characters, want %d", len(c.Passcode), wire.PasscodeLen)
	case c.ConnectionCount < 0 || c.ConnectionCount > MaxConnectionCount:
		return fieldErr("connectioncount", "%d is not between 0 and %d", c.ConnectionCount, MaxConnectionCount)
	case c.LocalPort < 0 || c.LocalPort > 65535:
		return fieldErr("localport", "%d is not a TCP port", c.LocalPort)
	case c.Mode == "public" && c.LocalPort == 0:
		return fieldErr("localport", "a public mapping needs the microservice's port")
	case c.HeartbeatFrequency < 0:
		return fieldErr("heartbeatfrequency", "%d is negative", c.HeartbeatFrequency)
	case c.HeartbeatAbsenceThreshold < 0:
		return fieldErr("heartbeatabsencethreshold", "%d is negative", c.HeartbeatAbsenceThreshold)
	case !c.DevMode && strings.TrimSpace(c.Cert) == "":
		return fieldErr("cert", "required when devmode is false")
	}
	if !c.DevMode {
		if _, err := parseCert(c.Cert); err != nil {
			return fieldErr("cert", "%v", err)
		}
	}
	return nil
}

// lineAt is the 1-based line of a byte offset.
func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	return 1 + bytes.Count(data[:off], []byte("\n"))
}

// fieldLine is the line of a top-level key, or 1 when it is absent (the
// error is then about the object as a whole).
func fieldLine(data []byte, field string) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 1
	}
	for dec.More() {
		off := dec.InputOffset()
		t, err := dec.Token()
		if err != nil {
			return 1
		}
		if k, ok := t.(string); ok && k == field {
			// The key itself starts after the comma/space that precede it.
			return lineAt(data, off+int64(bytes.IndexByte(data[off:], '"')))
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return 1
		}
	}
	return 1
}

// Addr is the Connector's host:port.
func (c Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// LocalAddr is where the microservice listens (public) or where the raw
// route is offered (private). "iofog" is the agent's name for the host the
// containers run on; it falls back to loopback where it does not resolve.
func (c Config) LocalAddr() string {
	h := c.LocalHost
	if h == "" {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, strconv.Itoa(c.LocalPort))
}

// Frequency is how often a heartbeat is due.
func (c Config) Frequency() time.Duration {
	if c.HeartbeatFrequency == 0 {
		return DefaultHeartbeatFrequency
	}
	return time.Duration(c.HeartbeatFrequency) * time.Millisecond
}

// Threshold is how long a connection may be silent before it is dropped.
func (c Config) Threshold() time.Duration {
	if c.HeartbeatAbsenceThreshold == 0 {
		return DefaultAbsenceThreshold
	}
	return time.Duration(c.HeartbeatAbsenceThreshold) * time.Millisecond
}

// Count is the number of connections to keep (at least one).
func (c Config) Count() int {
	if c.ConnectionCount <= 0 || c.Mode == "private" {
		return 1
	}
	return c.ConnectionCount
}

// TLSConfig is the client TLS config for non-dev mode: Cert as the only
// root, server name = Host. It is nil in dev mode.
func (c Config) TLSConfig() (*tls.Config, error) {
	if c.DevMode {
		return nil, nil
	}
	tc, err := RootTLS(c.Cert, c.Host)
	if err != nil {
		return nil, fieldErr("cert", "%v", err)
	}
	return tc, nil
}

// RootTLS is a client TLS config that trusts only cert (a PEM file or, as
// the Controller sends it, the base64 body without BEGIN/END lines) and
// checks the server's name against host.
func RootTLS(cert, host string) (*tls.Config, error) {
	certs, err := parseCert(cert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

// parseCert accepts a full PEM file or the base64 body without BEGIN/END.
func parseCert(s string) ([]*x509.Certificate, error) {
	var ders [][]byte
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		}
	}
	if len(ders) == 0 {
		body := strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, s)
		der, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor a base64 certificate body: %v", err)
		}
		ders = append(ders, der)
	}
	var out []*x509.Certificate
	for _, der := range ders {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("not an X.509 certificate: %v", err)
		}
		out = append(out, cert)
	}
	return out, nil
}
