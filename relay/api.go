package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The update endpoints: POST a bundle (body: the bundle; ?force=1 to try
// one that failed before), GET the slots.
const (
	UpdatePath       = "/api/v2/update"
	UpdateStatusPath = "/api/v2/update/status"
)

// maxForm bounds a control request body; the Controller's are ~200 bytes.
const maxForm = 64 << 10

// routes is the control API (docs/protocol.md §3) plus /metrics.
func (c *Connector) routes() http.Handler {
	metricsH := promhttp.HandlerFor(c.met.reg, promhttp.HandlerOpts{})
	post := map[string]func(url.Values) (int, any){
		"/api/v2/mapping/add":    c.apiAdd,
		"/api/v2/mapping/remove": c.apiRemove,
		"/api/v2/mapping/list":   c.apiList,
		"/api/v2/status":         c.apiStatus,
		"/api/v2/commandline":    c.apiCommandline,
	}
	page := c.page
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && page != nil {
			page.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/metrics" {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				writeError(w, http.StatusMethodNotAllowed, "use GET for /metrics")
				return
			}
			metricsH.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == UpdatePath || r.URL.Path == UpdateStatusPath {
			if c.opts.Update == nil {
				writeError(w, http.StatusNotFound, "in-place updates are an appliance feature; this Connector runs on a plain host")
				return
			}
			c.opts.Update.ServeHTTP(w, r)
			return
		}
		h, ok := post[r.URL.Path]
		if !ok {
			writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed; use POST")
			return
		}
		form, err := readForm(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		status, body := h(form)
		writeJSON(w, status, body)
		if r.URL.Path == "/api/v2/commandline" && isStop(form.Get("command")) {
			// Reply first, then stop: the reply is on the wire once the
			// handler returns, and Run shuts the server down gracefully.
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			c.requestStop()
		}
	})
}

// readForm parses an urlencoded body whatever the Content-Type says; fields
// in the query string count too, the body's win.
func readForm(r *http.Request) (url.Values, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxForm))
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("request body is not a form (application/x-www-form-urlencoded): %w", err)
	}
	for k, v := range r.URL.Query() {
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	return form, nil
}

type errorReply struct {
	Status       string `json:"status"`
	ErrorMessage string `json:"errormessage"`
	Timestamp    int64  `json:"timestamp"`
}

func failed(status int, msg string) (int, any) {
	return status, errorReply{Status: "failed", ErrorMessage: msg, Timestamp: now()}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorReply{Status: "failed", ErrorMessage: msg, Timestamp: now()})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"status":"failed","errormessage":"encode reply"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

func now() int64 { return time.Now().UnixMilli() }

// parseMapping decodes the add request's `mapping` field (§3.2). Keys are
// looked up after decoding, never matched as text: the Controller puts
// spaces after some commas.
func parseMapping(s string) (addRequest, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &obj); err != nil {
		return addRequest{}, fmt.Errorf("field mapping: not a JSON object: %v", err)
	}
	var typ string
	raw, ok := obj["type"]
	if !ok {
		return addRequest{}, errors.New(`field mapping: missing key "type"`)
	}
	if err := json.Unmarshal(raw, &typ); err != nil {
		return addRequest{}, errors.New(`field mapping: key "type" must be the string "public" or "private"`)
	}
	num := func(key string, max float64) (float64, error) {
		raw, ok := obj[key]
		if !ok {
			return 0, fmt.Errorf("field mapping: missing key %q", key)
		}
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil || raw[0] == 'n' {
			return 0, fmt.Errorf("field mapping: key %q must be a JSON number, got %s", key, raw)
		}
		if f < 0 || f > max || f != math.Trunc(f) {
			return 0, fmt.Errorf("field mapping: key %q must be a whole number from 0 to %.0f, got %s", key, max, raw)
		}
		return f, nil
	}
	const maxConns, maxMillis = 1 << 20, 1 << 40
	var req addRequest
	var vals [4]float64
	var keys []string
	switch typ {
	case "public":
		req.public = true
		keys = []string{"maxconnections", "heartbeatabsencethreshold"}
	case "private":
		keys = []string{"maxconnectionsport1", "maxconnectionsport2", "heartbeatabsencethresholdport1", "heartbeatabsencethresholdport2"}
	default:
		return addRequest{}, fmt.Errorf(`field mapping: key "type" is %q; want "public" or "private"`, typ)
	}
	for i, k := range keys {
		max := float64(maxMillis)
		if strings.HasPrefix(k, "maxconnections") {
			max = maxConns
		}
		f, err := num(k, max)
		if err != nil {
			return addRequest{}, err
		}
		vals[i] = f
	}
	if req.public {
		req.max1, req.thresh1 = int(vals[0]), int64(vals[1])
	} else {
		req.max1, req.max2, req.thresh1, req.thresh2 = int(vals[0]), int(vals[1]), int64(vals[2]), int64(vals[3])
	}
	return req, nil
}

