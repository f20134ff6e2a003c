package bus_test

import (
	"errors"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
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
