package main_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/internal/redistest"
)

// waitReadyz waits until GET /readyz answers 200.
func (s *server) waitReadyz(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if code, _, _, err := do(s.client, http.MethodGet, s.URL+"/readyz", nil); err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready in %s:\n%s", timeout, s.Stderr())
		}
		time.Sleep(20 * time.Millisecond) // polling a process: nothing to wait on
	}
}

// Two routers on one Redis share the duplicate guard: an event ingested
// by one and sent again to the other (its answer was lost, say) is
// appended to the stream, and delivered, once.
func TestServeRedisSharesTheDuplicateGuard(t *testing.T) {
	redis := redistest.Start(t)
	rcv := startReceiver(t, nil)
	e := serveEnv(rcv, "MEMHOOK_TRANSPORT", "redis", "MEMHOOK_REDIS_URL", redis.URL())
	a := startServe(t, e.with("MEMHOOK_REDIS_CONSUMER", "router-a"))
	b := startServe(t, e.with("MEMHOOK_REDIS_CONSUMER", "router-b"))
	for _, s := range []*server{a, b} {
		if got, _ := logAttr(s.waitLog(10*time.Second, `msg="memhook: serving"`), "duplicate_guard"); got != "redis" {
			t.Errorf("start-up line: duplicate_guard=%q, want redis", got)
		}
		s.waitReadyz(t, 15*time.Second)
	}

	id := uuid.NewString()
	for i, s := range []*server{a, b, a} {
		code, body := s.postJSON(t, "/ingest", envelope(id, "u1"), "webhook-id", id)
		var out map[string]any
		_ = json.Unmarshal(body, &out)
		if code != http.StatusOK || (i > 0 && out["duplicate"] != true) {
			t.Fatalf("POST /ingest %d: %d %s, want 200 (a duplicate after the first)", i+1, code, body)
		}
	}
	waitDelivery(t, rcv, 15*time.Second, withID(id))
	// A marker sent after it through each router arrives, and the event
	// has still arrived once.
	for _, s := range []*server{a, b} {
		marker := uuid.NewString()
		if code, body := s.postJSON(t, "/ingest", envelope(marker, "marker"), "webhook-id", marker); code != http.StatusOK {
			t.Fatalf("marker: %d %s", code, body)
		}
		waitDelivery(t, rcv, 15*time.Second, withID(marker))
	}
	n := 0
	for _, r := range rcv.Requests() {
		if withID(id)(r) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("event %s delivered %d times, want once", id, n)
	}
	for _, s := range []*server{a, b} {
		if code := s.stop(30 * time.Second); code != 0 {
			t.Errorf("exit %d, want 0:\n%s", code, s.Stderr())
		}
	}
}
