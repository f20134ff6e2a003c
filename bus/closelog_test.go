package bus_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// errorRecorder is a slog.Handler that keeps the message of every record
// at ERROR or above, and drops the rest.
type errorRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newErrorRecorder() errorRecorder {
	return errorRecorder{mu: &sync.Mutex{}, msgs: &[]string{}}
}

func (r errorRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (r errorRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.msgs = append(*r.msgs, rec.Message)
	return nil
}

func (r errorRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r errorRecorder) WithGroup(string) slog.Handler      { return r }

func (r errorRecorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), *r.msgs...)
}

// TestCloseLogsNoError: a normal New and Close, with or without events
// delivered in between, logs nothing at ERROR. Watermill's router logs
// "All handlers stopped, closing router" at ERROR when its subscriptions
// end before it is told to stop; that used to race with Close on the
// memory transport (a few closes in a hundred), hence the repetitions.
func TestCloseLogsNoError(t *testing.T) {
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	e := event.NewMemoryAdded("u-close", event.Memory{ID: "m-1", Content: "x"})
	cases := []struct {
		name   string
		cfg    bus.Config
		events int // emitted and delivered before Close
		repeat int
	}{
		{name: "webhooks off", cfg: bus.Config{}, repeat: 300},
		{name: "delivering, nothing emitted", cfg: bus.Config{WebhookURL: rcv.URL + "/hook"}, repeat: 300},
		// What memhook bench does: many events, all delivered, then Close.
		{name: "after deliveries", cfg: bus.Config{WebhookURL: rcv.URL + "/hook", Token: "t", Secret: "s"}, events: 20, repeat: 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newErrorRecorder()
			for i := range tc.repeat {
				b, err := bus.New(tc.cfg, bus.WithLogger(slog.New(rec)))
				if err != nil {
					t.Fatal(err)
				}
				before := rcv.Count()
				for range tc.events {
					if err := b.Emit(context.Background(), e); err != nil {
						t.Fatal(err)
					}
				}
				if err := rcv.WaitFor(before+tc.events, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = b.Close(ctx)
				cancel()
				if err != nil {
					t.Fatalf("close %d: %v", i, err)
				}
				if msgs := rec.messages(); len(msgs) > 0 {
					t.Fatalf("close %d of %d logged at ERROR: %q", i+1, tc.repeat, msgs)
				}
			}
		})
	}
}
