// Package agentclient is the agent side of the ioFog Connector protocol: what
// the core-networking container on an ioFog agent does. It dials a mapping
// port, authenticates with the passcode, keeps the connection alive with BEAT
// heartbeats, and, in public mode, keeps a pool of such connections and pipes
// each one to the local microservice when a public client's bytes arrive.
//
// It is used by tests and benchmarks of the Connector, and can stand in for
// the agent container when debugging a deployment.
package agentclient

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// Config mirrors the JSON config the Controller writes for an agent's
// network container (docs/protocol.md §5). Times are milliseconds.
type Config struct {
	Mode                      string `json:"mode"` // "public" or "private"
	Host                      string `json:"host"`
	Port                      int    `json:"port"`
	Passcode                  string `json:"passcode"`
	ConnectionCount           int    `json:"connectioncount"`
	LocalHost                 string `json:"localhost"`
	LocalPort                 int    `json:"localport"`
	HeartbeatFrequency        int    `json:"heartbeatfrequency"`
	HeartbeatAbsenceThreshold int    `json:"heartbeatabsencethreshold"`
	DevMode                   bool   `json:"devmode"`
	// Cert is the Connector's certificate, PEM with or without its
	// BEGIN/END lines; it is the only trusted root when DevMode is false.
	Cert string `json:"cert,omitempty"`
}

// ParseConfig decodes and checks a config as the Controller writes it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("agent config: %w", err)
	}
	return c, c.Validate()
}

// Validate reports the first field that makes the config unusable.
func (c Config) Validate() error {
	switch {
	case c.Mode != "public" && c.Mode != "private":
		return fmt.Errorf("agent config: field mode: %q is neither \"public\" nor \"private\"", c.Mode)
	case c.Host == "":
		return errors.New("agent config: field host: empty")
	case c.Port <= 0 || c.Port > 65535:
		return fmt.Errorf("agent config: field port: %d is not a TCP port", c.Port)
	case len(c.Passcode) != PasscodeLen:
		return fmt.Errorf("agent config: field passcode: %d characters, want %d", len(c.Passcode), PasscodeLen)
	case c.ConnectionCount < 0:
		return fmt.Errorf("agent config: field connectioncount: %d is negative", c.ConnectionCount)
	case c.LocalPort < 0 || c.LocalPort > 65535:
		return fmt.Errorf("agent config: field localport: %d is not a TCP port", c.LocalPort)
	case c.HeartbeatFrequency < 0 || c.HeartbeatAbsenceThreshold < 0:
		return errors.New("agent config: heartbeat times must not be negative")
	case !c.DevMode && strings.TrimSpace(c.Cert) == "":
		return errors.New("agent config: field cert: required when devmode is false")
	}
	return nil
}

// Protocol constants (docs/protocol.md §4.2).
const (
	PasscodeLen = 36
	Authorized  = "AUTHORIZED"
	Beat        = "BEAT"
)

// Defaults the Controller writes; used when a config leaves them at 0.
const (
	DefaultHeartbeatFrequency = 20 * time.Second
	DefaultAbsenceThreshold   = 60 * time.Second
)

func (c Config) addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

func (c Config) localAddr() string {
	h := c.LocalHost
	if h == "" {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, strconv.Itoa(c.LocalPort))
}

func (c Config) frequency() time.Duration {
	if c.HeartbeatFrequency == 0 {
		return DefaultHeartbeatFrequency
	}
	return time.Duration(c.HeartbeatFrequency) * time.Millisecond
}

func (c Config) threshold() time.Duration {
	if c.HeartbeatAbsenceThreshold == 0 {
		return DefaultAbsenceThreshold
	}
	return time.Duration(c.HeartbeatAbsenceThreshold) * time.Millisecond
}

func (c Config) count() int {
	if c.ConnectionCount <= 0 {
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
	tc, err := tunnel.RootTLS(c.Cert, c.Host)
	if err != nil {
		return nil, fmt.Errorf("agent config: field cert: %w", err)
	}
	return tc, nil
}
