package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
)

// twoEndpoints is a default endpoint that takes every event and an
// endpoint "crm" that refuses them for good (400) while failing is set.
type twoEndpoints struct {
	good, crm *receiver.Receiver
	failing   *atomic.Bool
}

func startTwoEndpoints(t *testing.T) twoEndpoints {
	t.Helper()
	failing := &atomic.Bool{}
	failing.Store(true)
	return twoEndpoints{
		good: startReceiver(t, nil),
		crm: startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int {
			if failing.Load() {
				return http.StatusBadRequest
			}
			return http.StatusOK
		}),
		failing: failing,
	}
}

// config is the two endpoints on the memory transport; health off, so
// that refusals are poisoned, not paused.
func (e twoEndpoints) config() bus.Config {
	return bus.Config{
		WebhookURL: e.good.URL + "/hook",
		PauseAfter: bus.Disabled,
		Endpoints:  []bus.Endpoint{{Name: "crm", URL: e.crm.URL + "/hook"}},
	}
}

// emit emits n events (of several types) on b.
func emit(t *testing.T, b *bus.Bus, n int) {
	t.Helper()
	all := oneOfEach()
	for i := range n {
		if err := b.Emit(context.Background(), all[i%len(all)]); err != nil {
			t.Fatal(err)
		}
	}
}

