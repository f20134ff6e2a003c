package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// clock is a fake clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// changes records a breaker's OnChange calls as "from>to: reason".
type changes struct {
	mu   sync.Mutex
	list []string
}

func (c *changes) record(from, to middleware.State, reason string) {
	c.mu.Lock()
	c.list = append(c.list, fmt.Sprintf("%s>%s: %s", from, to, reason))
	c.mu.Unlock()
}

func (c *changes) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.list)
}

// transitions returns the recorded changes without their reasons.
func (c *changes) transitions() []string {
	var out []string
	for _, s := range c.get() {
		out = append(out, s[:strings.Index(s, ":")])
	}
	return out
}

// held returns what st holds, copied.
func held(st *store) ([]*message.Message, []time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.msgs), slices.Clone(st.dues)
}

// healthRig is a Health on a fake clock whose handler answers with the
// errors given to it, counting its calls.
type healthRig struct {
	clock   *clock
	breaker *middleware.Breaker
	store   *store
	changes *changes
	h       message.HandlerFunc

	mu     sync.Mutex
	answer error
	calls  int
}

func newHealthRig(t *testing.T, cfg middleware.BreakerConfig, hl middleware.Health) *healthRig {
	t.Helper()
	r := &healthRig{clock: newClock(), store: &store{}, changes: &changes{}}
	if cfg.Now == nil {
		cfg.Now = r.clock.Now
	}
	cfg.OnChange = r.changes.record
	b, err := middleware.NewBreaker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.breaker = b
	hl.Breaker, hl.Store = b, r.store
	r.h = hl.Middleware(func(*message.Message) ([]*message.Message, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls++
		return nil, r.answer
	})
	return r
}

func (r *healthRig) answerWith(err error) {
	r.mu.Lock()
	r.answer = err
	r.mu.Unlock()
}

func (r *healthRig) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// handle runs one message through Health and reports whether the handler
// below ran.
func (r *healthRig) handle(t *testing.T, msg *message.Message) (attempted bool, err error) {
	t.Helper()
	before := r.callCount()
	_, err = r.h(msg)
	return r.callCount() > before, err
}

// pause makes the rig's breaker pause on Threshold failures.
func (r *healthRig) pause(t *testing.T, threshold int) {
	t.Helper()
	r.clock.Advance(middleware.DefaultBreakerGrace) // past the grace of any earlier success
	r.answerWith(&middleware.StatusError{Code: 503})
	for range threshold {
		r.handle(t, newMessage())
	}
	if s := r.breaker.State(); s != middleware.StatePaused {
		t.Fatalf("after %d failures the state is %s, want paused", threshold, s)
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*middleware.BreakerConfig)
		want   string // in the error; "" for valid
	}{
		{"defaults", func(*middleware.BreakerConfig) {}, ""},
		{"no threshold", func(c *middleware.BreakerConfig) { c.Threshold = middleware.NoBreakerThreshold }, ""},
		{"negative threshold", func(c *middleware.BreakerConfig) { c.Threshold = -2 }, "Threshold"},
		{"negative MinProbe", func(c *middleware.BreakerConfig) { c.MinProbe = -time.Second }, "MinProbe"},
		{"no grace", func(c *middleware.BreakerConfig) { c.Grace = middleware.NoBreakerGrace }, ""},
		{"negative grace", func(c *middleware.BreakerConfig) { c.Grace = -2 * time.Second }, "Grace"},
		{"negative MaxProbe", func(c *middleware.BreakerConfig) { c.MaxProbe = -time.Second }, "MaxProbe"},
		{"MinProbe above the default MaxProbe", func(c *middleware.BreakerConfig) { c.MinProbe, c.MaxProbe = 10*time.Minute, 0 }, "above MaxProbe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := middleware.BreakerConfig{Threshold: 3, MinProbe: time.Second, MaxProbe: time.Minute}
			tt.change(&cfg)
			err := cfg.Validate()
			_, nerr := middleware.NewBreaker(cfg)
			switch {
			case tt.want == "" && (err != nil || nerr != nil):
				t.Errorf("Validate %v, NewBreaker %v; want valid", err, nerr)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate %v, want an error naming %s", err, tt.want)
			case tt.want != "" && nerr == nil:
				t.Error("NewBreaker accepted an invalid config")
			}
		})
	}
	err := middleware.BreakerConfig{Threshold: -5, MinProbe: -1, MaxProbe: -1}.Validate()
	for _, field := range []string{"Threshold", "MinProbe", "MaxProbe"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("all problems at once: %v does not name %s", err, field)
		}
	}
}

// Which outcomes count towards the threshold: failures that say the
// endpoint is down do; an answer that proves it up, and the message's own
// cancellation, do not.
func TestHealthCountsFailures(t *testing.T) {
	cancelled := errors.New("stand-in for the cancelled attempt's error")
	tests := []struct {
		name   string
		err    error
		counts bool
	}{
		{"503", &middleware.StatusError{Code: 503}, true},
		{"500", &middleware.StatusError{Code: 500}, true},
		{"429", &middleware.StatusError{Code: 429, RetryAfter: time.Second}, true},
		{"408", &middleware.StatusError{Code: 408}, true},
		{"connection refused", fmt.Errorf("delivering: %w", dialClosedPort(t)), true},
		{"timeout", context.DeadlineExceeded, true},
		{"any other error", errors.New("request cannot be built"), true},
		{"400 says the endpoint is up", &middleware.StatusError{Code: 400}, false},
		{"404", &middleware.StatusError{Code: 404}, false},
		{"301", &middleware.StatusError{Code: 301}, false},
		{"not scheduled below", &middleware.NotScheduledError{Attempt: 1, Err: errors.New("redis down")}, false},
		{"message context cancelled", cancelled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHealthRig(t, middleware.BreakerConfig{Threshold: 3}, middleware.Health{})
			r.answerWith(tt.err)
			for i := range 3 {
				msg := newMessage()
				if tt.err == cancelled {
					ctx, cancel := context.WithCancel(context.Background())
					cancel()
					msg.SetContext(ctx)
				}
				attempted, err := r.handle(t, msg)
				if !attempted {
					t.Fatalf("handling %d not attempted", i+1)
				}
				if i < 2 && err != tt.err {
					t.Fatalf("handling %d returned %v, want the handler's error as is", i+1, err)
				}
			}
			snap := r.breaker.Snapshot()
			if got := snap.State == middleware.StatePaused; got != tt.counts {
				t.Errorf("after 3 × %v the state is %s (failures %d); counts=%v", tt.err, snap.State, snap.Failures, tt.counts)
			}
		})
	}
}

