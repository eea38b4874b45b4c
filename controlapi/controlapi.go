// Package controlapi speaks the Connector's control API as a client: typed
// requests and replies for every endpoint, and the protocol's error rule
// (docs/protocol.md §3). The CLI, the appliance's health check, tests and
// benchmarks all reach a Connector through it. It depends on nothing else
// of ours, so both sides of the relay may import it.
package controlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// The endpoints (docs/protocol.md §3.2 to §3.7).
const (
	PathAdd         = "/api/v2/mapping/add"
	PathRemove      = "/api/v2/mapping/remove"
	PathList        = "/api/v2/mapping/list"
	PathStatus      = "/api/v2/status"
	PathCommandline = "/api/v2/commandline"
)

// maxReply bounds what a reply may make us read; real ones are under a KiB
// per mapping.
const maxReply = 1 << 20

// Client calls one Connector's control API. It is safe for concurrent use.
type Client struct {
	// Base is the API's URL without a path, e.g. http://127.0.0.1:8080.
	Base string
	// HTTP carries the requests; its timeout and TLS settings apply.
	HTTP *http.Client
}

// New returns a client for the API at base using hc (nil: a client with no
// timeout beyond the context's).
func New(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{Base: strings.TrimSuffix(base, "/"), HTTP: hc}
}

// Error is a reply that says the Connector refused: it carries an
// errormessage, as every failure does (docs/protocol.md §3.6).
type Error struct {
	Message    string // the errormessage
	HTTPStatus int
}

func (e *Error) Error() string {
	return fmt.Sprintf("the Connector refused: %s (HTTP %d)", e.Message, e.HTTPStatus)
}

// AddRequest is what mapping/add asks for. Public mappings use only the
// port1 fields: the limits of the agents' port.
type AddRequest struct {
	Private                                          bool
	MaxConnectionsPort1, MaxConnectionsPort2         int
	HeartbeatThresholdPort1, HeartbeatThresholdPort2 int64 // milliseconds
}

// Public is a public mapping holding up to maxConnections agent
// connections that are closed after thresholdMS of silence.
func Public(maxConnections int, thresholdMS int64) AddRequest {
	return AddRequest{MaxConnectionsPort1: maxConnections, HeartbeatThresholdPort1: thresholdMS}
}

// Private is a route between two agents, with the same limits on both ports.
func Private(maxConnections int, thresholdMS int64) AddRequest {
	return AddRequest{Private: true, MaxConnectionsPort1: maxConnections, MaxConnectionsPort2: maxConnections,
		HeartbeatThresholdPort1: thresholdMS, HeartbeatThresholdPort2: thresholdMS}
}

// MappingJSON is the request's `mapping` field, written exactly as
// Controller v1.3.1 writes it (key order and blanks included), so a
// Connector sees from us what it sees from a Controller.
func (r AddRequest) MappingJSON() string {
	if !r.Private {
		return fmt.Sprintf(`{"type":"public","maxconnections":%d,"heartbeatabsencethreshold":%d}`,
			r.MaxConnectionsPort1, r.HeartbeatThresholdPort1)
	}
	return fmt.Sprintf(`{"type":"private","maxconnectionsport1":%d, "maxconnectionsport2":%d, "heartbeatabsencethresholdport1":%d, "heartbeatabsencethresholdport2":%d}`,
		r.MaxConnectionsPort1, r.MaxConnectionsPort2, r.HeartbeatThresholdPort1, r.HeartbeatThresholdPort2)
}

// Form is the request's form, encoded as the Controller encodes it.
func (r AddRequest) Form() url.Values { return url.Values{"mapping": {r.MappingJSON()}} }

// AddReply is mapping/add's answer.
type AddReply struct {
	Status    string `json:"status"`
	ID        string `json:"id"`
	Port1     uint16 `json:"port1"` // agents dial this
	Port2     uint16 `json:"port2"` // public port, or the second agent's
	Passcode1 string `json:"passcode1"`
	Passcode2 string `json:"passcode2"` // "" for a public mapping
	Timestamp int64  `json:"timestamp"`
}

// RemoveReply is mapping/remove's answer.
type RemoveReply struct {
	Status    string `json:"status"`
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
}

// StatusReply is status's answer for mappingid=all.
type StatusReply struct {
	ID             string `json:"id"`
	Timestamp      int64  `json:"timestamp"`
	Status         string `json:"status"` // "running"
	Mappings       int    `json:"mappings"`
	Version        string `json:"version"`
	AvailablePorts int    `json:"availablePorts"`
}