// waitDeadLetters waits until b holds n dead letters of endpoint and
// returns them.
func waitDeadLetters(t *testing.T, b *bus.Bus, endpoint string, n int) []bus.DeadLetter {
	t.Helper()
	var dls []bus.DeadLetter
	eventually(t, "dead letters", func() bool {
		var err error
		dls, err = b.DeadLetters(context.Background(), bus.DeadLetterFilter{Endpoint: endpoint, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(dls) >= n
	})
	if len(dls) != n {
		t.Fatalf("%d dead letters of %q, want %d", len(dls), endpoint, n)
	}
	return dls
}

// byID is the requests rcv got, by webhook-id.
func byID(rcv *receiver.Receiver) map[string][]receiver.Request {
	out := map[string][]receiver.Request{}
	for _, r := range rcv.Requests() {
		id := r.Header.Get("Webhook-Id")
		out[id] = append(out[id], r)
	}
	return out
}

// nothingMoreFor shows that rcv gets no request beyond want for a while:
// a sleep to show something does NOT happen.
func nothingMoreFor(t *testing.T, rcv *receiver.Receiver, want int, name string) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if got := rcv.Count(); got != want {
		t.Errorf("%s got %d requests, want %d", name, got, want)
	}
}

// nextMillisecond returns the next whole millisecond, once the clock has
// passed it: what happened before the call is before it, on Redis's
// millisecond entry ids too.
func nextMillisecond(t *testing.T) time.Time {
	t.Helper()
	at := time.Now().Truncate(time.Millisecond).Add(time.Millisecond)
	eventually(t, "the next millisecond", func() bool { return !time.Now().Before(at) })
	return at
}

// On memory, an event an endpoint refused for good is kept with its
// payload, endpoint, reason, status and attempts, oldest first; the poison
// handler still gets it; Event finds its envelope.
func TestDeadLettersOnMemoryKeepPoisonedEvents(t *testing.T) {
	e := startTwoEndpoints(t)
	var handled atomic.Int64
	start := time.Now()
	b, _ := newBus(t, e.config(), bus.WithPoisonHandler(func(*message.Message) error {
		handled.Add(1)
		return nil
	}))
	const n = 4
	emit(t, b, n)
	dls := waitDeadLetters(t, b, "crm", n)
	if err := e.good.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := byID(e.crm)
	for i, dl := range dls {
		reqs := got[dl.EventID]
		if len(reqs) != 1 {
			t.Fatalf("dead letter %s: crm got %d requests with its webhook-id, want 1", dl.EventID, len(reqs))
		}
		if !bytes.Equal(dl.Payload, reqs[0].Body) {
			t.Errorf("dead letter %s: payload %s, the webhook was %s", dl.EventID, dl.Payload, reqs[0].Body)
		}
		var env struct {
			Event  string `json:"event"`
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(dl.Payload, &env); err != nil {
			t.Fatal(err)
		}
		if dl.Endpoint != "crm" || dl.Status != http.StatusBadRequest || dl.Attempts != 1 || dl.Reason == "" ||
			dl.EventType != env.Event || dl.UserID != env.UserID || dl.UserID == "" {
			t.Errorf("dead letter %+v: want endpoint crm, status 400, 1 attempt, a reason, type %s, user %s", dl, env.Event, env.UserID)
		}
		if dl.PoisonedAt.Before(start) || dl.PoisonedAt.After(time.Now()) {
			t.Errorf("dead letter %s poisoned at %v, not within the test", dl.EventID, dl.PoisonedAt)
		}
		if i > 0 && dl.PoisonedAt.Before(dls[i-1].PoisonedAt) {
			t.Errorf("dead letters not oldest first: %v after %v", dl.PoisonedAt, dls[i-1].PoisonedAt)
		}
	}
	if h := handled.Load(); h != n {
		t.Errorf("the poison handler got %d events, want %d", h, n)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		f    bus.DeadLetterFilter
		want []bus.DeadLetter
	}{
		{"every endpoint", bus.DeadLetterFilter{}, dls},
		{"the default endpoint", bus.DeadLetterFilter{Endpoint: bus.DefaultEndpoint}, nil},
		{"an endpoint nothing knows", bus.DeadLetterFilter{Endpoint: "nope"}, nil},
		{"limit", bus.DeadLetterFilter{Limit: 2}, dls[:2]},
		{"since the last", bus.DeadLetterFilter{Since: dls[n-1].PoisonedAt}, dls[n-1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.DeadLetters(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, func(a, b bus.DeadLetter) bool { return a.ID == b.ID }) {
				t.Errorf("got %d dead letters %v, want %d", len(got), got, len(tc.want))
			}
		})
	}
	if _, err := b.DeadLetters(ctx, bus.DeadLetterFilter{Limit: -1}); err == nil {
		t.Error("a negative limit: no error")
	}

	rec, err := b.Event(ctx, dls[0].EventID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != dls[0].EventID || !bytes.Equal(rec.Envelope, dls[0].Payload) {
		t.Errorf("Event = %+v, want the envelope of %s", rec, dls[0].EventID)
	}
	if _, err := b.Event(ctx, "no-such-event"); !errors.Is(err, bus.ErrUnknownEvent) {
		t.Errorf("Event of an unknown id: %v, want ErrUnknownEvent", err)
	}
}

// A replay sends the event again to its endpoint only, with the same
// webhook-id and payload, and takes it out of the queue; an id named
// twice is replayed once; unknown ids are listed in the error.
func TestReplayOnMemorySendsToItsEndpointOnly(t *testing.T) {
	e := startTwoEndpoints(t)
	b, _ := newBus(t, e.config())
	const n = 3
	emit(t, b, n)
	dls := waitDeadLetters(t, b, "crm", n)
	if err := e.good.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e.failing.Store(false)

	ctx := context.Background()
	replayed, err := b.Replay(ctx, []string{dls[0].ID, dls[2].ID, "999999", dls[0].ID, "not-an-id"})
	var unknown *bus.UnknownDeadLettersError
	if !errors.As(err, &unknown) || !slices.Equal(unknown.IDs, []string{"999999", "not-an-id"}) {
		t.Errorf("Replay: %v, want an UnknownDeadLettersError of 999999 and not-an-id", err)
	}
	if replayed != 2 {
		t.Errorf("Replay replayed %d, want 2", replayed)
	}
	if err := e.crm.WaitFor(n+2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := byID(e.crm)
	for _, dl := range []bus.DeadLetter{dls[0], dls[2]} {
		reqs := got[dl.EventID]
		if len(reqs) != 2 || reqs[1].Status != http.StatusOK || !bytes.Equal(reqs[1].Body, dl.Payload) {
			t.Errorf("event %s: %d requests to crm, want the refused one and the replay, same body, answered 200", dl.EventID, len(reqs))
		}
	}
	nothingMoreFor(t, e.crm, n+2, "crm")
	if c := e.good.Count(); c != n {
		t.Errorf("the default endpoint got %d requests, want %d: a replay is for its endpoint only", c, n)
	}
	left := waitDeadLetters(t, b, "", 1)
	if left[0].ID != dls[1].ID {
		t.Errorf("left %s, want %s", left[0].ID, dls[1].ID)
	}
	if s := b.EndpointStats(); s[1].Name != "crm" || s[1].Delivered != 2 {
		t.Errorf("crm's stats %+v, want 2 delivered", s[1])
	}

	replayed, err = b.Replay(ctx, []string{dls[0].ID})
	if !errors.As(err, &unknown) || replayed != 0 {
		t.Errorf("replaying again: %d, %v; want 0 and an UnknownDeadLettersError", replayed, err)
	}
}

// RecoverEndpoint sends again exactly the events poisoned for the
// endpoint since a time, once each, to that endpoint only.
func TestRecoverEndpointOnMemory(t *testing.T) {
	e := startTwoEndpoints(t)
	b, _ := newBus(t, e.config())
	ctx := context.Background()
	emit(t, b, 2) // before
	waitDeadLetters(t, b, "crm", 2)
	since := nextMillisecond(t)
	emit(t, b, 3) // after
	all := waitDeadLetters(t, b, "crm", 5)
	var after []string
	for _, dl := range all {
		if !dl.PoisonedAt.Before(since) {
			after = append(after, dl.EventID)
		}
	}
	if len(after) != 3 {
		t.Fatalf("%d dead letters after the cut, want 3", len(after))
	}
	if err := e.good.WaitFor(5, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e.failing.Store(false)

	n, err := b.RecoverEndpoint(ctx, "crm", since)
	if err != nil || n != 3 {
		t.Fatalf("RecoverEndpoint = %d, %v; want 3", n, err)
	}
	if err := e.crm.WaitFor(5+3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	nothingMoreFor(t, e.crm, 5+3, "crm")
	got := byID(e.crm)
	for _, dl := range all {
		want := 1
		if slices.Contains(after, dl.EventID) {
			want = 2
		}
		if len(got[dl.EventID]) != want {
			t.Errorf("event %s: %d requests to crm, want %d", dl.EventID, len(got[dl.EventID]), want)
		}
	}
	if c := e.good.Count(); c != 5 {
		t.Errorf("the default endpoint got %d requests, want 5", c)
	}
	if left := waitDeadLetters(t, b, "crm", 2); slices.Contains(after, left[0].EventID) || slices.Contains(after, left[1].EventID) {
		t.Errorf("left %v, want the two poisoned before the cut", left)
	}
	if n, err := b.RecoverEndpoint(ctx, "crm", since); n != 0 || err != nil {
		t.Errorf("recovering again: %d, %v; want 0", n, err)
	}
	if _, err := b.RecoverEndpoint(ctx, "nope", since); !errors.Is(err, bus.ErrUnknownEndpoint) {
		t.Errorf("an unknown endpoint: %v, want ErrUnknownEndpoint", err)
	}
}

// On a brought pub/sub the ring is fed the same way; an event poisoned
// twice for an endpoint is recovered once, from its newest entry, and its
// older entry stays.
func TestRecoverEndpointOnPubSubOncePerEvent(t *testing.T) {
	e := startTwoEndpoints(t)
	e.failing.Store(false)
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	b, _ := newBus(t, e.config(), bus.WithPubSub(gc, func(string) (message.Subscriber, error) { return gc, nil }))
	payload := []byte(`{"event":"memory_added","user_id":"u9","data":{},"id":"ev-1"}`)
	for _, reason := range []string{"first", "second"} {
		p := message.NewMessage("ev-1", payload)
		p.Metadata.Set(event.MetaType, "memory_added")
		p.Metadata.Set(middleware.EndpointKey, "crm")
		p.Metadata.Set(middleware.PoisonReasonKey, reason)
		p.Metadata.Set(middleware.AttemptKey, "4")
		if err := gc.Publish(bus.PoisonTopic, p); err != nil {
			t.Fatal(err)
		}
		waitDeadLetters(t, b, "crm", map[string]int{"first": 1, "second": 2}[reason])
	}
	n, err := b.RecoverEndpoint(context.Background(), "crm", time.Time{})
	if err != nil || n != 1 {
		t.Fatalf("RecoverEndpoint = %d, %v; want 1", n, err)
	}
	if err := e.crm.WaitFor(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	nothingMoreFor(t, e.crm, 1, "crm")
	r := e.crm.Requests()[0]
	if r.Header.Get("Webhook-Id") != "ev-1" || !bytes.Equal(r.Body, payload) {
		t.Errorf("crm got %s %s, want ev-1 and its payload", r.Header.Get("Webhook-Id"), r.Body)
	}
	if e.good.Count() != 0 {
		t.Errorf("the default endpoint got %d requests, want none", e.good.Count())
	}
	if left := waitDeadLetters(t, b, "crm", 1); left[0].Reason != "first" {
		t.Errorf("left %+v, want the older entry", left[0])
	}
}

// Past DeadLetterMax the oldest dead letter leaves, counted, with one WARN
// line a second; Disabled keeps none.
func TestDeadLetterRingBound(t *testing.T) {
	refuse := func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusBadRequest }
	for _, tc := range []struct {
		name         string
		max, emitted int
		kept         int
		evicted      uint64
	}{
		{"past its bound", 3, 5, 3, 2},
		{"within its bound", 3, 3, 3, 0},
		{"disabled", bus.Disabled, 3, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := startReceiver(t, refuse)
			var mu sync.Mutex
			var order []string // as the poison consumer took them
			b, logs := newBus(t, bus.Config{WebhookURL: rcv.URL + "/hook", PauseAfter: bus.Disabled, DeadLetterMax: tc.max, Concurrency: 1},
				bus.WithPoisonHandler(func(msg *message.Message) error {
					mu.Lock()
					defer mu.Unlock()
					order = append(order, msg.UUID)
					return nil
				}))
			emit(t, b, tc.emitted)
			eventually(t, "every event poisoned", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(order) == tc.emitted
			})
			dls, err := b.DeadLetters(context.Background(), bus.DeadLetterFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, dl := range dls {
				ids = append(ids, dl.EventID)
			}
			mu.Lock()
			want := order[len(order)-tc.kept:]
			mu.Unlock()
			if !slices.Equal(ids, want) {
				t.Errorf("kept %v, want the newest %d: %v", ids, tc.kept, want)
			}
			if got := b.DeadLettersEvicted(); got != tc.evicted {
				t.Errorf("DeadLettersEvicted = %d, want %d", got, tc.evicted)
			}
			lines := strings.Count(logs.String(), "dead-letter queue full")
			if wantLines := min(int(tc.evicted), 1); lines != wantLines {
				t.Errorf("%d WARN lines of a full queue, want %d:\n%s", lines, wantLines, logs)
			}
			if tc.evicted > 0 && !strings.Contains(logs.String(), "level=WARN msg=\"memhook: dead-letter queue full") {
				t.Errorf("the line is not at WARN:\n%s", logs)
			}
		})
	}
}

// PurgeDeadLetters deletes one endpoint's dead letters, or every one.
func TestPurgeDeadLettersOnMemory(t *testing.T) {
	refuse := func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusBadRequest }
	def, crm := startReceiver(t, refuse), startReceiver(t, refuse)
	b, _ := newBus(t, bus.Config{WebhookURL: def.URL + "/hook", PauseAfter: bus.Disabled,
		Endpoints: []bus.Endpoint{{Name: "crm", URL: crm.URL + "/hook"}}})
	emit(t, b, 2)
	waitDeadLetters(t, b, "", 4)
	ctx := context.Background()
	if n, err := b.PurgeDeadLetters(ctx, "crm"); n != 2 || err != nil {
		t.Errorf("purging crm: %d, %v; want 2", n, err)
	}
	if left := waitDeadLetters(t, b, "", 2); left[0].Endpoint != bus.DefaultEndpoint || left[1].Endpoint != bus.DefaultEndpoint {
		t.Errorf("left %v, want the default endpoint's", left)
	}
	if n, err := b.PurgeDeadLetters(ctx, ""); n != 2 || err != nil {
		t.Errorf("purging all: %d, %v; want 2", n, err)
	}
	if n, _ := b.PurgeDeadLetters(ctx, ""); n != 0 {
		t.Errorf("purging an empty queue: %d", n)
	}
}

// On Redis the poison stream is the queue, the same for two routers: one
// lists what both poisoned, recovers since a time exactly the events
// poisoned after it, once each, to their endpoint only; the other
// replays the rest and purges.
func TestDeadLettersOnRedisTwoRouters(t *testing.T) {
	srv := redistest.Start(t)
	e := startTwoEndpoints(t)
	cfg := e.config()
	cfg.Transport, cfg.RedisURL = bus.TransportRedis, srv.URL()
	routers := twoRouters(t, cfg)
	r1, r2 := routers[0], routers[1]
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	waitReady(t, 30*time.Second, append(routers, app)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emit(t, app, 3) // before
	before := waitDeadLetters(t, r1, "crm", 3)
	since := nextMillisecond(t)
	emit(t, app, 2) // after
	all := waitDeadLetters(t, r2, "crm", 5)
	if err := e.good.WaitFor(5, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := byID(e.crm)
	for i, dl := range all {
		if i < 3 && dl.ID != before[i].ID {
			t.Errorf("the routers list different queues: %s, %s", dl.ID, before[i].ID)
		}
		if (i < 3) != dl.PoisonedAt.Before(since) {
			t.Errorf("dead letter %d poisoned at %v, cut at %v", i, dl.PoisonedAt, since)
		}
		reqs := got[dl.EventID]
		if len(reqs) != 1 || !bytes.Equal(reqs[0].Body, dl.Payload) {
			t.Fatalf("dead letter %s: %d requests, or another payload", dl.EventID, len(reqs))
		}
		if dl.Endpoint != "crm" || dl.Status != http.StatusBadRequest || dl.Attempts != 1 || dl.Reason == "" || dl.EventType == "" || dl.UserID != "u1" {
			t.Errorf("dead letter %+v: want endpoint crm, status 400, 1 attempt, a reason, a type, user u1", dl)
		}
	}
	if rec, err := r2.Event(ctx, all[0].EventID); err != nil || !bytes.Equal(rec.Envelope, all[0].Payload) {
		t.Errorf("Event = %+v, %v; want the envelope", rec, err)
	}
	e.failing.Store(false)

	n, err := r1.RecoverEndpoint(ctx, "crm", since)
	if err != nil || n != 2 {
		t.Fatalf("RecoverEndpoint = %d, %v; want 2", n, err)
	}
	if err := e.crm.WaitFor(5+2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	nothingMoreFor(t, e.crm, 5+2, "crm")
	got = byID(e.crm)
	for i, dl := range all {
		if want := 1 + min(i/3, 1); len(got[dl.EventID]) != want {
			t.Errorf("event %s: %d requests to crm, want %d", dl.EventID, len(got[dl.EventID]), want)
		}
	}
	if left := waitDeadLetters(t, r2, "crm", 3); left[0].ID != before[0].ID {
		t.Errorf("left %v, want the three before the cut", left)
	}

	ids := []string{before[0].ID, before[1].ID, before[2].ID, "1-1", "garbage"}
	n, err = r2.Replay(ctx, ids)
	var unknown *bus.UnknownDeadLettersError
	if n != 3 || !errors.As(err, &unknown) || !slices.Equal(unknown.IDs, []string{"1-1", "garbage"}) {
		t.Errorf("Replay = %d, %v; want 3 and the two unknown ids", n, err)
	}
	if err := e.crm.WaitFor(5+2+3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := e.crm.Distinct(); d != 5 {
		t.Errorf("crm: %d distinct webhook-ids answered, want 5", d)
	}
	nothingMoreFor(t, e.good, 5, "the default endpoint")
	if dls, _ := r1.DeadLetters(ctx, bus.DeadLetterFilter{}); len(dls) != 0 {
		t.Errorf("%d dead letters left, want none", len(dls))
	}

	e.failing.Store(true)
	emit(t, app, 1)
	waitDeadLetters(t, r1, "crm", 1)
	if n, err := r2.PurgeDeadLetters(ctx, "crm"); n != 1 || err != nil {
		t.Errorf("PurgeDeadLetters = %d, %v; want 1", n, err)
	}
	if r1.DeadLettersEvicted() != 0 {
		t.Error("evictions counted on Redis")
	}
}

// On transport http the events the router refused for good are kept in
// the application's queue, and a replay hands them to the router again.
func TestDeadLettersOnHTTPTransport(t *testing.T) {
	failing := &atomic.Bool{}
	failing.Store(true)
	router := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int {
		switch {
		case r.URL.Path == bus.IngestBatchPath:
			return http.StatusNotFound // an older router: one event per request
		case failing.Load():
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	app, _ := newBus(t, bus.Config{Transport: bus.TransportHTTP, RouterURL: router.URL})
	emit(t, app, 1)
	dls := waitDeadLetters(t, app, bus.DefaultEndpoint, 1)
	if dls[0].Status != http.StatusBadRequest || dls[0].EventID == "" {
		t.Errorf("dead letter %+v: want status 400 and the event id", dls[0])
	}
	failing.Store(false)
	if n, err := app.Replay(context.Background(), []string{dls[0].ID}); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	eventually(t, "the router took the event", func() bool {
		for _, r := range router.Requests() {
			if r.Path == bus.IngestPath && r.Status == http.StatusOK && bytes.Equal(r.Body, dls[0].Payload) {
				return true
			}
		}
		return false
	})
	if _, err := app.RecoverEndpoint(context.Background(), "crm", time.Time{}); !errors.Is(err, bus.ErrUnknownEndpoint) {
		t.Errorf("RecoverEndpoint of crm on transport http: %v, want ErrUnknownEndpoint", err)
	}
}
