// Package statuspage is the Connector's page for a person with a browser:
// GET / on the API port shows the box (version, uptime, mode, certificate,
// and on the appliance the config verdict, network, clock and firewall),
// every mapping with its agents, sessions, bytes and a throughput graph of
// the last minutes, and the last events. It reads what `mapping list` and
// /metrics read; the only thing it keeps itself is the small, fixed-size
// history the graph is drawn from.
package statuspage

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/eclipse-iofog/iofog-connector/appliance/status"
	"github.com/eclipse-iofog/iofog-connector/relay"
)

// Defaults for Options.
const (
	DefaultInterval = 5 * time.Second
	DefaultSamples  = 73 // 72 intervals: 6 minutes at 5 s
	// Refresh is how often an open page reloads its content.
	Refresh = 5 * time.Second
)

// Options configure a Page.
type Options struct {
	Connector *relay.Connector
	// Started is when the Connector process started (uptime).
	Started time.Time
	// ApplianceStatus is the JSON file the appliance's PID 1 keeps current
	// (appliance.PageStatusFile); "" on a plain host.
	ApplianceStatus string
	// Hostname reports the host name; nil: os.Hostname.
	Hostname func() (string, error)
	// Interval and Samples shape the graph's history; zero: the defaults.
	Interval time.Duration
	Samples  int
	Logger   *slog.Logger
}

// Page serves the status page.
type Page struct {
	opts Options
	hist *history
	tmpl *template.Template
	csp  string
}

//go:embed page.html
var pageHTML string

//go:embed page.css
var pageCSS string

//go:embed page.js
var pageJS string

// New prepares the page. Call Run to sample the graph's history.
func New(opts Options) (*Page, error) {
	if opts.Connector == nil {
		return nil, errors.New("statuspage: no Connector")
	}
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Samples < 2 {
		opts.Samples = DefaultSamples
	}
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t, err := template.New("page").Parse(pageHTML)
	if err != nil {
		return nil, err
	}
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	// Only the page's own inline style and script run; it may fetch only
	// itself.
	csp := "default-src 'none'; style-src " + hash(pageCSS) + "; script-src " + hash(pageJS) +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return &Page{opts: opts, hist: newHistory(opts.Samples), tmpl: t, csp: csp}, nil
}

// Run samples every mapping's byte counters for the graph until ctx ends:
// one wake-up per interval, two atomic loads per mapping, no allocation
// once a mapping's history exists.
func (p *Page) Run(ctx context.Context) {
	p.hist.run(ctx, p.opts.Interval, p.opts.Connector.EachTraffic)
}

