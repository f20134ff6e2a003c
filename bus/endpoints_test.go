package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// deadURL is a loopback URL where nothing listens: connections are
// refused.
func deadURL(t *testing.T) string {
	return deadPort(t).URL("/hook")
}

// deadPort reserves a loopback port that refuses connections until its
// Listen, held for the test (no other server can take it meanwhile).
func deadPort(t *testing.T) *deadport.Port {
	t.Helper()
	return deadport.Held(t)
}

func startReceiver(t *testing.T, respond receiver.Respond) *receiver.Receiver {
	t.Helper()
	rcv, err := receiver.Start(respond, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	return rcv
}

func newBus(t *testing.T, cfg bus.Config, opts ...bus.Option) (*bus.Bus, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts = append([]bus.Option{bus.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	b, err := bus.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b, logs
}

// Each endpoint gets the events its filter selects, signed with its own
// secret only, with its own token and headers; the default endpoint keeps
// the seed's legacy header, a file endpoint does not.
func TestEndpointsFilterAndSignEach(t *testing.T) {
	all := startReceiver(t, nil)
	errorsOnly := startReceiver(t, nil)
	const secretA, secretB = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
	b, logs := newBus(t, bus.Config{
		WebhookURL: all.URL + "/hook",
		Secret:     secretA,
		Token:      "tok-default",
		Endpoints: []bus.Endpoint{{
			Name:    "alerts",
			URL:     errorsOnly.URL + "/hook",
			Events:  "memory_error",
			Secret:  secretB,
			Token:   "tok-alerts",
			Headers: map[string]string{"X-Tenant": "acme"},
		}},
	})
	ctx := context.Background()
	for i := range 10 {
		var e event.Event
		if i%5 == 0 {
			e = event.NewMemoryError("u", "search", errors.New("boom"), 1)
		} else {
			e = event.NewPreferenceStored("u", "tea", "drinks")
		}
		if err := b.Emit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := all.WaitFor(10, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := errorsOnly.WaitFor(2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	va, _ := verify.New(secretA)
	vb, _ := verify.New(secretB)
	for _, r := range all.Requests() {
		if err := va.Verify(r.Header, r.Body); err != nil {
			t.Errorf("default endpoint: %v", err)
		}
		if vb.Verify(r.Header, r.Body) == nil {
			t.Error("a default endpoint's webhook verifies with the alerts endpoint's secret")
		}
		if r.Header.Get("Authorization") != "Bearer tok-default" || r.Header.Get("X-Webhook-Secret") == "" || r.Header.Get("X-Tenant") != "" {
			t.Errorf("default endpoint headers: %v", r.Header)
		}
	}
	eventually(t, "alerts endpoint's filtered count", func() bool {
		for _, s := range b.EndpointStats() {
			if s.Name == "alerts" {
				return s.Filtered == 8 && s.Delivered == 2
			}
		}
		return false
	})
	for _, r := range errorsOnly.Requests() {
		var env struct{ Event string }
		_ = json.Unmarshal(r.Body, &env)
		if env.Event != "memory_error" {
			t.Errorf("alerts endpoint got %q", env.Event)
		}
		if err := vb.Verify(r.Header, r.Body); err != nil {
			t.Errorf("alerts endpoint: %v", err)
		}
		if va.Verify(r.Header, r.Body) == nil {
			t.Error("an alerts webhook verifies with the default endpoint's secret")
		}
		if r.Header.Get("Authorization") != "Bearer tok-alerts" || r.Header.Get("X-Webhook-Secret") != "" || r.Header.Get("X-Tenant") != "acme" {
			t.Errorf("alerts endpoint headers: %v", r.Header)
		}
	}
	if n := len(errorsOnly.Requests()); n != 2 {
		t.Errorf("alerts endpoint got %d webhooks, want the 2 memory_error", n)
	}
	if strings.Contains(logs.String(), "tok-alerts") {
		t.Error("a token appears in the logs")
	}
	eventually(t, "10 accepted, 12 deliveries (10+2), 8 filtered", func() bool {
		s := b.Stats()
		return s.Accepted == 10 && s.Delivered == 12 && s.Filtered == 8
	})
}

// A dead endpoint and a slow one do not hold back a healthy one: it gets
// every event while the dead one's retries wait, and the slow one gets
// everything too.
func TestEndpointsIsolated(t *testing.T) {
	healthy := startReceiver(t, nil)
	slow := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int {
		time.Sleep(100 * time.Millisecond)
		return http.StatusOK
	})
	const n = 200
	b, _ := newBus(t, bus.Config{
		WebhookURL:    healthy.URL + "/hook",
		RetrySchedule: []time.Duration{time.Hour},
		Endpoints: []bus.Endpoint{
			{Name: "dead", URL: deadURL(t)},
			{Name: "slow", URL: slow.URL + "/hook"},
		},
	})
	ctx := context.Background()
	for range n {
		if err := b.Emit(ctx, event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	if err := healthy.WaitFor(n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := slow.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The dead endpoint: paused by its health after 10 failures, every
	// one of its events waiting, none poisoned: those taken before it
	// paused in the delay store, the others unread in its queue (its
	// workers take nothing while it is paused: at most one each before
	// they stopped).
	var dead bus.EndpointStats
	eventually(t, "the dead endpoint paused, all its events waiting", func() bool {
		for _, s := range b.EndpointStats() {
			if s.Name == "dead" {
				dead = s
				return s.State == "paused" && s.Retrying+s.Backlog == n
			}
		}
		return false
	})
	t.Logf("dead endpoint paused: %d held in the delay store, %d unread", dead.Retrying, dead.Backlog)
	if dead.Failures < 10 || dead.NextProbe.IsZero() && !dead.Probing {
		t.Errorf("paused after failures: %d failures, next probe %v, probing %v; want 10 or more and a probe time", dead.Failures, dead.NextProbe, dead.Probing)
	}
	if max := 10 + 2*transports.DefaultWorkers; dead.Retrying > max {
		t.Errorf("paused: %d events taken and held in the delay store, want at most %d (the rest unread)", dead.Retrying, max)
	}
	for _, s := range b.EndpointStats() {
		if s.Poisoned != 0 {
			t.Errorf("endpoint %s: %d poisoned", s.Name, s.Poisoned)
		}
	}
}

// SetEndpoints adds, changes and removes endpoints on a running bus.
func TestSetEndpoints(t *testing.T) {
	a := startReceiver(t, nil)
	c := startReceiver(t, nil)
	c2 := startReceiver(t, nil)
	b, _ := newBus(t, bus.Config{WebhookURL: a.URL + "/hook"})
	ctx := context.Background()
	emit := func(k int) {
		t.Helper()
		for range k {
			if err := b.Emit(ctx, event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit(5)
	if err := a.WaitFor(5, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.SetEndpoints(ctx, []bus.Endpoint{{Name: "crm", URL: c.URL + "/hook"}}); err != nil {
		t.Fatal(err)
	}
	emit(5)
	if err := c.WaitFor(5, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Requests()); got != 5 {
		t.Errorf("an added endpoint got %d events, want the 5 emitted after it was added", got)
	}
	if err := b.SetEndpoints(ctx, []bus.Endpoint{{Name: "crm", URL: c2.URL + "/hook"}}); err != nil {
		t.Fatal(err)
	}
	emit(3)
	if err := c2.WaitFor(3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.SetEndpoints(ctx, nil); err != nil {
		t.Fatal(err)
	}
	emit(4)
	if err := a.WaitFor(17, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Requests()) + len(c2.Requests()); got != 8 {
		t.Errorf("crm got %d events in all, want 8", got)
	}
	if names := b.EndpointStats(); len(names) != 1 || names[0].Name != bus.DefaultEndpoint {
		t.Errorf("endpoints after removal: %+v", names)
	}
	eventually(t, "25 delivered (a removed endpoint's deliveries stay counted)", func() bool { return b.Stats().Delivered == 17+8 })
	err := b.SetEndpoints(ctx, []bus.Endpoint{{Name: "default", URL: c.URL}, {Name: "Bad Name", URL: "ftp://x"}})
	if err == nil || !strings.Contains(err.Error(), "endpoint default: name") || !strings.Contains(err.Error(), "url") {
		t.Errorf("bad endpoints: %v", err)
	}
}

// An endpoint's rate limit spaces its attempts; the other endpoints are
// not held by it.
func TestEndpointRateLimit(t *testing.T) {
	free := startReceiver(t, nil)
	limited := startReceiver(t, nil)
	b, _ := newBus(t, bus.Config{
		WebhookURL: free.URL + "/hook",
		Endpoints:  []bus.Endpoint{{Name: "limited", URL: limited.URL + "/hook", RateLimit: bus.RateLimit{Events: 20, Per: time.Second}}},
	})
	const n = 30
	start := time.Now()
	for range n {
		if err := b.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	if err := free.WaitFor(n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	freeTook := time.Since(start)
	if err := limited.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := limited.Requests()
	span := reqs[len(reqs)-1].At.Sub(reqs[0].At)
	t.Logf("unlimited endpoint: %d in %s; limited (20/s): %d over %s", n, freeTook, n, span)
	// 30 slots at 20/s span 29 intervals of 50 ms: 1.45 s; the in-process
	// delay store hands each out at its slot (a first request late under
	// load shortens the span a little; unlimited, it is ~20 ms).
	if span < 1200*time.Millisecond {
		t.Errorf("the limited endpoint got %d webhooks in %s, faster than 20/s", n, span)
	}
	// Held by the other's limit, the unlimited one would finish with it.
	freeLast := free.Requests()[n-1].At
	if !freeLast.Before(reqs[n-1].At.Add(-500 * time.Millisecond)) {
		t.Errorf("the unlimited endpoint's last webhook came %s before the limited one's: held by its limit",
			reqs[n-1].At.Sub(freeLast))
	}
	for _, s := range b.EndpointStats() {
		if s.Name == "limited" && s.Retried != 0 {
			t.Errorf("rate-limited waits counted as %d retries", s.Retried)
		}
	}
}

// On memory an endpoint whose backlog (queued and waiting) passes
// MEMHOOK_QUEUE_CAPACITY gives up its oldest events to the poison queue,
// tagged with it; Emit never fails and the other endpoint gets all.
func TestEndpointBacklogShedsToPoison(t *testing.T) {
	healthy := startReceiver(t, nil)
	poisoned := make(chan *message.Message, 1000)
	b, logs := newBus(t, bus.Config{
		WebhookURL:    healthy.URL + "/hook",
		QueueCapacity: 50,
		RetrySchedule: []time.Duration{time.Hour},
		Endpoints:     []bus.Endpoint{{Name: "dead", URL: deadURL(t)}},
	}, bus.WithPoisonHandler(func(m *message.Message) error { poisoned <- m; return nil }))
	const n = 200
	for i := range n {
		if err := b.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
		if i%40 == 39 {
			if err := healthy.WaitFor(i+1, 5*time.Second); err != nil { // the healthy one keeps up; the dead one fills
				t.Fatal(err)
			}
		}
	}
	if err := healthy.WaitFor(n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var dead bus.EndpointStats
	eventually(t, "the dead endpoint's backlog within its bound, the rest shed", func() bool {
		for _, s := range b.EndpointStats() {
			if s.Name == "dead" {
				dead = s
			}
		}
		// paused, most of its events wait unread in its queue
		return dead.Shed > 0 && int(dead.Shed)+dead.Retrying+dead.Backlog == n
	})
	if dead.Retrying+dead.Backlog > 50 {
		t.Errorf("dead endpoint: %d waiting and %d queued, over its bound of 50", dead.Retrying, dead.Backlog)
	}
	if dead.Poisoned != dead.Shed {
		t.Errorf("dead endpoint: %d poisoned, %d shed: a shed event is a poisoned one", dead.Poisoned, dead.Shed)
	}
	for range dead.Shed {
		select {
		case m := <-poisoned:
			if m.Metadata.Get(middleware.EndpointKey) != "dead" || !strings.Contains(m.Metadata.Get(middleware.PoisonReasonKey), "backlog") {
				t.Fatalf("poisoned entry metadata %v", m.Metadata)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a shed event never reached the poison handler")
		}
	}
	if !strings.Contains(logs.String(), "endpoint backlog over its bound") {
		t.Error("no WARN line for the shed events")
	}
}
