package bus_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
)

// Events an endpoint had in flight when an operator paused it fail and
// are held (30 s, the hold of a paused endpoint); once it is resumed they
// go out at once, not at the end of their hold. A retry waiting out its
// schedule is another matter: it keeps its due time (here an hour).
func TestResumedEndpointSendsHeldEventsAtOnce(t *testing.T) {
	for _, tr := range []string{bus.TransportMemory, bus.TransportRedis} {
		t.Run(tr, func(t *testing.T) {
			var (
				healthy  atomic.Bool
				release  = make(chan struct{})
				inFlight atomic.Int64
			)
			rcv := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int {
				if healthy.Load() {
					return http.StatusOK
				}
				inFlight.Add(1)
				<-release
				return http.StatusServiceUnavailable
			})
			var released sync.Once
			free := func() { released.Do(func() { close(release) }) }
			t.Cleanup(free) // a test that stops early leaves no handler blocked
			cfg := bus.Config{
				Transport:     tr,
				WebhookURL:    rcv.URL + "/hook",
				RetrySchedule: []time.Duration{time.Hour},
				Concurrency:   4,
			}
			var opts []bus.Option
			if tr == bus.TransportRedis {
				cfg.RedisURL = redistest.Start(t).URL()
				opts = append(opts, bus.WithDelivery())
			}
			b, logs := newBus(t, cfg, opts...)
			waitReady(t, 15*time.Second, b)
			ctx := context.Background()

			// One event fails while the endpoint is active: its retry waits an hour.
			if err := b.Emit(ctx, event.NewPreferenceStored("u0", "tea", "drinks")); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the first attempt in flight", func() bool { return inFlight.Load() == 1 })
			release <- struct{}{}
			eventually(t, "its retry waiting", func() bool { return stateOf(t, b, bus.DefaultEndpoint).Retrying == 1 })

			// Three in flight when the operator pauses: they fail, and are held.
			for i := range 3 {
				if err := b.Emit(ctx, event.NewPreferenceStored("u"+string(rune('1'+i)), "tea", "drinks")); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "three attempts in flight", func() bool { return inFlight.Load() == 4 })
			if err := b.PauseEndpoint(ctx, bus.DefaultEndpoint); err != nil {
				t.Fatal(err)
			}
			free()
			eventually(t, "the three held and the retry waiting", func() bool {
				s := stateOf(t, b, bus.DefaultEndpoint)
				return s.State == "paused" && s.Retrying == 4
			})

			healthy.Store(true)
			resumed := time.Now()
			if err := b.ResumeEndpoint(ctx, bus.DefaultEndpoint); err != nil {
				t.Fatal(err)
			}
			if err := rcv.WaitFor(4+3, 10*time.Second); err != nil { // the hold is 30 s
				t.Fatalf("after the resume: %v", err)
			}
			t.Logf("the three held events arrived %s after the resume", time.Since(resumed).Round(time.Millisecond))
			time.Sleep(300 * time.Millisecond) // shows that the retry still waits
			if n := rcv.Count(); n != 7 {
				t.Errorf("%d requests, want 7: the retry due in an hour went out too", n)
			}
			if s := stateOf(t, b, bus.DefaultEndpoint); s.Retrying != 1 {
				t.Errorf("%d waiting, want the retry due in an hour", s.Retrying)
			}
			if !strings.Contains(logs.String(), "memhook: held events of the endpoint sent now") {
				t.Errorf("no INFO line for the held events sent:\n%s", logs.String())
			}
			cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond) // not the hour the retry waits
			defer cancel()
			_ = b.Close(cctx)
		})
	}
}

// stateOf returns the stats of endpoint name.
func stateOf(t *testing.T, b *bus.Bus, name string) bus.EndpointStats {
	t.Helper()
	for _, s := range b.EndpointStats() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no endpoint %s", name)
	return bus.EndpointStats{}
}
