package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

func TestPoolPorts(t *testing.T) {
	got, err := poolPorts([]string{"6000-6002", "7000"})
	if err != nil || !slices.Equal(got, []int{6000, 6001, 6002, 7000}) {
		t.Fatalf("poolPorts = %v, %v", got, err)
	}
	for _, bad := range []string{"6002-6000", "x-1", "1-5000"} {
		if _, err := poolPorts([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("poolPorts(%q) gave %v; want an error naming the range", bad, err)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--board", "x86_64"}, 1, "--board and --out are required"},
		{[]string{"config", "--image", "x.img"}, 1, "--image and --config are required"},
		{[]string{"--board", "pdp11", "--out", "/nonexistent/x.img", "--binary", "/bin/true"}, 1, `unknown board "pdp11"`},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), c.args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("mkimage %q: exit %d, stderr %q; want exit %d and %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
}
