package middleware_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
)

// newMessage returns a memory_added message with a fresh UUID.
func newMessage() *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"event":"memory_added"}`))
	msg.Metadata.Set(event.MetaType, string(event.MemoryAdded))
	msg.Metadata.Set(event.MetaUserID, "user123")
	return msg
}

// failing returns a handler that fails with errs in turn (nil succeeds,
// producing out) and counts its calls.
type failing struct {
	mu       sync.Mutex
	errs     []error
	out      []*message.Message
	calls    int
	attempts []int
}

func (f *failing) handle(msg *message.Message) ([]*message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.attempts = append(f.attempts, middleware.AttemptFromContext(msg.Context()))
	err := f.errs[min(f.calls, len(f.errs))-1]
	if err != nil {
		return nil, err
	}
	return f.out, nil
}

func (f *failing) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name  string
		retry middleware.Retry
		want  []time.Duration
	}{
		{name: "seed's 1s, 2s, 4s", retry: middleware.Retry{},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}},
		{name: "initial interval", retry: middleware.Retry{InitialInterval: 250 * time.Millisecond},
			want: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}},
		{name: "max interval caps", retry: middleware.Retry{MaxInterval: 3 * time.Second},
			want: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{name: "max interval reached exactly", retry: middleware.Retry{MaxInterval: 4 * time.Second},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}},
		{name: "max interval below initial", retry: middleware.Retry{InitialInterval: 5 * time.Second, MaxInterval: 2 * time.Second},
			want: []time.Duration{2 * time.Second, 2 * time.Second}},
		{name: "jitter is not part of Delay", retry: middleware.Retry{Jitter: 0.9},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []time.Duration
			for attempt := 1; attempt <= len(tt.want); attempt++ {
				got = append(got, tt.retry.Delay(attempt))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Delay(1..%d) = %v, want %v", len(tt.want), got, tt.want)
			}
		})
	}
}

func TestRetryDelayNeverOverflows(t *testing.T) {
	r := middleware.Retry{}
	prev := time.Duration(0)
	for attempt := 1; attempt <= 200; attempt++ {
		d := r.Delay(attempt)
		if d < prev {
			t.Fatalf("Delay(%d) = %v, less than Delay(%d) = %v", attempt, d, attempt-1, prev)
		}
		prev = d
	}
	if prev <= 24*time.Hour {
		t.Errorf("Delay(200) = %v", prev)
	}
}

func TestRetryWorstCase(t *testing.T) {
	tests := []struct {
		name    string
		retry   middleware.Retry
		attempt time.Duration
		want    time.Duration
	}{
		// (MaxRetries+1) × attempt + Σ max(Delay(a) × (1+Jitter), MaxRetryAfter)
		{name: "defaults: Retry-After cap dominates", retry: middleware.Retry{}, attempt: 30 * time.Second,
			want: 4*30*time.Second + 3*60*time.Second},
		{name: "no retries is one attempt", retry: middleware.Retry{MaxRetries: middleware.NoRetries}, attempt: 30 * time.Second,
			want: 30 * time.Second},
		{name: "no jitter, tiny Retry-After cap", retry: middleware.Retry{Jitter: middleware.NoJitter, MaxRetryAfter: time.Millisecond},
			attempt: 10 * time.Second, want: 40*time.Second + (1+2+4)*time.Second},
		{name: "half jitter", retry: middleware.Retry{Jitter: 0.5, MaxRetryAfter: time.Millisecond},
			attempt: 10 * time.Second, want: 40*time.Second + 10500*time.Millisecond},
		{name: "five retries under a 4s cap", retry: middleware.Retry{MaxRetries: 5, MaxInterval: 4 * time.Second, Jitter: middleware.NoJitter, MaxRetryAfter: time.Millisecond},
			attempt: time.Second, want: 6*time.Second + (1+2+4+4+4)*time.Second},
		{name: "Retry-After cap for the short waits only", retry: middleware.Retry{MaxRetries: 3, Jitter: middleware.NoJitter, MaxRetryAfter: 3 * time.Second},
			attempt: time.Second, want: 4*time.Second + (3+3+4)*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.retry.WorstCase(tt.attempt); got != tt.want {
				t.Errorf("WorstCase(%v) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

type retryWait struct {
	attempt int
	delay   time.Duration
	err     error
}

// runRetry runs h under r, recording OnRetry's calls.
func runRetry(r middleware.Retry, h message.HandlerFunc, msg *message.Message) ([]*message.Message, error, []retryWait) {
	var waits []retryWait
	r.OnRetry = func(_ *message.Message, attempt int, delay time.Duration, err error) {
		waits = append(waits, retryWait{attempt, delay, err})
	}
	out, err := r.Middleware(h)(msg)
	return out, err, waits
}

func TestRetryJitterBounds(t *testing.T) {
	tests := []struct {
		name   string
		jitter float64
		max    float64 // the largest fraction of the delay added
	}{
		{name: "default jitter is 10%", jitter: 0, max: 0.1},
		{name: "half", jitter: 0.5, max: 0.5},
		{name: "no jitter", jitter: middleware.NoJitter, max: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := middleware.Retry{InitialInterval: 200 * time.Microsecond, Jitter: tt.jitter}
			jittered := 0
			for range 40 {
				f := &failing{errs: []error{&middleware.StatusError{Code: 503}}}
				_, _, waits := runRetry(r, f.handle, newMessage())
				if len(waits) != 3 {
					t.Fatalf("%d waits, want 3", len(waits))
				}
				for _, w := range waits {
					base := r.Delay(w.attempt)
					top := time.Duration(float64(base) * (1 + tt.max))
					if w.delay < base || w.delay > top {
						t.Fatalf("delay after attempt %d = %v, want in [%v, %v]", w.attempt, w.delay, base, top)
					}
					if w.delay > base {
						jittered++
					}
				}
			}
			if tt.max == 0 && jittered != 0 {
				t.Errorf("%d delays jittered with NoJitter", jittered)
			}
			if tt.max > 0 && jittered == 0 {
				t.Error("no delay of 120 was jittered")
			}
		})
	}
}

func TestRetryAfterIsUsedAndCapped(t *testing.T) {
	tests := []struct {
		name      string
		err       *middleware.StatusError
		maxAfter  time.Duration
		wantDelay time.Duration
	}{
		{name: "429 Retry-After replaces the backoff", err: &middleware.StatusError{Code: 429, RetryAfter: 30 * time.Millisecond},
			wantDelay: 30 * time.Millisecond},
		{name: "503 Retry-After replaces the backoff", err: &middleware.StatusError{Code: 503, RetryAfter: 20 * time.Millisecond},
			wantDelay: 20 * time.Millisecond},
		{name: "capped by MaxRetryAfter", err: &middleware.StatusError{Code: 429, RetryAfter: time.Hour},
			maxAfter: 25 * time.Millisecond, wantDelay: 25 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := middleware.Retry{MaxRetries: 2, InitialInterval: 5 * time.Second, MaxRetryAfter: tt.maxAfter}
			f := &failing{errs: []error{tt.err}}
			start := time.Now()
			_, err, waits := runRetry(r, f.handle, newMessage())
			took := time.Since(start)
			var give *middleware.GiveUpError
			if !errors.As(err, &give) || give.Attempts != 3 {
				t.Fatalf("err = %v, want a GiveUpError after 3 attempts", err)
			}
			for _, w := range waits {
				if w.delay != tt.wantDelay {
					t.Errorf("delay after attempt %d = %v, want %v", w.attempt, w.delay, tt.wantDelay)
				}
			}
			if took < 2*tt.wantDelay || took > 2*time.Second {
				t.Errorf("two waits of %v took %v", tt.wantDelay, took)
			}
		})
	}
}

func TestRetryPermanentAndRetryable(t *testing.T) {
	refused := dialClosedPort(t)
	tests := []struct {
		name         string
		err          error
		wantAttempts int
	}{
		{name: "400 is permanent", err: &middleware.StatusError{Code: 400}, wantAttempts: 1},
		{name: "404 is permanent", err: &middleware.StatusError{Code: 404}, wantAttempts: 1},
		{name: "422 is permanent", err: &middleware.StatusError{Code: 422}, wantAttempts: 1},
		{name: "301 is permanent", err: &middleware.StatusError{Code: 301}, wantAttempts: 1},
		{name: "an error that is not about the network", err: errors.New("cannot build request"), wantAttempts: 1},
		{name: "canceled under a live context", err: context.Canceled, wantAttempts: 1},
		{name: "500 is retried", err: &middleware.StatusError{Code: 500}, wantAttempts: 4},
		{name: "503 is retried", err: &middleware.StatusError{Code: 503}, wantAttempts: 4},
		{name: "429 is retried", err: &middleware.StatusError{Code: 429}, wantAttempts: 4},
		{name: "408 is retried", err: &middleware.StatusError{Code: 408}, wantAttempts: 4},
		{name: "timeout is retried", err: context.DeadlineExceeded, wantAttempts: 4},
		{name: "connection refused is retried", err: refused, wantAttempts: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &failing{errs: []error{tt.err}}
			_, err, waits := runRetry(middleware.Retry{InitialInterval: time.Millisecond}, f.handle, newMessage())
			var give *middleware.GiveUpError
			if !errors.As(err, &give) {
				t.Fatalf("err = %v, want a *GiveUpError", err)
			}
			if give.Attempts != tt.wantAttempts || f.count() != tt.wantAttempts {
				t.Errorf("GiveUpError.Attempts = %d, handler ran %d times; want %d", give.Attempts, f.count(), tt.wantAttempts)
			}
			if len(waits) != tt.wantAttempts-1 {
				t.Errorf("%d waits, want %d", len(waits), tt.wantAttempts-1)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("err = %v does not wrap the handler's error %v", err, tt.err)
			}
			var se *middleware.StatusError
			if want, ok := tt.err.(*middleware.StatusError); ok && (!errors.As(err, &se) || se.Code != want.Code) {
				t.Errorf("errors.As(err, *StatusError) does not find %d in %v", want.Code, err)
			}
		})
	}
}

func TestRetryMaxRetries(t *testing.T) {
	tests := []struct {
		name         string
		maxRetries   int
		wantAttempts int
	}{
		{name: "zero means the seed's 3", maxRetries: 0, wantAttempts: 4},
		{name: "NoRetries", maxRetries: middleware.NoRetries, wantAttempts: 1},
		{name: "one", maxRetries: 1, wantAttempts: 2},
		{name: "five", maxRetries: 5, wantAttempts: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &failing{errs: []error{&middleware.StatusError{Code: 502}}}
			r := middleware.Retry{MaxRetries: tt.maxRetries, InitialInterval: 100 * time.Microsecond}
			_, err, _ := runRetry(r, f.handle, newMessage())
			var give *middleware.GiveUpError
			if !errors.As(err, &give) || give.Attempts != tt.wantAttempts || f.count() != tt.wantAttempts {
				t.Errorf("err = %v after %d calls, want a GiveUpError after %d attempts", err, f.count(), tt.wantAttempts)
			}
		})
	}
}

func TestRetrySucceedsAfterFailures(t *testing.T) {
	produced := []*message.Message{message.NewMessage("out-1", nil)}
	f := &failing{
		errs: []error{&middleware.StatusError{Code: 503}, context.DeadlineExceeded, nil},
		out:  produced,
	}
	out, err, waits := runRetry(middleware.Retry{InitialInterval: time.Millisecond}, f.handle, newMessage())
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0] != produced[0] {
		t.Errorf("out = %v, want the handler's messages", out)
	}
	if f.count() != 3 || len(waits) != 2 {
		t.Errorf("handler ran %d times with %d waits, want 3 and 2", f.count(), len(waits))
	}
	if !errors.Is(waits[1].err, context.DeadlineExceeded) {
		t.Errorf("OnRetry after attempt 2 got %v", waits[1].err)
	}
}

func TestRetryNumbersAttempts(t *testing.T) {
	ctx := context.WithValue(context.Background(), ctxMarker{}, "orig")
	msg := newMessage()
	msg.SetContext(ctx)
	f := &failing{errs: []error{&middleware.StatusError{Code: 500}}}
	_, _, waits := runRetry(middleware.Retry{InitialInterval: time.Millisecond}, f.handle, msg)
	if want := []int{1, 2, 3, 4}; !slices.Equal(f.attempts, want) {
		t.Errorf("AttemptFromContext in the handler = %v, want %v", f.attempts, want)
	}
	var onRetry []int
	for _, w := range waits {
		onRetry = append(onRetry, w.attempt)
	}
	if want := []int{1, 2, 3}; !slices.Equal(onRetry, want) {
		t.Errorf("OnRetry attempts = %v, want %v", onRetry, want)
	}
	if msg.Context() != ctx {
		t.Error("Retry did not give the message its context back")
	}
	if got := middleware.AttemptFromContext(msg.Context()); got != 1 {
		t.Errorf("after Retry, AttemptFromContext = %d, want 1", got)
	}
}

type ctxMarker struct{}

func TestAttemptFromContext(t *testing.T) {
	if got := middleware.AttemptFromContext(context.Background()); got != 1 {
		t.Errorf("outside Retry: %d, want 1", got)
	}
	if got := middleware.AttemptFromContext(middleware.WithAttempt(context.Background(), 7)); got != 7 {
		t.Errorf("WithAttempt(7): %d", got)
	}
}

func TestRetryStopsWhenTheMessageContextIsCancelled(t *testing.T) {
	tests := []struct {
		name     string
		ctx      func() (context.Context, context.CancelFunc)
		cancelIt bool
		want     error
	}{
		{name: "cancelled", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelIt: true, want: context.Canceled},
		{name: "deadline passes", ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			msg := newMessage()
			msg.SetContext(ctx)
			f := &failing{errs: []error{&middleware.StatusError{Code: 503}}}
			waiting := make(chan struct{})
			r := middleware.Retry{InitialInterval: time.Hour, OnRetry: func(*message.Message, int, time.Duration, error) { close(waiting) }}
			done := make(chan error, 1)
			go func() {
				_, err := r.Middleware(f.handle)(msg)
				done <- err
			}()
			select {
			case <-waiting:
			case <-time.After(5 * time.Second):
				t.Fatal("Retry never started waiting")
			}
			if tt.cancelIt {
				cancel()
			}
			<-ctx.Done()
			start := time.Now()
			select {
			case err := <-done:
				if err != tt.want {
					t.Errorf("err = %v, want the context's error %v", err, tt.want)
				}
				if took := time.Since(start); took > time.Second {
					t.Errorf("Retry took %v to notice the context", took)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Retry kept waiting after the context was cancelled")
			}
			if f.count() != 1 {
				t.Errorf("handler ran %d times, want 1", f.count())
			}
		})
	}
}

func TestRetryReturnsTheContextErrorWhenTheAttemptSawCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msg := newMessage()
	msg.SetContext(ctx)
	calls := 0
	h := func(msg *message.Message) ([]*message.Message, error) {
		calls++
		cancel()
		return nil, &middleware.StatusError{Code: 503}
	}
	_, err := middleware.Retry{InitialInterval: time.Millisecond}.Middleware(h)(msg)
	if err != context.Canceled || calls != 1 {
		t.Errorf("err = %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestGiveUpError(t *testing.T) {
	inner := &middleware.StatusError{Code: 503}
	err := &middleware.GiveUpError{Attempts: 4, Err: inner}
	if got, want := err.Error(), "gave up after 4 attempt(s): webhook receiver answered 503 Service Unavailable"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if err.Unwrap() != inner {
		t.Error("Unwrap does not return the last error")
	}
}

// dialClosedPort returns the real error of connecting to a loopback port
// nothing listens on.
func dialClosedPort(t *testing.T) error {
	t.Helper()
	addr := closedAddr(t)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		_ = conn.Close()
		t.Fatalf("dialling closed port %s succeeded", addr)
	}
	return err
}
