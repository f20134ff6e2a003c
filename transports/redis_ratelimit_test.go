package transports_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

func redisLimiter(t *testing.T, cfg transports.RedisConfig, events int, per time.Duration) *transports.RedisLimiter {
	t.Helper()
	tr, err := transports.NewRedisTransport(cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	l, err := tr.Limiter(events, per)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// slotAt is one Reserve seen from outside: the slot it gave lies between
// before+wait and after+wait.
type slotAt struct {
	before, after time.Time
	wait          time.Duration
}

func reserveSlot(t *testing.T, l middleware.Limiter, key string) slotAt {
	t.Helper()
	before := time.Now()
	wait, err := l.Reserve(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return slotAt{before, time.Now(), wait}
}

// Two limiters on two connections (two routers) share one key's budget:
// their reservations take consecutive slots, one interval apart, as if
// one limiter had been asked; Release gives the last one back to either.
func TestRedisLimiterSharedBudget(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	redistest.DeleteKeys(t, url, cfg.EventsTopic+transports.RateLimitKeyPrefix+"*")
	const interval = 100 * time.Millisecond
	a := redisLimiter(t, cfg, 10, time.Second)
	b := redisLimiter(t, cfg, 10, time.Second)

	var rs []slotAt
	for i := range 6 {
		rs = append(rs, reserveSlot(t, []middleware.Limiter{a, b}[i%2], "crm"))
	}
	if other := reserveSlot(t, b, "alerts"); other.wait != 0 {
		t.Errorf("another key waits %s, want 0: each key has its own budget", other.wait)
	}
	if err := a.Release(context.Background(), "crm"); err != nil {
		t.Fatal(err)
	}
	rs = append(rs, reserveSlot(t, b, "crm"))

	if rs[0].wait != 0 {
		t.Fatalf("first reservation waits %s, want 0 (an idle budget)", rs[0].wait)
	}
	for i, want := range []int{0, 1, 2, 3, 4, 5, 5} {
		r := rs[i]
		lo, hi := r.before.Add(r.wait).Sub(rs[0].after), r.after.Add(r.wait).Sub(rs[0].before)
		// One more millisecond of slack: Redis's clock reads microseconds,
		// and the two clocks are one machine's, read at different moments.
		if w := time.Duration(want) * interval; lo > w+time.Millisecond || hi < w-time.Millisecond {
			t.Errorf("reservation %d: slot %s..%s after the first, want %s", i, lo, hi, w)
		}
	}

	// The key lives under the events topic and expires after its last slot.
	c := redis.NewClient(mustParseURL(t, url))
	defer c.Close()
	ttl, err := c.PTTL(context.Background(), cfg.EventsTopic+":ratelimit:crm").Result()
	if err != nil {
		t.Fatal(err)
	}
	if maxTTL := 6*interval + time.Second + 10*time.Millisecond; ttl <= 0 || ttl > maxTTL {
		t.Errorf("key expires in %s, want within %s (its last slot plus a second)", ttl, maxTTL)
	}
}

func TestRedisLimiterRefusesBadRates(t *testing.T) {
	cfg := transports.RedisConfig{URL: "redis://127.0.0.1:1/0"} // never dialled
	tr, err := transports.NewRedisTransport(cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, tt := range []struct {
		events int
		per    time.Duration
	}{{0, time.Second}, {10, 0}, {2_000_000, time.Second}} {
		if _, err := tr.Limiter(tt.events, tt.per); !errors.Is(err, middleware.ErrBadRate) {
			t.Errorf("%d per %s: error %v, want middleware.ErrBadRate", tt.events, tt.per, err)
		}
	}
}

// With Redis gone, Reserve fails within the transport's timeouts, and
// RateLimit lets the attempt go (fails open) and reports the error.
func TestRedisLimiterDownFailsOpen(t *testing.T) {
	srv := redistest.Start(t) // private: nothing to delete from it
	cfg := transports.RedisConfig{URL: srv.URL(), EventsTopic: redistest.Name("events")}
	cfg.DialTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	l := redisLimiter(t, cfg, 1, time.Hour)
	if _, err := l.Reserve(context.Background(), "crm"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Reserve(context.Background(), "crm"); err == nil {
		t.Fatal("Reserve succeeded with Redis stopped")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Reserve failed after %s, want within the transport's timeouts (600ms)", took)
	}

	var limErrs []error
	attempted := 0
	h := middleware.RateLimit{
		Limiter: l, Key: "crm", Store: middleware.DelayFunc(func(*message.Message, time.Time) error {
			t.Error("delayed with the limiter down")
			return nil
		}),
		OnLimiterError: func(_ *message.Message, err error) { limErrs = append(limErrs, err) },
	}.Middleware(func(*message.Message) ([]*message.Message, error) {
		attempted++
		return nil, nil
	})
	if _, err := h(message.NewMessage(watermill.NewUUID(), []byte(`{}`))); err != nil {
		t.Errorf("error %v, want nil: the attempt went and succeeded", err)
	}
	if attempted != 1 || len(limErrs) != 1 {
		t.Errorf("%d attempts, %d limiter errors reported; want 1 and 1", attempted, len(limErrs))
	}

	// Back, with the budget it had (Redis persisted it): the slot after
	// the first one's, an hour on.
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	wait, err := l.Reserve(context.Background(), "crm")
	if err != nil {
		t.Fatalf("Reserve after Redis came back: %v", err)
	}
	if wait < 59*time.Minute || wait > time.Hour {
		t.Errorf("after the restart the next slot is in %s, want about an hour (the budget kept)", wait)
	}
}

// attemptLog records the attempts of two routers' handlers.
type attemptLog struct {
	mu       sync.Mutex
	at       []time.Time
	attempts map[string]int // by UUID
	limited  map[string]int // OnLimited calls by UUID
	byRouter [2]int
	done     chan struct{}
	want     int
}

func (l *attemptLog) handler(router int) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.at = append(l.at, time.Now())
		l.attempts[msg.UUID]++
		l.byRouter[router]++
		if len(l.at) == l.want {
			close(l.done)
		}
		return nil
	}
}

func (l *attemptLog) onLimited(msg *message.Message, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limited[msg.UUID]++
}

// Two routers, each with its own connection, limiter and subscriptions to
// the events and retry streams of one consumer group, the delayed events
// kept in Redis's delay store: N events at a limit of R a second are
// attempted at R a second in all, each once, with no re-delay.
func TestRedisRateLimitTwoRouters(t *testing.T) {
	const (
		n    = 100
		rate = 100 // a second
	)
	interval := time.Second / rate
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.RetryTopic = redistest.Name("retry")
	redistest.DeleteKeys(t, url, cfg.EventsTopic+transports.RateLimitKeyPrefix+"*", cfg.RetryTopic, cfg.RetryTopic+":*")

	log := &attemptLog{attempts: map[string]int{}, limited: map[string]int{}, done: make(chan struct{}), want: n}
	var pub message.Publisher
	for i := range 2 {
		c := cfg
		c.Consumer = redistest.Name("consumer")
		tr, err := transports.NewRedisTransport(c, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = tr.Close() })
		pub = tr.Publisher()
		lim, err := tr.Limiter(rate, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := tr.Subscriber(c.ConsumerGroup)
		if err != nil {
			t.Fatal(err)
		}
		router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		router.AddMiddleware(middleware.RateLimit{
			Limiter: lim, Key: "crm", OnLimited: log.onLimited,
			Store: middleware.DelayFunc(func(msg *message.Message, due time.Time) error {
				return tr.PublishAt(c.RetryTopic, due, msg)
			}),
		}.Middleware)
		router.AddConsumerHandler("events", c.EventsTopic, sub, log.handler(i))
		router.AddConsumerHandler("retry", c.RetryTopic, sub, log.handler(i))
		go func() { _ = router.Run(context.Background()) }()
		t.Cleanup(func() { _ = router.Close() })
		select {
		case <-router.Running():
		case <-time.After(10 * time.Second):
			t.Fatal("router not running after 10s")
		}
		eventually(t, 10*time.Second, "router joined its group", func() bool { return tr.Ready(context.Background()) == nil })
	}

	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(`{"event":"memory_added"}`))
	}
	if err := pub.Publish(cfg.EventsTopic, msgs...); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(n-1) * interval
	select {
	case <-log.done:
	case <-time.After(want + 15*time.Second):
		log.mu.Lock()
		defer log.mu.Unlock()
		t.Fatalf("%d of %d attempted after %s", len(log.at), n, want+15*time.Second)
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	span := log.at[len(log.at)-1].Sub(log.at[0])
	got := float64(n-1) / span.Seconds()
	redelays := 0
	for id, k := range log.limited {
		redelays += max(k-1, 0)
		if log.attempts[id] != 1 {
			t.Errorf("event %s attempted %d times, want 1", id, log.attempts[id])
		}
	}
	t.Logf("%d events at %d/s on two routers (%d and %d attempts): %.1f/s over %s (ideal %s), %d delayed, %d re-delays",
		n, rate, log.byRouter[0], log.byRouter[1], got, span.Round(time.Millisecond), want, len(log.limited), redelays)
	if span < want-5*time.Millisecond {
		t.Errorf("%d attempts in %s, want at least %s at %d/s: the routers did not share the budget", n, span, want, rate)
	}
	// The delay store's mover runs every 200ms: the last slots are
	// attempted up to that late.
	if span > want+time.Second {
		t.Errorf("%d attempts took %s, want at most %s: delayed events lost their places", n, span, want+time.Second)
	}
	if redelays > 0 {
		t.Errorf("%d re-delays, want none: a delayed event keeps its slot", redelays)
	}
	if log.byRouter[0] == 0 || log.byRouter[1] == 0 {
		t.Errorf("attempts by router %v: want both routers to have taken part", log.byRouter)
	}
}
