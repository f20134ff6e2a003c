// Command embedded shows memhook embedded in a Go service: it starts a
// webhook receiver on loopback, builds a bus that delivers to it, emits one
// event of each of the twelve types and prints what the receiver got.
//
//	go run ./examples/embedded
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "embedded:", err)
		os.Exit(1)
	}
}

// received is one webhook as the receiver saw it.
type received struct {
	Event     string
	UserID    string
	WebhookID string
	Auth      string
	Data      string
}

func run(out io.Writer) error {
	// 1. A receiver on loopback, standing in for your CRM or analytics.
	var mu sync.Mutex
	var got []received
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			Event  string          `json:"event"`
			UserID string          `json:"user_id"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, received{env.Event, env.UserID, r.Header.Get("webhook-id"), r.Header.Get("Authorization"), string(env.Data)})
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	// 2. The bus, configured as the seed's MEM0_* variables would.
	b, err := bus.New(bus.Config{
		WebhookURL: "http://" + ln.Addr().String() + "/webhooks/memory",
		Token:      "my-secret-token",
		BotVersion: "1.0.0",
	}, bus.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}

	// 3. Emit after each memory operation; Emit never waits for a webhook.
	ctx := context.Background()
	results := []event.Memory{{ID: "mem_1", Content: "Austin facility"}, {ID: "mem_2", Content: "Dallas office"}}
	events := []event.Event{
		event.NewMemoryAdded("user123", event.Memory{ID: "mem_456", Content: "User prefers morning meetings", Metadata: map[string]any{"category": "preference"}}),
		event.NewMemorySearched("user123", "facilities in Austin", 5, results),
		{Type: event.MemoryDeleted, UserID: "user123", Data: map[string]any{"memory_id": "mem_456"}},
		{Type: event.MemoryUpdated, UserID: "user123", Data: map[string]any{"memory_id": "mem_1", "content": "Austin HQ"}},
		event.NewPreferenceStored("user123", "morning meetings", "schedule"),
		event.NewCorrectionStored("user123", "works in Dallas", "works in Austin"),
		event.NewRelationshipAdded("user123", "North Austin Facility", "HAS_PARTNER", "GreenEnergy Capital", event.Relationship{ID: "rel_456", Confidence: 1}),
		{Type: event.RelationshipDeleted, UserID: "user123", Data: map[string]any{"id": "rel_456"}},
		{Type: event.GraphBuilt, UserID: "user123", Data: map[string]any{"nodes": 2, "edges": 1}},
		{Type: event.MemoryOptimized, UserID: "user123", Data: map[string]any{"merged": 1}},
		event.NewBatchOperationCompleted("user123", event.BatchResult{Operation: "batch_add_memories", Total: 25, Succeeded: 25}),
		event.NewMemoryError("user123", "batch_add_memories", errors.New("Connection timeout to vector store"), 25),
	}
	for _, e := range events {
		if err := b.Emit(ctx, e); err != nil {
			return fmt.Errorf("emit %s: %w", e.Type, err)
		}
	}

	// 4. Close drains: every accepted event is delivered (or reported).
	closeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		return err
	}

	mu.Lock()
	defer mu.Unlock()
	order := map[string]int{}
	for i, t := range event.Types() {
		order[string(t)] = i
	}
	sort.Slice(got, func(i, j int) bool { return order[got[i].Event] < order[got[j].Event] })
	fmt.Fprintf(out, "receiver got %d webhooks (delivered %d):\n", len(got), b.Stats().Delivered)
	for _, r := range got {
		fmt.Fprintf(out, "%-26s user=%s auth=%q id_set=%t data=%s\n", r.Event, r.UserID, r.Auth, r.WebhookID != "", r.Data)
	}
	return nil
}
