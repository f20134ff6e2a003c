package bus_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
)

// checkIntervals emits one event to a receiver that answers 500 to every
// attempt but the last of len(schedule)+1, and checks that the wait
// before each retry is its schedule entry, plus at most 10% jitter and
// slack, and that every attempt has the first one's webhook-id.
func checkIntervals(t *testing.T, cfg bus.Config, slack time.Duration, opts ...bus.Option) {
	t.Helper()
	schedule := cfg.RetrySchedule
	attempts := len(schedule) + 1
	f := start(t, cfg, func(w http.ResponseWriter, r *http.Request, n int) int {
		if n < attempts {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for f.bus.Ready(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatalf("bus not ready in 15s; logs:\n%s", f.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling Ready: nothing to wait on
	}
	if err := f.bus.Emit(ctx, event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(attempts, 20*time.Second); err != nil {
		t.Fatalf("%v; logs:\n%s", err, f.logs.String())
	}
	reqs := f.rcv.Requests()
	for i, want := range schedule {
		got := reqs[i+1].At.Sub(reqs[i].At)
		t.Logf("wait before attempt %d: %s (scheduled %s)", i+2, got, want)
		if got < want || got > want+want/10+slack {
			t.Errorf("wait before attempt %d = %s, want %s plus at most 10%% jitter and %s", i+2, got, want, slack)
		}
		if reqs[i+1].Header.Get("Webhook-Id") != reqs[0].Header.Get("Webhook-Id") {
			t.Errorf("attempt %d has another webhook-id", i+2)
		}
	}
	// RetriesWaiting is what the delay store saw when it last looked (on
	// Redis, the mover's count after its last move, which can land after
	// the delivery it made possible): wait for it as for the delivery.
	eventually(t, "delivery counted, no retry waiting", func() bool {
		s := f.bus.Stats()
		return s.Delivered == 1 && s.RetriesWaiting == 0
	})
	if s := f.bus.Stats(); s.Retried != uint64(len(schedule)) || s.Poisoned != 0 {
		t.Errorf("stats = %+v, want %d retries, none poisoned", s, len(schedule))
	}
	if n := len(f.rcv.Requests()); n != attempts {
		t.Errorf("the receiver got %d requests, want %d", n, attempts)
	}
}

// The retries follow MEMHOOK_RETRY_SCHEDULE (here neither doubling nor
// sorted, so the seed's RetryDelay × 2ⁿ cannot pass for it), on the
// in-process delay store.
func TestRetryIntervalsFollowTheSchedule(t *testing.T) {
	checkIntervals(t, bus.Config{
		RetryCount:    5, // replaced by the schedule
		RetryDelay:    time.Second,
		RetrySchedule: []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 150 * time.Millisecond},
	}, 80*time.Millisecond)
}

// The same on Redis, where the retries wait in a sorted set and a mover
// puts them back on the retry stream every 200 ms: a retry may come up to
// that much later.
func TestRetryIntervalsFollowTheScheduleOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	checkIntervals(t, bus.Config{
		Transport:     bus.TransportRedis,
		RedisURL:      srv.URL(),
		RetryCount:    5,
		RetryDelay:    time.Second,
		RetrySchedule: []time.Duration{300 * time.Millisecond, 1200 * time.Millisecond, 600 * time.Millisecond},
	}, 200*time.Millisecond+150*time.Millisecond, bus.WithDelivery())
}
