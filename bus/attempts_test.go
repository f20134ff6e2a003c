package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// flaky answers 503 with a long body to the first `fail` attempts of each
// event, then 200 "thanks"; it records the traceparent headers it got.
type flaky struct {
	fail int
	mu   sync.Mutex
	seen map[string]int
	tps  []string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	id := r.Header.Get("webhook-id")
	f.seen[id]++
	n := f.seen[id]
	f.tps = append(f.tps, r.Header.Get("traceparent"))
	f.mu.Unlock()
	if n <= f.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("down for maintenance " + strings.Repeat(".", 2000)))
		return
	}
	_, _ = w.Write([]byte("thanks"))
}

func startFlaky(t *testing.T, fail int) (*flaky, string) {
	f := &flaky{fail: fail, seen: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL + "/hook"
}

// Every attempt of every endpoint is in the log, newest first: the
// failures with their status, class and the first 1 KiB of the answer,
// the success with its answer; the trace context of Emit's ctx goes out
// on every attempt and its trace id into the log.
func TestAttemptsAreRecorded(t *testing.T) {
	f, url := startFlaky(t, 2)
	other, otherURL := startFlaky(t, 0)
	b, _ := newBus(t, bus.Config{
		WebhookURL: url, RetrySchedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond},
		PauseAfter: bus.Disabled,
		Endpoints:  []bus.Endpoint{{Name: "crm", URL: otherURL}},
	})
	ctx := bus.WithTraceparent(context.Background(), traceparent)
	if err := b.Emit(ctx, event.NewPreferenceStored("u1", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	var page bus.AttemptPage
	eventually(t, "four attempts in the log", func() bool {
		var err error
		page, err = b.Attempts(context.Background(), bus.AttemptFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Attempts) == 4
	})
	var id string
	f.mu.Lock()
	for k := range f.seen {
		id = k
	}
	tps := append([]string(nil), f.tps...)
	f.mu.Unlock()
	for _, tp := range append(tps, other.tps...) {
		if tp != traceparent {
			t.Errorf("an attempt sent traceparent %q, want %q", tp, traceparent)
		}
	}
	var def []bus.Attempt
	for _, a := range page.Attempts {
		if a.EventID != id || a.EventType != string(event.PreferenceStored) || a.UserID != "u1" || a.TraceID != traceparent[3:35] {
			t.Errorf("attempt %+v: want event %s of u1 with trace id %s", a, id, traceparent[3:35])
		}
		if a.Endpoint == bus.DefaultEndpoint {
			def = append(def, a)
		}
	}
	if len(def) != 3 {
		t.Fatalf("%d attempts on the default endpoint, want 3: %+v", len(def), page.Attempts)
	}
	ok, second, first := def[0], def[1], def[2]
	if !ok.Succeeded || ok.Status != 200 || ok.Response != "thanks" || ok.Number != 3 || ok.ErrorClass != "" || ok.Error != "" {
		t.Errorf("the success: %+v", ok)
	}
	for i, a := range []bus.Attempt{second, first} {
		if a.Succeeded || a.Status != 503 || a.ErrorClass != bus.AttemptErrorStatus || a.Number != 2-i ||
			len(a.Response) != bus.MaxAttemptResponse || !strings.HasPrefix(a.Response, "down for maintenance") || a.Error == "" {
			t.Errorf("failure %d: %+v", 2-i, a)
		}
	}
	if !(ok.Start.After(second.Start) && second.Start.After(first.Start)) || first.Duration <= 0 {
		t.Errorf("starts %v %v %v, duration %v: not newest first", ok.Start, second.Start, first.Start, first.Duration)
	}
	for _, tt := range []struct {
		f    bus.AttemptFilter
		want int
	}{
		{bus.AttemptFilter{Status: "failed"}, 2},
		{bus.AttemptFilter{Status: "succeeded"}, 2},
		{bus.AttemptFilter{Endpoint: "crm"}, 1},
		{bus.AttemptFilter{EventID: "nope"}, 0},
		{bus.AttemptFilter{Since: ok.Start}, since(page.Attempts, ok.Start)},
		{bus.AttemptFilter{Since: ok.Start.Add(time.Hour)}, 0},
	} {
		p, err := b.Attempts(context.Background(), tt.f)
		if err != nil || len(p.Attempts) != tt.want {
			t.Errorf("%+v: %d attempts (%v), want %d", tt.f, len(p.Attempts), err, tt.want)
		}
	}
	p1, err := b.Attempts(context.Background(), bus.AttemptFilter{Limit: 3})
	if err != nil || len(p1.Attempts) != 3 || p1.Next == "" {
		t.Fatalf("limit 3: %d attempts, next %q, %v", len(p1.Attempts), p1.Next, err)
	}
	p2, err := b.Attempts(context.Background(), bus.AttemptFilter{Limit: 3, Cursor: p1.Next})
	if err != nil || len(p2.Attempts) != 1 || p2.Next != "" || p2.Attempts[0] != page.Attempts[3] {
		t.Fatalf("the next page: %+v, next %q, %v", p2.Attempts, p2.Next, err)
	}
	all, err := b.EventAttempts(context.Background(), id)
	if err != nil || len(all) != 4 {
		t.Fatalf("EventAttempts: %d, %v", len(all), err)
	}
	if none, err := b.EventAttempts(context.Background(), "unknown"); err != nil || len(none) != 0 {
		t.Errorf("EventAttempts of an unknown event: %v, %v", none, err)
	}
}

// since counts the attempts started at or after t.
func since(as []bus.Attempt, t time.Time) int {
	n := 0
	for _, a := range as {
		if !a.Start.Before(t) {
			n++
		}
	}
	return n
}

// Bad filters are a *ParamError naming the parameter.
func TestAttemptsRefusesBadFilters(t *testing.T) {
	b, _ := newBus(t, bus.Config{})
	for _, tt := range []struct {
		f     bus.AttemptFilter
		param string
	}{
		{bus.AttemptFilter{Status: "pending"}, "status"},
		{bus.AttemptFilter{Limit: -1}, "limit"},
		{bus.AttemptFilter{Limit: 1001}, "limit"},
		{bus.AttemptFilter{Cursor: "x"}, "cursor"},
	} {
		_, err := b.Attempts(context.Background(), tt.f)
		var pe *bus.ParamError
		if !errors.As(err, &pe) || pe.Param != tt.param {
			t.Errorf("%+v: %v, want a ParamError on %s", tt.f, err, tt.param)
		}
	}
	var pe *bus.ParamError
	if _, err := b.EventAttempts(context.Background(), ""); !errors.As(err, &pe) || pe.Param != "event" {
		t.Errorf("EventAttempts(\"\"): %v", err)
	}
}

// With the log Disabled nothing is recorded; an invalid traceparent is
// dropped: no header, no trace id.
func TestAttemptLogDisabledAndInvalidTrace(t *testing.T) {
	f, url := startFlaky(t, 0)
	on, _ := newBus(t, bus.Config{WebhookURL: url})
	off, _ := newBus(t, bus.Config{WebhookURL: url, AttemptLogMax: bus.Disabled})
	ctx := bus.WithTraceparent(context.Background(), "00-not-a-trace")
	for _, b := range []*bus.Bus{on, off} {
		if err := b.Emit(ctx, event.NewPreferenceStored("u1", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the attempt of the bus with a log", func() bool {
		p, err := on.Attempts(context.Background(), bus.AttemptFilter{})
		return err == nil && len(p.Attempts) == 1
	})
	eventually(t, "both delivered", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.seen) == 2 })
	p, err := on.Attempts(context.Background(), bus.AttemptFilter{})
	if err != nil || p.Attempts[0].TraceID != "" {
		t.Errorf("trace id %q of an invalid traceparent (%v)", p.Attempts[0].TraceID, err)
	}
	ctxc, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := off.Close(ctxc); err != nil {
		t.Fatal(err)
	}
	p, err = off.Attempts(context.Background(), bus.AttemptFilter{})
	if err != nil || p.Attempts == nil || len(p.Attempts) != 0 {
		t.Errorf("Disabled: %v, %v; want an empty page", p, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tp := range f.tps {
		if tp != "" {
			t.Errorf("an invalid traceparent was sent: %q", tp)
		}
	}
}

// On Redis the log is the stream every router shares: each router lists
// the attempts of both, and the trace context travels through the
// stream.
func TestAttemptsOnRedisTwoRouters(t *testing.T) {
	srv := redistest.StartWithoutPersistence(t)
	_, url := startFlaky(t, 1)
	cfg := bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL(), WebhookURL: url,
		RetrySchedule: []time.Duration{10 * time.Millisecond}, PauseAfter: bus.Disabled}
	routers := twoRouters(t, cfg)
	if got := routers[0].Config().AttemptLogMax; got != bus.DefaultRedisAttemptLogMax {
		t.Errorf("AttemptLogMax on redis = %d, want %d", got, bus.DefaultRedisAttemptLogMax)
	}
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	waitReady(t, 15*time.Second, append(routers, app)...)
	const n = 40
	tctx := bus.WithTraceparent(context.Background(), traceparent)
	for range n {
		if err := app.Emit(tctx, event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range append(routers, app) { // even the app, which delivers nothing, reads the shared log
		eventually(t, "every attempt of both routers in the log", func() bool {
			p, err := b.Attempts(context.Background(), bus.AttemptFilter{Limit: 1000})
			return err == nil && len(p.Attempts) == 2*n
		})
	}
	p, err := app.Attempts(context.Background(), bus.AttemptFilter{Status: "failed", Limit: 1000})
	if err != nil || len(p.Attempts) != n {
		t.Fatalf("%d failed attempts (%v), want %d", len(p.Attempts), err, n)
	}
	for _, a := range p.Attempts {
		if a.Status != 503 || a.Number != 1 || a.TraceID != traceparent[3:35] || !strings.HasPrefix(a.Response, "down") {
			t.Fatalf("failed attempt %+v", a)
		}
	}
	all, err := routers[1].EventAttempts(context.Background(), p.Attempts[0].EventID)
	if err != nil || len(all) != 2 || !all[0].Succeeded || all[1].Succeeded {
		t.Errorf("EventAttempts: %+v, %v; want the success then the failure", all, err)
	}
}

// AttemptLogMax's default depends on the transport; a negative one
// other than Disabled is refused.
func TestAttemptLogMaxConfig(t *testing.T) {
	c, err := bus.ConfigFromLookup(func(k string) (string, bool) { return map[string]string{"MEMHOOK_TRANSPORT": "redis"}[k], true })
	if err != nil || c.AttemptLogMax != bus.DefaultRedisAttemptLogMax {
		t.Errorf("on redis: AttemptLogMax %d (%v), want %d", c.AttemptLogMax, err, bus.DefaultRedisAttemptLogMax)
	}
	if err := (bus.Config{AttemptLogMax: -2}).Validate(); err == nil || !strings.Contains(err.Error(), "MEMHOOK_ATTEMPT_LOG_MAX") {
		t.Errorf("Validate of AttemptLogMax -2: %v", err)
	}
}

// The ring keeps AttemptLogMax attempts: the newest.
func TestAttemptLogRingBound(t *testing.T) {
	_, url := startFlaky(t, 0)
	b, _ := newBus(t, bus.Config{WebhookURL: url, AttemptLogMax: 5})
	for range 12 {
		if err := b.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := b.Attempts(context.Background(), bus.AttemptFilter{Limit: 100})
	if err != nil || len(p.Attempts) != 5 {
		t.Fatalf("%d attempts kept (%v), want 5", len(p.Attempts), err)
	}
}

// Over transport http the trace context goes with the event to the
// router (the traceparent header of /ingest), on to the receiver, and
// into the router's attempt log.
func TestTraceparentThroughTheHTTPTransport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	router, rcv := startRouter(t, ln, "")
	app, _ := newBus(t, bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + ln.Addr().String()})
	// Several events, so that they go in batches: every other one traced.
	const n = 20
	for i := range n {
		ctx := context.Background()
		if i%2 == 0 {
			ctx = bus.WithTraceparent(ctx, traceparent)
		}
		if err := app.Emit(ctx, event.NewPreferenceStored("u", fmt.Sprint(i), "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	if err := rcv.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcv.Requests() {
		var env struct {
			Data struct {
				Key string `json:"preference"`
			} `json:"data"`
		}
		_ = json.Unmarshal(r.Body, &env)
		want := ""
		if i, _ := strconv.Atoi(env.Data.Key); i%2 == 0 {
			want = traceparent
		}
		if got := r.Header.Get("traceparent"); got != want {
			t.Errorf("event %s: the receiver got traceparent %q, want %q", env.Data.Key, got, want)
		}
	}
	eventually(t, "the attempts in the router's log", func() bool {
		p, err := router.Attempts(context.Background(), bus.AttemptFilter{})
		traced := 0
		for _, a := range p.Attempts {
			if a.TraceID == traceparent[3:35] {
				traced++
			}
		}
		return err == nil && len(p.Attempts) == n && traced == n/2
	})
}

// A receiver that echoes its request headers in its answer does not put
// the endpoint's token or secret in the attempt log.
func TestAttemptLogScrubsEchoedCredentials(t *testing.T) {
	const token, secret = "tok-echoed-123", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "auth=%s secret=%s", r.Header.Get("Authorization"), r.Header.Get("X-Webhook-Secret"))
	}))
	t.Cleanup(echo.Close)
	b, _ := newBus(t, bus.Config{WebhookURL: echo.URL, Token: token, Secret: secret, RetryCount: bus.Disabled})
	if err := b.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	var page bus.AttemptPage
	eventually(t, "the attempt logged", func() bool {
		page, _ = b.Attempts(context.Background(), bus.AttemptFilter{})
		return len(page.Attempts) == 1
	})
	a := page.Attempts[0]
	if !strings.Contains(a.Response, "REDACTED") || strings.Contains(a.Response, token) ||
		strings.Contains(a.Response, strings.TrimPrefix(secret, "whsec_")) {
		t.Errorf("response kept as %q", a.Response)
	}
}
