package logbuf_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/logbuf"
)

// sink is an underlying writer that records every Write it gets.
type sink struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	fail   error
	wrote  chan struct{} // gets a value (if there is room) on every write
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 1)} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes++
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

// waitFor waits until the sink holds want, failing t after timeout.
func (s *sink) waitFor(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for s.String() != want {
		select {
		case <-s.wrote:
		case <-deadline.C:
			t.Fatalf("after %s the writer holds %q, want %q", timeout, s.String(), want)
		}
	}
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *sink) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func newWriter(t *testing.T, out *sink, cfg logbuf.Config) *logbuf.Writer {
	t.Helper()
	w, err := logbuf.New(out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// TestEveryLineArrivesAfterClose: lines logged through slog from many
// goroutines at once are all written out by Close, each whole, each
// goroutine's in order, and in far fewer writes than lines.
func TestEveryLineArrivesAfterClose(t *testing.T) {
	out := newSink()
	w := newWriter(t, out, logbuf.Config{FlushInterval: time.Hour}) // only size and Close write out
	log := slog.New(slog.NewTextHandler(w, nil))
	const goroutines, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				log.Info("memhook: webhook delivered", "g", g, "i", i, "pad", "p"+strings.Repeat("x", i%97))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != goroutines*lines {
		t.Fatalf("%d lines written out, want %d", len(got), goroutines*lines)
	}
	next := make([]int, goroutines)
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l[strings.Index(l, " g="):], " g=%d i=%d", &g, &i); err != nil {
			t.Fatalf("line not whole: %q", l)
		}
		if !strings.HasSuffix(l, "pad=p"+strings.Repeat("x", i%97)) {
			t.Fatalf("line not whole: %q", l)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d came after line %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if n := out.Writes(); n > len(out.String())/logbuf.DefaultSize+2 {
		t.Errorf("%d writes for %d bytes in a %d-byte buffer", n, len(out.String()), logbuf.DefaultSize)
	}
}

// TestBuffering: what was written is held until Flush (the interval is an
// hour here), then written out in one write; writes after Close go
// straight through.
func TestBuffering(t *testing.T) {
	out := newSink()
	w := newWriter(t, out, logbuf.Config{FlushInterval: time.Hour})
	for i := range 10 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if s := out.String(); s != "" {
		t.Fatalf("written out before Flush: %q", s)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := out.Writes(); n != 1 {
		t.Errorf("Flush made %d writes, want 1", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "after close\n")
	if s := out.String(); !strings.HasSuffix(s, "line 9\nafter close\n") {
		t.Errorf("a write after Close is not written through: %q", s)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestFlushInterval: a line is written out on its own, without Flush,
// once it has waited FlushInterval.
func TestFlushInterval(t *testing.T) {
	out := newSink()
	w := newWriter(t, out, logbuf.Config{FlushInterval: 10 * time.Millisecond})
	fmt.Fprintf(w, "one\n")
	out.waitFor(t, "one\n", 5*time.Second)
	// And again: the timer is armed anew for the next batch.
	fmt.Fprintf(w, "two\n")
	out.waitFor(t, "one\ntwo\n", 5*time.Second)
}

// TestLongLine: a line longer than the buffer is written out whole, after
// the lines before it.
func TestLongLine(t *testing.T) {
	out := newSink()
	w := newWriter(t, out, logbuf.Config{FlushInterval: time.Hour, Size: 16})
	long := strings.Repeat("y", 40) + "\n"
	fmt.Fprint(w, "short\n")
	fmt.Fprint(w, long)
	fmt.Fprint(w, "tail\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "short\n"+long+"tail\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestWriteError: a failing underlying writer is reported by Flush, the
// failed lines are dropped, and later lines are still tried.
func TestWriteError(t *testing.T) {
	broken := errors.New("disk full")
	out := newSink()
	out.fail = broken
	w := newWriter(t, out, logbuf.Config{FlushInterval: time.Hour})
	fmt.Fprint(w, "lost\n")
	if err := w.Flush(); !errors.Is(err, broken) {
		t.Fatalf("Flush: %v, want %v", err, broken)
	}
	out.mu.Lock()
	out.fail = nil
	out.mu.Unlock()
	fmt.Fprint(w, "kept\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "kept\n" {
		t.Errorf("got %q, want only the line written after the error", got)
	}
}

// TestTimerAndWritesRace: writers, the timer and Flush at once; run with
// -race. Every line arrives once.
func TestTimerAndWritesRace(t *testing.T) {
	out := newSink()
	w := newWriter(t, out, logbuf.Config{FlushInterval: time.Millisecond, Size: 256})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				fmt.Fprintf(w, "g%d-%d\n", g, i)
				if i%100 == 0 {
					_ = w.Flush()
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 2000 {
		t.Errorf("%d lines, want 2000", n)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  logbuf.Config
		want string // in the error; "" for none
	}{
		{name: "zero is the defaults", cfg: logbuf.Config{}},
		{name: "negative interval", cfg: logbuf.Config{FlushInterval: -time.Second}, want: "FlushInterval -1s"},
		{name: "negative size", cfg: logbuf.Config{Size: -1}, want: "Size -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := logbuf.New(newSink(), tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
