package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/internal/proc"
	"github.com/memhook/memhook/internal/receiver"
)

// server is a running `memhook serve`.
type server struct {
	*memhook
	URL    string
	client *http.Client
}

// startServe starts `memhook serve` with e (on a free loopback port unless
// e sets MEMHOOK_ADDR) and returns once GET /healthz answers 200. A free
// port is found by listening and closing, so another process may take it
// first: a serve that cannot listen on it is started again on another.
func startServe(t *testing.T, e env, args ...string) *server {
	t.Helper()
	if e["MEMHOOK_ADDR"] != "" {
		return startServeOn(t, e, false, args...)
	}
	for try := 1; ; try++ {
		addr, err := proc.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if s := startServeOn(t, e.with("MEMHOOK_ADDR", addr), try < 3, args...); s != nil {
			return s
		}
		t.Logf("memhook serve: %s was taken before it could listen; trying another port", addr)
	}
}

// startServeOn is startServe on e's MEMHOOK_ADDR; with retry it returns
// nil when serve exits because it cannot listen there.
func startServeOn(t *testing.T, e env, retry bool, args ...string) *server {
	t.Helper()
	s := &server{
		memhook: startMemhook(t, e, append([]string{"serve"}, args...)...),
		URL:     "http://" + e["MEMHOOK_ADDR"],
		client:  httpClient(),
	}
	poll := &http.Client{Transport: &http.Transport{}, Timeout: time.Second}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if code, _, _, err := do(poll, http.MethodGet, s.URL+"/healthz", nil); err == nil && code == http.StatusOK {
			return s
		}
		select {
		case <-s.Done():
			if retry && strings.Contains(s.Stderr(), "memhook serve: cannot listen on") {
				return nil
			}
			t.Fatalf("memhook serve exited before answering /healthz:\n%s", s.Stderr())
		case <-deadline.C:
			t.Fatalf("memhook serve did not answer /healthz in 30s:\n%s", s.Stderr())
		case <-tick.C:
		}
	}
}

// request sends one request to the server, failing the test on a transport
// error.
func (s *server) request(t *testing.T, method, path string, body []byte, header ...string) (int, http.Header, []byte) {
	t.Helper()
	code, hd, b, err := do(s.client, method, s.URL+path, bytes.NewReader(body), header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, hd, b
}

// postJSON POSTs body as application/json.
func (s *server) postJSON(t *testing.T, path string, body []byte, header ...string) (int, []byte) {
	t.Helper()
	code, _, b := s.request(t, http.MethodPost, path, body, append([]string{"Content-Type", "application/json"}, header...)...)
	return code, b
}

// status returns GET /webhooks/memory/status decoded.
func (s *server) status(t *testing.T, header ...string) statusBody {
	t.Helper()
	code, _, b := s.request(t, http.MethodGet, "/webhooks/memory/status", nil, header...)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, b)
	}
	var st statusBody
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status body: %v: %s", err, b)
	}
	return st
}

// waitIdle waits until the status shows nothing queued or in flight.
func (s *server) waitIdle(t *testing.T, header ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := s.status(t, header...).Counters
		if c.Queued == 0 && c.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d queued and %d in flight after 10s", c.Queued, c.InFlight)
		}
		time.Sleep(10 * time.Millisecond) // polling counters: nothing to wait on
	}
}

type statusBody struct {
	Status        string `json:"status"`
	WebhookConfig struct {
		Enabled       bool     `json:"enabled"`
		WebhookURL    string   `json:"webhook_url"`
		Timeout       float64  `json:"timeout"`
		RetryCount    int      `json:"retry_count"`
		EnabledEvents []string `json:"enabled_events"`
		HasToken      bool     `json:"has_token"`
		HasSecret     bool     `json:"has_secret"`
	} `json:"webhook_config"`
	Counters struct {
		Accepted  uint64 `json:"accepted"`
		Delivered uint64 `json:"delivered"`
		Queued    int    `json:"queued"`
		InFlight  int    `json:"in_flight"`
	} `json:"counters"`
}

