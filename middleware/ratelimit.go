package middleware

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Limiter is a budget of attempts shared by the handlings that name the
// same key: RateLimit asks it for a slot before each attempt.
//
// Limiters reserve (GCRA, the generic cell rate algorithm): every Reserve
// takes the next free slot of key's budget, one emission interval (Per /
// Events) after the slot before it, and returns how long until that slot
// comes (0: go now). A caller that got a wait owns that slot: it must
// attempt at (or after) it without asking again, or give it back with
// Release. Slots are handed out in the order asked, so events delayed by
// the limit come back one interval apart, never all at once.
//
// Burst is 1: the first slot of an idle budget is now, the next one an
// interval later, so that in any window of length w at most
// 1 + w/interval slots start (51 a second at 50/s), whatever the calls'
// order.
type Limiter interface {
	// Reserve takes the next slot of key's budget and returns the wait
	// until it. An error means no slot was taken (the budget's store is
	// unreachable); RateLimit then lets the attempt go.
	Reserve(ctx context.Context, key string) (wait time.Duration, err error)
	// Release gives back one slot of key's budget, taken by a Reserve
	// whose event will not use it (its delay store refused it): the next
	// Reserve gets a slot one interval sooner.
	Release(ctx context.Context, key string) error
}

// RateSlotKey is the metadata key of the slot RateLimit reserved for a
// message it delayed: "<attempt>:<unix milliseconds>". It is good for
// that attempt only: a retry Schedule makes of the same message (the next
// attempt number) asks the Limiter again.
const RateSlotKey = "memhook_rate_slot"

// RateLimitedKey is the metadata key RateLimit sets on the message it
// handled (never on the copy it delays) when it delayed it instead of
// attempting it. See RateLimited.
const RateLimitedKey = "memhook_rate_limited"

// RateLimited reports whether RateLimit, inside the caller's middleware,
// delayed msg instead of attempting it: the nil it returned is then no
// delivery. A middleware outside RateLimit that counts successes (endpoint
// health) calls it after the handler returns.
func RateLimited(msg *message.Message) bool { return msg.Metadata.Get(RateLimitedKey) != "" }

// RateLimit caps the attempts of the handler below at Limiter's budget for
// Key without holding a worker: before each attempt it reserves a slot
// (Limiter.Reserve). A slot now: the handler is called. A slot later: a
// copy of the message — same UUID, payload and metadata, AttemptKey
// unchanged (a wait for the limit is not an attempt), the slot in
// RateSlotKey — is handed to Store, due at the slot, and RateLimit returns
// nil: the message is acknowledged where it came from (the DelayStore
// contract) and comes back at its slot, on the endpoint's retry topic.
// There it passes RateLimit again, which honours the slot it carries
// instead of reserving another: late (the delay store was slow or
// stalled) it goes at once, early (another router's clock) it is delayed
// again to the same slot. A delayed event therefore keeps its place: N
// events at R a second are attempted at R a second, each delayed once.
// Attempts follow their slots as closely as the store returns them: the
// Redis delay store moves due events every 200ms, so there the attempts
// of one such tick go together (10 at a time at 50/s); after a stall of
// the store (Redis unreachable), the events whose slots passed go as fast
// as the workers take them.
//
// Errors: a Store that refuses the copy gives the slot back
// (Limiter.Release) and returns a *NotScheduledError, so the message is
// nacked and comes back from its transport. A Limiter that fails (Redis
// unreachable) lets the attempt go — the limit fails open: a receiver
// gets webhooks above its rate rather than none while the limiter's store
// is down — and reports the error to OnLimiterError. A message whose
// context is done is not attempted: its context's error is returned
// (nack).
//
// It sits inside Schedule (so a failure of the attempt it lets through is
// retried) and inside any middleware that should see held events as not
// attempted (endpoint health: see RateLimited), on the handlers of both
// the events topic and the retry topic. It never sleeps.
type RateLimit struct {
	// Limiter holds the budget; required.
	Limiter Limiter
	// Key names the budget in Limiter (the endpoint's name).
	Key string
	// Store keeps the delayed copies until their slot; required.
	Store DelayStore
	// Now is the clock of due times; nil means time.Now.
	Now func() time.Time
	// OnLimited, if set, is called once a message is handed to Store,
	// with the wait until its slot; for counting. It must not block.
	OnLimited func(msg *message.Message, wait time.Duration)
	// OnLimiterError, if set, is called when Limiter fails (the attempt
	// went without a slot, or a slot could not be given back); for
	// logging, at most so often. It must not block.
	OnLimiterError func(msg *message.Message, err error)
}

