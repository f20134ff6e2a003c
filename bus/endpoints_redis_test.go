package bus_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// Three endpoints on Redis with two routers: a healthy one, a dead one
// (connections refused) and a slow one (100 ms). The healthy and the slow
// one get every event; the dead one is paused, none of its events
// poisoned, and once it comes back every event reaches it.
func TestEndpointsOnRedisTwoRouters(t *testing.T) {
	srv := redistest.Start(t)
	healthy := startReceiver(t, nil)
	slow := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int {
		time.Sleep(100 * time.Millisecond)
		return http.StatusOK
	})
	dead := deadPort(t)
	cfg := bus.Config{
		Transport:     bus.TransportRedis,
		RedisURL:      srv.URL(),
		WebhookURL:    healthy.URL + "/hook",
		RetrySchedule: []time.Duration{time.Second, time.Second, time.Second},
		PauseAfter:    5,
		Endpoints: []bus.Endpoint{
			{Name: "dead", URL: dead.URL("/hook")},
			{Name: "slow", URL: slow.URL + "/hook"},
		},
	}
	routers := twoRouters(t, cfg)
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	waitReady(t, 15*time.Second, append(routers, app)...)
	const n = 300
	for range n {
		if err := app.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
	}
	if err := healthy.WaitFor(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := slow.WaitFor(n, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dead endpoint paused on a router", func() bool {
		for _, b := range routers {
			for _, s := range b.EndpointStats() {
				if s.Name == "dead" && s.State == "paused" {
					return true
				}
			}
		}
		return false
	})
	// It comes back.
	ln, err := dead.Listen()
	if err != nil {
		t.Fatal(err)
	}
	back := receiver.NewOn(ln, nil, true)
	t.Cleanup(func() { _ = back.Close() })
	if err := back.WaitDistinct(n, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("the dead endpoint, back: %d distinct events, %d duplicate deliveries", back.Distinct(), back.Count()-back.Distinct())
	for _, b := range routers {
		for _, s := range b.EndpointStats() {
			if s.Poisoned != 0 {
				t.Errorf("endpoint %s: %d poisoned", s.Name, s.Poisoned)
			}
		}
	}
	if d := distinct(healthy.Requests()); d != n {
		t.Errorf("healthy endpoint: %d distinct events, want %d", d, n)
	}
}

func distinct(reqs []receiver.Request) int {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.Header.Get("Webhook-Id")] = true
	}
	return len(seen)
}

// On Redis, SetEndpoints returns once an added endpoint's consumer group
// exists: an event emitted right after the return is the endpoint's,
// each time.
func TestSetEndpointsOnRedisReturnsOnceTheAddedGroupExists(t *testing.T) {
	srv := redistest.Start(t)
	def := startReceiver(t, nil)
	cfg := bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL(), WebhookURL: def.URL + "/hook"}
	router, _ := newBus(t, cfg, bus.WithDelivery())
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for router.Ready(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatal("not ready in 30s")
		}
		time.Sleep(10 * time.Millisecond) // polling Ready: nothing to wait on
	}
	const rounds = 3
	added := make([]*receiver.Receiver, rounds)
	for i := range rounds {
		added[i] = startReceiver(t, nil)
		name := fmt.Sprintf("added%d", i)
		if err := router.SetEndpoints(ctx, []bus.Endpoint{{Name: name, URL: added[i].URL + "/hook"}}); err != nil {
			t.Fatal(err)
		}
		groups, err := rc.XInfoGroups(ctx, bus.Topic).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == transports.EndpointGroup("memhook", name) }) {
			t.Errorf("round %d: SetEndpoints returned before endpoint %s's consumer group existed: %+v", i+1, name, groups)
		}
		if err := app.Emit(ctx, event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
			t.Fatal(err)
		}
		if err := added[i].WaitFor(1, 10*time.Second); err != nil {
			t.Errorf("round %d: the event emitted right after SetEndpoints returned: %v", i+1, err)
		}
	}
}

// twoRouters starts two delivering buses on cfg, consumers r1 and r2.
func twoRouters(t *testing.T, cfg bus.Config) []*bus.Bus {
	t.Helper()
	var routers []*bus.Bus
	for _, name := range []string{"r1", "r2"} {
		c := cfg
		c.RedisConsumer = name
		b, _ := newBus(t, c, bus.WithDelivery())
		routers = append(routers, b)
	}
	return routers
}

// waitReady waits until every bus is ready (Redis joined), failing the
// test after timeout.
func waitReady(t *testing.T, timeout time.Duration, buses ...*bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, b := range buses {
		for b.Ready(ctx) != nil {
			if ctx.Err() != nil {
				t.Fatalf("not ready in %s", timeout)
			}
			time.Sleep(10 * time.Millisecond) // polling Ready: nothing to wait on
		}
	}
}
