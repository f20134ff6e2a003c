package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/verify"
)

// startRouter runs what `memhook serve` runs in-process: a bus on the
// memory transport delivering to a receiver, behind the API, listening on
// ln.
func startRouter(t *testing.T, ln net.Listener, ingestToken string, ingestSecrets ...verify.Secret) (*bus.Bus, *receiver.Receiver) {
	t.Helper()
	rcv, err := receiver.Start(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	r, err := bus.New(bus.Config{WebhookURL: rcv.URL}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	api := &handlers.API{
		Incoming: r.Incoming, Ingest: r.Ingest,
		Status:        func() handlers.Status { return handlers.Status{} },
		Test:          func(context.Context) handlers.TestResult { return handlers.TestResult{} },
		IngestToken:   ingestToken,
		IngestSecrets: ingestSecrets,
		Logger:        slog.New(slog.DiscardHandler),
	}
	h, err := api.Handler(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		cancel()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = r.Close(cctx)
	})
	return r, rcv
}

func TestHTTPTransportHandsEventsToTheRouter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, rcv := startRouter(t, ln, "ingest-tok")
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + ln.Addr().String(), IngestToken: "ingest-tok"},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		if err := app.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: strconv.Itoa(i)})); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		t.Fatalf("app Close: %v", err)
	}
	if s := app.Stats(); s.Delivered != n {
		t.Errorf("app handed over %d events, want %d", s.Delivered, n)
	}
	if err := rcv.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcv.Requests() {
		var env event.Envelope
		if err := json.Unmarshal(r.Body, &env); err != nil || env.ID == "" || env.ID != r.Header.Get("Webhook-Id") {
			t.Fatalf("router delivered %s with webhook-id %q: the event id changed on the way", r.Body, r.Header.Get("Webhook-Id"))
		}
	}
}

// An application signs what it hands over; the router checks the
// signature instead of a token.
func TestHTTPTransportSignsForTheRouter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	secs, err := verify.ParseSecrets("shared-ingest-secret")
	if err != nil {
		t.Fatal(err)
	}
	_, rcv := startRouter(t, ln, "", secs...)
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + ln.Addr().String(), IngestSecret: "shared-ingest-secret"},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		t.Fatalf("app Close: %v", err)
	}
	if err := rcv.WaitFor(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// The router is down when the app emits; the app retries until it is up.
func TestHTTPTransportWaitsForTheRouter(t *testing.T) {
	down := deadPort(t)
	addr := down.Addr()
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + addr, RetryDelay: 50 * time.Millisecond},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few failed hand-overs
	ln, err := down.Listen()
	if err != nil {
		t.Fatal(err)
	}
	_, rcv := startRouter(t, ln, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		t.Fatalf("app Close: %v", err)
	}
	if err := rcv.WaitFor(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if s := app.Stats(); s.Retried == 0 {
		t.Errorf("stats = %+v, want retries while the router was down", s)
	}
}

// A wrong ingest token is a permanent refusal: poisoned at the app, with
// the status, not retried for ever.
func TestHTTPTransportRefusedByTheRouter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startRouter(t, ln, "right")
	poisoned := make(chan *message.Message, 1)
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + ln.Addr().String(), IngestToken: "wrong"},
		bus.WithLogger(slog.New(slog.DiscardHandler)),
		bus.WithPoisonHandler(func(m *message.Message) error { poisoned <- m; return nil }))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	if err := app.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-poisoned:
		if m.Metadata.Get("status_poisoned") != "401" {
			t.Errorf("poison metadata = %v, want status 401", m.Metadata)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("refused event was not poisoned")
	}
}

func TestSendReportsTheOutcome(t *testing.T) {
	tests := []struct {
		name    string
		cfg     bus.Config
		respond receiver.Respond
		want    bus.Outcome
	}{
		{"delivered", bus.Config{}, nil, bus.Outcome{Delivered: true, Status: 200, Attempts: 1}},
		{"retried then delivered", fastRetry(bus.Config{}), func(_ http.ResponseWriter, _ *http.Request, n int) int {
			if n == 1 {
				return http.StatusBadGateway
			}
			return http.StatusAccepted
		}, bus.Outcome{Delivered: true, Status: 202, Attempts: 2}},
		{"poisoned", bus.Config{}, func(http.ResponseWriter, *http.Request, int) int { return http.StatusUnauthorized },
			bus.Outcome{Poisoned: true, Status: 401, Attempts: 1}},
		{"filtered", bus.Config{Events: "memory_deleted"}, nil, bus.Outcome{Filtered: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, tt.cfg, tt.respond)
			got, err := f.bus.Send(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m"}))
			if err != nil {
				t.Fatal(err)
			}
			if got.ID == "" {
				t.Error("outcome has no id")
			}
			if got.Delivered != tt.want.Delivered || got.Poisoned != tt.want.Poisoned || got.Filtered != tt.want.Filtered ||
				got.Status != tt.want.Status || got.Attempts != tt.want.Attempts {
				t.Errorf("outcome = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSendOnAForwardingBus(t *testing.T) {
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	if _, err := app.Send(context.Background(), event.NewMemoryAdded("u", event.Memory{})); !errors.Is(err, bus.ErrNotDelivering) {
		t.Errorf("Send = %v, want ErrNotDelivering", err)
	}
}
