package logbuf_test

import (
	"io"
	"log"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/memhook/memhook/logbuf"
)

// deliveredLine logs what the bus logs for every delivered webhook.
func deliveredLine(l *slog.Logger) {
	l.Info("memhook: webhook delivered", "event", "memory_added", "id", "0b7d3c1e-8a4f-4f7e-9a51-3c2d1e0f9a8b",
		"user_id", "user_1234567890", "url", "http://127.0.0.1:41234/hook", "status", 200, "attempt", 1,
		"duration", 850*time.Microsecond)
}

// BenchmarkDeliveredLine is the cost of the bus's per-delivery INFO line:
// formatting alone (discard), a write system call per line to a file
// (slog.TextHandler on the file, or an untouched slog.Default(), which
// writes through package log), and through a Writer.
func BenchmarkDeliveredLine(b *testing.B) {
	f, err := os.CreateTemp(b.TempDir(), "log")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.Run("text-discard", func(b *testing.B) {
		l := slog.New(slog.NewTextHandler(io.Discard, nil))
		for b.Loop() {
			deliveredLine(l)
		}
	})
	b.Run("text-file", func(b *testing.B) {
		l := slog.New(slog.NewTextHandler(f, nil))
		for b.Loop() {
			deliveredLine(l)
		}
	})
	b.Run("default-file", func(b *testing.B) {
		prev := log.Writer()
		log.SetOutput(f)
		defer log.SetOutput(prev)
		l := slog.Default()
		for b.Loop() {
			deliveredLine(l)
		}
	})
	b.Run("text-logbuf-file", func(b *testing.B) {
		w, err := logbuf.New(f, logbuf.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		l := slog.New(slog.NewTextHandler(w, nil))
		for b.Loop() {
			deliveredLine(l)
		}
	})
}
