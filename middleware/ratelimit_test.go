package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// scriptedLimiter answers every Reserve with wait and err, and counts the
// calls: for the paths of RateLimit that a real limiter takes by chance.
type scriptedLimiter struct {
	mu       sync.Mutex
	wait     time.Duration
	err      error
	reserves int
	releases int
}

func (l *scriptedLimiter) Reserve(context.Context, string) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserves++
	return l.wait, l.err
}

func (l *scriptedLimiter) Release(context.Context, string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releases++
	return nil
}

func slotValue(attempt int, at time.Time) string {
	return strconv.Itoa(attempt) + ":" + strconv.FormatInt(at.UnixMilli(), 10)
}

func TestRateLimitHandling(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	errDown := errors.New("dial tcp 127.0.0.1:6379: connection refused")
	errStore := errors.New("delay store full")
	errAttempt := &middleware.StatusError{Code: 503}
	tests := []struct {
		name        string
		attempt     string // AttemptKey; "" for a first handling
		slot        string // RateSlotKey the message carries
		wait        time.Duration
		limiterErr  error
		storeErr    error
		cancelled   bool
		wantAttempt bool          // the handler was called
		wantDue     time.Duration // after now; 0: nothing stored
		wantReserve int
		wantRelease int
		wantErr     error // errors.Is; nil with wantNotScheduled false: nil
		wantNotSch  bool
		wantLimErr  bool // OnLimiterError called
	}{
		{name: "slot now: attempted", wait: 0, wantAttempt: true, wantReserve: 1, wantErr: errAttempt},
		{name: "slot later: delayed to it", attempt: "3", wait: 1500 * time.Millisecond, wantDue: 1500 * time.Millisecond, wantReserve: 1},
		{name: "slot rounded up to the millisecond", wait: 1500*time.Millisecond + 1, wantDue: 1501 * time.Millisecond, wantReserve: 1},
		{name: "store refuses: slot given back, nacked", wait: time.Second, storeErr: errStore, wantReserve: 1, wantRelease: 1, wantErr: errStore, wantNotSch: true},
		{name: "limiter down: fails open", limiterErr: errDown, wantAttempt: true, wantReserve: 1, wantErr: errAttempt, wantLimErr: true},
		{name: "context done: not attempted", cancelled: true, wantErr: context.Canceled},
		{name: "own slot passed: attempted without a new one", attempt: "2", slot: slotValue(2, now.Add(-5*time.Second)), wait: time.Hour, wantAttempt: true, wantErr: errAttempt},
		{name: "own slot now: attempted", slot: slotValue(1, now), wait: time.Hour, wantAttempt: true, wantErr: errAttempt},
		{name: "own slot ahead: delayed again to it", slot: slotValue(1, now.Add(300*time.Millisecond)), wait: time.Hour, wantDue: 300 * time.Millisecond},
		{name: "own slot ahead, store refuses: nacked, slot kept", slot: slotValue(1, now.Add(time.Second)), storeErr: errStore, wantErr: errStore, wantNotSch: true},
		{name: "slot of an earlier attempt: a new one", attempt: "2", slot: slotValue(1, now.Add(-time.Second)), wait: time.Second, wantDue: time.Second, wantReserve: 1},
		{name: "unreadable slot: a new one", slot: "1:soon", wantAttempt: true, wantReserve: 1, wantErr: errAttempt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := &scriptedLimiter{wait: tt.wait, err: tt.limiterErr}
			st := &store{err: tt.storeErr}
			var limited []time.Duration
			var limErrs []error
			attempts := 0
			h := middleware.RateLimit{
				Limiter: lim, Key: "crm", Store: st, Now: func() time.Time { return now },
				OnLimited:      func(_ *message.Message, wait time.Duration) { limited = append(limited, wait) },
				OnLimiterError: func(_ *message.Message, err error) { limErrs = append(limErrs, err) },
			}.Middleware(func(*message.Message) ([]*message.Message, error) {
				attempts++
				return nil, errAttempt
			})
			msg := newMessage()
			if tt.attempt != "" {
				msg.Metadata.Set(middleware.AttemptKey, tt.attempt)
			}
			if tt.slot != "" {
				msg.Metadata.Set(middleware.RateSlotKey, tt.slot)
			}
			if tt.cancelled {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				msg.SetContext(ctx)
			}
			_, err := h(msg)

			if got := attempts == 1; got != tt.wantAttempt || attempts > 1 {
				t.Errorf("%d attempts, want attempted=%v", attempts, tt.wantAttempt)
			}
			var ns *middleware.NotScheduledError
			switch {
			case tt.wantNotSch && (!errors.As(err, &ns) || !errors.Is(err, tt.wantErr)):
				t.Errorf("error %v, want a NotScheduledError for %v", err, tt.wantErr)
			case !tt.wantNotSch && tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && err != nil:
				t.Errorf("error %v, want nil (acknowledged)", err)
			}
			if lim.reserves != tt.wantReserve || lim.releases != tt.wantRelease {
				t.Errorf("%d reserves, %d releases; want %d, %d", lim.reserves, lim.releases, tt.wantReserve, tt.wantRelease)
			}
			if got := len(limErrs) > 0; got != tt.wantLimErr {
				t.Errorf("limiter errors reported: %v, want reported=%v", limErrs, tt.wantLimErr)
			} else if got && !errors.Is(limErrs[0], errDown) {
				t.Errorf("limiter error %v, want it to wrap %v", limErrs[0], errDown)
			}
			if tt.wantDue == 0 || tt.storeErr != nil {
				if len(st.msgs) != 0 || len(limited) != 0 || middleware.RateLimited(msg) {
					t.Errorf("stored %d, %d OnLimited, RateLimited %v: want nothing delayed", len(st.msgs), len(limited), middleware.RateLimited(msg))
				}
				return
			}
			if len(st.msgs) != 1 {
				t.Fatalf("stored %d messages, want 1", len(st.msgs))
			}
			if got := st.dues[0].Sub(now); got != tt.wantDue {
				t.Errorf("due in %s, want %s", got, tt.wantDue)
			}
			if len(limited) != 1 || !middleware.RateLimited(msg) {
				t.Errorf("OnLimited %v, RateLimited %v: want one call, true", limited, middleware.RateLimited(msg))
			}
			next := st.msgs[0]
			if next.UUID != msg.UUID || string(next.Payload) != string(msg.Payload) {
				t.Errorf("stored %s %q, want the same UUID and payload", next.UUID, next.Payload)
			}
			if got := middleware.AttemptOf(next); got != middleware.AttemptOf(msg) || next.Metadata.Get(middleware.AttemptKey) != tt.attempt {
				t.Errorf("stored with attempt %q, want %q unchanged (a wait is not an attempt)", next.Metadata.Get(middleware.AttemptKey), tt.attempt)
			}
			if got, want := next.Metadata.Get(middleware.RateSlotKey), slotValue(middleware.AttemptOf(msg), st.dues[0]); got != want {
				t.Errorf("stored slot %q, want %q", got, want)
			}
			if middleware.RateLimited(next) {
				t.Error("the delayed copy is marked rate limited: it would look delayed when it is attempted")
			}
			for k, v := range msg.Metadata {
				if k != middleware.RateSlotKey && k != middleware.RateLimitedKey && next.Metadata.Get(k) != v {
					t.Errorf("stored metadata %s=%q, want %q", k, next.Metadata.Get(k), v)
				}
			}
		})
	}
}

