package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/middleware"
)

func TestStatusErrorTemporary(t *testing.T) {
	tests := []struct {
		code int
		want bool
	}{
		{300, false}, {301, false}, {302, false}, {304, false}, {307, false},
		{400, false}, {401, false}, {403, false}, {404, false}, {405, false}, {409, false}, {410, false}, {413, false}, {422, false},
		{408, true}, {425, true}, {429, true},
		{500, true}, {501, true}, {502, true}, {503, true}, {504, true}, {599, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			if got := (&middleware.StatusError{Code: tt.code}).Temporary(); got != tt.want {
				t.Errorf("StatusError{%d}.Temporary() = %t, want %t", tt.code, got, tt.want)
			}
		})
	}
}

func TestStatusErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *middleware.StatusError
		want string
	}{
		{name: "known code", err: &middleware.StatusError{Code: 503, RetryAfter: time.Minute}, want: "webhook receiver answered 503 Service Unavailable"},
		{name: "unknown code", err: &middleware.StatusError{Code: 599}, want: "webhook receiver answered 599"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{name: "absent", in: "", want: 0},
		{name: "seconds", in: "120", want: 2 * time.Minute},
		{name: "zero seconds", in: "0", want: 0},
		{name: "negative seconds", in: "-5", want: 0},
		{name: "fraction is not delay-seconds", in: "1.5", want: 0},
		{name: "garbage", in: "soon", want: 0},
		{name: "HTTP-date ahead", in: "Mon, 15 Jan 2024 10:31:30 GMT", want: 90 * time.Second},
		{name: "HTTP-date in RFC 850 form", in: "Monday, 15-Jan-24 10:31:00 GMT", want: time.Minute},
		{name: "HTTP-date in asctime form", in: "Mon Jan 15 10:30:10 2024", want: 10 * time.Second},
		{name: "HTTP-date passed", in: "Mon, 15 Jan 2024 10:29:00 GMT", want: 0},
		{name: "HTTP-date now", in: "Mon, 15 Jan 2024 10:30:00 GMT", want: 0},
		{name: "HTTP-date with a zone other than GMT", in: "Mon, 15 Jan 2024 11:30:00 +0100", want: 0},
		{name: "seconds beyond time.Duration saturate", in: "9999999999", want: time.Duration(1<<63 - 1)},
		{name: "more seconds beyond time.Duration saturate", in: "99999999999", want: time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := middleware.ParseRetryAfter(tt.in, now); got != tt.want {
				t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	refused := dialClosedPort(t)
	_, httpRefused := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + closedAddr(t) + "/hook")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "503", err: &middleware.StatusError{Code: 503}, want: true},
		{name: "429", err: &middleware.StatusError{Code: 429}, want: true},
		{name: "400", err: &middleware.StatusError{Code: 400}, want: false},
		{name: "wrapped 502", err: fmt.Errorf("delivering: %w", &middleware.StatusError{Code: 502}), want: true},
		{name: "wrapped 404", err: fmt.Errorf("delivering: %w", &middleware.StatusError{Code: 404}), want: false},
		{name: "deadline exceeded", err: context.DeadlineExceeded, want: true},
		{name: "wrapped deadline exceeded", err: fmt.Errorf("attempt: %w", context.DeadlineExceeded), want: true},
		{name: "read timeout on a real connection", err: readTimeout(t), want: true},
		{name: "connection refused", err: refused, want: true},
		{name: "connection refused through http.Client", err: httpRefused, want: true},
		{name: "canceled", err: context.Canceled, want: false},
		{name: "wrapped canceled", err: fmt.Errorf("attempt: %w", context.Canceled), want: false},
		{name: "plain error", err: errors.New("cannot build request"), want: false},
		{name: "unsupported scheme through http.Client", err: unsupportedScheme(t), want: false},
		{name: "connection closed mid-answer", err: fmt.Errorf("post: %w", io.ErrUnexpectedEOF), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := middleware.Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %t, want %t", tt.err, got, tt.want)
			}
		})
	}
}

func unsupportedScheme(t *testing.T) error {
	t.Helper()
	_, err := (&http.Client{Timeout: time.Second}).Get("gopher://127.0.0.1/x")
	if err == nil {
		t.Fatal("a gopher URL was fetched")
	}
	return err
}

func TestRetryableCanceledHTTPRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want a cancellation", err)
	}
	if middleware.Retryable(err) {
		t.Errorf("Retryable(%v) = true for a cancelled request", err)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	return deadport.Held(t).Addr()
}

// readTimeout returns the real error of a read that passes its deadline.
func readTimeout(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read = %v, want a timeout", err)
	}
	return err
}
