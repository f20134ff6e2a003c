package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// sequences records, per user, the sequence numbers of the webhooks a
// receiver accepted, in the order it accepted them (before it answers: the
// next one of an ordered user cannot be sent before).
type sequences struct {
	mu       sync.Mutex
	accepted map[string][]int
	seen     map[string]bool // user/seq accepted once
	attempts int
	dups     int
}

func newSequences() *sequences {
	return &sequences{accepted: map[string][]int{}, seen: map[string]bool{}}
}

// respond answers 503 to the requests fail picks, 200 to the others,
// recording what it accepts.
func (s *sequences) respond(fail func(user string, seq int) bool) func(w http.ResponseWriter, r *http.Request, n int) int {
	return func(w http.ResponseWriter, r *http.Request, n int) int {
		var env struct {
			UserID string `json:"user_id"`
			Data   struct {
				Seq int `json:"seq"`
			} `json:"data"`
		}
		body := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
		_ = json.Unmarshal(body, &env)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.attempts++
		if fail(env.UserID, env.Data.Seq) {
			return http.StatusServiceUnavailable
		}
		k := fmt.Sprintf("%s/%d", env.UserID, env.Data.Seq)
		if s.seen[k] {
			s.dups++
			return http.StatusOK
		}
		s.seen[k] = true
		s.accepted[env.UserID] = append(s.accepted[env.UserID], env.Data.Seq)
		return http.StatusOK
	}
}

func (s *sequences) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// outOfOrder returns the users whose accepted sequence numbers are not
// increasing, with their sequences.
func (s *sequences) outOfOrder() map[string][]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]int{}
	for u, seqs := range s.accepted {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				out[u] = seqs
				break
			}
		}
	}
	return out
}

// emitUsers emits perUser events for each of users users, interleaved
// (user 0 seq 0, user 1 seq 0, …), a sequence number in data.
func emitUsers(t *testing.T, b *bus.Bus, users, perUser int) {
	t.Helper()
	for seq := range perUser {
		for u := range users {
			e := event.Event{Type: event.MemoryAdded, UserID: fmt.Sprintf("user-%d", u), Data: map[string]int{"seq": seq}}
			if err := b.Emit(context.Background(), e); err != nil {
				t.Fatalf("emit user %d seq %d: %v", u, seq, err)
			}
		}
	}
}

// With ordering user, every user's events reach the receiver in the order
// emitted although a tenth of the attempts fail at random and are
// retried; none is lost.
func TestOrderingUserOnMemory(t *testing.T) {
	const users, perUser = 50, 20
	seqs := newSequences()
	var rmu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	rcv := startReceiver(t, seqs.respond(func(string, int) bool {
		rmu.Lock()
		defer rmu.Unlock()
		return rng.IntN(10) == 0
	}))
	b, _ := newBus(t, bus.Config{
		WebhookURL:    rcv.URL + "/hook",
		Ordering:      bus.OrderingUser,
		RetrySchedule: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
		PauseAfter:    bus.Disabled,
	})
	emitUsers(t, b, users, perUser)
	eventually(t, "every event accepted", func() bool { return seqs.count() == users*perUser })
	if bad := seqs.outOfOrder(); len(bad) > 0 {
		for u, s := range bad {
			t.Errorf("user %s: accepted in the order %v", u, s)
		}
	}
	s := b.Stats()
	t.Logf("%d events, %d attempts, %d duplicates, %d retries", users*perUser, seqs.attempts, seqs.dups, s.Retried)
	if s.Retried == 0 {
		t.Error("no retry: the test proves nothing about waiting retries")
	}
}