func TestHealthPausesAfterThreshold(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 3}, middleware.Health{})
	unavailable := &middleware.StatusError{Code: 503}
	r.answerWith(unavailable)
	for i := range 2 {
		if _, err := r.handle(t, newMessage()); err != unavailable {
			t.Fatalf("failure %d returned %v, want the 503 as is (Schedule retries it)", i+1, err)
		}
	}
	if _, dues := held(r.store); len(dues) != 0 {
		t.Fatalf("%d messages held while active", len(dues))
	}

	// A success resets the count.
	r.answerWith(nil)
	r.handle(t, newMessage())
	if f := r.breaker.Snapshot().Failures; f != 0 {
		t.Fatalf("%d failures after a success, want 0", f)
	}
	r.answerWith(unavailable)
	r.handle(t, newMessage())
	r.handle(t, newMessage())
	if s := r.breaker.State(); s != middleware.StateActive {
		t.Fatalf("2 failures after a success: %s, want active", s)
	}

	// Within a second of the success, the third in a row does not pause:
	// the endpoint answered lately.
	r.handle(t, newMessage())
	if s := r.breaker.State(); s != middleware.StateActive {
		t.Fatalf("3 failures within the grace of a success: %s, want active", s)
	}
	r.clock.Advance(middleware.DefaultBreakerGrace)
	r.answerWith(nil)
	r.handle(t, newMessage())
	r.answerWith(unavailable)
	r.handle(t, newMessage())
	r.handle(t, newMessage())
	r.clock.Advance(middleware.DefaultBreakerGrace) // the grace of that success is over

	// The third in a row pauses; that message is held, its attempt not
	// spent.
	tripping := newMessage()
	tripping.Metadata.Set(middleware.AttemptKey, "4")
	if _, err := r.handle(t, tripping); err != nil {
		t.Fatalf("the failure that paused returned %v, want nil (held)", err)
	}
	now := r.clock.Now()
	snap := r.breaker.Snapshot()
	if snap.State != middleware.StatePaused || snap.Manual || snap.Failures != 3 || !snap.Since.Equal(now) {
		t.Fatalf("snapshot %+v, want paused by the breaker since now after 3 failures", snap)
	}
	if want := now.Add(middleware.DefaultMinProbe); !snap.NextProbe.Equal(want) || snap.ProbeInterval != middleware.DefaultMinProbe {
		t.Errorf("next probe %s in %s, want %s in %s", snap.NextProbe, snap.ProbeInterval, want, middleware.DefaultMinProbe)
	}
	if got := r.changes.get(); len(got) != 1 || !strings.HasPrefix(got[0], "active>paused: 3 attempt(s) failed in a row") || !strings.Contains(got[0], "503") {
		t.Errorf("changes %q, want one active>paused naming the last error", got)
	}

	// A new message is not attempted; it waits for the probe time.
	next := newMessage()
	if attempted, err := r.handle(t, next); attempted || err != nil {
		t.Fatalf("paused: attempted=%v err=%v, want held", attempted, err)
	}
	msgs, dues := held(r.store)
	if len(msgs) != 2 {
		t.Fatalf("%d messages held, want 2", len(msgs))
	}
	for i, want := range []*message.Message{tripping, next} {
		got := msgs[i]
		if got.UUID != want.UUID || string(got.Payload) != string(want.Payload) || len(got.Metadata) != len(want.Metadata)+1 { // + HeldKey
			t.Errorf("held %s %q %v, want a copy of %s", got.UUID, got.Payload, got.Metadata, want.UUID)
		}
		for k, v := range want.Metadata {
			if got.Metadata.Get(k) != v {
				t.Errorf("held copy's %s = %q, want %q (unchanged)", k, got.Metadata.Get(k), v)
			}
		}
		window := time.Duration(middleware.DefaultHealthJitter * float64(middleware.DefaultMinProbe))
		if dues[i].Before(snap.NextProbe) || dues[i].After(snap.NextProbe.Add(window)) {
			t.Errorf("held until %s, want within %s of the probe time %s", dues[i], window, snap.NextProbe)
		}
	}
	if a := middleware.AttemptOf(msgs[0]); a != 4 {
		t.Errorf("held with attempt %d, want 4 (not spent)", a)
	}
}

