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
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/middleware"
)

// OnAttempt sees every attempt, 2xx or not, with its number, status,
// class and the first MaxAttemptResponse bytes of the body, whether the
// publisher read it (never, on 2xx) or the RoundTripper drained it.
func TestDeliverOnAttempt(t *testing.T) {
	long := strings.Repeat("0123456789", 300) // 3 000 bytes
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Answer") {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(long))
		case "503-short":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("busy"))
		case "204":
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = w.Write([]byte(long))
		}
	}))
	defer srv.Close()
	var got []handlers.AttemptResult
	var bodies []string
	d, err := handlers.NewDeliver(handlers.DeliverConfig{
		URL: srv.URL, Timeout: 5 * time.Second,
		OnAttempt: func(_ *message.Message, r handlers.AttemptResult) {
			got = append(got, r)
			bodies = append(bodies, string(r.Response)) // valid only during the call
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tt := range []struct {
		answer  string
		attempt int
		status  int
		class   string
		body    string
	}{
		{"200", 1, 200, "", long[:handlers.MaxAttemptResponse]},
		{"500", 2, 500, handlers.ErrorClassStatus, long[:handlers.MaxAttemptResponse]},
		{"503-short", 3, 503, handlers.ErrorClassStatus, "busy"},
		{"204", 4, 204, "", ""},
	} {
		t.Run(tt.answer, func(t *testing.T) {
			got, bodies = nil, nil
			msg := message.NewMessage("id-"+tt.answer, []byte(`{}`))
			ctx := middleware.WithAttempt(context.Background(), tt.attempt)
			msg.SetContext(middleware.WithHeaders(ctx, http.Header{"X-Answer": {tt.answer}}))
			before := time.Now()
			herr := d.Handle(msg)
			if len(got) != 1 {
				t.Fatalf("OnAttempt called %d times", len(got))
			}
			r := got[0]
			if r.Attempt != tt.attempt || r.Status != tt.status || r.Class != tt.class || bodies[0] != tt.body {
				t.Errorf("got attempt %d status %d class %q body %d bytes %.20q…; want %d %d %q %d bytes",
					r.Attempt, r.Status, r.Class, len(bodies[0]), bodies[0], tt.attempt, tt.status, tt.class, len(tt.body))
			}
			if !errors.Is(r.Err, herr) && r.Err != herr {
				t.Errorf("AttemptResult.Err = %v, Handle returned %v", r.Err, herr)
			}
			if (tt.class == "") != (herr == nil) {
				t.Errorf("Handle: %v", herr)
			}
			if r.Start.Before(before) || r.Duration <= 0 || r.Start.Add(r.Duration).After(time.Now()) {
				t.Errorf("start %v duration %v outside the call", r.Start, r.Duration)
			}
		})
	}
}

// Every way an attempt can fail gets its class.
func TestClassifyErrorOfRealFailures(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // then a closed connection cancels r's context
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // an RST, not a FIN
			}
			_ = c.Close()
		}
	}))
	defer hangup.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsSrv.Close()
	junk, err := net.Listen("tcp", "127.0.0.1:0") // answers what is neither TLS nor HTTP
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	go func() {
		for {
			c, err := junk.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			_ = c.Close()
		}
	}()
	for _, tt := range []struct {
		name, url string
		want      string
	}{
		{"refused", "http://" + closed + "/", handlers.ErrorClassRefused},
		{"timeout", slow.URL, handlers.ErrorClassTimeout},
		{"reset", hangup.URL, handlers.ErrorClassReset},
		{"untrusted certificate", tlsSrv.URL, handlers.ErrorClassTLS},
		{"https to a server that is not TLS", "https://" + junk.Addr().String() + "/", handlers.ErrorClassTLS},
		{"dns", "http://memhook-no-such-host.invalid/", handlers.ErrorClassDNS},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var class string
			var called int
			timeout := 5 * time.Second
			if tt.want == handlers.ErrorClassTimeout {
				timeout = 300 * time.Millisecond
			}
			d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: tt.url, Timeout: timeout,
				OnAttempt: func(_ *message.Message, r handlers.AttemptResult) { class, called = r.Class, called+1 }})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			herr := d.Handle(message.NewMessage("x", []byte(`{}`)))
			if herr == nil {
				t.Fatal("attempt succeeded")
			}
			if called != 1 || class != tt.want {
				t.Errorf("OnAttempt %d time(s), class %q, want %q (error: %v)", called, class, tt.want, herr)
			}
			if got := handlers.ClassifyError(herr); got != tt.want {
				t.Errorf("ClassifyError(%v) = %q, want %q", herr, got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{&middleware.StatusError{Code: 500}, handlers.ErrorClassStatus},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), handlers.ErrorClassTimeout},
		{context.Canceled, handlers.ErrorClassOther},
		{errors.New("something"), handlers.ErrorClassOther},
	} {
		if got := handlers.ClassifyError(tt.err); got != tt.want {
			t.Errorf("ClassifyError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
