package handlers_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
)

// envelope returns a valid memory_added envelope with the given id.
func envelope(id string) string {
	return fmt.Sprintf(`{"id":%q,"event":"memory_added","timestamp":"2024-01-15T10:30:00Z","user_id":"user123","data":{"memory_id":"m1","content":"x"}}`, id)
}

// batchRouter is a router process's API over loopback whose Ingest keeps
// what it takes and refuses (ErrBusy) once it holds capacity events.
type batchRouter struct {
	srv      *httptest.Server
	capacity int
	batches  atomic.Int64 // POST /ingest/batch requests
	singles  atomic.Int64 // POST /ingest requests

	mu       sync.Mutex
	ingested []*message.Message
}

func startBatchRouter(t *testing.T, capacity int, api *handlers.API) *batchRouter {
	t.Helper()
	r := &batchRouter{capacity: capacity}
	api.Incoming = func(*message.Message) error { return nil }
	api.Ingest = func(m *message.Message) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.ingested) >= r.capacity {
			return handlers.ErrBusy
		}
		r.ingested = append(r.ingested, m)
		return nil
	}
	api.Status = func() handlers.Status { return handlers.Status{} }
	api.Test = func(context.Context) handlers.TestResult { return handlers.TestResult{} }
	api.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	h, err := api.Handler(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case handlers.PathIngestBatch:
			r.batches.Add(1)
		case handlers.PathIngest:
			r.singles.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { r.srv.Close(); cancel() })
	return r
}

func (r *batchRouter) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.ingested))
	for i, m := range r.ingested {
		out[i] = m.UUID
	}
	return out
}

func TestIngestBatch(t *testing.T) {
	r := startBatchRouter(t, 1000, &handlers.API{})
	f := &apiFixture{srv: r.srv}
	batch := "[" + envelope("e1") + "," + envelope("e2") + "," + envelope("e3") + "]"

	code, out := f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 0.0 {
		t.Fatalf("first batch: %d %v, want 200 accepted 3", code, out)
	}
	if got := strings.Join(r.ids(), ","); got != "e1,e2,e3" {
		t.Fatalf("ingested %s, want e1,e2,e3 in order", got)
	}
	r.mu.Lock()
	m := r.ingested[1]
	r.mu.Unlock()
	if m.Metadata.Get(event.MetaType) != "memory_added" || m.Metadata.Get(event.MetaUserID) != "user123" || string(m.Payload) != envelope("e2") {
		t.Errorf("message e2: metadata %v payload %s", m.Metadata, m.Payload)
	}

	// The same batch again (its answer was lost, say): counted, not queued.
	code, out = f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 3.0 {
		t.Fatalf("batch sent again: %d %v, want 200 accepted 3 duplicates 3", code, out)
	}
	if n := len(r.ids()); n != 3 {
		t.Fatalf("%d events queued after the batch came twice, want 3", n)
	}

	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"not an array", envelope("x"), 400, "not a JSON array of events"},
		{"empty", "[]", 400, "empty batch"},
		{"malformed event", "[" + envelope("x1") + `,{"event":]`, 400, "not a JSON array"},
		{"invalid event named by index", "[" + envelope("x2") + `,{"id":"x3","event":"memory_added"}]`, 422, "event 1: "},
		{"too many", "[" + strings.Repeat(envelope("y")+",", handlers.MaxBatchEvents) + envelope("y") + "]", 413, "at most 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := f.post(t, handlers.PathIngestBatch, nil, tt.body)
			if code != tt.code || !strings.Contains(fmt.Sprint(out["error"]), tt.want) {
				t.Fatalf("%d %v, want %d with %q", code, out, tt.code, tt.want)
			}
		})
	}
	if n := len(r.ids()); n != 3 {
		t.Errorf("%d events queued, want 3: a refused batch queues nothing", n)
	}
}

// When the queue fills up mid-batch the answer says how many of the first
// events were taken; sending the rest later takes them.
func TestIngestBatchQueueFull(t *testing.T) {
	r := startBatchRouter(t, 2, &handlers.API{})
	f := &apiFixture{srv: r.srv}
	batch := "[" + envelope("f1") + "," + envelope("f2") + "," + envelope("f3") + "]"
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+handlers.PathIngestBatch, strings.NewReader(batch))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	r.mu.Lock()
	r.capacity = 10
	r.mu.Unlock()
	code, out := f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 2.0 {
		t.Fatalf("after room was made: %d %v, want accepted 3 duplicates 2", code, out)
	}
	if got := strings.Join(r.ids(), ","); got != "f1,f2,f3" {
		t.Errorf("ingested %s, want f1,f2,f3", got)
	}
}

func TestIngestBatchRequiresTheIngestToken(t *testing.T) {
	r := startBatchRouter(t, 10, &handlers.API{IngestToken: "ingest-token"})
	f := &apiFixture{srv: r.srv}
	batch := "[" + envelope("t1") + "]"
	if code, out := f.post(t, handlers.PathIngestBatch, nil, batch); code != 401 {
		t.Fatalf("without the token: %d %v, want 401", code, out)
	}
	if code, out := f.post(t, handlers.PathIngestBatch, http.Header{"Authorization": {"Bearer ingest-token"}}, batch); code != 200 {
		t.Fatalf("with the token: %d %v, want 200", code, out)
	}
}