type testBody struct {
	Status         string `json:"status"`
	TestSent       bool   `json:"test_sent"`
	WebhookEnabled bool   `json:"webhook_enabled"`
	WebhookURL     string `json:"webhook_url"`
	Delivered      bool   `json:"delivered"`
	ReceiverStatus int    `json:"receiver_status"`
	Attempts       int    `json:"attempts"`
	Error          string `json:"error"`
}

// envelope is a valid event for /ingest or /webhooks/memory, with id.
func envelope(id, user string) []byte {
	return []byte(fmt.Sprintf(`{"event":"memory_added","user_id":%q,"data":{"memory_id":"m-%s","content":"ingested"},"timestamp":"2024-01-15T10:30:00Z","id":%q}`, user, id, id))
}

// seedIncoming is the seed's example body of POST /webhooks/memory.
const seedIncoming = `{
  "event": "memory_added",
  "user_id": "user123",
  "data": {
    "memory_id": "external_mem_456",
    "content": "External system data"
  },
  "timestamp": "2024-01-15T10:30:00Z"
}`

// serveEnv is a serve configuration delivering to rcv with a token and a
// secret.
func serveEnv(rcv *receiver.Receiver, kv ...string) env {
	return env{
		"MEM0_WEBHOOK_URL":         rcv.URL + "/hook",
		"MEM0_WEBHOOK_TOKEN":       webhookToken,
		"MEM0_WEBHOOK_SECRET":      webhookSecret,
		"MEM0_WEBHOOK_TIMEOUT":     "5",
		"MEM0_WEBHOOK_RETRY_DELAY": "0.05",
	}.with(kv...)
}

// checkErrorBody checks that b is exactly {"error": "..."} with a message
// containing every one of want.
func checkErrorBody(t *testing.T, hd http.Header, b []byte, want ...string) {
	t.Helper()
	if ct := hd.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, b)
	}
	msg, ok := body["error"].(string)
	if len(body) != 1 || !ok || msg == "" {
		t.Fatalf(`error body is not {"error": "..."}: %s`, b)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not name %q", msg, w)
		}
	}
}

// metric returns the value of the sample named exactly series (name and
// labels) in a Prometheus text exposition.
func metric(t *testing.T, s *server, series string) float64 {
	t.Helper()
	code, _, b := s.request(t, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, l)
			}
			return f
		}
	}
	return 0 // not exported yet
}

