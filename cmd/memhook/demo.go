package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// demoHeaders are the headers the demo's table reports as seen.
var demoHeaders = []string{"Authorization", "X-Webhook-Secret", "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}

func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("memhook demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: memhook demo

Runs the whole flow on this machine with nothing set up: a webhook receiver
on loopback (it answers 503 to the first memory_error, to show a retry), the
router on the in-memory transport, one event of each of the 12 types, and a
table of what was delivered. Reads no variable.`)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	var failedOnce atomic.Bool
	rcv, err := receiver.Start(func(_ http.ResponseWriter, r *http.Request, _ int) int {
		var env struct {
			Event string `json:"event"`
		}
		_ = json.NewDecoder(r.Body).Decode(&env)
		if env.Event == string(event.MemoryError) && failedOnce.CompareAndSwap(false, true) {
			return http.StatusServiceUnavailable // the demo's one failure: watch the retry
		}
		return http.StatusOK
	}, true)
	if err != nil {
		fmt.Fprintf(stderr, "memhook demo: %v\n", err)
		return exitFailed
	}
	defer rcv.Close()
	b, err := bus.New(bus.Config{
		WebhookURL: rcv.URL + "/memory-notifications",
		Token:      "demo-token",
		Secret:     "demo-secret",
		RetryDelay: 200 * time.Millisecond,
	}, bus.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Fprintf(stderr, "memhook demo: %v\n", err)
		return exitFailed
	}
	defer b.Close(context.Background())

	fmt.Fprintf(stdout, "receiver on %s, router on the in-memory transport\n\n", rcv.URL)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tSTATUS\tATTEMPTS\tHEADERS SEEN")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	failures := 0
	for _, e := range demoEvents() {
		out, err := b.Send(ctx, e)
		if err != nil || !out.Delivered {
			failures++
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", e.Type, out.Status, out.Attempts, headersSeen(rcv, out.ID))
	}
	_ = tw.Flush()
	s := b.Stats()
	fmt.Fprintf(stdout, "\ndelivered %d of %d, retried %d, poisoned %d\n", s.Delivered, s.Accepted, s.Retried, s.Poisoned)
	if failures > 0 {
		return exitFailed
	}
	return exitOK
}

func headersSeen(rcv *receiver.Receiver, id string) string {
	var seen []string
	for _, r := range rcv.Requests() {
		if r.Header.Get("Webhook-Id") != id {
			continue
		}
		for _, h := range demoHeaders {
			if r.Header.Get(h) != "" {
				seen = append(seen, strings.ToLower(h))
			}
		}
		break
	}
	return strings.Join(seen, " ")
}

func demoEvents() []event.Event {
	mems := []event.Memory{{ID: "mem_1", Content: "Austin facility"}, {ID: "mem_2", Content: "Dallas office"}}
	return []event.Event{
		event.NewMemoryAdded("user123", event.Memory{ID: "mem_456", Content: "User prefers morning meetings"}),
		event.NewMemorySearched("user123", "facilities in Austin", 5, mems),
		{Type: event.MemoryDeleted, UserID: "user123", Data: map[string]any{"memory_id": "mem_456"}},
		{Type: event.MemoryUpdated, UserID: "user123", Data: map[string]any{"memory_id": "mem_1"}},
		event.NewPreferenceStored("user123", "morning meetings", "schedule"),
		event.NewCorrectionStored("user123", "works in Dallas", "works in Austin"),
		event.NewRelationshipAdded("user123", "North Austin Facility", "HAS_PARTNER", "GreenEnergy Capital", event.Relationship{ID: "rel_456", Confidence: 1}),
		{Type: event.RelationshipDeleted, UserID: "user123", Data: map[string]any{"id": "rel_456"}},
		{Type: event.GraphBuilt, UserID: "user123", Data: map[string]any{"nodes": 2, "edges": 1}},
		{Type: event.MemoryOptimized, UserID: "user123", Data: map[string]any{"merged": 1}},
		event.NewBatchOperationCompleted("user123", event.BatchResult{Operation: "batch_add_memories", Total: 25, Succeeded: 25}),
		event.NewMemoryError("user123", "batch_add_memories", errors.New("Connection timeout to vector store"), 25),
	}
}
