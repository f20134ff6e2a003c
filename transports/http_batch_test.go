package transports_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/ingesttest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// The BatchForwarder against the router process's real ingest endpoints
// (handlers.API over loopback).

// newForwarder returns a BatchForwarder to base whose Single posts one
// message to base + /ingest, counting the calls.
func newForwarder(t *testing.T, base string, singles *atomic.Int64) *transports.BatchForwarder {
	t.Helper()
	fwd := transports.Forward{Token: "ingest-token"}
	single := func(msg *message.Message) error {
		singles.Add(1)
		req, _ := http.NewRequest(http.MethodPost, base+handlers.PathIngest, bytes.NewReader(msg.Payload))
		req.Header = fwd.Headers(msg.UUID, msg.Payload)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &middleware.StatusError{Code: resp.StatusCode}
		}
		return nil
	}
	f, err := transports.NewBatchForwarder(transports.BatchForwarderConfig{
		URL: base + handlers.PathIngestBatch, Headers: fwd.Headers, Single: single, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// forwardAll hands n messages (ids p0…) to f from w goroutines and returns
// each message's error by index.
func forwardAll(f *transports.BatchForwarder, prefix string, n, w int, payload func(i int) string) []error {
	errs := make([]error, n)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				id := fmt.Sprintf("%s%d", prefix, i)
				errs[i] = f.Handle(message.NewMessage(id, []byte(payload(i))))
			}
		}()
	}
	wg.Wait()
	return errs
}

// Many events handed at once travel in few requests, each taken exactly
// once.
func TestBatchForwarderBatches(t *testing.T) {
	r := ingesttest.Start(t, 10_000, &handlers.API{IngestToken: "ingest-token"})
	var singles atomic.Int64
	f := newForwarder(t, r.Server.URL, &singles)
	const n = 600
	errs := forwardAll(f, "b", n, 32, func(i int) string { return ingesttest.Envelope(fmt.Sprintf("b%d", i)) })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ids := r.IDs()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("event %s ingested twice", id)
		}
		seen[id] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct events ingested, want %d", len(seen), n)
	}
	if b := r.Batches.Load(); b == 0 || b > n/4 || singles.Load() != 0 {
		t.Errorf("%d batch requests and %d single ones for %d events: want batches of 4 or more on average, no single", b, singles.Load(), n)
	}
	t.Logf("%d events in %d requests", n, r.Batches.Load())
}

// Against a router without the batch endpoint every event goes alone.
func TestBatchForwarderFallsBackOnOlderRouters(t *testing.T) {
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != handlers.PathIngest {
			http.NotFound(w, req)
			return
		}
		w.WriteHeader(200)
	}))
	defer old.Close()
	var singles atomic.Int64
	f := newForwarder(t, old.URL, &singles)
	errs := forwardAll(f, "o", 50, 8, func(int) string { return ingesttest.Envelope("o") })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if singles.Load() != 50 {
		t.Errorf("%d events sent alone, want 50", singles.Load())
	}
}

// A batch refused as a whole (one invalid event) is sent again event by
// event, so that only the bad one fails; a partly taken batch gives the
// rest a retryable 503.
func TestBatchForwarderOutcomesPerEvent(t *testing.T) {
	r := ingesttest.Start(t, 10_000, &handlers.API{IngestToken: "ingest-token"})
	var singles atomic.Int64
	f := newForwarder(t, r.Server.URL, &singles)
	errs := forwardAll(f, "v", 20, 20, func(i int) string {
		if i == 7 {
			return `{"id":"v7","event":"memory_added"}` // no user_id, no timestamp
		}
		return ingesttest.Envelope(fmt.Sprintf("v%d", i))
	})
	for i, err := range errs {
		var se *middleware.StatusError
		switch {
		case i == 7 && (!errors.As(err, &se) || se.Code != 422):
			t.Errorf("bad event: %v, want a 422 StatusError", err)
		case i != 7 && err != nil:
			t.Errorf("event %d: %v", i, err)
		}
	}
	if n := len(r.IDs()); n != 19 {
		t.Errorf("%d events ingested, want the 19 good ones", n)
	}

	full := ingesttest.Start(t, 3, &handlers.API{IngestToken: "ingest-token"})
	f = newForwarder(t, full.Server.URL, &singles)
	errs = forwardAll(f, "q", 10, 10, func(i int) string { return ingesttest.Envelope(fmt.Sprintf("q%d", i)) })
	ok, busy := 0, 0
	for _, err := range errs {
		var se *middleware.StatusError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &se) && se.Code == 503 && se.RetryAfter == time.Second && middleware.Retryable(err):
			busy++
		default:
			t.Errorf("unexpected outcome %v", err)
		}
	}
	if ok != 3 || busy != 7 || len(full.IDs()) != 3 {
		t.Errorf("%d taken, %d told to retry, %d ingested; want 3, 7, 3", ok, busy, len(full.IDs()))
	}
}