// Each failed probe doubles the wait before the next, from MinProbe up to
// MaxProbe; between probes nothing is attempted; the first success
// resumes.
func TestHealthProbeIntervalsGrow(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{Jitter: middleware.NoJitter})
	r.pause(t, 1)
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
		80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	var got []time.Duration
	for i := range want {
		snap := r.breaker.Snapshot()
		got = append(got, snap.ProbeInterval)
		r.clock.Set(snap.NextProbe.Add(-time.Millisecond))
		if attempted, err := r.handle(t, newMessage()); attempted || err != nil {
			t.Fatalf("before probe %d: attempted=%v err=%v, want held", i+1, attempted, err)
		}
		r.clock.Set(snap.NextProbe)
		probe := newMessage()
		if attempted, err := r.handle(t, probe); !attempted || err != nil {
			t.Fatalf("probe %d: attempted=%v err=%v, want attempted and held after its failure", i+1, attempted, err)
		}
		msgs, dues := held(r.store)
		last := len(msgs) - 1
		if after := r.breaker.Snapshot(); msgs[last].UUID != probe.UUID || !dues[last].Equal(after.NextProbe) {
			t.Fatalf("failed probe held as %s until %s, want %s until the next probe %s", msgs[last].UUID, dues[last], probe.UUID, after.NextProbe)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("probe intervals %v, want %v", got, want)
	}

	r.answerWith(nil)
	r.clock.Set(r.breaker.Snapshot().NextProbe)
	if attempted, err := r.handle(t, newMessage()); !attempted || err != nil {
		t.Fatalf("last probe: attempted=%v err=%v", attempted, err)
	}
	if s := r.breaker.Snapshot(); s.State != middleware.StateActive || s.Failures != 0 || !s.NextProbe.IsZero() {
		t.Errorf("after a successful probe %+v, want active with no failures", s)
	}
	if got := r.changes.get(); len(got) != 2 || got[1] != "paused>active: probe succeeded" {
		t.Errorf("changes %q, want active>paused then paused>active: probe succeeded", got)
	}
	if attempted, _ := r.handle(t, newMessage()); !attempted {
		t.Error("active again, a message was not attempted")
	}
}

// A probe answered with a permanent status other than 410 proves the
// endpoint up: it resumes, and the answer goes up as is (to be poisoned:
// the event is at fault, not the endpoint).
func TestHealthProbeAnsweredPermanently(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	r.pause(t, 1)
	bad := &middleware.StatusError{Code: 400}
	r.answerWith(bad)
	r.clock.Advance(middleware.DefaultMinProbe)
	if attempted, err := r.handle(t, newMessage()); !attempted || err != bad {
		t.Fatalf("probe: attempted=%v err=%v, want attempted and the 400 as is", attempted, err)
	}
	if got := r.changes.transitions(); !slices.Equal(got, []string{"active>paused", "paused>active"}) {
		t.Errorf("changes %q", r.changes.get())
	}
}

