package appliance

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/appliance/supervise"
	"github.com/eclipse-iofog/iofog-connector/controlapi"
)

// connector runs the Connector child and watches its health.
type connector struct {
	s   *system
	sup *supervise.Supervisor

	mu        sync.Mutex
	lastLine  string    // the child's last line of output
	healthyAt time.Time // last time its API answered "running"
	restarts  int
}

// connectorArgs is the command line of the Connector child: this binary
// again, as the daemon, in appliance mode.
func (s *system) connectorArgs() []string {
	args := []string{"iofog-connector", "run", "--appliance",
		"--config", s.cfgPath, "--state-dir", s.stateDir, "--tls-dir", s.tlsDir,
		"--appliance-status", PageStatusFile}
	if lv := s.level.Level().String(); lv != "" {
		args = append(args, "--log-level", strings.ToLower(lv))
	}
	return args
}

func (s *system) newConnector() (*connector, error) {
	c := &connector{s: s}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("connector output pipe: %w", err)
	}
	s.goSafe("connector output", func() { c.pump(pr) })
	c.sup = supervise.New(s.reaper, supervise.Config{
		Name:        "connector",
		Path:        s.self,
		Args:        s.connectorArgs(),
		Env:         []string{"PATH=/sbin:/bin", "HOME=/"},
		Stdout:      pw,
		Stderr:      pw,
		Backoff:     supervise.Backoff{Min: time.Second, Max: 30 * time.Second, ResetAfter: 2 * time.Minute},
		StopTimeout: 10 * time.Second,
		OnEvent:     c.onEvent,
	}, s.log.With("part", "supervisor"))
	return c, nil
}

// pump copies the child's output to the console and the log file, line by
// line, remembering the last line for STATUS.txt's restart reason.
func (c *connector) pump(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if !strings.HasSuffix(line, "\n") {
				line += "\n"
			}
			io.WriteString(c.s.out, line)
			c.mu.Lock()
			c.lastLine = strings.TrimSpace(line)
			c.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (c *connector) onEvent(e supervise.Event) {
	switch e.Kind {
	case supervise.Started:
		c.s.setStatus(func(st *status.Status) { st.Connector.State = "starting" })
	case supervise.StartFailed:
		c.s.setStatus(func(st *status.Status) {
			st.Connector.State = fmt.Sprintf("cannot start (%v); retrying in %s", e.Err, e.Restart)
		})
	case supervise.Exited:
		if e.Exit.Clean() || e.Restart == 0 {
			c.s.setStatus(func(st *status.Status) { st.Connector.State = "stopped" })
			return
		}
		c.mu.Lock()
		c.restarts++
		n, last := c.restarts, c.lastLine
		c.healthyAt = time.Time{}
		c.mu.Unlock()
		why := fmt.Sprintf("%s: %s after %s", e.Time.UTC().Format("2006-01-02 15:04:05 UTC"), e.Exit, e.Uptime.Round(time.Second))
		if last != "" {
			why += "; its last words: " + truncate(last, 200)
		}
		c.s.setStatus(func(st *status.Status) {
			st.Connector.State = "restarting in " + e.Restart.String()
			st.Connector.Restarts = n
			st.Connector.LastRestart = why
			// The event has its own time; the page shows it beside the text.
			text := fmt.Sprintf("Connector restarted: %s after %s", e.Exit, e.Uptime.Round(time.Second))
			if last != "" {
				text += "; its last words: " + truncate(last, 160)
			}
			st.AddEvent(status.Event{Time: e.Time, Kind: "restart", Text: text})
		})
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// healthy reports whether the Connector's API answered within d.
func (c *connector) healthy(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.healthyAt.IsZero() && time.Since(c.healthyAt) < d
}

// apiStatus asks the Connector's API for its status, the way an installer
// does, and returns the mapping count.
func apiStatus(ctx context.Context, api *controlapi.Client) (int, error) {
	r, err := api.Status(ctx)
	if err != nil {
		return 0, err
	}
	if r.Status != "running" {
		return 0, fmt.Errorf("status %q, want running", r.Status)
	}
	return r.Mappings, nil
}

// localAPI is the URL base at which PID 1 reaches the Connector's API.
func (s *system) localAPI() string {
	host := "127.0.0.1"
	if l := s.cfg.API.Listen; l != "" && l != "0.0.0.0" && l != "::" {
		host = l
	}
	scheme := "https"
	if s.cfg.Dev {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(s.cfg.API.Port(s.cfg.Dev)))
}

// watchHealth polls the API and keeps the status and healthyAt current.
func (c *connector) watchHealth(ctx context.Context) {
	client := &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			// Our own Connector on loopback with its self-signed certificate.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
		},
	}
	base := c.s.localAPI()
	api := controlapi.New(base, client)
	interval := time.Second
	for {
		if c.sup.Pid() != 0 {
			n, err := apiStatus(ctx, api)
			if err == nil {
				c.mu.Lock()
				first := c.healthyAt.IsZero()
				c.healthyAt = time.Now()
				c.mu.Unlock()
				c.s.setStatus(func(st *status.Status) { st.Connector.State, st.Connector.Mappings = "running", n })
				if first {
					c.s.log.Info("Connector is up", "api", base, "mappings", n, "since_boot", time.Since(c.s.booted).Round(time.Millisecond))
				}
				interval = 5 * time.Second
			} else if errors.Is(ctx.Err(), context.Canceled) {
				return
			} else {
				c.s.log.Debug("Connector API not answering", "err", err)
				interval = time.Second
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
