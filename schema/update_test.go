package schema

import (
	"strings"
	"testing"
	"time"
)

const updateBase = `ports: ["6000-6050"]
exclude: []
broker: 12345
address: "127.0.0.1"
dev: true
`

func TestUpdateBlock(t *testing.T) {
	cfg, err := LoadBytes("connector.cue", []byte(updateBase))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Update.CommitAfter.Duration != 2*time.Minute || len(cfg.Update.Keys) != 0 {
		t.Fatalf("defaults: %+v", cfg.Update)
	}
	key := "ed25519:" + strings.Repeat("A", 43) + "="
	cfg, err = LoadBytes("connector.cue", []byte(updateBase+`update: keys: ["`+key+`"]
update: commit_after: "30s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Update.CommitAfter.Duration != 30*time.Second || len(cfg.Update.Keys) != 1 || cfg.Update.Keys[0] != key {
		t.Fatalf("set: %+v", cfg.Update)
	}
	_, err = LoadBytes("connector.cue", []byte(updateBase+`update: keys: ["rsa:AAAA"]
`))
	if err == nil || !strings.Contains(err.Error(), "connector.cue:6") || !strings.Contains(err.Error(), "update.keys") {
		t.Fatalf("bad key: %v", err)
	}
	hcl := "ports = [\"6000-6050\"]\nexclude = []\nbroker = 12345\naddress = \"127.0.0.1\"\ndev = true\nupdate {\n  keys = [\"" + key + "\"]\n}\n"
	cfg, err = LoadBytes("connector.hcl", []byte(hcl))
	if err != nil || len(cfg.Update.Keys) != 1 {
		t.Fatalf("hcl: %v %+v", err, cfg)
	}
}
