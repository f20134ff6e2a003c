package middleware

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// State is an endpoint's health as its Breaker sees it. Its values are
// the "state" the status endpoint and `memhook endpoints` show.
type State string

// The states of an endpoint.
const (
	// StateActive: attempts go out.
	StateActive State = "active"
	// StatePaused: too many attempts failed in a row (one probe attempt
	// goes out now and then; the first success resumes), or an operator
	// paused the endpoint (no probe; only Resume ends it). Its events
	// wait; none is poisoned.
	StatePaused State = "paused"
	// StateDisabled: the receiver answered 410 Gone. Its events wait until
	// an operator resumes the endpoint.
	StateDisabled State = "disabled"
)

// Defaults of BreakerConfig and Health.
const (
	// DefaultBreakerThreshold is how many attempts must fail in a row to
	// pause an endpoint.
	DefaultBreakerThreshold = 10
	// DefaultBreakerGrace is how long a success keeps an endpoint from
	// being paused, however many attempts failed since: an endpoint that
	// answers some of its events is not down.
	DefaultBreakerGrace = time.Second
	// DefaultMinProbe is the wait before the first probe of a paused
	// endpoint; each failed probe doubles it.
	DefaultMinProbe = 5 * time.Second
	// DefaultMaxProbe caps the wait between two probes.
	DefaultMaxProbe = 5 * time.Minute
	// DefaultHealthHold is how long an event of a disabled or
	// operator-paused endpoint waits before it is looked at again.
	DefaultHealthHold = 30 * time.Second
	// DefaultHealthJitter is the fraction of a wait Health spreads the
	// waiting events over.
	DefaultHealthJitter = 0.2
)

// NoBreakerThreshold as BreakerConfig.Threshold: failures never pause the
// endpoint (a 410 still disables it, an operator may still pause it).
const NoBreakerThreshold = -1

// NoBreakerGrace as BreakerConfig.Grace: Threshold failures in a row pause
// the endpoint however recently an attempt succeeded.
const NoBreakerGrace time.Duration = -1

// BreakerConfig configures a Breaker. Zero values mean the default each
// field names.
type BreakerConfig struct {
	// Threshold is how many attempts must fail in a row to pause the
	// endpoint; 0 means DefaultBreakerThreshold, 10. NoBreakerThreshold
	// disables pausing on failures.
	Threshold int
	// Grace is how long after a successful attempt the endpoint is not
	// paused, whatever fails meanwhile: the Threshold failures in a row
	// must also come at least Grace after the last success (an endpoint
	// that never succeeded is paused at Threshold). With deliveries side
	// by side, an endpoint that fails half of its events (one of two
	// servers behind it broken) fails ten in a row every thousand or so
	// attempts; without it, it would be paused each time, and each probe
	// that met a failing event would double the wait. 0 means
	// DefaultBreakerGrace, 1s; NoBreakerGrace pauses on Threshold alone.
	Grace time.Duration
	// MinProbe is the wait before the first probe of a paused endpoint;
	// 0 means DefaultMinProbe, 5s.
	MinProbe time.Duration
	// MaxProbe caps the wait between probes, which doubles after each
	// failed one; 0 means DefaultMaxProbe, 5m.
	MaxProbe time.Duration
	// Now is the breaker's clock (and the clock of Health's due times);
	// nil means time.Now.
	Now func() time.Time
	// OnChange, if set, is called after each change of state with the
	// state before, the state after and why (an operator pause of an
	// endpoint the breaker had paused reports paused to paused). Calls
	// come one at a time in the order of the changes, never under the
	// breaker's lock: OnChange may call the breaker's methods. It may run
	// on the goroutine of a later change; it must not block. memhook logs
	// them at WARN.
	OnChange func(from, to State, reason string)
}

