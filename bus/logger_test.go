package bus_test

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// lockedBuffer is a bytes.Buffer safe for the log writer's goroutine.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Without WithLogger and with the slog default untouched, the bus writes
// its lines to the log package's output in batches, and every one of them
// is there when Close returns. An application's own slog default is used
// as it is. (Not parallel: both change process-wide logging.)
func TestDefaultLoggerIsBufferedAndFlushedAtClose(t *testing.T) {
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	const n = 200
	run := func() {
		t.Helper()
		b, err := bus.New(bus.Config{WebhookURL: rcv.URL})
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := b.Emit(context.Background(), event.NewMemoryAdded("u1", event.Memory{ID: "m", Content: "x"})); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}

	out := &lockedBuffer{}
	prev := log.Writer()
	log.SetOutput(out)
	defer log.SetOutput(prev)
	run()
	if got := strings.Count(out.String(), "memhook: webhook delivered"); got != n {
		t.Errorf("%d delivered lines in the log package's output when Close returned, want %d", got, n)
	}
	if out.writes > n/4 {
		t.Errorf("%d writes for %d lines: want them batched", out.writes, n)
	}

	own := &lockedBuffer{}
	prevDefault := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(own, nil)))
	defer slog.SetDefault(prevDefault)
	run()
	if got := strings.Count(own.String(), `"msg":"memhook: webhook delivered"`); got != n {
		t.Errorf("%d delivered lines through the application's slog default, want %d", got, n)
	}
}

// The delivered line, which the bus hands to the handler itself, carries
// the source a Logger would give it: a handler with AddSource shows
// bus/stats.go and a line, for the default endpoint and a named one.
func TestDeliveredLineHasItsSource(t *testing.T) {
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	out := &lockedBuffer{}
	b, err := bus.New(bus.Config{WebhookURL: rcv.URL, Endpoints: []bus.Endpoint{{Name: "crm", URL: rcv.URL}}},
		bus.WithLogger(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{AddSource: true}))))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Emit(context.Background(), event.NewMemoryAdded("u1", event.Memory{ID: "m", Content: "x"})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "memhook: webhook delivered") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d delivered lines, want 2 (default and crm):\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "source=") || !strings.Contains(l, "bus/stats.go:") {
			t.Errorf("delivered line without its source in bus/stats.go:\n%s", l)
		}
	}
}