func TestRateLimitNeedsLimiterAndStore(t *testing.T) {
	lim, err := middleware.NewLocalLimiter(1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, rl := range map[string]middleware.RateLimit{
		"no limiter": {Store: &store{}},
		"no store":   {Limiter: lim},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic for a wiring mistake")
				}
			}()
			rl.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
		})
	}
}

func TestNewLocalLimiterRefusesBadRates(t *testing.T) {
	for _, tt := range []struct {
		events int
		per    time.Duration
	}{{0, time.Second}, {-1, time.Second}, {5, 0}, {5, -time.Second}, {2_000_000, time.Second}} {
		if _, err := middleware.NewLocalLimiter(tt.events, tt.per); !errors.Is(err, middleware.ErrBadRate) {
			t.Errorf("%d per %s: error %v, want ErrBadRate", tt.events, tt.per, err)
		}
	}
	if _, err := middleware.NewLocalLimiter(1_000_000, time.Second); err != nil {
		t.Errorf("a million a second: %v", err)
	}
}

// reservation is one Reserve seen from outside: the slot it gave lies
// between before+wait and after+wait.
type reservation struct {
	before, after time.Time
	wait          time.Duration
}

func reserve(t *testing.T, l middleware.Limiter, key string) reservation {
	t.Helper()
	before := time.Now()
	wait, err := l.Reserve(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return reservation{before, time.Now(), wait}
}

// checkSlots checks that rs got the slots first + offsets[i]*interval, the
// first slot being the first call's now.
func checkSlots(t *testing.T, rs []reservation, interval time.Duration, offsets ...int) {
	t.Helper()
	r0 := rs[0]
	if r0.wait != 0 {
		t.Fatalf("first reservation waits %s, want 0 (an idle budget)", r0.wait)
	}
	for i, r := range rs {
		lo, hi := r.before.Add(r.wait), r.after.Add(r.wait) // the slot it got
		want := time.Duration(offsets[i]) * interval
		// The first slot is r0's now, within [r0.before, r0.after].
		if lo.Sub(r0.after) > want || hi.Sub(r0.before) < want {
			t.Errorf("reservation %d: slot %s..%s after the first, want %s", i, lo.Sub(r0.after), hi.Sub(r0.before), want)
		}
	}
}

// Reservations take consecutive slots, one interval apart, each key its
// own; Release gives the last one back.
func TestLocalLimiterSlots(t *testing.T) {
	const interval = 100 * time.Millisecond
	l, err := middleware.NewLocalLimiter(10, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var crm []reservation
	for range 4 {
		crm = append(crm, reserve(t, l, "crm"))
	}
	other := reserve(t, l, "alerts")
	if other.wait != 0 {
		t.Errorf("another key waits %s, want 0: each key has its own budget", other.wait)
	}
	if err := l.Release(context.Background(), "crm"); err != nil {
		t.Fatal(err)
	}
	crm = append(crm, reserve(t, l, "crm"))
	checkSlots(t, crm, interval, 0, 1, 2, 3, 3)
}

// deliveries records the attempts of a handler under RateLimit.
type deliveries struct {
	mu       sync.Mutex
	at       []time.Time
	attempts map[string]int    // by UUID
	limited  map[string]int    // OnLimited calls by UUID
	attempt  map[string]string // AttemptKey when attempted
	done     chan struct{}
	want     int
}

func (d *deliveries) handle(msg *message.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = append(d.at, time.Now())
	d.attempts[msg.UUID]++
	d.attempt[msg.UUID] = msg.Metadata.Get(middleware.AttemptKey)
	if len(d.at) == d.want {
		close(d.done)
	}
	return nil
}

func (d *deliveries) onLimited(msg *message.Message, _ time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.limited[msg.UUID]++
}

// N events at a limit of R a second, handed to the memory transport's
// delay store and handled again from its retry topic by a Watermill
// router, are attempted at R a second, each once, each delayed at most
// once: a delayed event keeps its slot, so the delayed ones do not come
// back together to be delayed again.
func TestRateLimitPacesEvents(t *testing.T) {
	const (
		n    = 100
		rate = 200 // a second
	)
	interval := time.Second / rate
	mem, err := transports.NewMemory(transports.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	lim, err := middleware.NewLocalLimiter(rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := &deliveries{attempts: map[string]int{}, limited: map[string]int{}, attempt: map[string]string{}, done: make(chan struct{}), want: n}
	limit := middleware.RateLimit{
		Limiter: lim, Key: "crm", OnLimited: d.onLimited,
		Store: middleware.DelayFunc(func(msg *message.Message, due time.Time) error {
			return mem.PublishAt("retry", due, msg)
		}),
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(limit.Middleware)
	router.AddConsumerHandler("events", "events", mem, d.handle)
	router.AddConsumerHandler("retry", "retry", mem, d.handle)
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router not running after 5s")
	}

	published := map[string]string{} // AttemptKey by UUID
	for i := range n {
		msg := newMessage()
		msg.Metadata.Set(middleware.AttemptKey, strconv.Itoa(1+i%3)) // some are retries already
		published[msg.UUID] = msg.Metadata.Get(middleware.AttemptKey)
		if err := mem.Publish("events", msg); err != nil {
			t.Fatal(err)
		}
	}
	want := time.Duration(n-1) * interval
	select {
	case <-d.done:
	case <-time.After(want + 10*time.Second):
		t.Fatalf("%d of %d attempted after %s", len(d.at), n, want+10*time.Second)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	span := d.at[len(d.at)-1].Sub(d.at[0])
	got := float64(n-1) / span.Seconds()
	redelays := 0
	for id, k := range d.limited {
		redelays += max(k-1, 0)
		if d.attempts[id] != 1 {
			t.Errorf("event %s attempted %d times, want 1", id, d.attempts[id])
		}
	}
	t.Logf("%d events at %d/s: attempted at %.1f/s over %s (ideal %s), %d delayed, %d re-delays",
		n, rate, got, span.Round(time.Millisecond), want, len(d.limited), redelays)
	if span < want-2*time.Millisecond {
		t.Errorf("%d attempts in %s, want at least %s at %d/s: the limit was passed", n, span, want, rate)
	}
	if got < 0.8*rate {
		t.Errorf("attempted at %.1f/s, want at least 0.8 × %d/s", got, rate)
	}
	if redelays > 0 {
		t.Errorf("%d re-delays, want none: a delayed event keeps its slot", redelays)
	}
	if len(d.limited) < n-5 {
		t.Errorf("%d of %d delayed: the limiter let a burst through", len(d.limited), n)
	}
	for id, a := range d.attempt {
		if a != published[id] {
			t.Errorf("event %s attempted with AttemptKey %q, want %q as published: a wait is not an attempt", id, a, published[id])
		}
	}
}

// A budget of one attempt a minute: the first event goes, the next two
// are handed to the delay store, due at their slots a minute apart, with
// their attempt numbers unchanged; no worker waits for them.
func ExampleRateLimit() {
	lim, err := middleware.NewLocalLimiter(1, time.Minute)
	if err != nil {
		panic(err)
	}
	h := middleware.RateLimit{
		Limiter: lim, Key: "crm",
		Store: middleware.DelayFunc(func(msg *message.Message, due time.Time) error {
			fmt.Println("delayed", msg.UUID, "by", time.Until(due).Round(time.Second), "attempt", middleware.AttemptOf(msg))
			return nil
		}),
	}.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		fmt.Println("attempted", msg.UUID)
		return nil, nil
	})
	for _, id := range []string{"evt-1", "evt-2", "evt-3"} {
		if _, err := h(message.NewMessage(id, []byte(`{}`))); err != nil {
			panic(err)
		}
	}
	// Output:
	// attempted evt-1
	// delayed evt-2 by 1m0s attempt 1
	// delayed evt-3 by 2m0s attempt 1
}

// Whatever RateSlotKey a message arrives with (metadata crosses
// transports), RateLimit either attempts it once or delays it, never
// both, and a delayed copy carries a slot it reads back as its own.
func FuzzRateLimitSlot(f *testing.F) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "1:1796119200000", "1:soon", ":", "2:1796119200000", "1:-1", "1:99999999999999999999", "1:1796119260000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, slot string) {
		st := &store{}
		attempts := 0
		h := middleware.RateLimit{
			Limiter: &scriptedLimiter{wait: time.Second}, Store: st, Now: func() time.Time { return now },
		}.Middleware(func(*message.Message) ([]*message.Message, error) {
			attempts++
			return nil, nil
		})
		msg := newMessage()
		msg.Metadata.Set(middleware.RateSlotKey, slot)
		if _, err := h(msg); err != nil {
			t.Fatal(err)
		}
		if attempts+len(st.msgs) != 1 {
			t.Fatalf("slot %q: %d attempts and %d delays, want one of them", slot, attempts, len(st.msgs))
		}
		if len(st.msgs) == 1 {
			if got, want := st.msgs[0].Metadata.Get(middleware.RateSlotKey), slotValue(1, st.dues[0]); got != want {
				t.Fatalf("slot %q: delayed carrying %q, want %q", slot, got, want)
			}
		}
	})
}