// ServeHTTP renders the page.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, p.data(time.Now())); err != nil {
		p.opts.Logger.Error("status page: render failed", "err", err)
		http.Error(w, "the status page could not be rendered; see the log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Vary", "Accept-Encoding")
	body := buf.Bytes()
	if acceptsGzip(r) {
		// The page repeats itself (cards, paths): gzip shrinks it about
		// tenfold, which matters on a Pi behind a slow link.
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
		zw.Write(body)
		if zw.Close() == nil {
			body = z.Bytes()
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// view is everything the template shows.
type view struct {
	CSS         template.CSS
	Script      template.JS
	RefreshSecs int
	Now         string

	Host      string
	Version   string
	Uptime    string
	Mode      string
	ModeClass string
	API       string
	Cert      string
	CertClass string
	Pool      string
	Totals    []kv

	Appliance      bool
	ApplianceError string
	Config         configView
	Interfaces     []status.Interface
	Booted         string
	Clock          string
	Firewall       string
	FirewallClass  string
	ChildState     string
	Restarts       int
	Problems       []string

	Mappings []mappingView
	Events   []eventView
}

type kv struct{ K, V string }

// stat is one figure of a mapping: a heading, the main value, a detail.
type stat struct{ K, V, Sub string }

type configView struct {
	File, Using string
	Valid       bool
	Errors      []string
	Ignored     string
}

type mappingView struct {
	ID, Short   string
	Type        string
	Public      bool
	Port1       uint16
	Port2       uint16
	Listening   string
	ListenClass string
	Stats       []stat
	Sides       []sideView
	LastSeen    string
	Graph       graph
}

type sideView struct {
	Port      uint16
	Connected bool
	Remote    string
	Path      string // "relayed" (direct peer-to-peer does not exist yet)
}

type eventView struct {
	Time, Ago string
	Kind      string
	Text      string
	Mapping   string
	Remote    string
	Count     int
	KindClass string
	sortTime  time.Time
}

func (p *Page) data(now time.Time) view {
	c := p.opts.Connector
	o := c.Overview()
	v := view{
		CSS: template.CSS(pageCSS), Script: template.JS(pageJS), RefreshSecs: int(Refresh / time.Second),
		Now: now.UTC().Format("2006-01-02 15:04:05 UTC"), Version: o.Version,
		Uptime: shortDuration(now.Sub(p.opts.Started)),
		Pool:   formatInt(o.FreePorts) + " of " + formatInt(o.PoolSize) + " ports free",
	}
	if h, err := p.opts.Hostname(); err == nil {
		v.Host = h
	} else {
		v.Host = "(unknown host name)"
	}
	if o.Dev {
		v.Mode, v.ModeClass = "dev: plain HTTP and TCP, no encryption", "warn"
		v.API = "http, port " + strconv.Itoa(o.APIPort)
	} else {
		v.Mode, v.ModeClass = "TLS: HTTPS API, TLS on every data port", "ok"
		v.API = "https, port " + strconv.Itoa(o.APIPort)
	}
	switch left := o.CertNotAfter.Sub(now); {
	case o.CertNotAfter.IsZero():
		v.Cert = "none in use (dev mode)"
	case left <= 0:
		v.Cert, v.CertClass = "EXPIRED on "+o.CertNotAfter.UTC().Format("2006-01-02"), "bad"
	default:
		v.Cert = "expires " + o.CertNotAfter.UTC().Format("2006-01-02") + " (in " + shortDuration(left.Truncate(time.Hour)) + ")"
		if left < 30*24*time.Hour {
			v.CertClass = "warn"
		} else {
			v.CertClass = "ok"
		}
	}
	v.Totals = p.totals()
	if p.opts.ApplianceStatus != "" {
		v.Appliance = true
		p.appliance(&v, now)
	}
	for _, m := range c.Mappings() {
		v.Mappings = append(v.Mappings, p.mapping(m, now))
	}
	for _, e := range c.Events() {
		ev := eventView{Kind: e.Kind, Text: e.Text, Remote: e.Remote, Count: e.Count, sortTime: e.Time, KindClass: e.Kind}
		if e.Mapping != "" {
			ev.Mapping = shortID(e.Mapping)
		}
		v.Events = append(v.Events, ev)
	}
	sort.SliceStable(v.Events, func(i, j int) bool { return v.Events[i].sortTime.After(v.Events[j].sortTime) })
	if len(v.Events) > maxEventsShown {
		v.Events = v.Events[:maxEventsShown]
	}
	for i := range v.Events {
		v.Events[i].Time = clock(now, v.Events[i].sortTime)
		v.Events[i].Ago = ago(now, v.Events[i].sortTime)
	}
	return v
}

// maxEventsShown: the Connector keeps 64 and PID 1 32; a phone screen
// wants fewer.
const maxEventsShown = 40

func (p *Page) appliance(v *view, now time.Time) {
	st, err := status.ReadJSON(p.opts.ApplianceStatus)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("the appliance has not written its status yet")
		}
		v.ApplianceError = err.Error()
		return
	}
	v.Config = configView{File: st.Config.File, Using: st.Config.Using, Valid: st.Config.Valid, Errors: st.Config.Errors,
		Ignored: strings.Join(st.Config.Ignored, ", ")}
	v.Interfaces = st.Interfaces
	// Before the clock is set a board without a battery boots in 1970.
	if st.Booted.Year() >= 2020 {
		v.Booted = st.Booted.UTC().Format("2006-01-02 15:04 UTC") + " (" + ago(now, st.Booted) + ")"
	}
	v.Clock = st.Clock
	if v.Clock == "" {
		v.Clock = "not synchronised"
	}
	v.Firewall = st.Firewall
	switch {
	case st.Firewall == "on":
		v.FirewallClass = "ok"
	case st.Firewall == "":
		v.Firewall = "not set up yet"
	default:
		v.FirewallClass = "warn"
	}
	v.ChildState, v.Restarts = st.Connector.State, st.Connector.Restarts
	v.Problems = st.Problems
	for _, e := range st.Events {
		v.Events = append(v.Events, eventView{Kind: e.Kind, KindClass: e.Kind, Text: e.Text, Count: 1, sortTime: e.Time})
	}
}

