package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/verify"
)

const crmSecret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="

// serve with an endpoints file: each endpoint gets its events, signed
// with its own secret; `memhook endpoints` lists them; SIGHUP adds and
// removes one; pause and resume hold and release an endpoint's events.
func TestServeEndpointsFile(t *testing.T) {
	main := startReceiver(t, nil)
	crm := startReceiver(t, nil)
	extra := startReceiver(t, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "endpoints.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	crmEndpoint := fmt.Sprintf(`  - name: crm
    url: %s/crm
    events: [memory_added]
    secret: ${CRM_SECRET}
    headers: {X-Tenant: acme}
`, crm.URL)
	write("endpoints:\n" + crmEndpoint)
	e := serveEnv(main, "MEMHOOK_ENDPOINTS_FILE", file, "CRM_SECRET", crmSecret)
	s := startServe(t, e)
	s.neverShow(crmSecret)
	s.waitLog(10*time.Second, "memhook: serving", "endpoints=default,crm")

	ingest := func(n int) []string {
		t.Helper()
		var ids []string
		for range n {
			id := uuid.NewString()
			if code, b := s.postJSON(t, "/ingest", envelope(id, "u")); code != http.StatusAccepted && code != http.StatusOK {
				t.Fatalf("ingest: %d %s", code, b)
			}
			ids = append(ids, id)
		}
		return ids
	}
	ingest(5)
	for _, r := range []interface {
		WaitFor(int, time.Duration) error
	}{main, crm} {
		if err := r.WaitFor(5, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := verify.New(crmSecret)
	for _, r := range crm.Requests() {
		if err := v.Verify(r.Header, r.Body); err != nil {
			t.Errorf("crm webhook does not verify with crm's secret: %v", err)
		}
		if r.Header.Get("X-Tenant") != "acme" || r.Header.Get("X-Webhook-Secret") != "" {
			t.Errorf("crm webhook headers %v", r.Header)
		}
	}
	for _, r := range main.Requests() {
		if v.Verify(r.Header, r.Body) == nil {
			t.Error("a default endpoint's webhook verifies with crm's secret")
		}
	}

	// memhook endpoints lists both, with counters.
	code, out, errOut := run(t, env{"MEMHOOK_ROUTER_URL": s.URL}, 30*time.Second, "endpoints", "--json")
	if code != 0 {
		t.Fatalf("memhook endpoints: %d %s", code, errOut)
	}
	var listed struct {
		Endpoints []struct {
			Name      string `json:"name"`
			State     string `json:"state"`
			Delivered uint64 `json:"delivered"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("memhook endpoints --json: %v: %s", err, out)
	}
	if len(listed.Endpoints) != 2 || listed.Endpoints[1].Name != "crm" || listed.Endpoints[1].Delivered != 5 || listed.Endpoints[1].State != "active" {
		t.Errorf("memhook endpoints: %+v", listed.Endpoints)
	}
	if strings.Contains(out, crmSecret) {
		t.Error("memhook endpoints shows crm's secret")
	}
	code, table, _ := run(t, env{"MEMHOOK_ROUTER_URL": s.URL}, 30*time.Second, "endpoints")
	if code != 0 || !strings.Contains(table, "crm") || !strings.Contains(table, "active") {
		t.Errorf("memhook endpoints: %d\n%s", code, table)
	}

	// Pause crm: its events wait; resume: they arrive.
	if code, _, errOut := run(t, env{"MEMHOOK_ROUTER_URL": s.URL}, 30*time.Second, "endpoints", "pause", "crm"); code != 0 {
		t.Fatalf("memhook endpoints pause crm: %d %s", code, errOut)
	}
	s.waitLog(10*time.Second, "memhook: endpoint paused", "endpoint=crm")
	ingest(3)
	if err := main.WaitFor(8, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // shows that nothing reaches the paused endpoint
	if n := crm.Count(); n != 5 {
		t.Errorf("the paused endpoint got %d webhooks, want the 5 from before the pause", n)
	}
	if code, _, _ := run(t, env{"MEMHOOK_ROUTER_URL": s.URL}, 30*time.Second, "endpoints", "pause", "nope"); code == 0 {
		t.Error("pausing an unknown endpoint succeeded")
	}
	if code, _, errOut := run(t, env{"MEMHOOK_ROUTER_URL": s.URL}, 30*time.Second, "endpoints", "resume", "crm"); code != 0 {
		t.Fatalf("memhook endpoints resume crm: %d %s", code, errOut)
	}
	// The events wait unread while it is paused: they go at once (the few
	// held in the delay store too, rather than at the end of their 30 s).
	if err := crm.WaitFor(8, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// SIGHUP: a bad file changes nothing; a good one adds extra, removes crm.
	write("endpoints:\n  - name: Bad\n    url: ftp://x\n")
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(10*time.Second, "endpoints file refused, endpoints unchanged", "endpoints.yaml:2")
	write(fmt.Sprintf("endpoints:\n  - name: extra\n    url: %s/extra\n", extra.URL))
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(10*time.Second, "endpoints reloaded", "endpoints=default,extra")
	ingest(4)
	if err := extra.WaitFor(4, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := main.WaitFor(12, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := crm.Count(); n != 8 {
		t.Errorf("the removed endpoint got %d webhooks, want 8", n)
	}
	if n := extra.Count(); n != 4 {
		t.Errorf("the added endpoint got %d webhooks, want the 4 ingested after it was added", n)
	}
}

// A bad endpoints file stops start-up with one line naming the file, the
// line, the endpoint and the key, never a secret.
func TestServeEndpointsFileRefused(t *testing.T) {
	main := startReceiver(t, nil)
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	body := "endpoints:\n  - name: crm\n    url: https://crm.example.com/x\n    secret: ${CRM_SECRET}\n    retries: 3\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, serveEnv(main, "MEMHOOK_ENDPOINTS_FILE", file), 30*time.Second, "serve")
	refusedInOneLine(t, code, out, errOut,
		[]string{"MEMHOOK_ENDPOINTS_FILE", "endpoints.yaml:4: endpoint crm: secret", "CRM_SECRET", "endpoints.yaml:5: endpoint crm: retries: unknown key"},
		[]string{webhookSecret})
}