func (c *BreakerConfig) setDefaults() {
	if c.Threshold == 0 {
		c.Threshold = DefaultBreakerThreshold
	}
	if c.Grace == 0 {
		c.Grace = DefaultBreakerGrace
	}
	if c.MinProbe == 0 {
		c.MinProbe = DefaultMinProbe
	}
	if c.MaxProbe == 0 {
		c.MaxProbe = DefaultMaxProbe
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of the config at once, its defaults
// applied.
func (c BreakerConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Threshold < 1 && c.Threshold != NoBreakerThreshold {
		errs = append(errs, fmt.Errorf("breaker: Threshold must be positive (or NoBreakerThreshold), got %d", c.Threshold))
	}
	if c.Grace < 0 && c.Grace != NoBreakerGrace {
		errs = append(errs, fmt.Errorf("breaker: Grace must not be negative (or NoBreakerGrace), got %s", c.Grace))
	}
	if c.MinProbe < 0 {
		errs = append(errs, fmt.Errorf("breaker: MinProbe must not be negative, got %s", c.MinProbe))
	}
	if c.MaxProbe < 0 {
		errs = append(errs, fmt.Errorf("breaker: MaxProbe must not be negative, got %s", c.MaxProbe))
	}
	if c.MinProbe > 0 && c.MaxProbe > 0 && c.MinProbe > c.MaxProbe {
		errs = append(errs, fmt.Errorf("breaker: MinProbe %s is above MaxProbe %s", c.MinProbe, c.MaxProbe))
	}
	return errors.Join(errs...)
}

// Breaker holds the health of one endpoint in this process: its state,
// its failed attempts in a row, its probe schedule. Health feeds it the
// outcome of every attempt; operators change it with Pause and Resume;
// status output reads Snapshot. One Breaker serves both handlers of an
// endpoint (its events topic and its retry topic). It is safe for
// concurrent use.
//
// Its state lives in this process only: with several routers, each
// pauses and probes on its own, and Pause and Resume must reach each.
type Breaker struct {
	cfg BreakerConfig

	mu        sync.Mutex
	state     State
	manual    bool // paused by an operator
	failures  int
	alive     time.Time // when an attempt last succeeded (zero: never)
	since     time.Time
	reason    string
	interval  time.Duration // wait before the next probe, paused automatically
	nextProbe time.Time
	probing   bool // a probe attempt is in flight
	pending   []stateChange
	flushing  bool          // a goroutine is calling OnChange with pending
	changed   chan struct{} // closed (and replaced) when Wait's answer may change; nil until Wait needs it
	active    atomic.Bool   // state == StateActive, for Wait's fast path (every message a worker takes)
}

type stateChange struct {
	from, to State
	reason   string
}

// BreakerSnapshot is the state of a Breaker at one moment, for status
// output.
type BreakerSnapshot struct {
	// State is the endpoint's state.
	State State
	// Manual is true when an operator paused the endpoint (State is
	// StatePaused): no probe goes out, only Resume ends it.
	Manual bool
	// Failures counts the attempts that failed in a row.
	Failures int
	// Since is when State began (when the breaker was made, at first).
	Since time.Time
	// Reason is why State began; empty at first.
	Reason string
	// NextProbe is, paused by the breaker, when a probe may go out next;
	// ProbeInterval the wait it came from. Zero otherwise.
	NextProbe     time.Time
	ProbeInterval time.Duration
	// Probing is true while a probe attempt is in flight.
	Probing bool
}

// NewBreaker returns an active breaker, or the config's problems.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Breaker{cfg: cfg, state: StateActive, since: cfg.Now()}
	b.active.Store(true)
	return b, nil
}

// State returns the endpoint's state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Snapshot returns the breaker's state and schedule.
func (b *Breaker) Snapshot() BreakerSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerSnapshot{
		State: b.state, Manual: b.manual, Failures: b.failures, Since: b.since, Reason: b.reason, Probing: b.probing,
	}
	if b.state == StatePaused && !b.manual {
		s.NextProbe, s.ProbeInterval = b.nextProbe, b.interval
	}
	return s
}

// Pause is an operator's pause: the endpoint's events wait (Health holds
// them) and no probe goes out until Resume. An endpoint the breaker
// paused becomes operator-paused; a disabled one stays disabled (it waits
// for Resume already). Empty reason means "paused by an operator".
func (b *Breaker) Pause(reason string) {
	if reason == "" {
		reason = "paused by an operator"
	}
	b.mu.Lock()
	if b.state != StateDisabled && !(b.state == StatePaused && b.manual) {
		b.set(StatePaused, true, reason)
	}
	b.mu.Unlock()
	b.flush()
}

// Resume makes a paused or disabled endpoint active again, its failures
// forgotten. Events that wait come back at the due time Health gave
// them — within its Hold (plus jitter) for a disabled or operator-paused
// endpoint, by the next probe time for one the breaker paused — unless
// its Store brings them forward (HeldKey; the bus's does). On an active
// endpoint it does nothing.
func (b *Breaker) Resume() {
	b.mu.Lock()
	if b.state != StateActive {
		b.failures = 0
		b.set(StateActive, false, "resumed by an operator")
	}
	b.mu.Unlock()
	b.flush()
}