func TestServeStartupLog(t *testing.T) {
	rcv := startReceiver(t, nil)
	t.Run("secrets set", func(t *testing.T) {
		s := startServe(t, serveEnv(rcv,
			"MEMHOOK_ADMIN_TOKEN", adminToken,
			"MEMHOOK_INCOMING_TOKEN", incomingToken,
			"MEMHOOK_INGEST_TOKEN", ingestToken,
			"MEM0_WEBHOOK_URL", "http://hookuser:hookpass-83d1@"+strings.TrimPrefix(rcv.URL, "http://")+"/hook?token=qtoken-5c2e",
		), "--concurrency=7")
		s.neverShow("hookpass-83d1", "qtoken-5c2e")
		line := s.waitLog(10*time.Second, `msg="memhook: serving"`)
		want := map[string]string{
			"level": "INFO", "addr": strings.TrimPrefix(s.URL, "http://"), "transport": "memory",
			"webhooks_enabled": "true", "timeout": "5s", "retry_count": "3", "retry_schedule": "50ms,100ms,200ms",
			"concurrency": "7", "token": "set", "secret": "set", "admin_token": "set",
			"incoming_token": "set", "ingest_token": "set",
			"webhook_url": "http://REDACTED@" + strings.TrimPrefix(rcv.URL, "http://") + "/hook?token=REDACTED",
			"url":         s.URL,
		}
		for k, v := range want {
			if got, _ := logAttr(line, k); got != v {
				t.Errorf("start-up line: %s=%q, want %q\n%s", k, got, v, line)
			}
		}
		s.waitLog(10*time.Second, "level=WARN", "X-Webhook-Secret", "MEMHOOK_LEGACY_SECRET_HEADER=false")
		if code := s.stop(30 * time.Second); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	})
	t.Run("retry schedule", func(t *testing.T) {
		for _, tt := range []struct {
			name, count, schedule string
			env                   []string
		}{
			{name: "MEMHOOK_RETRY_SCHEDULE replaces count and delay", count: "3", schedule: "5s,5m0s,2h0m0s",
				env: []string{"MEM0_WEBHOOK_RETRY_COUNT", "7", "MEMHOOK_RETRY_SCHEDULE", "5s, 5m,2h"}},
			{name: "the seed's count and delay", count: "4", schedule: "250ms,500ms,1s,2s",
				env: []string{"MEM0_WEBHOOK_RETRY_COUNT", "4", "MEM0_WEBHOOK_RETRY_DELAY", "0.25"}},
			{name: "no retries", count: "0", schedule: "none",
				env: []string{"MEM0_WEBHOOK_RETRY_COUNT", "0"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := startServe(t, serveEnv(rcv, tt.env...))
				line := s.waitLog(10*time.Second, `msg="memhook: serving"`)
				for k, v := range map[string]string{"retry_count": tt.count, "retry_schedule": tt.schedule} {
					if got, _ := logAttr(line, k); got != v {
						t.Errorf("start-up line: %s=%q, want %q\n%s", k, got, v, line)
					}
				}
				if got := s.status(t).WebhookConfig.RetryCount; strconv.Itoa(got) != tt.count {
					t.Errorf("status: webhook_config.retry_count %d, want %s", got, tt.count)
				}
				if code := s.stop(30 * time.Second); code != 0 {
					t.Errorf("exit %d, want 0", code)
				}
			})
		}
	})
	t.Run("secrets unset", func(t *testing.T) {
		s := startServe(t, env{})
		line := s.waitLog(10*time.Second, `msg="memhook: serving"`)
		for _, k := range []string{"token", "secret", "admin_token", "incoming_token", "ingest_token"} {
			if got, _ := logAttr(line, k); got != "unset" {
				t.Errorf("start-up line: %s=%q, want unset\n%s", k, got, line)
			}
		}
		if got, _ := logAttr(line, "webhooks_enabled"); got != "false" {
			t.Errorf("webhooks_enabled=%q with no URL, want false", got)
		}
		if strings.Contains(s.Stderr(), "X-Webhook-Secret") {
			t.Errorf("a warning about X-Webhook-Secret without a secret:\n%s", s.Stderr())
		}
		if code := s.stop(30 * time.Second); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	})
}

