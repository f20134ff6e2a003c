package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/memhook/memhook/internal/receiver"
)

// The README shows this file whole; this test keeps the two the same and
// runs the program against a receiver on loopback.
func TestQuickstartIsTheREADMESnippetAndRuns(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, src) {
		t.Fatal("README.md does not hold examples/quickstart/main.go verbatim: update the README's quick start")
	}

	rcv, err := receiver.Start(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	cmd := exec.Command("go", "run", ".")
	cmd.Env = append(os.Environ(), "MEM0_WEBHOOK_URL="+rcv.URL+"/webhooks/memory", "MEM0_WEBHOOK_TOKEN=my-secret-token")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Accepted:1 Delivered:1") {
		t.Errorf("output:\n%s", out)
	}
	reqs := rcv.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer my-secret-token" || !bytes.Contains(reqs[0].Body, []byte(`"event":"memory_added"`)) {
		t.Errorf("receiver got %+v", reqs)
	}
}
