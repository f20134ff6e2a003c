package middleware

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// AttemptKey is the metadata key holding a message's attempt number (1
// for the first; absent means 1). Schedule sets it on the copy it hands
// to the DelayStore, so that the number travels with the message through
// any transport.
const AttemptKey = "memhook_attempt"

// AttemptOf returns msg's attempt number from its metadata, 1 when absent
// or unreadable.
func AttemptOf(msg *message.Message) int {
	v := msg.Metadata.Get(AttemptKey)
	if v == "" {
		return 1 // a first attempt: no Atoi error to allocate
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return n
	}
	return 1
}

// DelayStore keeps a message until its due time, then hands it back for
// its next attempt (on the transport's retry topic). Delay returns nil
// only once the store holds msg at least as durably as the transport held
// the message it came from: the caller then acknowledges that one.
type DelayStore interface {
	Delay(msg *message.Message, due time.Time) error
}

// DelayFunc is a DelayStore made of a function.
type DelayFunc func(msg *message.Message, due time.Time) error

// Delay implements DelayStore.
func (f DelayFunc) Delay(msg *message.Message, due time.Time) error { return f(msg, due) }

// NotScheduledError is returned by Schedule when a retry could not be
// handed to the DelayStore: PoisonQueue passes it through, so the message
// is nacked and comes back from its transport (attempted again, at most
// one extra attempt), never poisoned for it.
type NotScheduledError struct {
	// Attempt is the attempt that failed; Err why it was not scheduled.
	Attempt int
	Err     error
}

// Error implements error.
func (e *NotScheduledError) Error() string {
	return fmt.Sprintf("retry of attempt %d not scheduled: %v", e.Attempt, e.Err)
}

// Unwrap returns why.
func (e *NotScheduledError) Unwrap() error { return e.Err }

// Schedule makes one attempt per handling: when the handler below fails
// with a retryable error (Retryable) and the schedule has a delay left for
// this attempt, it hands a copy of the message — same UUID, so the same
// webhook-id; attempt number in AttemptKey — to Store, due after that
// delay plus up to Jitter of it (or the receiver's Retry-After, capped at
// MaxRetryAfter), and returns nil: the message is acknowledged where it
// came from, and no worker waits. It never sleeps.
//
// A permanent error or the last attempt's returns a *GiveUpError for
// PoisonQueue, outside it. A Store that fails returns a
// *NotScheduledError (the message is nacked). Each attempt's context
// carries its number (AttemptFromContext).
type Schedule struct {
	// Delays holds the wait before each retry: Delays[0] after the first
	// attempt, and so on; len(Delays) retries in all. Empty means none.
	Delays []time.Duration
	// Jitter is the fraction of each delay added at random, in [0, 1); 0
	// means DefaultJitter. NoJitter disables it.
	Jitter float64
	// MaxRetryAfter caps a receiver's Retry-After; 0 means
	// DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Store keeps the retries; required.
	Store DelayStore
	// Now is the clock of due times; nil means time.Now.
	Now func() time.Time
	// OnRetry, if set, is called once a retry is scheduled, with the
	// attempt that failed (1 for the first), the delay and the error.
	OnRetry func(msg *message.Message, attempt int, delay time.Duration, err error)
}

// SeedDelays returns the seed's schedule: retries delays, the first
// initial and each next one twice the one before (1s, 2s, 4s for the
// defaults).
func SeedDelays(retries int, initial time.Duration) []time.Duration {
	out := make([]time.Duration, 0, max(retries, 0))
	d := initial
	for range retries {
		out = append(out, d)
		if d < time.Duration(1<<62) {
			d *= 2
		}
	}
	return out
}

// Wait returns the delay before the retry that follows the given failed
// attempt (1-based) for err, jitter included; false when the schedule has
// no retry left.
func (s Schedule) Wait(attempt int, err error) (time.Duration, bool) {
	if attempt < 1 || attempt > len(s.Delays) {
		return 0, false
	}
	maxRA := s.MaxRetryAfter
	if maxRA <= 0 {
		maxRA = DefaultMaxRetryAfter
	}
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return min(se.RetryAfter, maxRA), true
	}
	d := s.Delays[attempt-1]
	jitter := s.Jitter
	if jitter == 0 {
		jitter = DefaultJitter
	}
	if jitter > 0 {
		d += time.Duration(rand.Float64() * jitter * float64(d))
	}
	return d, true
}

// Middleware implements message.HandlerMiddleware.
func (s Schedule) Middleware(h message.HandlerFunc) message.HandlerFunc {
	if s.Store == nil {
		panic("middleware: Schedule needs a Store")
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		attempt := AttemptOf(msg)
		orig := msg.Context()
		msg.SetContext(WithAttempt(orig, attempt))
		out, err := h(msg)
		msg.SetContext(orig)
		if err == nil {
			return out, nil
		}
		if orig.Err() != nil {
			return nil, orig.Err()
		}
		if ns := (*NotScheduledError)(nil); errors.As(err, &ns) {
			return nil, err // a hold below (health, rate limit) the store refused: no attempt was made
		}
		delay, left := s.Wait(attempt, err)
		if !left || !Retryable(err) {
			return nil, &GiveUpError{Attempts: attempt, Err: err}
		}
		next := message.NewMessage(msg.UUID, msg.Payload)
		for k, v := range msg.Metadata {
			next.Metadata.Set(k, v)
		}
		next.Metadata.Set(AttemptKey, strconv.Itoa(attempt+1))
		if serr := s.Store.Delay(next, now().Add(delay)); serr != nil {
			return nil, &NotScheduledError{Attempt: attempt, Err: errors.Join(serr, err)}
		}
		if s.OnRetry != nil {
			s.OnRetry(msg, attempt, delay, err)
		}
		return nil, nil
	}
}