// set changes the state, under b.mu, and queues the change for OnChange.
func (b *Breaker) set(to State, manual bool, reason string) {
	from := b.state
	now := b.cfg.Now()
	b.state, b.manual, b.since, b.reason = to, manual, now, reason
	b.active.Store(to == StateActive)
	if to == StatePaused && !manual {
		b.interval = b.cfg.MinProbe
		b.nextProbe = now.Add(b.interval)
	} else {
		b.interval, b.nextProbe = 0, time.Time{}
	}
	if b.cfg.OnChange != nil {
		b.pending = append(b.pending, stateChange{from, to, reason})
	}
	b.signalLocked()
}

// signalLocked wakes the goroutines in Wait, under b.mu.
func (b *Breaker) signalLocked() {
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

// waitRecheck caps how long Wait sleeps without looking at the state
// again: a clock of BreakerConfig.Now other than the wall clock's still
// opens the gate within it.
const waitRecheck = time.Second

// Wait blocks while the endpoint takes no attempt — paused (until a probe
// is due, or while one is in flight), operator-paused or disabled — and
// returns nil once it does (active, or a probe due), or ctx's error.
// Subscriptions call it before they take a message (transports.Gate), so
// that the events of an endpoint that is down stay where they are,
// unread, instead of being taken and held one by one by Health: once a
// probe is due, every waiter returns; the first message Health sees is
// the probe, the few others taken at that moment are held as before.
func (b *Breaker) Wait(ctx context.Context) error {
	if b.active.Load() {
		return nil // no lock on the path of every message
	}
	for {
		b.mu.Lock()
		if b.state == StateActive {
			b.mu.Unlock()
			return nil
		}
		sleep := waitRecheck
		if b.state == StatePaused && !b.manual && !b.probing {
			until := b.nextProbe.Sub(b.cfg.Now())
			if until <= 0 {
				b.mu.Unlock()
				return nil
			}
			sleep = min(sleep, until)
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// flush calls OnChange with the queued changes, in order, one goroutine at
// a time, without b.mu held. Called without b.mu.
func (b *Breaker) flush() {
	b.mu.Lock()
	if b.flushing {
		b.mu.Unlock() // the goroutine flushing takes ours too
		return
	}
	b.flushing = true
	for len(b.pending) > 0 {
		c := b.pending[0]
		b.pending = b.pending[1:]
		b.mu.Unlock()
		b.cfg.OnChange(c.from, c.to, c.reason)
		b.mu.Lock()
	}
	b.pending = nil
	b.flushing = false
	b.mu.Unlock()
}

// admission is what Health does with a message before its attempt.
type admission int

const (
	admitAttempt admission = iota // active: attempt it
	admitProbe                    // paused, probe due: attempt it as the probe
	admitWait                     // hold it
)

// wait is how a message is held: until due plus a random part of window,
// because of state.
type wait struct {
	due    time.Time
	window time.Duration
	state  State
}

// admit decides, for a message about to be attempted, whether it is, and
// takes the probe slot when it is the probe; when it is not, how it
// waits.
func (b *Breaker) admit(hold time.Duration) (admission, wait) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == StateActive {
		return admitAttempt, wait{}
	}
	now := b.cfg.Now()
	if b.state == StatePaused && !b.manual && !b.probing && !now.Before(b.nextProbe) {
		b.probing = true
		return admitProbe, wait{}
	}
	return admitWait, b.waitLocked(now, hold)
}

// waitLocked returns how a message held now waits: paused by the breaker,
// until the next probe time, spread over an interval — or, while the
// probe is due or in flight, for MinProbe, spread over MinProbe, so that
// it comes back soon after the probe's outcome (if the probe succeeds it
// is attempted then; if it fails, it is held again until the next probe)
// rather than a whole interval after an endpoint that is back; disabled
// or operator-paused, for hold, spread over hold.
func (b *Breaker) waitLocked(now time.Time, hold time.Duration) wait {
	if b.state == StatePaused && !b.manual {
		if b.nextProbe.After(now) {
			return wait{b.nextProbe, b.interval, b.state}
		}
		return wait{now.Add(b.cfg.MinProbe), b.cfg.MinProbe, b.state}
	}
	return wait{now.Add(hold), hold, b.state}
}

// outcome is what an attempt says about the endpoint's health.
type outcome int

const (
	// outcomeNone says nothing: the message's context ended (shutdown), or
	// a layer below could not schedule it.
	outcomeNone outcome = iota
	// outcomeAlive: the receiver took it, or answered with a permanent
	// status other than 410 (the endpoint is up; the event is at fault).
	outcomeAlive
	// outcomeGone: the receiver answered 410 Gone.
	outcomeGone
	// outcomeFailed: a temporary status, a timeout, a connection error,
	// anything else.
	outcomeFailed
)

func classify(ctx context.Context, msg *message.Message, err error) outcome {
	if err == nil {
		if RateLimited(msg) {
			return outcomeNone // delayed by RateLimit below: not attempted
		}
		return outcomeAlive
	}
	if ctx.Err() != nil {
		return outcomeNone
	}
	if ns := (*NotScheduledError)(nil); errors.As(err, &ns) {
		return outcomeNone
	}
	if se := (*StatusError)(nil); errors.As(err, &se) {
		switch {
		case se.Code == http.StatusGone:
			return outcomeGone
		case !se.Temporary():
			return outcomeAlive
		}
	}
	return outcomeFailed
}

// record takes the outcome of an attempt (the probe when probe) and
// reports whether the message must be held rather than fail — the
// endpoint is not active after it — and how.
func (b *Breaker) record(o outcome, probe bool, err error, hold time.Duration) (bool, wait) {
	b.mu.Lock()
	defer b.flush()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
		b.signalLocked()
	}
	auto := b.state == StatePaused && !b.manual
	switch o {
	case outcomeAlive:
		b.failures = 0
		b.alive = b.cfg.Now()
		if auto {
			reason := "an attempt succeeded"
			switch {
			case probe && err == nil:
				reason = "probe succeeded"
			case probe:
				reason = "probe answered: " + err.Error()
			case err != nil:
				reason = "an attempt was answered: " + err.Error()
			}
			b.set(StateActive, false, reason)
		}
	case outcomeGone:
		if b.state != StateDisabled {
			b.set(StateDisabled, false, err.Error())
		}
	case outcomeFailed:
		b.failures++
		now := b.cfg.Now()
		switch {
		case b.state == StateActive && b.cfg.Threshold > 0 && b.failures >= b.cfg.Threshold && b.graceOverLocked(now):
			b.set(StatePaused, false, fmt.Sprintf("%d attempt(s) failed in a row, the last: %v", b.failures, err))
		case probe && auto:
			b.interval = min(b.interval, b.cfg.MaxProbe/2) * 2 // no overflow
			b.nextProbe = now.Add(b.interval)
		}
		if b.state != StateActive {
			return true, b.waitLocked(now, hold)
		}
	}
	return false, wait{}
}

// graceOverLocked reports whether the last success is Grace or more ago
// (or there was none). The caller holds b.mu.
func (b *Breaker) graceOverLocked(now time.Time) bool {
	return b.cfg.Grace == NoBreakerGrace || b.alive.IsZero() || now.Sub(b.alive) >= b.cfg.Grace
}

// endProbe frees the probe slot of an attempt that ended without an
// outcome (a panic below).
func (b *Breaker) endProbe() {
	b.mu.Lock()
	b.probing = false
	b.signalLocked()
	b.mu.Unlock()
}

// Health pauses the deliveries of an endpoint that keeps failing, with
// Breaker. It sits inside Schedule (and outside the signer and the
// delivery handler), on both handlers of the endpoint, which share one
// Breaker:
//
//	recoverer → poison → filter → [yours] → Schedule → Health → … → signer → deliver
//
// Active, each message is attempted; the outcome goes to the Breaker and
// the error is returned as is (Schedule retries or poisons it). An
// attempt counts as failed on a temporary status (408, 425, 429, 5xx), a
// timeout, a connection error or any other error; a success resets the
// count; a permanent answer other than 410 (a 400 for one bad event)
// proves the endpoint up and resets it too; the message context's own
// end (shutdown), a *NotScheduledError from below and a message
// RateLimit (inside Health) delayed instead of attempting (RateLimited)
// count for nothing. A 410 Gone disables the endpoint, and is returned as
// is (poisoned: it is permanent).
//
// Not active, a message is not attempted: a copy of it — same UUID, same
// payload, metadata unchanged but for RateLimit's slot (RateSlotKey), its
// attempt number (AttemptKey) included, so that no attempt is spent — is
// handed to Store and Health returns nil
// (the message is acknowledged; no worker waits). Paused by the breaker,
// it comes back at the next probe time; disabled or paused by an
// operator, after Hold. Each due time is spread at random over Jitter of
// the probe interval (or of Hold), so that a big backlog does not come
// back at one instant. A failed attempt that leaves the endpoint not
// active (the one that reached the threshold, one that was in flight
// then, a failed probe) is held the same way instead of returned: no
// event is poisoned, and no attempt spent, for an endpoint that is down.
//
// Paused by the breaker, the first message handled once the probe is due
// is attempted as the probe, one at a time in this process. Its success
// (or a permanent answer other than 410) makes the endpoint active; its
// failure doubles the wait before the next probe, up to MaxProbe, and
// the message is held until then. A message handled while the probe is
// in flight is held for MinProbe (spread over it): it comes back soon
// after the probe's outcome, so that an endpoint back gets every waiting
// event within about a probe interval of its return.
//
// A Store that fails returns a *NotScheduledError: PoisonQueue lets it
// through, and the message is nacked and comes back from its transport.
//
// Each held copy carries HeldKey. On an operator's Resume, held messages
// come back at the due time they were given (within Hold plus its
// jitter) unless the Store brings them forward: the bus's does, as soon as
// the endpoint is active again.
//
// Health belongs only in chains whose messages come from a transport: a
// held message returns nil, which is no delivery, so a caller that waits
// for the outcome of one handling (a synchronous send) must not run it.
type Health struct {
	// Breaker holds the endpoint's state; required.
	Breaker *Breaker
	// Store keeps the held messages until due (the endpoint's retry
	// topic); required.
	Store DelayStore
	// Hold is how long a message of a disabled or operator-paused endpoint
	// waits before it is looked at again; 0 means DefaultHealthHold, 30s.
	Hold time.Duration
	// Jitter is the fraction of each wait over which the due times of
	// held messages are spread, in [0, 1]; 0 means DefaultHealthJitter,
	// 0.2. NoJitter holds each message until exactly the probe time (or
	// Hold).
	Jitter float64
	// OnWait, if set, is called once a message is held, with the state
	// that held it and its due time.
	OnWait func(msg *message.Message, state State, due time.Time)
}

// HeldKey marks the copy of a message Health hands to its Store: a store
// that can bring held messages forward (the bus's transports do, once an
// endpoint is active again: transports.Expediter) tells them by it from
// retries waiting out their schedule, which it leaves as they are. Health
// takes it off every message it handles, so that a retry of a message
// once held is not taken for one.
const HeldKey = "memhook_held"

// Middleware implements message.HandlerMiddleware.
func (hl Health) Middleware(h message.HandlerFunc) message.HandlerFunc {
	if hl.Breaker == nil {
		panic("middleware: Health needs a Breaker")
	}
	if hl.Store == nil {
		panic("middleware: Health needs a Store")
	}
	hold := hl.Hold
	if hold <= 0 {
		hold = DefaultHealthHold
	}
	jitter := hl.Jitter
	if jitter == 0 {
		jitter = DefaultHealthJitter
	}
	b := hl.Breaker
	return func(msg *message.Message) ([]*message.Message, error) {
		// Schedule, around Health, copies msg's metadata into a retry
		// once this returns: the mark must not go with it.
		delete(msg.Metadata, HeldKey)
		a, w := b.admit(hold)
		if a == admitWait {
			return nil, hl.hold(msg, w, jitter, nil)
		}
		ctx := msg.Context()
		probe := a == admitProbe
		recorded := false
		if probe {
			defer func() {
				if !recorded {
					b.endProbe()
				}
			}()
		}
		out, err := h(msg)
		recorded = true
		if held, w := b.record(classify(ctx, msg, err), probe, err, hold); held {
			return nil, hl.hold(msg, w, jitter, err)
		}
		return out, err
	}
}

// hold hands a copy of msg to Store, due at w.due plus up to jitter of
// w.window; cause is the failed attempt's error, if any.
func (hl Health) hold(msg *message.Message, w wait, jitter float64, cause error) error {
	due := w.due
	if jitter > 0 && w.window > 0 {
		due = due.Add(time.Duration(rand.Float64() * jitter * float64(w.window)))
	}
	c := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range msg.Metadata {
		c.Metadata.Set(k, v)
	}
	// A rate slot is good for one moment: a copy held past it would go
	// at once when it comes back, above the limit.
	delete(c.Metadata, RateSlotKey)
	delete(c.Metadata, RateLimitedKey)
	c.Metadata[HeldKey] = string(w.state)
	if err := hl.Store.Delay(c, due); err != nil {
		return &NotScheduledError{Attempt: AttemptOf(msg), Err: errors.Join(err, cause)}
	}
	if hl.OnWait != nil {
		hl.OnWait(msg, w.state, due)
	}
	return nil
}
