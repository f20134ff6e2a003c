package main_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/proc"
	"github.com/memhook/memhook/internal/receiver"
)

var emitArgs = []string{"emit", "--event", "memory_added", "--user", "u1", "--data", `{"k":1}`}

// fromU1 matches the delivery of emitArgs' event.
func fromU1(r receiver.Request) bool {
	var d delivered
	return json.Unmarshal(r.Body, &d) == nil && d.UserID == "u1" && d.Event == "memory_added" && string(d.Data) == `{"k":1}`
}

// httpEmitEnv is an application on transport http handing events to the
// router at routerURL.
func httpEmitEnv(routerURL string, kv ...string) env {
	return env{"MEMHOOK_TRANSPORT": "http", "MEMHOOK_ROUTER_URL": routerURL}.with(kv...)
}

func TestEmitHTTPThroughServe(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv))
	code, stdout, stderr := run(t, httpEmitEnv(s.URL), 30*time.Second, emitArgs...)
	if code != 0 {
		t.Fatalf("emit exit %d, want 0\nstderr:\n%s", code, stderr)
	}
	if !strings.Contains(stdout, `"accepted_by"`) {
		t.Errorf("emit stdout %q, want the accepting router", stdout)
	}
	r := waitDelivery(t, rcv, 10*time.Second, fromU1)
	if got := r.Header.Get("Authorization"); got != "Bearer "+webhookToken {
		t.Errorf("Authorization %q: not delivered by serve with its token", got)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("serve exit %d, want 0", code)
	}
}

func TestEmitHTTPRouterDown(t *testing.T) {
	addr := deadAddr(t) // nothing listens there
	start := time.Now()
	code, stdout, stderr := run(t, httpEmitEnv("http://"+addr), 30*time.Second, append(emitArgs, "--wait", "2s")...)
	took := time.Since(start)
	t.Logf("exit %d after %s", code, took.Round(time.Millisecond))
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if took > 4*time.Second {
		t.Errorf("took %s with --wait 2s", took)
	}
	if !regexp.MustCompile(`router at http://` + regexp.QuoteMeta(addr) + ` did not accept`).MatchString(stderr) {
		t.Errorf("stderr does not say the router did not accept the event:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

// TestEmitHTTPRouterLate: the router starts a second after emit; the
// sender retries with backoff until it accepts.
func TestEmitHTTPRouterLate(t *testing.T) {
	addr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	rcv := startReceiver(t, nil)
	em := startMemhook(t, httpEmitEnv("http://"+addr), append(emitArgs, "--wait", "10s")...)
	select {
	case <-em.Done():
		t.Fatalf("emit exited before the router started:\n%s", em.Stderr())
	case <-time.After(time.Second): // the scenario: the router comes up a second late
	}
	s := startServe(t, serveEnv(rcv, "MEMHOOK_ADDR", addr))
	if code := em.wait(15 * time.Second); code != 0 {
		t.Fatalf("emit exit %d, want 0\nstderr:\n%s", code, em.Stderr())
	}
	waitDelivery(t, rcv, 10*time.Second, fromU1)
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("serve exit %d, want 0", code)
	}
}

func TestEmitHTTPWrongIngestToken(t *testing.T) {
	const wrong = "wrong-ingest-token-77ab"
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv, "MEMHOOK_INGEST_TOKEN", ingestToken))
	s.neverShow(wrong)
	code, _, stderr := run(t, httpEmitEnv(s.URL, "MEMHOOK_INGEST_TOKEN", wrong), 30*time.Second, append(emitArgs, "--wait", "20s")...)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "refused") || !strings.Contains(stderr, "401") {
		t.Errorf("stderr does not name the refusal (401):\n%s", stderr)
	}
	if n := rcv.Count(); n != 0 {
		t.Errorf("the receiver got %d requests, want none", n)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("serve exit %d, want 0", code)
	}
}

func TestEmitMemory(t *testing.T) {
	tests := []struct {
		name      string
		answer    int
		code      int
		delivered bool
		stderr    []string
	}{
		{name: "receiver 200", answer: 200, code: 0, delivered: true},
		{name: "receiver 400", answer: 400, code: 1, stderr: []string{"not delivered", "400"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := startReceiver(t, func(http.ResponseWriter, *http.Request, int) int { return tt.answer })
			code, stdout, stderr := run(t, env{
				"MEM0_WEBHOOK_URL":         rcv.URL + "/hook",
				"MEM0_WEBHOOK_TOKEN":       webhookToken,
				"MEM0_WEBHOOK_SECRET":      webhookSecret,
				"MEM0_WEBHOOK_RETRY_DELAY": "0.05",
			}, 30*time.Second, emitArgs...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstderr:\n%s", code, tt.code, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			var out struct {
				ID        string `json:"id"`
				Delivered bool   `json:"delivered"`
				Status    int    `json:"status"`
				Attempts  int    `json:"attempts"`
			}
			if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &out) != nil {
				t.Fatalf("stdout is not one JSON outcome line: %q", stdout)
			}
			if out.Delivered != tt.delivered || out.Status != tt.answer || out.Attempts < 1 {
				t.Errorf("outcome %s: want delivered %v, status %d", lines[0], tt.delivered, tt.answer)
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if tt.delivered {
				r := waitDelivery(t, rcv, 10*time.Second, fromU1)
				if id := r.Header.Get("Webhook-Id"); id != out.ID {
					t.Errorf("outcome id %q, delivered webhook-id %q", out.ID, id)
				}
			}
		})
	}
}

// seedEvents are the seed's 12 event types.
var seedEvents = []string{
	"memory_added", "memory_searched", "memory_deleted", "memory_updated", "preference_stored", "correction_stored",
	"relationship_added", "relationship_deleted", "graph_built", "memory_optimized", "batch_operation_completed", "memory_error",
}

func TestDemo(t *testing.T) {
	code, stdout, stderr := run(t, env{}, 60*time.Second, "demo")
	if code != 0 {
		t.Fatalf("demo exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, e := range seedEvents {
		if !regexp.MustCompile(`(?m)^` + e + `\s+200\s+\d+\s`).MatchString(stdout) {
			t.Errorf("the demo table has no delivered row for %s", e)
		}
	}
	if !strings.Contains(stdout, "delivered 12 of 12") {
		t.Errorf("the demo does not report 12 of 12 delivered")
	}
	if t.Failed() {
		t.Logf("demo stdout:\n%s", stdout)
	}
}
