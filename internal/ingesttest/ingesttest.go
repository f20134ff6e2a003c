// Package ingesttest runs the router process's real ingest endpoints
// (handlers.API) on loopback for tests on both sides of transport http:
// the endpoints' own tests and the application side's forwarder.
package ingesttest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/handlers"
)

// Envelope returns a valid memory_added envelope with the given id.
func Envelope(id string) string {
	return fmt.Sprintf(`{"id":%q,"event":"memory_added","timestamp":"2024-01-15T10:30:00Z","user_id":"user123","data":{"memory_id":"m1","content":"x"}}`, id)
}

// Router is a router process's API over loopback whose Ingest keeps what it
// takes and refuses (handlers.ErrBusy) once it holds its capacity.
type Router struct {
	Server  *httptest.Server
	Batches atomic.Int64 // POST /ingest/batch requests
	Singles atomic.Int64 // POST /ingest requests

	mu       sync.Mutex
	capacity int
	ingested []*message.Message
}

// Start serves api (its Incoming, Ingest, Status, Test and Logger set
// here) until t ends.
func Start(t testing.TB, capacity int, api *handlers.API) *Router {
	t.Helper()
	r := &Router{capacity: capacity}
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
		cancel()
		t.Fatal(err)
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case handlers.PathIngestBatch:
			r.Batches.Add(1)
		case handlers.PathIngest:
			r.Singles.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { r.Server.Close(); cancel() })
	return r
}

// IDs returns the ids of the events ingested, in order.
func (r *Router) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.ingested))
	for i, m := range r.ingested {
		out[i] = m.UUID
	}
	return out
}

// Ingested returns the i-th event ingested.
func (r *Router) Ingested(i int) *message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ingested[i]
}

// SetCapacity changes how many events Ingest takes in all.
func (r *Router) SetCapacity(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.capacity = n
}