func TestHealthOneProbeAtATime(t *testing.T) {
	c := newClock()
	b, err := middleware.NewBreaker(middleware.BreakerConfig{Threshold: 1, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	st := &store{}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var calls atomic.Int32
	var fail atomic.Bool
	fail.Store(true)
	h := middleware.Health{Breaker: b, Store: st, Jitter: middleware.NoJitter}.Middleware(func(*message.Message) ([]*message.Message, error) {
		if calls.Add(1) == 2 { // the probe
			entered <- struct{}{}
			<-release
		}
		if fail.Load() {
			return nil, &middleware.StatusError{Code: 503}
		}
		return nil, nil
	})
	_, _ = h(newMessage())
	c.Advance(middleware.DefaultMinProbe)
	fail.Store(false)
	probeDone := make(chan error, 1)
	go func() {
		_, err := h(newMessage())
		probeDone <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not start")
	}
	if s := b.Snapshot(); !s.Probing {
		t.Errorf("snapshot while the probe is in flight %+v, want Probing", s)
	}
	for range 3 {
		if _, err := h(newMessage()); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d attempts while the probe was in flight, want none beside it", n-1)
	}
	_, dues := held(st)
	dues = dues[1:] // the one that paused
	if want := c.Now().Add(middleware.DefaultMinProbe); len(dues) != 3 || !dues[0].Equal(want) || !dues[2].Equal(want) {
		t.Errorf("held during the probe until %v, want 3 until an interval from now (%s)", dues, want)
	}
	close(release)
	select {
	case err := <-probeDone:
		if err != nil {
			t.Errorf("probe returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not end")
	}
	if s := b.State(); s != middleware.StateActive {
		t.Errorf("after the probe %s, want active", s)
	}
}

// Messages handled while a late probe is in flight (its interval has
// grown) wait MinProbe, not the interval: once the probe succeeds they go
// within MinProbe, and an endpoint back gets every event within about a
// probe interval of its return. Had the probe failed, they would have
// been held again until the next probe.
func TestHealthHeldDuringALateProbeComeBackSoon(t *testing.T) {
	c := newClock()
	b, err := middleware.NewBreaker(middleware.BreakerConfig{Threshold: 1, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	st := &store{}
	var blockProbe atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var fail atomic.Bool
	fail.Store(true)
	h := middleware.Health{Breaker: b, Store: st, Jitter: middleware.NoJitter}.Middleware(func(*message.Message) ([]*message.Message, error) {
		if blockProbe.Load() {
			entered <- struct{}{}
			<-release
		}
		if fail.Load() {
			return nil, &middleware.StatusError{Code: 503}
		}
		return nil, nil
	})
	_, _ = h(newMessage()) // pauses
	for range 3 {          // three failed probes: the interval grows to 40 s
		c.Set(b.Snapshot().NextProbe)
		_, _ = h(newMessage())
	}
	interval := b.Snapshot().ProbeInterval
	if interval != 8*middleware.DefaultMinProbe {
		t.Fatalf("probe interval %s after three failed probes, want %s", interval, 8*middleware.DefaultMinProbe)
	}
	c.Set(b.Snapshot().NextProbe)
	fail.Store(false) // the endpoint is back
	blockProbe.Store(true)
	probeDone := make(chan error, 1)
	go func() {
		_, err := h(newMessage())
		probeDone <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not start")
	}
	blockProbe.Store(false)
	msgs, _ := held(st)
	before := len(msgs)
	for range 3 {
		if _, err := h(newMessage()); err != nil {
			t.Fatal(err)
		}
	}
	_, dues := held(st)
	want := c.Now().Add(middleware.DefaultMinProbe)
	for _, due := range dues[before:] {
		if !due.Equal(want) {
			t.Errorf("held during the probe until %s, want %s (MinProbe from now), not an interval (%s)", due, want, interval)
		}
	}
	close(release)
	select {
	case err := <-probeDone:
		if err != nil {
			t.Errorf("probe returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not end")
	}
	if s := b.State(); s != middleware.StateActive {
		t.Errorf("after the probe %s, want active", s)
	}
}

// A probe whose handler panics frees the probe slot: the next message is
// the probe.
func TestHealthPanicFreesTheProbe(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	r.pause(t, 1)
	r.clock.Advance(middleware.DefaultMinProbe)
	var panicking atomic.Bool
	panicking.Store(true)
	h := middleware.Health{Breaker: r.breaker, Store: r.store}.Middleware(func(*message.Message) ([]*message.Message, error) {
		if panicking.Swap(false) {
			panic("boom")
		}
		return nil, nil
	})
	func() {
		defer func() { _ = recover() }()
		_, _ = h(newMessage())
	}()
	if _, err := h(newMessage()); err != nil {
		t.Fatal(err)
	}
	if s := r.breaker.State(); s != middleware.StateActive {
		t.Errorf("after the panic the next message was not the probe: %s", s)
	}
}

func TestHealthGoneDisablesUntilResume(t *testing.T) {
	hold := 30 * time.Second
	r := newHealthRig(t, middleware.BreakerConfig{}, middleware.Health{Hold: hold})
	gone := &middleware.StatusError{Code: http.StatusGone}
	r.answerWith(gone)
	_, err := r.handle(t, newMessage())
	var se *middleware.StatusError
	if !errors.As(err, &se) || se.Code != 410 {
		t.Fatalf("410 returned %v, want it as is (poisoned: permanent)", err)
	}
	if got := r.changes.get(); !slices.Equal(got, []string{"active>disabled: webhook receiver answered 410 Gone"}) {
		t.Errorf("changes %q", got)
	}
	r.answerWith(nil)
	for _, after := range []time.Duration{0, time.Hour, 24 * time.Hour} { // no probe, however long
		r.clock.Advance(after)
		now := r.clock.Now()
		if attempted, err := r.handle(t, newMessage()); attempted || err != nil {
			t.Fatalf("disabled, %s later: attempted=%v err=%v, want held", after, attempted, err)
		}
		_, dues := held(r.store)
		due := dues[len(dues)-1]
		if due.Before(now.Add(hold)) || due.After(now.Add(hold+hold/5)) {
			t.Errorf("held until %s, want Hold %s plus at most a fifth", due.Sub(now), hold)
		}
	}
	if s := r.breaker.State(); s != middleware.StateDisabled {
		t.Fatalf("state %s, want disabled", s)
	}
	r.breaker.Resume()
	if attempted, err := r.handle(t, newMessage()); !attempted || err != nil {
		t.Errorf("after Resume: attempted=%v err=%v", attempted, err)
	}
	if got := r.changes.transitions(); !slices.Equal(got, []string{"active>disabled", "disabled>active"}) {
		t.Errorf("changes %q", r.changes.get())
	}
}

// An endpoint that fails half of its events, 1 000 attempts a second, has
// ten failures in a row every thousand or so attempts: it is never
// paused, since it answered within the grace each time. With
// NoBreakerGrace the same attempts pause it; an endpoint that never
// answered is paused at the threshold at once.
func TestBreakerGraceKeepsAHalfFailingEndpointActive(t *testing.T) {
	run := func(cfg middleware.BreakerConfig) (*healthRig, int) {
		r := newHealthRig(t, cfg, middleware.Health{})
		rnd := rand.New(rand.NewPCG(1, 2))
		longest, streak := 0, 0
		for range 20000 {
			r.clock.Advance(time.Millisecond)
			if rnd.IntN(2) == 0 {
				r.answerWith(&middleware.StatusError{Code: 503})
				streak++
				longest = max(longest, streak)
			} else {
				r.answerWith(nil)
				streak = 0
			}
			if attempted, _ := r.handle(t, newMessage()); !attempted || r.breaker.State() != middleware.StateActive {
				return r, longest
			}
		}
		return r, longest
	}
	r, longest := run(middleware.BreakerConfig{})
	if longest < middleware.DefaultBreakerThreshold {
		t.Fatalf("the longest run of failures was %d: the test shows nothing", longest)
	}
	if s := r.breaker.State(); s != middleware.StateActive {
		t.Errorf("half failing, %d failures in a row at most: %s, want active (changes %q)", longest, s, r.changes.get())
	}
	if r, _ := run(middleware.BreakerConfig{Grace: middleware.NoBreakerGrace}); r.breaker.State() != middleware.StatePaused {
		t.Errorf("half failing without grace: %s, want paused", r.breaker.State())
	}

	dead := newHealthRig(t, middleware.BreakerConfig{}, middleware.Health{})
	dead.answerWith(&middleware.StatusError{Code: 503})
	for range middleware.DefaultBreakerThreshold {
		dead.handle(t, newMessage())
	}
	if s := dead.breaker.State(); s != middleware.StatePaused {
		t.Errorf("never answered, %d failures: %s, want paused at once", middleware.DefaultBreakerThreshold, s)
	}
}

func TestHealthOperatorPause(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{Hold: time.Minute})
	r.breaker.Pause("maintenance")
	if s := r.breaker.Snapshot(); s.State != middleware.StatePaused || !s.Manual || s.Reason != "maintenance" || !s.NextProbe.IsZero() {
		t.Fatalf("snapshot %+v, want paused by an operator with no probe", s)
	}
	for range 3 {
		r.clock.Advance(time.Hour) // far past any probe time
		if attempted, err := r.handle(t, newMessage()); attempted || err != nil {
			t.Fatalf("operator-paused: attempted=%v err=%v, want held", attempted, err)
		}
	}
	r.breaker.Resume()
	if attempted, err := r.handle(t, newMessage()); !attempted || err != nil {
		t.Errorf("after Resume: attempted=%v err=%v", attempted, err)
	}

	// Paused by the breaker, then by an operator: no probe goes out.
	r.pause(t, 1)
	r.breaker.Pause("")
	r.clock.Advance(time.Hour)
	if attempted, _ := r.handle(t, newMessage()); attempted {
		t.Error("a probe went out while an operator paused the endpoint")
	}
	// Pause does not turn a disabled endpoint into a paused one.
	r.breaker.Resume()
	r.answerWith(&middleware.StatusError{Code: http.StatusGone})
	r.handle(t, newMessage())
	r.breaker.Pause("")
	if s := r.breaker.State(); s != middleware.StateDisabled {
		t.Errorf("Pause of a disabled endpoint made it %s", s)
	}
	want := []string{
		"active>paused: maintenance", "paused>active: resumed by an operator",
		"active>paused", "paused>paused: paused by an operator", "paused>active: resumed by an operator",
		"active>disabled: webhook receiver answered 410 Gone",
	}
	got := r.changes.get()
	if len(got) != len(want) {
		t.Fatalf("changes %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("change %d %q, want %q", i, got[i], want[i])
		}
	}
}

func TestHealthStoreFailureIsNotScheduled(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	r.pause(t, 1)
	down := errors.New("redis is down")
	r.store.mu.Lock()
	r.store.err = down
	r.store.mu.Unlock()
	msg := newMessage()
	msg.Metadata.Set(middleware.AttemptKey, "3")
	_, err := r.handle(t, msg)
	var ns *middleware.NotScheduledError
	if !errors.As(err, &ns) || ns.Attempt != 3 || !errors.Is(err, down) {
		t.Fatalf("error %v, want a NotScheduledError for attempt 3 wrapping the store's", err)
	}
	// The failed probe the store refuses keeps its attempt's error too.
	r.clock.Advance(middleware.DefaultMinProbe)
	_, err = r.handle(t, newMessage())
	var se *middleware.StatusError
	if !errors.As(err, &ns) || !errors.Is(err, down) || !errors.As(err, &se) {
		t.Fatalf("error %v, want a NotScheduledError wrapping the store's and the 503", err)
	}
}

// A big backlog held at once comes back spread over Jitter of the probe
// interval, not at one instant.
func TestHealthSpreadsABacklog(t *testing.T) {
	for _, tt := range []struct {
		name   string
		jitter float64
	}{{"default jitter", 0}, {"no jitter", middleware.NoJitter}} {
		t.Run(tt.name, func(t *testing.T) {
			r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{Jitter: tt.jitter})
			r.pause(t, 1)
			probeAt := r.breaker.Snapshot().NextProbe
			for range 1000 {
				r.handle(t, newMessage())
			}
			_, dues := held(r.store)
			dues = dues[1:] // the one that paused
			window := time.Duration(middleware.DefaultHealthJitter * float64(middleware.DefaultMinProbe))
			if tt.jitter == middleware.NoJitter {
				window = 0
			}
			distinct := map[time.Time]bool{}
			first, last := dues[0], dues[0]
			for _, d := range dues {
				if d.Before(probeAt) || d.After(probeAt.Add(window)) {
					t.Fatalf("due %s, want within [%s, +%s]", d, probeAt, window)
				}
				distinct[d] = true
				first, last = minTime(first, d), maxTime(last, d)
			}
			if window == 0 {
				if len(distinct) != 1 {
					t.Errorf("%d distinct due times without jitter, want 1", len(distinct))
				}
				return
			}
			if len(distinct) < 990 || last.Sub(first) < window*8/10 {
				t.Errorf("%d distinct due times over %s, want ~1000 over ~%s", len(distinct), last.Sub(first), window)
			}
		})
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Many goroutines handle messages with random outcomes while others pause,
// resume and read the breaker: under -race, and OnChange sees a chain of
// changes each starting where the one before ended, even when it calls
// the breaker itself.
func TestHealthConcurrentUse(t *testing.T) {
	var mu sync.Mutex
	var seen []middleware.State
	var b *middleware.Breaker
	var err error
	b, err = middleware.NewBreaker(middleware.BreakerConfig{
		Threshold: 3, MinProbe: time.Microsecond, MaxProbe: 10 * time.Microsecond,
		OnChange: func(from, to middleware.State, _ string) {
			_ = b.Snapshot() // may call the breaker
			mu.Lock()
			defer mu.Unlock()
			if n := len(seen); n > 0 && seen[n-1] != from {
				t.Errorf("change from %s after a change to %s", from, seen[n-1])
			}
			seen = append(seen, to)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var stored atomic.Int64
	st := middleware.DelayFunc(func(*message.Message, time.Time) error { stored.Add(1); return nil })
	answers := []error{nil, &middleware.StatusError{Code: 503}, &middleware.StatusError{Code: 503},
		&middleware.StatusError{Code: 503}, &middleware.StatusError{Code: 410}, &middleware.StatusError{Code: 400}}
	var n atomic.Int64
	h := middleware.Health{Breaker: b, Store: st, Hold: time.Microsecond}.Middleware(func(*message.Message) ([]*message.Message, error) {
		return nil, answers[n.Add(1)%int64(len(answers))]
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				_, _ = h(newMessage())
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			if i%2 == 0 {
				b.Pause("")
			} else {
				b.Resume()
			}
			_ = b.Snapshot()
		}
	})
	wg.Wait()
	switch s := b.State(); s {
	case middleware.StateActive, middleware.StatePaused, middleware.StateDisabled:
	default:
		t.Errorf("state %q", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 10 || stored.Load() == 0 {
		t.Errorf("%d changes, %d held: the test did not exercise the breaker", len(seen), stored.Load())
	}
}

func TestHealthWithoutBreakerOrStorePanicsAtWiring(t *testing.T) {
	b, _ := middleware.NewBreaker(middleware.BreakerConfig{})
	for name, hl := range map[string]middleware.Health{
		"no breaker": {Store: &store{}},
		"no store":   {Breaker: b},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Middleware did not panic")
				}
			}()
			hl.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
		})
	}
}

// endpointRig is one endpoint on a real router over the memory transport,
// delivering to a receiver on loopback through the real chain: recoverer →
// poison → Schedule → Health → signer → deliver, on the events topic and
// on the retry topic. Its retry schedule is one retry a millisecond
// later: without Health, an event to a dead receiver is poisoned at once.
type endpointRig struct {
	mem      *transports.Memory
	rcv      *receiver.Receiver
	breaker  *middleware.Breaker
	changes  *changes
	poisoned atomic.Int64
	answer   atomic.Int32 // the receiver's status
}

const (
	rigEvents = "memory.events"
	rigRetry  = "memory.events.retry.crm"
)

func startEndpoint(t *testing.T, workers int, withHealth bool) *endpointRig {
	t.Helper()
	e := &endpointRig{changes: &changes{}}
	e.answer.Store(http.StatusOK)
	var err error
	e.rcv, err = receiver.Start(func(http.ResponseWriter, *http.Request, int) int { return int(e.answer.Load()) }, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.rcv.Close() })
	e.mem, err = transports.NewMemory(transports.MemoryConfig{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	e.breaker, err = middleware.NewBreaker(middleware.BreakerConfig{
		Threshold: 3, MinProbe: 20 * time.Millisecond, MaxProbe: 80 * time.Millisecond, OnChange: e.changes.record,
	})
	if err != nil {
		t.Fatal(err)
	}
	deliver, err := handlers.NewDeliver(handlers.DeliverConfig{URL: e.rcv.URL + "/hooks", Timeout: 5 * time.Second, MaxIdleConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	logger := watermill.NopLogger{}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	retryStore := middleware.DelayFunc(func(msg *message.Message, due time.Time) error {
		return e.mem.PublishAt(rigRetry, due, msg)
	})
	chain := []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: e.mem, Topic: "poison.crm", SourceTopic: rigEvents,
			OnPoisoned: func(*message.Message, error) { e.poisoned.Add(1) }}.Middleware,
		middleware.Schedule{Delays: []time.Duration{time.Millisecond}, Store: retryStore}.Middleware,
	}
	if withHealth {
		chain = append(chain, middleware.Health{Breaker: e.breaker, Store: retryStore, Hold: 30 * time.Millisecond}.Middleware)
	}
	chain = append(chain, middleware.Signer{Token: "t0ken"}.Middleware)
	for _, h := range []struct{ name, topic string }{{"deliver", rigEvents}, {"retry", rigRetry}} {
		router.AddConsumerHandler(h.name, h.topic, e.mem.Subscriber("crm"), deliver.Handle).AddMiddleware(chain...)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(context.Background())
	}()
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router did not start")
	}
	t.Cleanup(func() {
		_ = router.Close()
		<-done
		_ = deliver.Close()
		_ = e.mem.Close()
	})
	return e
}

// emit publishes n events and returns their ids.
func (e *endpointRig) emit(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		msg := newMessage()
		ids = append(ids, msg.UUID)
		if err := e.mem.Publish(rigEvents, msg); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// delivered returns the ids the receiver answered 200 for, once each.
func (e *endpointRig) delivered() map[string]bool {
	out := map[string]bool{}
	for _, r := range e.rcv.Requests() {
		if r.Status == http.StatusOK {
			out[r.Header.Get("webhook-id")] = true
		}
	}
	return out
}

// waitFor waits until cond holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// An endpoint down long enough to exhaust every event's attempts many
// times over is paused, none of its events poisoned, only probes sent;
// once it is back, every event is delivered.
func TestHealthOnARouter(t *testing.T) {
	t.Run("without Health every event is poisoned", func(t *testing.T) {
		e := startEndpoint(t, 4, false)
		e.answer.Store(http.StatusServiceUnavailable)
		e.emit(t, 20)
		waitFor(t, "20 poisoned", func() bool { return e.poisoned.Load() == 20 })
	})
	t.Run("with Health none is, and all are delivered on return", func(t *testing.T) {
		e := startEndpoint(t, 4, true)
		e.answer.Store(http.StatusServiceUnavailable)
		ids := e.emit(t, 20)
		waitFor(t, "probes at the longest interval", func() bool {
			s := e.breaker.Snapshot()
			return s.State == middleware.StatePaused && s.ProbeInterval == 80*time.Millisecond
		})
		before := e.rcv.Count()
		time.Sleep(250 * time.Millisecond) // to show that only probes go out, one at a time
		if n := e.rcv.Count() - before; n > 5 {
			t.Errorf("%d requests in 250ms while paused with probes 80ms apart, want only probes", n)
		}
		if p := e.poisoned.Load(); p != 0 {
			t.Fatalf("%d events poisoned while paused", p)
		}
		e.answer.Store(http.StatusOK)
		waitFor(t, "every event delivered", func() bool { return len(e.delivered()) == len(ids) })
		got := e.delivered()
		for _, id := range ids {
			if !got[id] {
				t.Errorf("event %s not delivered", id)
			}
		}
		if p := e.poisoned.Load(); p != 0 {
			t.Errorf("%d events poisoned", p)
		}
		if tr := e.changes.transitions(); !slices.Equal(tr, []string{"active>paused", "paused>active"}) {
			t.Errorf("changes %q", e.changes.get())
		}
	})
	// With as many events as the threshold, every probe is one of them,
	// and each has one attempt left at most: a probe that spent one would
	// poison an event by the second probe.
	t.Run("probes spend no attempt", func(t *testing.T) {
		e := startEndpoint(t, 4, true)
		e.answer.Store(http.StatusServiceUnavailable)
		ids := e.emit(t, 3)
		waitFor(t, "paused", func() bool { return e.breaker.State() == middleware.StatePaused })
		paused := e.rcv.Count()
		waitFor(t, "4 probes", func() bool { return e.rcv.Count() >= paused+4 || e.poisoned.Load() > 0 })
		if p := e.poisoned.Load(); p != 0 {
			t.Fatalf("%d events poisoned while paused", p)
		}
		e.answer.Store(http.StatusOK)
		waitFor(t, "every event delivered", func() bool { return len(e.delivered()) == len(ids) })
	})
}

// A 410 disables the endpoint: that event is poisoned, the others wait
// without a request, and all reach it after Resume.
func TestHealthGoneOnARouter(t *testing.T) {
	e := startEndpoint(t, 1, true)
	e.answer.Store(http.StatusGone)
	ids := e.emit(t, 10)
	waitFor(t, "disabled", func() bool { return e.breaker.State() == middleware.StateDisabled })
	waitFor(t, "the 410 poisoned", func() bool { return e.poisoned.Load() == 1 })
	time.Sleep(150 * time.Millisecond) // to show that nothing goes out while disabled (Hold is 30ms)
	if n := e.rcv.Count(); n != 1 {
		t.Fatalf("%d requests while disabled, want only the one answered 410", n)
	}
	e.answer.Store(http.StatusOK)
	e.breaker.Resume()
	waitFor(t, "the 9 others delivered", func() bool { return len(e.delivered()) == len(ids)-1 })
	if p := e.poisoned.Load(); p != 1 {
		t.Errorf("%d poisoned, want the one 410", p)
	}
}

// An operator's pause holds every event, without a request or a probe,
// until Resume.
func TestHealthOperatorPauseOnARouter(t *testing.T) {
	e := startEndpoint(t, 4, true)
	e.breaker.Pause("maintenance")
	ids := e.emit(t, 20)
	time.Sleep(150 * time.Millisecond) // to show that nothing goes out while paused (Hold is 30ms)
	if n := e.rcv.Count(); n != 0 {
		t.Fatalf("%d requests while paused by an operator", n)
	}
	e.breaker.Resume()
	waitFor(t, "every event delivered", func() bool { return len(e.delivered()) == len(ids) })
	if p := e.poisoned.Load(); p != 0 {
		t.Errorf("%d poisoned", p)
	}
}

// limiterFunc is a Limiter made of a function.
type limiterFunc func() time.Duration

func (f limiterFunc) Reserve(context.Context, string) (time.Duration, error) { return f(), nil }
func (limiterFunc) Release(context.Context, string) error                    { return nil }

// A message RateLimit delays is no success: a paused endpoint stays
// paused and its probe slot is freed. A held copy carries no rate slot.
func TestHealthOverRateLimit(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	r.pause(t, 1)
	rateStore := &store{}
	var limited bool
	h := middleware.Health{Breaker: r.breaker, Store: r.store}.Middleware(
		middleware.RateLimit{Key: "crm", Limiter: limiterFunc(func() time.Duration {
			if limited {
				return time.Second
			}
			return 0
		}), Store: rateStore}.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil }))
	r.clock.Advance(middleware.DefaultMinProbe)
	limited = true
	if _, err := h(newMessage()); err != nil {
		t.Fatal(err)
	}
	if s := r.breaker.Snapshot(); s.State != middleware.StatePaused || s.Probing {
		t.Fatalf("after a probe RateLimit delayed: %+v, want paused with the probe slot free", s)
	}
	slotted := newMessage()
	slotted.Metadata.Set(middleware.RateSlotKey, "1:1")
	r.clock.Set(r.breaker.Snapshot().NextProbe.Add(-time.Second))
	if _, err := h(slotted); err != nil {
		t.Fatal(err)
	}
	msgs, _ := held(r.store)
	if got := msgs[len(msgs)-1]; got.UUID != slotted.UUID || got.Metadata.Get(middleware.RateSlotKey) != "" {
		t.Errorf("held %s with slot %q, want %s without one", got.UUID, got.Metadata.Get(middleware.RateSlotKey), slotted.UUID)
	}
	limited = false
	r.clock.Advance(time.Second)
	if _, err := h(newMessage()); err != nil {
		t.Fatal(err)
	}
	if s := r.breaker.State(); s != middleware.StateActive {
		t.Errorf("after a probe RateLimit let through: %s, want active", s)
	}
}

// ExampleHealth shows an endpoint paused after two failed attempts: the
// failure that reaches the threshold and the events after it are held
// until the probe time, not attempted; the probe's success resumes.
func ExampleHealth() {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	breaker, err := middleware.NewBreaker(middleware.BreakerConfig{
		Threshold: 2,
		Now:       func() time.Time { return now },
		OnChange: func(from, to middleware.State, reason string) {
			fmt.Printf("   %s -> %s: %s\n", from, to, reason)
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	store := middleware.DelayFunc(func(msg *message.Message, due time.Time) error {
		fmt.Printf("   %s held for %s\n", msg.UUID, due.Sub(now))
		return nil
	})
	var answer error = &middleware.StatusError{Code: 503}
	h := middleware.Health{Breaker: breaker, Store: store, Jitter: middleware.NoJitter}.Middleware(
		func(msg *message.Message) ([]*message.Message, error) {
			fmt.Printf("   attempt %s: %v\n", msg.UUID, answer)
			return nil, answer
		})
	handle := func(id string) {
		_, err := h(message.NewMessage(id, nil))
		fmt.Printf("%s -> %v (%s)\n", id, err, breaker.State())
	}
	handle("e1")
	handle("e2")
	handle("e3")
	now = now.Add(middleware.DefaultMinProbe)
	answer = nil
	handle("e2")
	handle("e3")
	// Output:
	//    attempt e1: webhook receiver answered 503 Service Unavailable
	// e1 -> webhook receiver answered 503 Service Unavailable (active)
	//    attempt e2: webhook receiver answered 503 Service Unavailable
	//    active -> paused: 2 attempt(s) failed in a row, the last: webhook receiver answered 503 Service Unavailable
	//    e2 held for 5s
	// e2 -> <nil> (paused)
	//    e3 held for 5s
	// e3 -> <nil> (paused)
	//    attempt e2: <nil>
	//    paused -> active: probe succeeded
	// e2 -> <nil> (active)
	//    attempt e3: <nil>
	// e3 -> <nil> (active)
}

// waitReturns runs b.Wait(ctx) and returns a channel that receives its
// result.
func waitReturns(ctx context.Context, b *middleware.Breaker) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx) }()
	return done
}

// notYet fails the test if done has a result within d.
func notYet(t *testing.T, done <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: Wait returned (%v), want it blocked", what, err)
	case <-time.After(d):
	}
}

// within fails the test unless done has a nil result within d.
func within(t *testing.T, done <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: Wait returned %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: Wait still blocked after %s", what, d)
	}
}

// Wait, the gate subscriptions ask before they take a message, lets them
// take while the endpoint is active or a probe is due, and holds them
// while it is paused, a probe is in flight, an operator paused it or a 410
// disabled it.
func TestBreakerWait(t *testing.T) {
	ctx := context.Background()
	r := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	within(t, waitReturns(ctx, r.breaker), time.Second, "active")

	// Paused by the breaker: blocked until the probe is due on its clock
	// (a fake one here: Wait looks again within a second).
	r.pause(t, 1)
	done := waitReturns(ctx, r.breaker)
	notYet(t, done, 100*time.Millisecond, "paused, probe not due")
	r.clock.Advance(middleware.DefaultMinProbe)
	within(t, done, 2*time.Second, "probe due")

	// The probe in flight: blocked until it ends; it fails, so blocked
	// until the next probe is due.
	release := make(chan struct{})
	r2 := newHealthRig(t, middleware.BreakerConfig{Threshold: 1}, middleware.Health{})
	r2.pause(t, 1)
	r2.clock.Advance(middleware.DefaultMinProbe)
	inProbe := make(chan struct{})
	probe := middleware.Health{Breaker: r2.breaker, Store: r2.store}.Middleware(func(*message.Message) ([]*message.Message, error) {
		close(inProbe)
		<-release
		return nil, &middleware.StatusError{Code: 503}
	})
	go func() { _, _ = probe(newMessage()) }()
	<-inProbe
	done = waitReturns(ctx, r2.breaker)
	notYet(t, done, 100*time.Millisecond, "probe in flight")
	close(release)
	notYet(t, done, 100*time.Millisecond, "probe failed, next not due")
	r2.clock.Advance(2 * middleware.DefaultMinProbe)
	within(t, done, 2*time.Second, "next probe due")

	// Operator-paused: blocked, whatever the clock says, until Resume.
	r.breaker.Resume()
	r.breaker.Pause("maintenance")
	r.clock.Advance(time.Hour)
	done = waitReturns(ctx, r.breaker)
	notYet(t, done, 1200*time.Millisecond, "operator-paused")
	r.breaker.Resume()
	within(t, done, 100*time.Millisecond, "resumed") // at once: woken, not polled

	// Disabled: blocked until Resume; a context that ends ends Wait.
	r.answerWith(&middleware.StatusError{Code: http.StatusGone})
	r.handle(t, newMessage())
	cctx, cancel := context.WithCancel(ctx)
	done = waitReturns(cctx, r.breaker)
	notYet(t, done, 100*time.Millisecond, "disabled")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Wait did not end with its context")
	}
}

// Each copy Health holds carries HeldKey, naming the state that held it,
// so that a store can bring held messages forward; a message handled
// again loses it, so that a retry scheduled around it is not taken for a
// held one.
func TestHealthMarksHeldCopies(t *testing.T) {
	r := newHealthRig(t, middleware.BreakerConfig{}, middleware.Health{})
	r.answerWith(&middleware.StatusError{Code: http.StatusGone})
	if _, err := r.handle(t, newMessage()); err == nil {
		t.Fatal("410 returned nil")
	}
	msg := newMessage()
	if attempted, err := r.handle(t, msg); attempted || err != nil {
		t.Fatalf("disabled: attempted=%v err=%v, want held", attempted, err)
	}
	msgs, _ := held(r.store)
	if len(msgs) != 1 {
		t.Fatalf("%d held, want 1", len(msgs))
	}
	if got := msgs[0].Metadata.Get(middleware.HeldKey); got != string(middleware.StateDisabled) {
		t.Errorf("held copy's %s = %q, want %q", middleware.HeldKey, got, middleware.StateDisabled)
	}
	if msg.Metadata.Get(middleware.HeldKey) != "" {
		t.Error("the handled message itself got the mark: only the copy handed to the store carries it")
	}

	r.breaker.Resume()
	r.answerWith(errors.New("refused"))
	back := msgs[0] // as the store hands it back
	if attempted, _ := r.handle(t, back); !attempted {
		t.Fatal("after Resume the held message was not attempted")
	}
	if got := back.Metadata.Get(middleware.HeldKey); got != "" {
		t.Errorf("the message handled again keeps %s = %q: a retry scheduled from it would be taken for a held one", middleware.HeldKey, got)
	}
}
