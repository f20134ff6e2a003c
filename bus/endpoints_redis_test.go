package bus_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
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
	deadAddr := strings.TrimSuffix(strings.TrimPrefix(deadURL(t), "http://"), "/hook")
	cfg := bus.Config{
		Transport:     bus.TransportRedis,
		RedisURL:      srv.URL(),
		WebhookURL:    healthy.URL + "/hook",
		RetrySchedule: []time.Duration{time.Second, time.Second, time.Second},
		PauseAfter:    5,
		Endpoints: []bus.Endpoint{
			{Name: "dead", URL: "http://" + deadAddr + "/hook"},
			{Name: "slow", URL: slow.URL + "/hook"},
		},
	}
	var routers []*bus.Bus
	for _, name := range []string{"r1", "r2"} {
		c := cfg
		c.RedisConsumer = name
		b, _ := newBus(t, c, bus.WithDelivery())
		routers = append(routers, b)
	}
	app, _ := newBus(t, bus.Config{Transport: bus.TransportRedis, RedisURL: srv.URL()})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, b := range append(routers, app) {
		for b.Ready(ctx) != nil {
			if ctx.Err() != nil {
				t.Fatal("not ready in 15s")
			}
			time.Sleep(10 * time.Millisecond) // polling Ready: nothing to wait on
		}
	}
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
	ln, err := net.Listen("tcp", deadAddr)
	if err != nil {
		t.Skipf("the dead endpoint's port was taken meanwhile: %v", err)
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
