package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/middleware"
)

// Non-2xx answers become *middleware.StatusError with Retry-After; every
// body is drained so one keep-alive connection carries all requests;
// redirects are not followed.
func TestDeliverStatusesAndConnectionReuse(t *testing.T) {
	var conns, redirected atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(http.ResponseWriter, *http.Request) { redirected.Add(1) })
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Answer") {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(strings.Repeat("e", 10_000)))
		case "429":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		case "302":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(strings.Repeat("o", 10_000)))
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	var delivered []int
	d, err := handlers.NewDeliver(handlers.DeliverConfig{
		URL:     srv.URL + "/hook",
		Timeout: 5 * time.Second,
		OnDelivered: func(_ *message.Message, status, _ int, _ time.Duration) {
			delivered = append(delivered, status)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	send := func(answer string) error {
		msg := message.NewMessage("id-"+answer, []byte(`{}`))
		msg.SetContext(middleware.WithHeaders(context.Background(), http.Header{"X-Answer": {answer}}))
		return d.Handle(msg)
	}
	for _, tt := range []struct {
		answer     string
		wantCode   int
		retryAfter time.Duration
	}{
		{"200", 0, 0}, {"500", 500, 0}, {"429", 429, 7 * time.Second}, {"302", 302, 0}, {"200", 0, 0},
	} {
		err := send(tt.answer)
		if tt.wantCode == 0 {
			if err != nil {
				t.Fatalf("answer %s: %v", tt.answer, err)
			}
			continue
		}
		var se *middleware.StatusError
		if !errors.As(err, &se) || se.Code != tt.wantCode || se.RetryAfter != tt.retryAfter {
			t.Fatalf("answer %s: err = %v, want StatusError %d retry-after %s", tt.answer, err, tt.wantCode, tt.retryAfter)
		}
	}
	if redirected.Load() != 0 {
		t.Error("the redirect was followed")
	}
	if fmt.Sprint(delivered) != "[201 201]" {
		t.Errorf("OnDelivered statuses = %v", delivered)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 sequential requests: bodies not drained, keep-alive lost", n)
	}
}

// A transport error never shows the URL's credentials.
func TestDeliverRedactsTheURLInErrors(t *testing.T) {
	addr := deadport.Held(t).Addr()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: "http://user:hunter2@" + addr + "/h?token=s3cr3t", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Handle(message.NewMessage("x", []byte(`{}`)))
	if err == nil {
		t.Fatal("delivery to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error shows a credential: %v", err)
	}
	if !middleware.Retryable(err) {
		t.Errorf("connection refused is not retryable: %v", err)
	}
}

// Attempts run on MaxIdleConns workers: one more waits for a free worker,
// until its context ends; after Close, Handle fails at once.
func TestDeliverWorkers(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 10 * time.Second, MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	busy := make(chan error, 2)
	for i := range 2 {
		go func() { busy <- d.Handle(message.NewMessage(fmt.Sprint(i), []byte(`{}`))) }()
	}
	for range 2 { // both workers are in their attempt
		<-arrived
	}
	msg := message.NewMessage("third", []byte(`{}`))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	msg.SetContext(ctx)
	if err := d.Handle(msg); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third delivery with both workers busy: %v, want its context's deadline", err)
	}
	close(release)
	for range 2 {
		if err := <-busy; err != nil {
			t.Errorf("delivery: %v", err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Handle(message.NewMessage("late", []byte(`{}`))); !errors.Is(err, handlers.ErrDeliverClosed) {
		t.Errorf("Handle after Close: %v, want ErrDeliverClosed", err)
	}
}

// Without an Authorization header of the signer's, the URL's user and
// password are sent as Basic authorization, as http.Client sends them;
// with one, it stands.
func TestDeliverURLUserinfoIsBasicAuth(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tt := range []struct {
		name    string
		headers http.Header
		want    string
	}{
		{"no Authorization", nil, "Basic dXNlcjpodW50ZXIy"},
		{"the signer's", http.Header{"Authorization": {"Bearer tok"}}, "Bearer tok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("id", []byte(`{}`))
			msg.SetContext(middleware.WithHeaders(context.Background(), tt.headers))
			if err := d.Handle(msg); err != nil {
				t.Fatal(err)
			}
			select {
			case a := <-got:
				if a != tt.want {
					t.Errorf("Authorization = %q, want %q", a, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the receiver got nothing")
			}
		})
	}
}

// The attempt's deadline is its own: on one worker, an attempt that
// times out is followed by attempts that take most of the timeout and
// succeed (a late timer of an earlier attempt ends none of them).
func TestDeliverTimeoutIsPerAttempt(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // from then on the server sees the client go
		d, _ := time.ParseDuration(r.Header.Get("X-Delay"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: timeout, MaxIdleConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	send := func(delay time.Duration) error {
		msg := message.NewMessage("id", []byte(`{}`))
		msg.SetContext(middleware.WithHeaders(context.Background(), http.Header{"X-Delay": {delay.String()}}))
		return d.Handle(msg)
	}
	start := time.Now()
	if err := send(5 * time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("attempt past the timeout: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("the timed-out attempt took %s", took)
	}
	for i := range 3 {
		if err := send(timeout * 2 / 3); err != nil {
			t.Fatalf("attempt %d within the timeout: %v", i+2, err)
		}
	}
}

// When the message's context ends during the attempt, the attempt ends:
// Handle returns its context's error and the request is cancelled.
func TestDeliverMessageContextEndsTheAttempt(t *testing.T) {
	arrived, gone := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // from then on the server sees the client go
		close(arrived)
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msg := message.NewMessage("id", []byte(`{}`))
	msg.SetContext(ctx)
	result := make(chan error, 1)
	go func() { result <- d.Handle(msg) }()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not arrive")
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Handle = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Handle did not return after its context ended")
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Error("the receiver's request was not cancelled")
	}
}

// The request carries the payload whole, with its length, and an empty
// payload as an empty body.
func TestDeliverSendsThePayload(t *testing.T) {
	type seen struct {
		body   string
		length int64
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{string(b), r.ContentLength}
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, payload := range []string{`{"event":"memory_added"}`, ""} {
		if err := d.Handle(message.NewMessage("id", []byte(payload))); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s.body != payload || s.length != int64(len(payload)) {
			t.Errorf("receiver got %q (Content-Length %d), want %q", s.body, s.length, payload)
		}
	}
}

// Close, from several goroutines at once, returns once the attempt
// running is done, and that attempt's answer still counts.
func TestDeliverCloseWaitsForTheAttemptRunning(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		close(arrived)
		<-release
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 10 * time.Second, MaxIdleConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() { result <- d.Handle(message.NewMessage("id", []byte(`{}`))) }()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not arrive")
	}
	closed := make(chan error, 2)
	for range 2 {
		go func() { closed <- d.Close() }()
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an attempt ran", err)
	case <-time.After(100 * time.Millisecond): // shows that Close does not return yet
	}
	close(release)
	for range 2 {
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not return after the attempt")
		}
	}
	if err := <-result; err != nil {
		t.Errorf("the attempt running at Close: %v", err)
	}
	if err := d.Handle(message.NewMessage("late", []byte(`{}`))); !errors.Is(err, handlers.ErrDeliverClosed) {
		t.Errorf("Handle after Close: %v, want ErrDeliverClosed", err)
	}
}

// A webhook asks for no compression (no Accept-Encoding: gzip, which the
// default transport would add): the answer is read for its status and
// the attempt log's excerpt only.
func TestDeliverAsksForNoCompression(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Values("Accept-Encoding"))
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Handle(message.NewMessage("x", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	if v, _ := got.Load().([]string); len(v) != 0 {
		t.Errorf("Accept-Encoding %q sent, want none", v)
	}
}
