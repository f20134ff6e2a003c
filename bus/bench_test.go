package bus_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/receiver"
)

// benchEvent is a realistic memory_added event (~400 bytes on the wire).
func benchEvent() event.Event {
	e := event.NewMemoryAdded("user_1234567890", event.Memory{
		ID:       "mem_9f8e7d6c5b4a",
		Content:  "User prefers morning meetings before 10am and works from the North Austin facility on Tuesdays and Thursdays.",
		Metadata: map[string]any{"type": "preference", "category": "schedule", "source": "conversation"},
	})
	e.RequestID = "req_0123456789abcdef"
	return e
}

// BenchmarkEmit measures Emit alone: the receiver holds every request, so
// the one delivery worker stays parked and the queue only grows.
func BenchmarkEmit(b *testing.B) {
	release := make(chan struct{})
	rcv, err := receiver.Start(func(_ http.ResponseWriter, r *http.Request, _ int) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	}, false)
	if err != nil {
		b.Fatal(err)
	}
	defer rcv.Close()
	bs, err := bus.New(bus.Config{WebhookURL: rcv.URL, QueueCapacity: b.N + 1, Concurrency: 1},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	e := benchEvent()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := bs.Emit(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	close(release)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_ = bs.Close(cctx)
}

// BenchmarkJSONMarshalEnvelope is the yardstick for Emit: encoding/json
// marshalling the same envelope as a struct.
func BenchmarkJSONMarshalEnvelope(b *testing.B) {
	e := benchEvent()
	rid := e.RequestID
	type envelope struct {
		Event      event.Type `json:"event"`
		UserID     string     `json:"user_id"`
		Data       any        `json:"data"`
		Timestamp  time.Time  `json:"timestamp"`
		Source     string     `json:"source"`
		BotVersion string     `json:"bot_version"`
		RequestID  *string    `json:"request_id"`
		ID         string     `json:"id"`
	}
	env := envelope{e.Type, e.UserID, e.Data, time.Now().UTC(), event.DefaultSource, "1.0.0", &rid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}
	b.ReportAllocs()
	for range b.N {
		if _, err := json.Marshal(env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode measures the envelope encoding Emit does.
func BenchmarkEncode(b *testing.B) {
	e := benchEvent()
	m := event.Meta{ID: "6ba7b810-9dad-11d1-80b4-00c04fd430c8", Time: time.Now(), BotVersion: "1.0.0"}
	b.ReportAllocs()
	var n int
	for range b.N {
		p, err := event.Encode(e, m)
		if err != nil {
			b.Fatal(err)
		}
		n = len(p)
	}
	b.ReportMetric(float64(n), "bytes/envelope")
}

// BenchmarkHTTPTransportEndToEnd emits through transport http into an
// in-process router (the API of `memhook serve` over a bus) that delivers
// to a receiver: ns/op is the cost of one event through both hops.
func BenchmarkHTTPTransportEndToEnd(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		b.Fatal(err)
	}
	defer rcv.Close()
	router, err := bus.New(bus.Config{WebhookURL: rcv.URL, QueueCapacity: b.N + 1}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api := &handlers.API{
		Incoming: router.Incoming, Ingest: router.Ingest,
		Status: func() handlers.Status { return handlers.Status{} },
		Test:   func(context.Context) handlers.TestResult { return handlers.TestResult{} },
		Logger: slog.New(slog.DiscardHandler),
	}
	h, err := api.Handler(ctx)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + ln.Addr().String(), QueueCapacity: b.N + 1},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	e := benchEvent()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := app.Emit(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	if err := rcv.WaitFor(b.N, time.Minute); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	_ = app.Close(ctx)
	_ = router.Close(ctx)
}

// BenchmarkDeliverMemory is the whole memory path: Emit, the transport,
// the chain, a signed POST to a loopback receiver, the delivery logged
// (as users run it, through a buffered text handler); allocations per
// event include the receiver's.
func BenchmarkDeliverMemory(b *testing.B) {
	var got atomic.Int64
	done := make(chan struct{})
	var target atomic.Int64
	rcv, err := receiver.Start(func(_ http.ResponseWriter, r *http.Request, _ int) int {
		if got.Add(1) == target.Load() {
			close(done)
		}
		return http.StatusOK
	}, false)
	if err != nil {
		b.Fatal(err)
	}
	defer rcv.Close()
	target.Store(int64(b.N))
	bs, err := bus.New(bus.Config{WebhookURL: rcv.URL, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", QueueCapacity: b.N + 1},
		bus.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	e := benchEvent()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := bs.Emit(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	_ = bs.Close(ctx)
}