// An event given up (poisoned) passes its user's turn on: the user's later
// events go, and its poison entry says that the order was broken there.
func TestOrderingPoisonedPassesTheTurn(t *testing.T) {
	seqs := newSequences()
	rcv := startReceiver(t, seqs.respond(func(user string, seq int) bool { return seq == 1 }))
	poisoned := make(chan *message.Message, 10)
	b, _ := newBus(t, bus.Config{
		WebhookURL:    rcv.URL + "/hook",
		Ordering:      bus.OrderingUser,
		RetrySchedule: []time.Duration{5 * time.Millisecond},
		PauseAfter:    bus.Disabled,
	}, bus.WithPoisonHandler(func(m *message.Message) error { poisoned <- m; return nil }))
	emitUsers(t, b, 1, 4)
	eventually(t, "seq 0, 2 and 3 accepted", func() bool { return seqs.count() == 3 })
	select {
	case m := <-poisoned:
		if !strings.Contains(m.Metadata.Get(middleware.OrderBrokenKey), "user-0") {
			t.Errorf("poisoned entry's metadata %v: no %s naming the user", m.Metadata, middleware.OrderBrokenKey)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("seq 1 was not poisoned")
	}
	if got := seqs.accepted["user-0"]; fmt.Sprint(got) != "[0 2 3]" {
		t.Errorf("accepted %v, want [0 2 3]", got)
	}
	dl, err := b.DeadLetters(context.Background(), bus.DeadLetterFilter{})
	if err != nil || len(dl) != 1 || !strings.Contains(dl[0].OrderBroken, "user-0") {
		t.Errorf("dead letters %+v, %v: want one saying the order was broken for user-0", dl, err)
	}
}

// A user whose events keep failing holds back only its own later events:
// the other users' events all arrive meanwhile.
func TestOrderingAStuckUserDelaysNoOther(t *testing.T) {
	seqs := newSequences()
	stuck := true
	var mu sync.Mutex
	rcv := startReceiver(t, seqs.respond(func(user string, seq int) bool {
		mu.Lock()
		defer mu.Unlock()
		return stuck && user == "user-0"
	}))
	b, _ := newBus(t, bus.Config{
		WebhookURL:    rcv.URL + "/hook",
		Ordering:      bus.OrderingUser,
		RetrySchedule: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, time.Second},
		PauseAfter:    bus.Disabled,
	})
	const users, perUser = 20, 10
	emitUsers(t, b, users, perUser)
	eventually(t, "the other users' events all accepted", func() bool { return seqs.count() == (users-1)*perUser })
	if n := len(seqs.accepted["user-0"]); n != 0 {
		t.Fatalf("the stuck user got %d events accepted", n)
	}
	mu.Lock()
	stuck = false
	mu.Unlock()
	eventually(t, "the stuck user's events, once it is back", func() bool { return seqs.count() == users*perUser })
	if got := seqs.accepted["user-0"]; fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Errorf("the stuck user's events accepted in the order %v", got)
	}
}

// On Redis with two routers, ordering user holds across them: any router
// delivers a user's event, never two of one user at once, in the stream's
// order, a tenth of the attempts failing at random.
func TestOrderingUserOnRedisTwoRouters(t *testing.T) {
	srv := redistest.Start(t)
	const users, perUser = 100, 10
	seqs := newSequences()
	var rmu sync.Mutex
	rng := rand.New(rand.NewPCG(3, 4))
	rcv := startReceiver(t, seqs.respond(func(string, int) bool {
		rmu.Lock()
		defer rmu.Unlock()
		return rng.IntN(10) == 0
	}))
	cfg := bus.Config{
		Transport:     bus.TransportRedis,
		RedisURL:      srv.URL(),
		WebhookURL:    rcv.URL + "/hook",
		Ordering:      bus.OrderingUser,
		RetrySchedule: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond},
		PauseAfter:    bus.Disabled,
	}
	routers := twoRouters(t, cfg)
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	waitReady(t, 15*time.Second, append(routers, app)...)
	emitUsers(t, app, users, perUser)
	deadline := time.Now().Add(30 * time.Second)
	for seqs.count() < users*perUser {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events accepted", seqs.count(), users*perUser)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if bad := seqs.outOfOrder(); len(bad) > 0 {
		for u, s := range bad {
			t.Errorf("user %s: accepted in the order %v", u, s)
		}
	}
	var delivered [2]uint64
	for i, r := range routers {
		delivered[i] = r.Stats().Delivered
	}
	t.Logf("%d events, %d attempts, %d duplicates; delivered by r1 %d, r2 %d", users*perUser, seqs.attempts, seqs.dups, delivered[0], delivered[1])
	if delivered[0] == 0 || delivered[1] == 0 {
		t.Errorf("one router delivered nothing (%v): the test does not show turns shared across routers", delivered)
	}
	// Every turn passed: no list and no parked entry is left.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	eventually(t, "no turn left in Redis", func() bool {
		keys, _ := c.Keys(context.Background(), bus.Topic+":turns:*").Result()
		parked, _ := c.Keys(context.Background(), bus.Topic+":parked:*").Result()
		return len(keys) == 0 && len(parked) == 0
	})
}

