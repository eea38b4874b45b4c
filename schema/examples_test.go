package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var examples = []string{"iofog-connector.conf", "connector.cue", "connector.hcl"}

// TestExamplesMeanTheSame: the three example files are one config in three
// formats, and it is the original's shipped default.
func TestExamplesMeanTheSame(t *testing.T) {
	var settings, appliance [][]byte
	for _, name := range examples {
		cfg, err := Load(filepath.Join("..", "examples", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s, err := CompileSettings(cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		a, err := CompileAppliance(cfg)
		if err != nil {
			t.Fatal(err)
		}
		settings = append(settings, s)
		appliance = append(appliance, a)
	}
	if string(settings[0]) != DefaultSettings+"\n" {
		t.Errorf("iofog-connector.conf compiles to %s", settings[0])
	}
	for i := 1; i < len(examples); i++ {
		if !bytes.Equal(settings[i], settings[0]) {
			t.Errorf("%s compiles to %s, %s to %s", examples[i], settings[i], examples[0], settings[0])
		}
		if !bytes.Equal(appliance[i], appliance[0]) {
			t.Errorf("appliance settings differ:\n%s:\n%s\n%s:\n%s", examples[i], appliance[i], examples[0], appliance[0])
		}
	}
}

// originalSettings is the original Connector's reading of its settings file:
// all five keys, these types, nothing else.
type originalSettings struct {
	Ports   *[]string `json:"ports"`
	Exclude *[]string `json:"exclude"`
	Broker  *int      `json:"broker"`
	Address *string   `json:"address"`
	Dev     *bool     `json:"dev"`
}

func strictDecode(data []byte) (originalSettings, error) {
	var s originalSettings
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, err
	}
	if dec.More() {
		return s, fmt.Errorf("data after the settings object")
	}
	return s, nil
}

// TestCompiledSettingsSuitTheOriginal: what compile writes for each example
// (and for a config using every appliance setting) is exactly the five
// keys, in the original's order, with the original's types.
func TestCompiledSettingsSuitTheOriginal(t *testing.T) {
	files := append([]string(nil), examples...)
	for i := range files {
		files[i] = filepath.Join("..", "examples", files[i])
	}
	rich := filepath.Join(t.TempDir(), "rich.hcl")
	if err := os.WriteFile(rich, []byte(h(`hostname = "edge"`, `network {`, `  addresses = ["10.0.0.2/24"]`, `}`, `log {`, `  level = "debug"`, `}`)), 0o644); err != nil {
		t.Fatal(err)
	}
	files = append(files, rich)
	for _, f := range files {
		cfg, err := Load(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, indent := range []bool{false, true} {
			out, err := CompileSettings(cfg, indent)
			if err != nil {
				t.Fatal(err)
			}
			s, err := strictDecode(out)
			if err != nil {
				t.Fatalf("%s: the original's rules reject %s: %v", f, out, err)
			}
			if s.Ports == nil || s.Exclude == nil || s.Broker == nil || s.Address == nil || s.Dev == nil {
				t.Fatalf("%s: a key is missing or null in %s", f, out)
			}
			var keys []string
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.Token() // {
			for dec.More() {
				k, _ := dec.Token()
				keys = append(keys, k.(string))
				var skip json.RawMessage
				dec.Decode(&skip)
			}
			if strings.Join(keys, ",") != "ports,exclude,broker,address,dev" {
				t.Errorf("%s: keys %v, want ports,exclude,broker,address,dev in that order", f, keys)
			}
		}
	}
}

func TestStrictDecoderRejects(t *testing.T) {
	// The strict decoder above must be able to fail, or the test proves nothing.
	for _, bad := range []string{
		`{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true,"hostname":"x"}`,
		`{"ports":["6000-6050"],"exclude":[],"broker":"12345","address":"127.0.0.1","dev":true}`,
		`{"ports":"6000-6050","exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}`,
	} {
		if _, err := strictDecode([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
