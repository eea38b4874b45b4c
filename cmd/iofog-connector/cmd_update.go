package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance"
	"github.com/eclipse-iofog/iofog-connector/relay"
)

// updateProxy passes the API's update endpoints to PID 1's update socket:
// the appliance's init holds the slots, the Connector only the API.
func updateProxy(socket string) http.Handler {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req *http.Request
		var err error
		switch {
		case r.URL.Path == relay.UpdatePath && r.Method == http.MethodPost:
			req, err = http.NewRequestWithContext(r.Context(), http.MethodPost, "http://init/update?"+r.URL.RawQuery, r.Body)
		case r.URL.Path == relay.UpdateStatusPath && r.Method == http.MethodGet:
			req, err = http.NewRequestWithContext(r.Context(), http.MethodGet, "http://init/status", nil)
		default:
			http.Error(w, "use POST "+relay.UpdatePath+" (body: the bundle) or GET "+relay.UpdateStatusPath, http.StatusMethodNotAllowed)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "in-place updates are not available on this box: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		fl, _ := w.(http.Flusher)
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				if fl != nil {
					fl.Flush()
				}
			}
			if err != nil {
				return
			}
		}
	})
}

func cmdUpdate(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "update", "update [--to URL] [--force] BUNDLE | update status [--to URL]")
	to := fs.String("to", "", "the box's API, e.g. http://192.168.1.20:8080 (default: the Connector on this host)")
	force := fs.Bool("force", false, "apply a bundle even if its trial boot failed before")
	insecure := fs.Bool("insecure", false, "with an https URL: do not check the box's certificate")
	var rest []string
	// Flags may come after the bundle's name.
	for len(args) > 0 {
		if code := parseFlags(fs, args); code >= 0 {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 {
		fmt.Fprintln(env.stderr, "usage: iofog-connector update [--to URL] [--force] BUNDLE | update status [--to URL]")
		return 2
	}
	var base string
	client := &http.Client{}
	if *to != "" {
		base = strings.TrimRight(*to, "/")
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		if *insecure {
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		}
	} else {
		c, ok := cf.client(env)
		if !ok {
			return 1
		}
		base, client = c.Base, c.HTTP
		client.Timeout = 0 // an upload and write take minutes on a slow card
	}
	if rest[0] == "status" {
		return updateStatus(ctx, env, client, base)
	}
	f, err := os.Open(rest[0])
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	body := &uploadProgress{r: f, total: st.Size(), w: env.stderr}
	url := base + relay.UpdatePath
	if *force {
		url += "?force=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: sending %s to %s: %v\n", rest[0], base, err)
		return 1
	}
	defer resp.Body.Close()
	ok := false
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(env.stdout, line)
		ok = ok || strings.HasPrefix(line, "ok:")
	}
	if resp.StatusCode != http.StatusOK || !ok {
		fmt.Fprintf(env.stderr, "iofog-connector: the update was not applied (HTTP %d)\n", resp.StatusCode)
		return 1
	}
	return 0
}

func updateStatus(ctx context.Context, env *cliEnv, client *http.Client, base string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+relay.UpdateStatusPath, nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(env.stderr, "iofog-connector: %s: HTTP %d: %s\n", base, resp.StatusCode, strings.TrimSpace(string(b)))
		return 1
	}
	var s struct {
		Lines []string `json:"lines"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	for _, l := range s.Lines {
		fmt.Fprintln(env.stdout, l)
	}
	return 0
}

// uploadProgress reports every tenth of the upload on w.
type uploadProgress struct {
	r        io.Reader
	w        io.Writer
	total, n int64
	last     int64
	start    time.Time
}

func (u *uploadProgress) Read(p []byte) (int, error) {
	if u.start.IsZero() {
		u.start = time.Now()
	}
	n, err := u.r.Read(p)
	u.n += int64(n)
	if u.total > 0 {
		if pct := u.n * 100 / u.total; pct/10 > u.last/10 || pct == 100 && u.last != 100 {
			u.last = pct
			fmt.Fprintf(u.w, "upload %d%%\n", pct)
		}
	}
	return n, err
}

// applianceUpdateSocket is where the appliance's init takes bundles.
const applianceUpdateSocket = appliance.UpdateSocket
