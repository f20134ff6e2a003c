// Package logbuf is a buffered writer for log output. A log handler
// (slog.TextHandler, slog.JSONHandler) writes each line with one Write;
// written straight to stderr or a file that is one system call per line,
// and memhook logs a line per delivered webhook at INFO: about a fifth of
// its throughput. A Writer keeps the lines in memory and writes them out
// together: when the buffer is full, at the latest FlushInterval after the
// first line of a batch arrived, and on Flush and Close.
//
// `memhook serve` and `memhook emit` log through one. An application that
// embeds bus and wants the same passes bus.WithLogger a handler over a
// Writer and closes the Writer after the bus (see the example); bus never
// buffers slog.Default() behind the application's back.
//
// Lines are only ever written out whole and in order. A process that
// crashes (SIGKILL, a fatal runtime error, os.Exit without Close) loses
// what arrived in its last FlushInterval; one that closes the Writer
// before it exits loses nothing.
package logbuf

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultFlushInterval is Config.FlushInterval's default: a line waits at
// most this long in memory.
const DefaultFlushInterval = 100 * time.Millisecond

// DefaultSize is Config.Size's default, in bytes: a few hundred log lines.
const DefaultSize = 64 << 10

// Config says how much a Writer keeps and for how long. The zero value
// gives the defaults.
type Config struct {
	// FlushInterval is the longest a line stays in the buffer before it is
	// written out. Default DefaultFlushInterval.
	FlushInterval time.Duration
	// Size is the buffer's capacity in bytes; a line that does not fit
	// writes the buffer out first, and a line longer than Size is written
	// out on its own. Default DefaultSize.
	Size int
}

func (c *Config) setDefaults() {
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("logbuf: FlushInterval %s: must not be negative", c.FlushInterval))
	}
	if c.Size < 0 {
		errs = append(errs, fmt.Errorf("logbuf: Size %d: must not be negative", c.Size))
	}
	return errors.Join(errs...)
}

// Writer buffers what is written to it for an underlying io.Writer. It is
// safe for concurrent use; each Write is kept whole. Close it (or Flush it)
// before the process exits.
type Writer struct {
	out      io.Writer
	interval time.Duration

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer // writes the buffer out FlushInterval after its first line
	armed  bool        // timer is running
	closed bool
	err    error // the timer's failed write, for the next Flush or Close
}

var _ io.WriteCloser = (*Writer)(nil)

// New returns a Writer over out. It starts no goroutine: a timer runs
// only while the buffer holds something.
func New(out io.Writer, cfg Config) (*Writer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Writer{out: out, interval: cfg.FlushInterval, buf: make([]byte, 0, cfg.Size)}
	w.timer = time.AfterFunc(time.Hour, w.flushDue)
	w.timer.Stop()
	return w, nil
}

// Write keeps p to be written out later, or writes it at once when w is
// closed or p does not fit in the buffer. It returns the error of a write
// to the underlying writer it made itself; lines that failed to be written
// out are dropped (a log must not grow without bound), later ones are
// still tried.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.writeOut(p)
	}
	if len(w.buf)+len(p) > cap(w.buf) {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(w.buf) {
			return w.writeOut(p)
		}
	}
	w.buf = append(w.buf, p...)
	if !w.armed {
		w.armed = true
		w.timer.Reset(w.interval)
	}
	return len(p), nil
}

// Flush writes out what the buffer holds. Its error is that of this
// write, or else of the last write the timer made since the last Flush or
// Close, if it failed.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushReport()
}

// Close writes out what the buffer holds and stops buffering: later
// writes go straight to the underlying writer, so a line logged after
// Close is not lost either. It does not close the underlying writer. It is
// idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.flushReport()
	w.closed = true
	w.timer.Stop()
	w.armed = false
	return err
}

// flushDue is the timer's: the first line of the buffer has waited
// FlushInterval.
func (w *Writer) flushDue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if err := w.flushLocked(); err != nil {
		w.err = err // for the next Flush or Close
	}
}

// flushReport writes the buffer out and returns its error, or else the
// timer's last one.
func (w *Writer) flushReport() error {
	err := w.flushLocked()
	if err == nil {
		err = w.err
	}
	w.err = nil
	return err
}

// flushLocked writes the buffer out; w.mu is held, so that lines leave in
// the order they came.
func (w *Writer) flushLocked() error {
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.writeOut(w.buf)
	w.buf = w.buf[:0]
	return err
}

// writeOut writes p to the underlying writer.
func (w *Writer) writeOut(p []byte) (int, error) {
	n, err := w.out.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return n, fmt.Errorf("logbuf: writing out: %w", err)
	}
	return n, nil
}