func (c *Connector) apiAdd(form url.Values) (int, any) {
	if !form.Has("mapping") {
		return failed(http.StatusBadRequest, "missing form field mapping")
	}
	req, err := parseMapping(form.Get("mapping"))
	if err != nil {
		return failed(http.StatusBadRequest, err.Error())
	}
	rec, err := c.add(req, uuid.NewString)
	if errors.Is(err, errNoPorts) {
		return failed(http.StatusInsufficientStorage, err.Error())
	}
	if errors.Is(err, errStopping) {
		return failed(http.StatusServiceUnavailable, err.Error())
	}
	if err != nil {
		c.log.Error("mapping add failed", "err", err)
		return failed(http.StatusInternalServerError, err.Error())
	}
	return http.StatusOK, controlapi.AddReply{Status: "ok", ID: rec.ID, Port1: rec.Port1, Port2: rec.Port2,
		Passcode1: rec.PasscodePort1, Passcode2: rec.PasscodePort2, Timestamp: now()}
}

func (c *Connector) apiRemove(form url.Values) (int, any) {
	id := form.Get("mappingid")
	if id == "" {
		return failed(http.StatusBadRequest, "missing form field mappingid")
	}
	if err := c.remove(id); err != nil {
		if errors.Is(err, errUnknownMapping) {
			return failed(http.StatusNotFound, err.Error())
		}
		if errors.Is(err, errStopping) {
			return failed(http.StatusServiceUnavailable, err.Error())
		}
		c.log.Error("mapping remove failed", "mapping", id, "err", err)
		return failed(http.StatusInternalServerError, err.Error())
	}
	return http.StatusOK, controlapi.RemoveReply{Status: "ok", ID: id, Timestamp: now()}
}

// apiList is an extension for the operator's `mapping list`.
func (c *Connector) apiList(url.Values) (int, any) {
	out := controlapi.ListReply{Status: "ok", Mappings: []controlapi.ListEntry{}, Timestamp: now()}
	for _, l := range c.listAll() {
		m, r := l.m, l.m.rec
		idle, paired := m.counts()
		e := controlapi.ListEntry{ID: r.ID, Type: m.kind(), Port1: r.Port1, Port2: r.Port2,
			Max1: r.MaxConnectionsPort1, Max2: r.MaxConnectionsPort2,
			Thresh1: r.HeartbeatAbsenceThresholdPort1, Thresh2: r.HeartbeatAbsenceThresholdPort2,
			Active1: m.active(0), Active2: m.active(1), Sessions: m.sessions.Load(), AgentIdle: idle, AgentBusy: paired}
		if !e.Active1 {
			e.Inactive1 = l.down[0]
		}
		if !e.Active2 {
			e.Inactive2 = l.down[1]
		}
		out.Mappings = append(out.Mappings, e)
	}
	return http.StatusOK, out
}

// A mapping's status keeps its own two shapes: each always sends both of
// its keys, where controlapi.MappingStatusReply, one type for both kinds,
// has to omit the other kind's.
type statusPublic struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Public    string `json:"public"`
	Private   string `json:"private"`
}

type statusPrivate struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Private1  string `json:"private1"`
	Private2  string `json:"private2"`
}

func activeWord(b bool) string {
	if b {
		return "Active"
	}
	return "Inactive"
}

func (c *Connector) apiStatus(form url.Values) (int, any) {
	id := form.Get("mappingid")
	if id == "" {
		return failed(http.StatusBadRequest, "missing form field mappingid (a mapping id, or all)")
	}
	if id == "all" {
		n, free := c.stats()
		return http.StatusOK, controlapi.StatusReply{ID: "all", Timestamp: now(), Status: "running", Mappings: n,
			Version: c.opts.Version, AvailablePorts: free}
	}
	m, ok := c.lookup(id)
	if !ok {
		return failed(http.StatusNotFound, fmt.Sprintf("%v: %s", errUnknownMapping, id))
	}
	// The original reports the public port as "public" and the agents'
	// port as "private".
	if m.public {
		return http.StatusOK, statusPublic{ID: id, Timestamp: now(), Public: activeWord(m.active(1)), Private: activeWord(m.active(0))}
	}
	return http.StatusOK, statusPrivate{ID: id, Timestamp: now(), Private1: activeWord(m.active(0)), Private2: activeWord(m.active(1))}
}

func isStop(cmd string) bool { return strings.TrimSpace(cmd) == "stop" }

const helpText = `Usage: iofog-connector <command>
Commands:
  status              show whether the Connector is running
  stop                stop the Connector
  version, -v         show the Connector's version
  help, -h, -?        show this help`

func (c *Connector) apiCommandline(form url.Values) (int, any) {
	var resp string
	switch strings.TrimSpace(form.Get("command")) {
	case "status":
		resp = "Connector is up and running."
	case "stop":
		resp = "Connector is stopping."
	case "version", "--version", "-v":
		resp = "iofog-connector " + c.opts.Version
	default:
		resp = helpText
	}
	return http.StatusOK, controlapi.CommandReply{Response: resp, Timestamp: now()}
}