func (p *Page) mapping(m relay.MappingView, now time.Time) mappingView {
	mv := mappingView{ID: m.ID, Short: shortID(m.ID), Type: m.Type, Public: m.Type == "public", Port1: m.Port1, Port2: m.Port2,
		LastSeen: ago(now, m.LastAgentSeen)}
	switch {
	case m.Listening1 && m.Listening2:
		mv.Listening, mv.ListenClass = "listening", "ok"
	case !m.Listening1 && !m.Listening2:
		mv.Listening, mv.ListenClass = "not listening: ports held by another program, retrying", "bad"
	case !m.Listening1:
		mv.Listening, mv.ListenClass = "port "+strconv.Itoa(int(m.Port1))+" held by another program, retrying", "warn"
	default:
		mv.Listening, mv.ListenClass = "port "+strconv.Itoa(int(m.Port2))+" held by another program, retrying", "warn"
	}
	if mv.Public {
		allowed := "no limit"
		if m.Max1 > 0 {
			allowed = formatInt(m.Max1)
		}
		mv.Stats = []stat{
			{"agents", formatInt(m.AgentsIdle) + " idle", formatInt(m.AgentsPaired) + " paired · " + allowed + " allowed"},
			{"sessions", formatInt(int(m.SessionsNow)) + " now", formatInt(int(m.SessionsTotal)) + " in total"},
			{"to agents", formatBytes(m.BytesToAgent), "from public clients"},
			{"from agents", formatBytes(m.BytesFromAgent), "to public clients"},
		}
	} else {
		for _, s := range m.Sides {
			mv.Sides = append(mv.Sides, sideView{Port: s.Port, Connected: s.Connected, Remote: s.Remote, Path: "relayed"})
		}
		state := "waiting for both agents"
		switch {
		case m.AgentsPaired > 0:
			state = "connected"
		case m.AgentsIdle > 0:
			state = "waiting for the other agent"
		}
		mv.Stats = []stat{
			{"route", state, "relayed through this Connector"},
			{"last agent seen", mv.LastSeen, ""},
			{"to agents", formatBytes(m.BytesToAgent), ""},
			{"from agents", formatBytes(m.BytesFromAgent), ""},
		}
	}
	mv.Graph = makeGraph(p.hist.rates(m.ID), p.opts.Interval)
	return mv
}

// totals are the Connector-wide counters, read from the registry /metrics
// serves.
func (p *Page) totals() []kv {
	fams, err := p.opts.Connector.Metrics().Gather()
	if err != nil && len(fams) == 0 {
		return []kv{{"metrics", "unavailable: " + err.Error()}}
	}
	sum := func(name string, label ...string) float64 {
		var t float64
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if len(label) == 2 && !hasLabel(m, label[0], label[1]) {
					continue
				}
				switch {
				case m.GetCounter() != nil:
					t += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					t += m.GetGauge().GetValue()
				}
			}
		}
		return t
	}
	const ns = "iofog_connector_"
	return []kv{
		{"public sessions", formatInt(int(sum(ns+"public_sessions_active"))) + " now, " + formatInt(int(sum(ns+"public_sessions_total"))) + " in total"},
		{"relayed to agents", formatBytes(int64(sum(ns+"relayed_bytes_total", "direction", "to_agent")))},
		{"relayed from agents", formatBytes(int64(sum(ns+"relayed_bytes_total", "direction", "from_agent")))},
		{"refused agents", formatInt(int(sum(ns+"auth_failures_total"))) + " bad passcode, " + formatInt(int(sum(ns+"agent_rejected_full_total"))) + " over the limit"},
		{"timeouts", formatInt(int(sum(ns+"heartbeat_timeouts_total"))) + " silent agents, " + formatInt(int(sum(ns+"public_wait_timeouts_total"))) + " clients with no agent"},
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

func shortID(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 && i <= 12 {
		return id[:i]
	}
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func formatInt(n int) string {
	s := []byte{}
	neg := n < 0
	if neg {
		n = -n
	}
	d := 0
	for {
		s = append(s, byte('0'+n%10))
		n /= 10
		d++
		if n == 0 {
			break
		}
		if d%3 == 0 {
			s = append(s, ',')
		}
	}
	if neg {
		s = append(s, '-')
	}
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
	return string(s)
}
