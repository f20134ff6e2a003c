// Package receiver is a webhook receiver on loopback that records what it
// gets. memhook's tests, `memhook demo` and `memhook bench` use it; it is a
// real net/http server, not a mock.
package receiver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Request is one request the receiver got.
type Request struct {
	At     time.Time
	Method string
	Path   string
	Header http.Header
	Body   []byte
	// Status is what the receiver answered.
	Status int
}

// Respond decides the answer to the n-th request (1-based). It may read the
// body, write headers and sleep; it returns the status code to send (and
// records), which is sent unless it wrote the header or a body itself.
// Nil answers 200.
type Respond func(w http.ResponseWriter, r *http.Request, n int) int

// Receiver records every request and answers with Respond.
type Receiver struct {
	// URL is the receiver's base URL, http://127.0.0.1:port.
	URL string

	respond Respond
	srv     *http.Server
	ln      net.Listener

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every new request
	requests []Request
	record   bool
	count    int             // requests arrived
	answered int             // requests answered
	ids      map[string]bool // webhook-ids answered 2xx
}

// Start listens on a free loopback port. With record false only the count
// is kept (for benchmarks).
func Start(respond Respond, record bool) (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return NewOn(ln, respond, record), nil
}

// NewOn serves on ln (a deadport.Port's Listen, to bring a dead receiver
// back).
func NewOn(ln net.Listener, respond Respond, record bool) *Receiver {
	r := &Receiver{URL: "http://" + ln.Addr().String(), respond: respond, ln: ln, record: record, changed: make(chan struct{}), ids: map[string]bool{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r
}

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 8<<20))
	r.mu.Lock()
	r.count++
	n := r.count
	r.mu.Unlock()
	req.Body = io.NopCloser(bytes.NewReader(body)) // Respond may read it again
	status := http.StatusOK
	hw := &headerWatch{ResponseWriter: w}
	if r.respond != nil {
		status = r.respond(hw, req, n)
	}
	if !hw.wrote { // a Respond that wrote a body has sent its header already
		w.WriteHeader(status)
	}
	r.mu.Lock()
	if r.record {
		r.requests = append(r.requests, Request{
			At: time.Now(), Method: req.Method, Path: req.URL.Path,
			Header: req.Header.Clone(), Body: body, Status: status,
		})
	}
	r.answered++
	if status >= 200 && status < 300 {
		if id := req.Header.Get("Webhook-Id"); id != "" {
			r.ids[id] = true
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Count returns how many requests were answered.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answered
}

// Requests returns a copy of the recorded requests, in arrival order.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// ErrTimeout is returned by WaitFor when fewer requests arrived in time.
var ErrTimeout = errors.New("receiver: timed out waiting for requests")

// WaitFor waits until at least n requests were answered, or timeout.
func (r *Receiver) WaitFor(n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		done := r.answered >= n
		ch := r.changed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return ErrTimeout
		}
	}
}

// WaitDistinct waits until n distinct webhook-ids were answered 2xx, or
// timeout.
func (r *Receiver) WaitDistinct(n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		done := len(r.ids) >= n
		ch := r.changed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return ErrTimeout
		}
	}
}

// Distinct returns how many distinct webhook-ids were answered 2xx.
func (r *Receiver) Distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// Close stops the server, cutting open connections.
func (r *Receiver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		return r.srv.Close()
	}
	return nil
}

// headerWatch notes whether a Respond sent the header (WriteHeader or a
// body), so that the receiver does not send a second one.
type headerWatch struct {
	http.ResponseWriter
	wrote bool
}

func (h *headerWatch) WriteHeader(code int) {
	h.wrote = true
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerWatch) Write(b []byte) (int, error) {
	h.wrote = true
	return h.ResponseWriter.Write(b)
}

func (h *headerWatch) Unwrap() http.ResponseWriter { return h.ResponseWriter }