// TestServeEndpoints checks each endpoint of one router process in turn.
func TestServeEndpoints(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv, "MEM0_WEBHOOK_EVENTS", "memory_added,memory_deleted"))

	t.Run("healthz and readyz", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, _, b := s.request(t, http.MethodGet, path, nil); code != http.StatusOK {
				t.Errorf("GET %s: %d %s", path, code, b)
			}
		}
	})

	t.Run("status has the seed's shape", func(t *testing.T) {
		code, _, b := s.request(t, http.MethodGet, "/webhooks/memory/status", nil)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, b)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"status", "webhook_config", "counters"} {
			if _, ok := top[k]; !ok {
				t.Errorf("status has no %q: %s", k, b)
			}
		}
		var wc map[string]any
		if err := json.Unmarshal(top["webhook_config"], &wc); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"enabled":        true,
			"webhook_url":    rcv.URL + "/hook",
			"timeout":        5.0,
			"retry_count":    3.0,
			"enabled_events": []any{"memory_added", "memory_deleted"},
			"has_token":      true,
			"has_secret":     true,
		}
		if len(wc) != len(want) {
			t.Errorf("webhook_config has keys %v, want exactly %d: %s", keys(wc), len(want), top["webhook_config"])
		}
		for k, v := range want {
			if got, ok := wc[k]; !ok || fmt.Sprint(got) != fmt.Sprint(v) {
				t.Errorf("webhook_config.%s = %#v, want %#v", k, got, v)
			}
		}
		var st statusBody
		_ = json.Unmarshal(b, &st)
		if st.Status != "ok" {
			t.Errorf(`status %q, want "ok"`, st.Status)
		}
		var counters map[string]any
		if err := json.Unmarshal(top["counters"], &counters); err != nil {
			t.Fatalf("counters: %v", err)
		}
		for _, k := range []string{"accepted", "delivered", "retried", "filtered", "poisoned", "dropped", "undelivered"} {
			if _, ok := counters[k].(float64); !ok {
				t.Errorf("counters has no number %q: %s", k, top["counters"])
			}
		}
	})

	t.Run("test webhook delivered", func(t *testing.T) {
		code, _, b := s.request(t, http.MethodPost, "/webhooks/memory/test", nil)
		if code != http.StatusOK {
			t.Fatalf("test: %d %s", code, b)
		}
		var res testBody
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
		if res.Status != "ok" || !res.TestSent || !res.WebhookEnabled || !res.Delivered || res.ReceiverStatus != 200 || res.Attempts != 1 {
			t.Errorf("test result %s; want status ok, test_sent, webhook_enabled, delivered, receiver_status 200, attempts 1", b)
		}
		r := waitDelivery(t, rcv, 10*time.Second, func(r receiver.Request) bool {
			var d delivered
			return json.Unmarshal(r.Body, &d) == nil && d.UserID == "test_user"
		})
		if d := decodeDelivery(t, r); d.Event != "memory_added" {
			t.Errorf("test webhook event %q, want memory_added", d.Event)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+webhookToken {
			t.Errorf("test webhook Authorization %q, want the bearer token", got)
		}
	})

	t.Run("incoming is processed and not sent out", func(t *testing.T) {
		before := s.status(t).Counters.Accepted
		code, b := s.postJSON(t, "/webhooks/memory", []byte(seedIncoming))
		if code != http.StatusOK {
			t.Fatalf("incoming: %d %s", code, b)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil || len(got) != 2 || got["status"] != "processed" || got["action"] != "memory_logged" {
			t.Errorf(`incoming answered %s, want {"status":"processed","action":"memory_logged"}`, b)
		}
		// Logged by the incoming topic's handler…
		s.waitLog(10*time.Second, `msg="memhook: incoming event" `, "user_id=user123", "event=memory_added")
		// …not accepted for delivery…
		if after := s.status(t).Counters.Accepted; after != before {
			t.Errorf("accepted went from %d to %d: the incoming event was queued for delivery", before, after)
		}
		// …and not delivered: once a marker sent after it arrived and
		// the queue is empty, the receiver has not seen it.
		marker := uuid.NewString()
		if code, b := s.postJSON(t, "/ingest", envelope(marker, "marker")); code != http.StatusOK {
			t.Fatalf("ingest marker: %d %s", code, b)
		}
		waitDelivery(t, rcv, 10*time.Second, withID(marker))
		s.waitIdle(t)
		for _, r := range rcv.Requests() {
			if bytes.Contains(r.Body, []byte("external_mem_456")) {
				t.Errorf("the incoming event was delivered as a webhook: %s", r.Body)
			}
		}
	})

	t.Run("ingest answers after hand-off and keeps the id", func(t *testing.T) {
		before := s.status(t).Counters.Accepted
		id := uuid.NewString()
		code, b := s.postJSON(t, "/ingest", envelope(id, "u-ingest"))
		if code != http.StatusOK {
			t.Fatalf("ingest: %d %s", code, b)
		}
		if after := s.status(t).Counters.Accepted; after != before+1 {
			t.Errorf("accepted %d after the 200, want %d: answered before the hand-off", after, before+1)
		}
		r := waitDelivery(t, rcv, 10*time.Second, withID(id))
		if d := decodeDelivery(t, r); d.UserID != "u-ingest" || d.Event != "memory_added" {
			t.Errorf("delivered %s", r.Body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		const series = `memhook_events_total{event="memory_added",outcome="delivered"}`
		before := metric(t, s, series)
		id := uuid.NewString()
		if code, b := s.postJSON(t, "/ingest", envelope(id, "u-metrics")); code != http.StatusOK {
			t.Fatalf("ingest: %d %s", code, b)
		}
		waitDelivery(t, rcv, 10*time.Second, withID(id))
		deadline := time.Now().Add(10 * time.Second)
		for metric(t, s, series) < before+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s stayed at %v after a delivery", series, before)
			}
			time.Sleep(20 * time.Millisecond) // polling a counter: nothing to wait on
		}
		_, _, b := s.request(t, http.MethodGet, "/metrics", nil)
		if !regexp.MustCompile(`(?m)^memhook_router_\w+`).Match(b) {
			t.Errorf("no watermill router metric (memhook_router_…) in /metrics")
		}
	})

	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestServeStatusRedactsURL(t *testing.T) {
	rcv := startReceiver(t, nil)
	hostPort := strings.TrimPrefix(rcv.URL, "http://")
	s := startServe(t, serveEnv(rcv, "MEM0_WEBHOOK_URL", "http://hookuser:hookpass-83d1@"+hostPort+"/hook?token=qtoken-5c2e&plain"))
	s.neverShow("hookpass-83d1", "qtoken-5c2e", "hookuser")
	want := "http://REDACTED@" + hostPort + "/hook?token=REDACTED&REDACTED"
	if got := s.status(t).WebhookConfig.WebhookURL; got != want {
		t.Errorf("status webhook_url %q, want %q", got, want)
	}
	code, _, b := s.request(t, http.MethodPost, "/webhooks/memory/test", nil)
	var res testBody
	if err := json.Unmarshal(b, &res); err != nil || code != http.StatusOK {
		t.Fatalf("test: %d %s", code, b)
	}
	if res.WebhookURL != want || !res.Delivered {
		t.Errorf("test webhook_url %q delivered %v, want %q and delivered", res.WebhookURL, res.Delivered, want)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func TestServeTestWebhookFailing(t *testing.T) {
	rcv := startReceiver(t, func(http.ResponseWriter, *http.Request, int) int { return http.StatusInternalServerError })
	s := startServe(t, serveEnv(rcv, "MEM0_WEBHOOK_RETRY_COUNT", "1", "MEM0_WEBHOOK_RETRY_DELAY", "0.05"))
	code, _, b := s.request(t, http.MethodPost, "/webhooks/memory/test", nil)
	if code != http.StatusOK {
		t.Fatalf("test: %d %s", code, b)
	}
	var res testBody
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Delivered || res.ReceiverStatus != 500 || res.Attempts != 2 || res.Error == "" {
		t.Errorf("test result %s; want delivered false, receiver_status 500, attempts 2 and an error", b)
	}
	if n := rcv.Count(); n != 2 {
		t.Errorf("the receiver got %d requests, want 2 (one retry)", n)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// badRequest is one request the router must refuse.
type badRequest struct {
	name        string
	method      string
	path        string
	contentType string
	body        []byte
	code        int
	want        []string // in the error message
	allow       string   // the Allow header of a 405
}

func badRequests() []badRequest {
	oversized := append([]byte(`{"event":"memory_added","user_id":"u","data":"`), bytes.Repeat([]byte("x"), 1<<20)...)
	oversized = append(oversized, `"}`...)
	var out []badRequest
	for _, path := range []string{"/webhooks/memory", "/ingest"} {
		out = append(out,
			badRequest{name: "malformed JSON", method: "POST", path: path, contentType: "application/json",
				body: []byte(`{"event": "memory_added", "user_id": `), code: 400, want: []string{"JSON"}},
			badRequest{name: "not an object", method: "POST", path: path, contentType: "application/json",
				body: []byte(`[1,2]`), code: 400, want: []string{"JSON"}},
			badRequest{name: "unknown event type", method: "POST", path: path, contentType: "application/json",
				body: []byte(`{"event":"memory_exploded","user_id":"u","data":{}}`), code: 422, want: []string{"event", "memory_exploded"}},
			badRequest{name: "missing user_id", method: "POST", path: path, contentType: "application/json",
				body: []byte(`{"event":"memory_added","data":{}}`), code: 422, want: []string{"user_id"}},
			badRequest{name: "body over 1 MiB", method: "POST", path: path, contentType: "application/json",
				body: oversized, code: 413, want: []string{"larger"}},
			badRequest{name: "text/plain", method: "POST", path: path, contentType: "text/plain",
				body: []byte(`{"event":"memory_added","user_id":"u","data":{}}`), code: 415, want: []string{"text/plain"}},
			badRequest{name: "no content type", method: "POST", path: path,
				body: []byte(`{"event":"memory_added","user_id":"u","data":{}}`), code: 415, want: []string{"content type"}},
			badRequest{name: "GET", method: "GET", path: path, code: 405, want: []string{"GET", "POST"}, allow: "POST"},
		)
	}
	return append(out,
		badRequest{name: "GET test", method: "GET", path: "/webhooks/memory/test", code: 405, want: []string{"POST"}, allow: "POST"},
		badRequest{name: "POST status", method: "POST", path: "/webhooks/memory/status", code: 405, want: []string{"GET"}, allow: "GET"},
		badRequest{name: "unknown path", method: "GET", path: "/webhooks/nope", code: 404, want: []string{"/webhooks/nope"}},
		badRequest{name: "unknown path POST", method: "POST", path: "/nope", contentType: "application/json", body: []byte(`{}`), code: 404, want: []string{"/nope"}},
	)
}

func (br badRequest) send(c *http.Client, base string) (int, http.Header, []byte, error) {
	var hd []string
	if br.contentType != "" {
		hd = []string{"Content-Type", br.contentType}
	}
	return do(c, br.method, base+br.path, bytes.NewReader(br.body), hd...)
}

func TestServeBadInput(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv))
	for _, br := range badRequests() {
		t.Run(br.path+" "+br.name, func(t *testing.T) {
			code, hd, b, err := br.send(s.client, s.URL)
			if err != nil {
				t.Fatal(err)
			}
			if code != br.code {
				t.Errorf("%s %s: %d, want %d: %s", br.method, br.path, code, br.code, b)
			}
			checkErrorBody(t, hd, b, br.want...)
			if got := hd.Get("Allow"); got != br.allow {
				t.Errorf("Allow %q, want %q", got, br.allow)
			}
		})
	}
	// None of them was delivered: a marker sent after them arrives alone.
	marker := uuid.NewString()
	if code, b := s.postJSON(t, "/ingest", envelope(marker, "marker")); code != http.StatusOK {
		t.Fatalf("ingest marker: %d %s", code, b)
	}
	waitDelivery(t, rcv, 10*time.Second, withID(marker))
	if n := rcv.Count(); n != 1 {
		t.Errorf("the receiver got %d requests, want only the marker", n)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// TestServeBadInputFlood: good events sent during a flood of bad requests
// are all answered 200 and delivered.
func TestServeBadInputFlood(t *testing.T) {
	const workers, perWorker, good = 20, 100, 50
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv))
	bad := badRequests()

	stopFlood := make(chan struct{})
	problems := make(chan string, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := httpClient()
			for i := range perWorker {
				select {
				case <-stopFlood:
					return
				default:
				}
				br := bad[(w*perWorker+i)%len(bad)]
				code, _, b, err := br.send(c, s.URL)
				switch {
				case err != nil:
					problems <- fmt.Sprintf("%s %s: %v", br.path, br.name, err)
				case code != br.code:
					problems <- fmt.Sprintf("%s %s: %d, want %d: %s", br.path, br.name, code, br.code, b)
				}
			}
		}()
	}
	floodDone := make(chan struct{})
	go func() { wg.Wait(); close(floodDone) }()
	defer func() {
		close(stopFlood)
		select {
		case <-floodDone:
		case <-time.After(2 * time.Minute):
			t.Errorf("the flood did not end in 2 minutes")
		}
	}()

	ids := make([]string, good)
	for i := range ids {
		ids[i] = uuid.NewString()
		if code, b := s.postJSON(t, "/ingest", envelope(ids[i], "u-good")); code != http.StatusOK {
			t.Errorf("good event %d during the flood: %d %s", i, code, b)
		}
	}
	for _, id := range ids {
		waitDelivery(t, rcv, 30*time.Second, withID(id))
	}
	select {
	case <-floodDone:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the flood did not end in 2 minutes")
	}
	close(problems)
	n := 0
	for p := range problems {
		if n++; n <= 10 {
			t.Errorf("bad request answered wrongly: %s", p)
		}
	}
	if n > 10 {
		t.Errorf("… and %d more", n-10)
	}
	if got := rcv.Count(); got != good {
		t.Errorf("the receiver got %d requests, want the %d good ones", got, good)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// TestServeProtection: with tokens set, each endpoint that acts refuses a
// request without its token (401 in JSON, a WARN line that does not show
// what was presented) and serves one with it.
func TestServeProtection(t *testing.T) {
	const presented = "presented-wrong-6a1b93"
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv,
		"MEMHOOK_ADMIN_TOKEN", adminToken,
		"MEMHOOK_INCOMING_TOKEN", incomingToken,
		"MEMHOOK_INGEST_TOKEN", ingestToken,
	))
	s.neverShow(presented)
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		header []string
		code   int
	}{
		{"status without token", "GET", "/webhooks/memory/status", nil, nil, 401},
		{"status with a wrong token", "GET", "/webhooks/memory/status", nil, bearer(presented), 401},
		{"status with the ingest token", "GET", "/webhooks/memory/status", nil, bearer(ingestToken), 401},
		{"status with the admin token", "GET", "/webhooks/memory/status", nil, bearer(adminToken), 200},
		{"test without token", "POST", "/webhooks/memory/test", nil, nil, 401},
		{"test with a wrong token", "POST", "/webhooks/memory/test", nil, bearer(presented), 401},
		{"test with the admin token", "POST", "/webhooks/memory/test", nil, bearer(adminToken), 200},
		{"incoming without token", "POST", "/webhooks/memory", []byte(seedIncoming), nil, 401},
		{"incoming with a wrong token", "POST", "/webhooks/memory", []byte(seedIncoming), bearer(presented), 401},
		{"incoming with the admin token", "POST", "/webhooks/memory", []byte(seedIncoming), bearer(adminToken), 401},
		{"incoming with the incoming token", "POST", "/webhooks/memory", []byte(seedIncoming), bearer(incomingToken), 200},
		{"ingest without token", "POST", "/ingest", envelope(uuid.NewString(), "u"), nil, 401},
		{"ingest with a wrong token", "POST", "/ingest", envelope(uuid.NewString(), "u"), bearer(presented), 401},
		{"ingest with the incoming token", "POST", "/ingest", envelope(uuid.NewString(), "u"), bearer(incomingToken), 401},
		{"ingest with the ingest token", "POST", "/ingest", envelope(uuid.NewString(), "u"), bearer(ingestToken), 200},
	}
	refusals := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hd, b := s.request(t, tt.method, tt.path, tt.body, append([]string{"Content-Type", "application/json"}, tt.header...)...)
			if code != tt.code {
				t.Fatalf("%d, want %d: %s", code, tt.code, b)
			}
			if code == http.StatusUnauthorized {
				refusals++
				checkErrorBody(t, hd, b)
				if _, err := s.WaitLines(isRefusal, refusals, 10*time.Second); err != nil {
					t.Fatalf("refusal %d logged no WARN line: %v", refusals, err)
				}
			}
		})
	}
	warns := 0
	for _, l := range linesAt(s.Lines(), "WARN") {
		if isRefusal(l) {
			warns++
		}
		for _, tok := range []string{presented, adminToken, incomingToken, ingestToken} {
			if strings.Contains(l, tok) {
				t.Errorf("a WARN line shows a presented token: %s", l)
			}
		}
	}
	if warns != refusals {
		t.Errorf("%d WARN refusal lines for %d refusals", warns, refusals)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// isRefusal matches the WARN line of a refused request.
func isRefusal(l string) bool {
	return strings.Contains(l, "level=WARN") && strings.Contains(l, "refused")
}