// MappingStatusReply is status's answer for one mapping: Public and Private
// are set for a public mapping, Private1 and Private2 for a private one;
// each is "Active" or "Inactive".
type MappingStatusReply struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Public    string `json:"public,omitempty"`   // port2, the public port
	Private   string `json:"private,omitempty"`  // port1, the agents' port
	Private1  string `json:"private1,omitempty"` // port1 of a private route
	Private2  string `json:"private2,omitempty"` // port2 of a private route
}

// ListEntry is one mapping in mapping/list's answer: no passcodes.
type ListEntry struct {
	ID        string `json:"id"`
	Type      string `json:"type"` // "public" or "private"
	Port1     uint16 `json:"port1"`
	Port2     uint16 `json:"port2"`
	Max1      int    `json:"maxconnectionsport1"`
	Max2      int    `json:"maxconnectionsport2"`
	Thresh1   int64  `json:"heartbeatabsencethresholdport1"`
	Thresh2   int64  `json:"heartbeatabsencethresholdport2"`
	Active1   bool   `json:"active1"`
	Active2   bool   `json:"active2"`
	Sessions  int64  `json:"publicsessions"`
	AgentIdle int    `json:"agentsidle"`
	AgentBusy int    `json:"agentspaired"`
}

// ListReply is mapping/list's answer.
type ListReply struct {
	Status    string      `json:"status"`
	Mappings  []ListEntry `json:"mappings"`
	Timestamp int64       `json:"timestamp"`
}

// CommandReply is commandline's answer.
type CommandReply struct {
	Response  string `json:"response"`
	Timestamp int64  `json:"timestamp"`
}

// Add asks for a new mapping.
func (c *Client) Add(ctx context.Context, r AddRequest) (AddReply, error) {
	var out AddReply
	err := c.Call(ctx, PathAdd, r.Form(), &out)
	return out, err
}

// Remove deletes the mapping id.
func (c *Client) Remove(ctx context.Context, id string) (RemoveReply, error) {
	var out RemoveReply
	err := c.Call(ctx, PathRemove, url.Values{"mappingid": {id}}, &out)
	return out, err
}

// Status asks for the Connector's own state (mappingid=all), what
// installers poll.
func (c *Client) Status(ctx context.Context) (StatusReply, error) {
	var out StatusReply
	err := c.Call(ctx, PathStatus, url.Values{"mappingid": {"all"}}, &out)
	return out, err
}

// MappingStatus asks whether the listeners of mapping id are open.
func (c *Client) MappingStatus(ctx context.Context, id string) (MappingStatusReply, error) {
	var out MappingStatusReply
	err := c.Call(ctx, PathStatus, url.Values{"mappingid": {id}}, &out)
	return out, err
}

// List returns every mapping with live counts (an extension).
func (c *Client) List(ctx context.Context) (ListReply, error) {
	var out ListReply
	err := c.Call(ctx, PathList, nil, &out)
	return out, err
}

// Command sends a commandline command ("status", "stop", "version", ...)
// the way the original CLI does, and returns the response text.
func (c *Client) Command(ctx context.Context, cmd string) (string, error) {
	var out CommandReply
	err := c.Call(ctx, PathCommandline, url.Values{"command": {cmd}, "params": {""}}, &out)
	return out.Response, err
}

// Call posts form to path and decodes the JSON reply into out (unless out
// is nil). As for the Controller, a reply that is not JSON, or that has an
// errormessage (an *Error), is a failure; the HTTP status alone is not.
func (c *Client) Call(ctx context.Context, path string, form url.Values, out any) error {
	status, body, err := c.Post(ctx, path, form)
	if err != nil {
		return err
	}
	var e struct {
		ErrorMessage *string `json:"errormessage"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("%s: HTTP %d, reply is not JSON: %q", path, status, body)
	}
	if e.ErrorMessage != nil {
		return &Error{Message: *e.ErrorMessage, HTTPStatus: status}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s: HTTP %d, unexpected reply %q: %w", path, status, body, err)
		}
	}
	return nil
}

// Post sends form to path and returns the HTTP status and the body as they
// are, for callers that check the wire itself.
func (c *Client) Post(ctx context.Context, path string, form url.Values) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, strings.NewReader(encode(form)))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s: read reply: %w", path, err)
	}
	return resp.StatusCode, body, nil
}

// encode is url.Values.Encode with blanks as %20, as the Controller's HTTP
// library writes them. A literal '+' is already %2B, so the swap is exact.
func encode(form url.Values) string {
	return strings.ReplaceAll(form.Encode(), "+", "%20")
}
