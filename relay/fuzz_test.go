package relay

import (
	"encoding/json"
	"net/url"
	"testing"
)

// FuzzMappingAdd feeds arbitrary request bodies through the form and
// mapping parsing of POST /api/v2/mapping/add.
func FuzzMappingAdd(f *testing.F) {
	f.Add("mapping=%7B%22type%22%3A%22public%22%2C%22maxconnections%22%3A60%2C%22heartbeatabsencethreshold%22%3A200000%7D")
	f.Add("mapping=%7B%22type%22%3A%22private%22%2C%22maxconnectionsport1%22%3A1%2C%20%22maxconnectionsport2%22%3A1%2C%20%22heartbeatabsencethresholdport1%22%3A200000%2C%20%22heartbeatabsencethresholdport2%22%3A200000%7D")
	f.Add(`mapping={"type":"public","maxconnections":1e3,"heartbeatabsencethreshold":null}`)
	f.Add(`mapping={"type":["public"]}&mapping=x`)
	f.Add("mapping=%ZZ")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		req, err := parseMapping(form.Get("mapping"))
		if err != nil {
			return
		}
		if req.max1 < 0 || req.max2 < 0 || req.thresh1 < 0 || req.thresh2 < 0 {
			t.Fatalf("accepted negative values: %+v from %q", req, body)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(form.Get("mapping")), &obj); err != nil {
			t.Fatalf("accepted a mapping that is not a JSON object: %q", form.Get("mapping"))
		}
		if want := obj["type"] == "public"; req.public != want {
			t.Fatalf("type %v parsed as public=%v", obj["type"], req.public)
		}
		if req.public && (req.max2 != 0 || req.thresh2 != 0) {
			t.Fatalf("public mapping with port2 values: %+v", req)
		}
	})
}