// Ordering is read from the endpoints file and MEMHOOK_ORDERING, refused
// with a clear error where it cannot hold (a brought pub/sub), and cannot
// change on a running bus.
func TestOrderingConfig(t *testing.T) {
	eps, err := bus.ParseEndpoints("endpoints.yaml", []byte("endpoints:\n  - name: crm\n    url: http://127.0.0.1:1/h\n    ordering: User\n"), nil)
	if err != nil || len(eps) != 1 || eps[0].Ordering != bus.OrderingUser {
		t.Fatalf("ordering: User read as %+v, %v", eps, err)
	}
	env := map[string]string{"MEM0_WEBHOOK_URL": "http://127.0.0.1:1/h", "MEMHOOK_ORDERING": "user"}
	cfg, err := bus.ConfigFromLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil || cfg.Ordering != bus.OrderingUser {
		t.Fatalf("MEMHOOK_ORDERING=user read as %q, %v", cfg.Ordering, err)
	}
	env["MEMHOOK_ORDERING"] = "fifo"
	if _, err := bus.ConfigFromLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err == nil || !strings.Contains(err.Error(), "MEMHOOK_ORDERING") {
		t.Errorf("MEMHOOK_ORDERING=fifo: %v, want an error naming it", err)
	}

	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	_, err = bus.New(bus.Config{WebhookURL: "http://127.0.0.1:1/h", Ordering: bus.OrderingUser},
		bus.WithPubSub(gc, func(string) (message.Subscriber, error) { return gc, nil }), bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err == nil || !strings.Contains(err.Error(), "ordering user needs transport memory or redis") {
		t.Errorf("ordering on a brought pub/sub: %v, want a refusal", err)
	}

	b, _ := newBus(t, bus.Config{Endpoints: []bus.Endpoint{{Name: "crm", URL: "http://127.0.0.1:1/h"}}})
	err = b.SetEndpoints(context.Background(), []bus.Endpoint{{Name: "crm", URL: "http://127.0.0.1:1/h", Ordering: bus.OrderingUser}})
	if err == nil || !strings.Contains(err.Error(), "ordering cannot change") {
		t.Errorf("turning ordering on by SetEndpoints: %v, want a refusal", err)
	}
}

// Removing an ordered endpoint on Redis keeps what it parked: the parked
// events join its waiting retries (they resume if it comes back), and no
// turn is left to wait for.
func TestOrderingRemovedEndpointKeepsParkedOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	rcv := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusServiceUnavailable })
	ep := bus.Endpoint{Name: "crm", URL: rcv.URL + "/hook", Ordering: bus.OrderingUser, RetrySchedule: []time.Duration{time.Hour}}
	b, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL(), PauseAfter: bus.Disabled,
		Endpoints: []bus.Endpoint{ep}}, bus.WithDelivery())
	waitReady(t, 15*time.Second, b)
	const perUser = 5
	emitUsers(t, b, 2, perUser)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	delayed := "memory.events.retry.crm:delayed"
	eventually(t, "each user's first event waiting to retry, the others parked", func() bool {
		n, _ := c.ZCard(ctx, delayed).Result()
		parked, _ := c.Keys(ctx, bus.Topic+":parked:*").Result()
		return n == 2 && len(parked) == 2*(perUser-1)
	})
	if err := b.SetEndpoints(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ZCard(ctx, delayed).Result(); n != 2*perUser {
		t.Errorf("%d retries wait for the removed endpoint, want all %d of its events", n, 2*perUser)
	}
	turns, _ := c.Keys(ctx, bus.Topic+":turns:*").Result()
	parked, _ := c.Keys(ctx, bus.Topic+":parked:*").Result()
	if len(turns)+len(parked) != 0 {
		t.Errorf("left in Redis: turns %v, parked %v", turns, parked)
	}
}

