package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/ingesttest"
	"github.com/memhook/memhook/verify"
)

const (
	incomingSecret = "whsec_aW5jb21pbmctc2VjcmV0LWZvci10ZXN0cw=="
	incomingToken  = "incoming-token-value"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type apiFixture struct {
	srv      *httptest.Server
	logs     *logBuf
	mu       sync.Mutex
	incoming []*message.Message
	ingested []*message.Message
}

func startAPI(t *testing.T, api *handlers.API) *apiFixture {
	t.Helper()
	return startAPIWith(t, api, nil)
}

// startAPIWith is startAPI whose Ingest, when ingest is set, calls ingest
// before keeping the message.
func startAPIWith(t *testing.T, api *handlers.API, ingest func(*message.Message) error) *apiFixture {
	t.Helper()
	f := &apiFixture{logs: &logBuf{}}
	api.Incoming = func(m *message.Message) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.incoming = append(f.incoming, m)
		return nil
	}
	api.Ingest = func(m *message.Message) error {
		if ingest != nil {
			if err := ingest(m); err != nil {
				return err
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.ingested = append(f.ingested, m)
		return nil
	}
	api.Status = func() handlers.Status { return handlers.Status{Status: "ok"} }
	api.Test = func(context.Context) handlers.TestResult { return handlers.TestResult{Status: "ok"} }
	api.Logger = slog.New(slog.NewTextHandler(f.logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := api.Handler(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(func() { f.srv.Close(); cancel() })
	return f
}

func (f *apiFixture) post(t *testing.T, path string, h http.Header, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func signed(t *testing.T, secret, id string, at time.Time, body string) http.Header {
	t.Helper()
	secs, err := verify.ParseSecrets(secret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(verify.HeaderID, id)
	h.Set(verify.HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(verify.HeaderSignature, verify.Sign(secs, id, at, []byte(body)))
	return h
}

const incomingBody = `{"event":"memory_added","user_id":"user123","data":{"memory_id":"external_mem_456","content":"External system data"},"timestamp":"2024-01-15T10:30:00Z"}`

func TestIncomingVerification(t *testing.T) {
	secs, _ := verify.ParseSecrets(incomingSecret)
	f := startAPI(t, &handlers.API{IncomingToken: incomingToken, IncomingSecrets: secs})
	now := time.Now()
	tests := []struct {
		name       string
		h          http.Header
		body       string
		wantStatus int
		wantError  string
	}{
		{"bearer token", http.Header{"Authorization": {"Bearer " + incomingToken}}, incomingBody, 200, ""},
		{"signature", signed(t, incomingSecret, "evt_sig_1", now, incomingBody), incomingBody, 200, ""},
		{"tampered body", signed(t, incomingSecret, "evt_sig_2", now, incomingBody), strings.Replace(incomingBody, "user123", "mallory", 1), 401, "no matching signature"},
		{"stale timestamp", signed(t, incomingSecret, "evt_sig_3", now.Add(-10*time.Minute), incomingBody), incomingBody, 401, "timestamp too old"},
		{"wrong secret", signed(t, "whsec_d3Jvbmc=", "evt_sig_4", now, incomingBody), incomingBody, 401, "no matching signature"},
		{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, incomingBody, 401, "missing bearer token or webhook signature"},
		{"nothing", nil, incomingBody, 401, "missing bearer token or webhook signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := f.post(t, handlers.PathIncoming, tt.h, tt.body)
			if code != tt.wantStatus {
				t.Fatalf("status %d (%v), want %d", code, out, tt.wantStatus)
			}
			if tt.wantError != "" && !strings.Contains(fmt.Sprint(out["error"]), tt.wantError) {
				t.Errorf("error = %v, want %q", out["error"], tt.wantError)
			}
			if s := fmt.Sprint(out); strings.Contains(s, "aW5jb21pbmc") || strings.Contains(s, incomingToken) {
				t.Errorf("answer reveals a secret: %s", s)
			}
		})
	}
	f.mu.Lock()
	n := len(f.incoming)
	f.mu.Unlock()
	if n != 2 {
		t.Errorf("%d incoming events published, want 2 (token and signature)", n)
	}
	logs := f.logs.String()
	if strings.Count(logs, "level=WARN msg=\"memhook: request refused\"") != 5 {
		t.Errorf("want one WARN per refusal, logs:\n%s", logs)
	}
	if strings.Contains(logs, "aW5jb21pbmc") || strings.Contains(logs, incomingToken) || strings.Contains(logs, "Bearer nope") {
		t.Errorf("logs reveal a secret or the presented token:\n%s", logs)
	}
}

// A signed request replayed within the window is answered 200 and not
// processed twice; a failed one is processed when retried.
func TestReplayedWebhookIDIsProcessedOnce(t *testing.T) {
	secs, _ := verify.ParseSecrets(incomingSecret)
	f := startAPI(t, &handlers.API{IncomingSecrets: secs})
	h := signed(t, incomingSecret, "evt_replay", time.Now(), incomingBody)
	for i := range 3 {
		code, out := f.post(t, handlers.PathIncoming, h, incomingBody)
		if code != 200 || out["status"] != "processed" {
			t.Fatalf("request %d: %d %v", i+1, code, out)
		}
		if i > 0 && out["duplicate"] != true {
			t.Errorf("request %d: not marked duplicate: %v", i+1, out)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.incoming) != 1 {
		t.Fatalf("processed %d times, want once", len(f.incoming))
	}
}

func TestIngestAcceptsSignatureAndKeepsTheID(t *testing.T) {
	secs, _ := verify.ParseSecrets("ingest-secret")
	f := startAPI(t, &handlers.API{IngestSecrets: secs})
	body := `{"event":"memory_added","user_id":"u","data":{},"id":"evt_ing_1"}`
	code, _ := f.post(t, handlers.PathIngest, signed(t, "ingest-secret", "evt_ing_1", time.Now(), body), body)
	if code != 200 {
		t.Fatalf("signed ingest: %d", code)
	}
	if code, _ := f.post(t, handlers.PathIngest, nil, body); code != 401 {
		t.Fatalf("unsigned ingest: %d, want 401", code)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ingested) != 1 || f.ingested[0].UUID != "evt_ing_1" || f.ingested[0].Metadata.Get("event_type") != "memory_added" {
		t.Fatalf("ingested %v", f.ingested)
	}
}

// A request for an event id another request is handling right now is told
// to retry (503 with Retry-After), as POST /ingest/batch answers: a 409
// would be a permanent refusal to the application's forwarder, which
// would poison an event that is being delivered.
func TestIngestSameIDWhileInProgress(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	f := startAPIWith(t, &handlers.API{}, func(*message.Message) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	body := ingesttest.Envelope("evt_busy")
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+handlers.PathIngest, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(verify.HeaderID, "evt_busy")
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the first request did not reach Ingest in 10s")
	}
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+handlers.PathIngest, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(verify.HeaderID, "evt_busy")
	resp, err := f.srv.Client().Do(req)
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("twin while the first is handled: %d Retry-After %q %v, want 503 with Retry-After 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	select {
	case code := <-first:
		if code != http.StatusOK {
			t.Fatalf("first request: %d, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first request was not answered in 10s")
	}
	// Once the first is done, the twin sent again is a duplicate.
	code, out := f.post(t, handlers.PathIngest, http.Header{verify.HeaderID: {"evt_busy"}}, body)
	if code != http.StatusOK || out["duplicate"] != true {
		t.Errorf("twin after the first: %d %v, want 200 duplicate", code, out)
	}
}

// Event ids that cannot be sent as a webhook-id header are refused with
// 422 naming the field (the batch's event by index, a header by name)
// instead of being queued and poisoned with status 0 later.
func TestBadEventIDsAreRefused(t *testing.T) {
	withID := func(id string) string {
		b, _ := json.Marshal(id)
		return `{"event":"memory_added","user_id":"u","data":{},"id":` + string(b) + `}`
	}
	long := strings.Repeat("a", event.MaxIDBytes+1)
	tests := []struct {
		name, path string
		h          http.Header
		body       string
		want       []string // in the error
	}{
		{"ingest CR LF", handlers.PathIngest, nil, withID("evt\r\nX-Injected: 1"), []string{"field id", "control character"}},
		{"ingest NUL", handlers.PathIngest, nil, withID("evt\x00"), []string{"field id", "control character"}},
		{"ingest blank", handlers.PathIngest, nil, withID("   "), []string{"field id", "blank"}},
		{"ingest too long", handlers.PathIngest, nil, withID(long), []string{"field id", "257 bytes"}},
		{"ingest webhook-id header too long", handlers.PathIngest, http.Header{"Webhook-Id": {long}}, ingesttest.Envelope("evt_ok_1"), []string{"header webhook-id", "257 bytes"}},
		{"ingest webhook-id header with a tab", handlers.PathIngest, http.Header{"Webhook-Id": {"evt\t1"}}, ingesttest.Envelope("evt_ok_2"), []string{"header webhook-id", "control character"}},
		{"ingest Message-Uuid header (watermill-http) with a C1 control", handlers.PathIngest, http.Header{"Message-Uuid": {"evt\u0085"}}, `{"event":"memory_added","user_id":"u","data":{}}`, []string{"header Message-Uuid", "control character"}},
		{"batch names the event", handlers.PathIngestBatch, nil, "[" + ingesttest.Envelope("evt_ok_3") + "," + withID("evt\n") + "]", []string{"event 1: ", "field id", "control character"}},
		{"batch blank", handlers.PathIngestBatch, nil, "[" + withID("\t") + "]", []string{"event 0: ", "field id"}},
		{"incoming LF", handlers.PathIncoming, nil, withID("evt\n"), []string{"field id", "control character"}},
		{"incoming webhook-id header too long", handlers.PathIncoming, http.Header{"Webhook-Id": {long}}, incomingBody, []string{"header webhook-id", "257 bytes"}},
	}
	f := startAPI(t, &handlers.API{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := f.post(t, tt.path, tt.h, tt.body)
			if code != http.StatusUnprocessableEntity {
				t.Fatalf("%d %v, want 422", code, out)
			}
			if len(out) != 1 {
				t.Errorf("answer %v, want just an error", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(fmt.Sprint(out["error"]), w) {
					t.Errorf("error %q does not say %q", out["error"], w)
				}
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ingested) != 0 || len(f.incoming) != 0 {
		t.Errorf("%d events ingested and %d incoming published, want none", len(f.ingested), len(f.incoming))
	}
}

// GET /readyz tells anyone only whether the router is ready; why it is not
// (which names the Redis host and port) only to a caller with the admin
// token.
func TestReadyzDetailOnlyWithTheAdminToken(t *testing.T) {
	const detail = "bus: not ready: redis transport: ping redis://10.1.2.3:6380/0: dial tcp 10.1.2.3:6380: connect: connection refused"
	var notReady atomic.Bool
	notReady.Store(true)
	ready := func(context.Context) error {
		if notReady.Load() {
			return errors.New(detail)
		}
		return nil
	}
	get := func(t *testing.T, f *apiFixture, h http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+handlers.PathReady, nil)
		req.Header = h
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	guarded := startAPI(t, &handlers.API{Ready: ready, AdminToken: "admin-token"})
	open := startAPI(t, &handlers.API{Ready: ready}) // no admin token: loopback only, status is open too
	tests := []struct {
		name string
		f    *apiFixture
		h    http.Header
		want string
	}{
		{"anonymous", guarded, nil, `{"status":"not ready"}`},
		{"wrong token", guarded, http.Header{"Authorization": {"Bearer nope"}}, `{"status":"not ready"}`},
		{"ingest-style token", guarded, http.Header{"Authorization": {"admin-token"}}, `{"status":"not ready"}`},
		{"admin token", guarded, http.Header{"Authorization": {"Bearer admin-token"}}, `{"status":"not ready","error":"` + detail + `"}`},
		{"no admin token configured", open, nil, `{"status":"not ready","error":"` + detail + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, tt.f, tt.h)
			if code != http.StatusServiceUnavailable || body != tt.want {
				t.Errorf("%d %s, want 503 %s", code, body, tt.want)
			}
		})
	}
	notReady.Store(false)
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer admin-token"}}} {
		if code, body := get(t, guarded, h); code != http.StatusOK || body != `{"status":"ready"}` {
			t.Errorf("ready, header %v: %d %s, want 200 {\"status\":\"ready\"}", h, code, body)
		}
	}
	if logs := guarded.logs.String(); strings.Contains(logs, "request refused") {
		t.Errorf("a readiness probe without the token was logged as a refusal:\n%s", logs)
	}
}
