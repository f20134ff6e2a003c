package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// A New that fails after it started the delivery handler and the
// transport (here: WithRouterSetup refuses) leaves no goroutine behind.
func TestFailedNewLeaksNoGoroutine(t *testing.T) {
	for _, cfg := range []bus.Config{
		{WebhookURL: "http://127.0.0.1:1/hook"},
		{Transport: bus.TransportHTTP, RouterURL: "http://127.0.0.1:1"},
	} {
		t.Run(cfg.Transport, func(t *testing.T) {
			before := runtime.NumGoroutine()
			refuse := errors.New("setup refused")
			for range 3 {
				_, err := bus.New(cfg, bus.WithLogger(slog.New(slog.DiscardHandler)),
					bus.WithRouterSetup(func(*message.Router) error { return refuse }))
				if !errors.Is(err, refuse) {
					t.Fatalf("New = %v, want the setup's error", err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<16)
					t.Fatalf("%d goroutines after 3 failed New calls, %d before:\n%s",
						runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// A normal New and Close, with events delivered or still queued, log
// nothing at ERROR (Watermill's "All handlers stopped" among them).
func TestNormalCloseLogsNoError(t *testing.T) {
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	for _, cfg := range []bus.Config{
		{WebhookURL: rcv.URL},
		{},
		{Transport: bus.TransportHTTP, RouterURL: rcv.URL},
	} {
		t.Run(cfg.Transport+"/"+cfg.WebhookURL, func(t *testing.T) {
			logs := &syncBuffer{}
			b, err := bus.New(cfg, bus.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				if err := b.Emit(context.Background(), event.NewMemoryAdded("u1", event.Memory{ID: "m", Content: "x"})); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("ERROR logged by a normal close:\n%s", logs)
			}
		})
	}
}