// A router started with ordering off, where an ordered one parked events,
// passes the turns on: every parked event arrives.
func TestOrderingOffAfterOnSendsWhatWasParkedOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	var mu sync.Mutex
	failing := true
	seqs := newSequences()
	rcv := startReceiver(t, seqs.respond(func(string, int) bool { mu.Lock(); defer mu.Unlock(); return failing }))
	cfg := bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL(), WebhookURL: rcv.URL + "/hook", PauseAfter: bus.Disabled,
		Ordering: bus.OrderingUser, RetrySchedule: []time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}}
	first, err := bus.New(cfg, bus.WithDelivery(), bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, 15*time.Second, first)
	const perUser = 5
	emitUsers(t, first, 1, perUser)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	eventually(t, "four events parked behind the first", func() bool {
		parked, _ := c.Keys(context.Background(), bus.Topic+":parked:*").Result()
		return len(parked) == perUser-1
	})
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	cfg.Ordering = bus.OrderingNone
	second, logs := newBus(t, cfg, bus.WithDelivery())
	waitReady(t, 15*time.Second, second)
	eventually(t, "every parked event delivered", func() bool { return seqs.count() == perUser })
	if !strings.Contains(logs.String(), "events parked while it was on remain") {
		t.Error("no WARN line about the parked events")
	}
}

// Parked events are bounded on Redis: behind a user whose event keeps
// failing, at most the backlog bound (half of MEMHOOK_REDIS_MAXLEN) are
// parked; then the endpoint reads no more, its backlog stays in the
// stream, and with one endpoint the stream refuses appends at MaxLen: no
// growth without end, nothing lost.
func TestOrderingParkedBoundedOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	rcv := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusServiceUnavailable })
	const maxLen = 40
	b, logs := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL(), RedisMaxLen: maxLen, WebhookURL: rcv.URL + "/hook",
		PauseAfter: bus.Disabled, Ordering: bus.OrderingUser, RetrySchedule: []time.Duration{time.Hour}}, bus.WithDelivery())
	waitReady(t, 15*time.Second, b)
	ctx := context.Background()
	accepted := 0
	var refused error
	// The publisher looks at the stream's length about once a second:
	// emit for up to 10 s.
	for i, deadline := 0, time.Now().Add(10*time.Second); time.Now().Before(deadline); i++ {
		err := b.Emit(ctx, event.Event{Type: event.MemoryAdded, UserID: "stuck", Data: map[string]int{"seq": i}})
		if err != nil {
			refused = err
			break
		}
		accepted++
		time.Sleep(5 * time.Millisecond) // lets the router read and park as it goes
	}
	if refused == nil || !errors.Is(refused, transports.ErrStreamFull) {
		t.Fatalf("%d emits behind a stuck user all accepted (%v): parked events are not bounded", accepted, refused)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	parked, _ := c.Keys(ctx, bus.Topic+":parked:*").Result()
	n, _ := c.XLen(ctx, bus.Topic).Result()
	t.Logf("%d accepted, then refused: %v; %d parked, %d in the stream", accepted, refused, len(parked), n)
	if len(parked) > maxLen/2 {
		t.Errorf("%d parked, over the bound %d", len(parked), maxLen/2)
	}
	if 1+len(parked)+int(n) < accepted { // the head waits as a retry
		t.Errorf("%d accepted, but only %d parked and %d in the stream", accepted, len(parked), n)
	}
	eventually(t, "a WARN about the bound", func() bool { return strings.Contains(logs.String(), "as many events parked") })
}
