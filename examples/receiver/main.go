// Command receiver is a webhook receiver for memhook's webhooks, in Go: it
// verifies each request's Standard Webhooks signature with package verify,
// drops duplicates by webhook-id (memhook delivers at least once), answers
// 2xx at once and does the work after answering.
//
//	MEM0_WEBHOOK_SECRET=whsec_… RECEIVER_ADDR=127.0.0.1:3000 go run ./examples/receiver
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/memhook/memhook/verify"
)

// Event is the part of memhook's envelope this receiver reads.
type Event struct {
	ID     string          `json:"id"`
	Event  string          `json:"event"`
	UserID string          `json:"user_id"`
	Data   json.RawMessage `json:"data"`
}

// Receiver verifies, deduplicates and queues webhooks; Work runs the
// handler for each new event.
type Receiver struct {
	verifier *verify.Verifier
	work     chan Event

	mu   sync.Mutex
	seen map[string]time.Time // webhook-id → when first seen
}

// NewReceiver checks signatures against secret (the sender's
// MEM0_WEBHOOK_SECRET; several, space-separated, during a rotation).
func NewReceiver(secret string) (*Receiver, error) {
	secrets, err := verify.ParseSecrets(secret)
	if err != nil {
		return nil, err
	}
	v, err := verify.NewFromSecrets(secrets)
	if err != nil {
		return nil, err
	}
	return &Receiver{verifier: v, work: make(chan Event, 1024), seen: map[string]time.Time{}}, nil
}

// Handler answers: 401 for a request that fails verification (tampered,
// stale, wrong secret), 200 for a duplicate (dropped), 202 for a new event
// (queued), 503 when the queue is full (memhook retries later).
func (r *Receiver) Handler() http.Handler {
	return r.verifier.Middleware(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id := req.Header.Get(verify.HeaderID)
		if r.duplicate(id) {
			w.WriteHeader(http.StatusOK)
			return
		}
		var e Event
		body, _ := io.ReadAll(req.Body) // verified, and capped by the middleware
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, "not a memhook envelope", http.StatusBadRequest)
			return
		}
		select {
		case r.work <- e:
			w.WriteHeader(http.StatusAccepted)
		default:
			r.forget(id)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
}

// duplicate records id and reports whether it was seen in the last 10
// minutes (twice the signature tolerance: a replay older than that fails
// verification anyway).
func (r *Receiver) duplicate(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for k, t := range r.seen {
		if now.Sub(t) > 2*verify.DefaultTolerance {
			delete(r.seen, k)
		}
	}
	if _, ok := r.seen[id]; ok {
		return true
	}
	r.seen[id] = now
	return false
}

func (r *Receiver) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.seen, id)
}

// Work calls handle for every new event, one at a time, until the queue
// is closed.
func (r *Receiver) Work(handle func(Event)) {
	for e := range r.work {
		handle(e)
	}
}

func main() {
	addr := os.Getenv("RECEIVER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:3000"
	}
	r, err := NewReceiver(os.Getenv("MEM0_WEBHOOK_SECRET"))
	if err != nil {
		log.Fatalf("receiver: MEM0_WEBHOOK_SECRET: %v", err)
	}
	go r.Work(func(e Event) { fmt.Printf("%s for %s: %s\n", e.Event, e.UserID, e.Data) })
	srv := &http.Server{Addr: addr, Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("receiver listening on http://%s", addr)
	log.Fatal(srv.ListenAndServe())
}