// Middleware implements message.HandlerMiddleware.
func (r RateLimit) Middleware(h message.HandlerFunc) message.HandlerFunc {
	if r.Limiter == nil {
		panic("middleware: RateLimit needs a Limiter")
	}
	if r.Store == nil {
		panic("middleware: RateLimit needs a Store")
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		attempt := AttemptOf(msg)
		if slot, ok := slotOf(msg, attempt); ok {
			wait := slot.Sub(now())
			if wait <= 0 {
				return h(msg) // its slot came: the token was taken when it was reserved
			}
			return r.delay(msg, attempt, slot, wait, false)
		}
		wait, err := r.Limiter.Reserve(ctx, r.Key)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.limiterError(msg, fmt.Errorf("rate limit %q: %w", r.Key, err))
			return h(msg) // fail open
		}
		if wait <= 0 {
			return h(msg)
		}
		// The slot on a millisecond: the resolution of the Redis delay
		// store's scores, so that a store that returns it "at" its slot
		// never returns it a fraction of a millisecond early.
		slot := now().Add(wait).Add(time.Millisecond - 1).Truncate(time.Millisecond)
		return r.delay(msg, attempt, slot, wait, true)
	}
}

// delay hands a copy of msg to Store, due at slot; reserved says the slot
// was reserved by this handling (given back when the store refuses).
func (r RateLimit) delay(msg *message.Message, attempt int, slot time.Time, wait time.Duration, reserved bool) ([]*message.Message, error) {
	next := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range msg.Metadata {
		next.Metadata.Set(k, v)
	}
	delete(next.Metadata, RateLimitedKey)
	next.Metadata.Set(RateSlotKey, strconv.Itoa(attempt)+":"+strconv.FormatInt(slot.UnixMilli(), 10))
	if err := r.Store.Delay(next, slot); err != nil {
		if reserved {
			// A context of its own: msg's may be the reason the store failed.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), releaseTimeout)
			rerr := r.Limiter.Release(ctx, r.Key)
			cancel()
			if rerr != nil {
				r.limiterError(msg, fmt.Errorf("rate limit %q: giving back a slot: %w", r.Key, rerr))
			}
		}
		return nil, &NotScheduledError{Attempt: attempt, Err: fmt.Errorf("rate limit %q: delaying by %s: %w", r.Key, wait, err)}
	}
	msg.Metadata.Set(RateLimitedKey, wait.String())
	if r.OnLimited != nil {
		r.OnLimited(msg, wait)
	}
	return nil, nil
}

func (r RateLimit) limiterError(msg *message.Message, err error) {
	if r.OnLimiterError != nil {
		r.OnLimiterError(msg, err)
	}
}

// releaseTimeout bounds giving a slot back after the store refused.
const releaseTimeout = 2 * time.Second

// slotOf returns the slot msg carries for attempt.
func slotOf(msg *message.Message, attempt int) (time.Time, bool) {
	a, ms, ok := strings.Cut(msg.Metadata.Get(RateSlotKey), ":")
	if !ok || a != strconv.Itoa(attempt) {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

// ErrBadRate is returned by NewLocalLimiter (and the Redis limiter's
// constructor) for a budget that is not at least one event per period,
// or whose interval (Per / Events) is shorter than MinRateInterval.
var ErrBadRate = errors.New("middleware: a rate limit needs Events ≥ 1 and Per / Events ≥ 1µs")

// MinRateInterval is the shortest emission interval (Per / Events) a
// limiter takes: a million events a second.
const MinRateInterval = time.Microsecond

// RateInterval returns the emission interval of events per per (one slot
// every interval), or ErrBadRate.
func RateInterval(events int, per time.Duration) (time.Duration, error) {
	if events < 1 || per <= 0 || per/time.Duration(events) < MinRateInterval {
		return 0, fmt.Errorf("%w: got %d per %s", ErrBadRate, events, per)
	}
	return per / time.Duration(events), nil
}

// LocalLimiter is the Limiter of one process: each key's budget lives in
// its memory, so two processes limited by LocalLimiters each allow the
// whole rate. It keeps one entry per key it was asked about (one per
// endpoint). Safe for concurrent use.
type LocalLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu  sync.Mutex
	tat map[string]time.Time // each key's next free slot
}

var _ Limiter = (*LocalLimiter)(nil)

// NewLocalLimiter returns a limiter allowing events attempts per period
// per key, one every per/events (burst 1; see Limiter), or ErrBadRate.
func NewLocalLimiter(events int, per time.Duration) (*LocalLimiter, error) {
	interval, err := RateInterval(events, per)
	if err != nil {
		return nil, err
	}
	return &LocalLimiter{interval: interval, now: time.Now, tat: map[string]time.Time{}}, nil
}

// Reserve implements Limiter; it never fails.
func (l *LocalLimiter) Reserve(_ context.Context, key string) (time.Duration, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	slot := l.tat[key]
	if slot.Before(now) {
		slot = now
	}
	l.tat[key] = slot.Add(l.interval)
	return slot.Sub(now), nil
}

// Release implements Limiter; it never fails.
func (l *LocalLimiter) Release(_ context.Context, key string) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if tat, ok := l.tat[key]; ok {
		l.tat[key] = tat.Add(-l.interval)
		if !l.tat[key].After(now) {
			delete(l.tat, key)
		}
	}
	return nil
}
