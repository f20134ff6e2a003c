package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus/event"
)

func TestEmbeddedDeliversAllTwelve(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if lines[0] != "receiver got 12 webhooks (delivered 12):" || len(lines) != 13 {
		t.Fatalf("output:\n%s", text)
	}
	for i, typ := range event.Types() {
		line := lines[i+1]
		if !strings.HasPrefix(line, string(typ)+" ") || !strings.Contains(line, `auth="Bearer my-secret-token"`) || !strings.Contains(line, "id_set=true") {
			t.Errorf("line %d = %q, want %s with the bearer token and a webhook-id", i+1, line, typ)
		}
	}
}
