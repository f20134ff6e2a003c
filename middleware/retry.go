package middleware

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Retry runs the handler again when it fails with a retryable error (see
// Retryable): after InitialInterval, then twice as long each time, plus up
// to Jitter of each delay. A 429 or 503 answer's Retry-After replaces the
// computed delay, capped at MaxRetryAfter. When Retry gives up it returns a
// *GiveUpError holding the attempts made and the last error; PoisonQueue,
// outside it, reads that.
//
// Retry waits on the message's context: when it is cancelled (shutdown),
// Retry stops at once and returns the context's error, which PoisonQueue
// passes through so the message is nacked, not poisoned.
//
// Each attempt runs with a context carrying its number (AttemptFromContext).
// memhook does not use watermill's middleware.Retry: in v1.5.1 its
// ShouldRetry advances the backoff, and it knows nothing of Retry-After.
type Retry struct {
	// MaxRetries is how many times a failed attempt is retried; 0 means
	// DefaultMaxRetries, the seed's 3. NoRetries disables retrying.
	MaxRetries int
	// InitialInterval is the first delay; 0 means DefaultInitialInterval,
	// 1s.
	InitialInterval time.Duration
	// MaxInterval caps the computed delays; 0 means no cap.
	MaxInterval time.Duration
	// Jitter is the fraction of each delay added at random, in [0, 1); 0
	// means DefaultJitter, 0.1. NoJitter disables it.
	Jitter float64
	// MaxRetryAfter caps a receiver's Retry-After; 0 means
	// DefaultMaxRetryAfter, 60s.
	MaxRetryAfter time.Duration
	// Delays, when not nil, is the schedule instead: Delays[0] after the
	// first attempt and so on, len(Delays) retries (MaxRetries,
	// InitialInterval and MaxInterval are then ignored).
	Delays []time.Duration
	// OnRetry, if set, is called before each wait with the attempt that
	// failed (1 for the first), the delay and the error.
	OnRetry func(msg *message.Message, attempt int, delay time.Duration, err error)
}

// Defaults of Retry and of the attempt it wraps: the seed's retry rules
// (MEM0_WEBHOOK_RETRY_COUNT, MEM0_WEBHOOK_RETRY_DELAY,
// MEM0_WEBHOOK_TIMEOUT). Every layer refers to these.
const (
	DefaultMaxRetries      = 3
	DefaultInitialInterval = time.Second
	DefaultMaxRetryAfter   = 60 * time.Second
	DefaultJitter          = 0.1
	// DefaultAttemptTimeout bounds one delivery attempt.
	DefaultAttemptTimeout = 30 * time.Second
)

// NoRetries as Retry.MaxRetries: every failure is final after one attempt.
const NoRetries = -1

// NoJitter as Retry.Jitter: delays are exact.
const NoJitter = -1.0

// GiveUpError is returned by Retry when a message failed for good: its
// error was permanent, or it was retried MaxRetries times.
type GiveUpError struct {
	// Attempts is how many times the handler ran.
	Attempts int
	// Err is the last attempt's error.
	Err error
}

// Error implements error.
func (e *GiveUpError) Error() string {
	return fmt.Sprintf("gave up after %d attempt(s): %v", e.Attempts, e.Err)
}

// Unwrap returns the last attempt's error.
func (e *GiveUpError) Unwrap() error { return e.Err }

func (r Retry) withDefaults() Retry {
	if r.Delays != nil {
		r.MaxRetries = max(len(r.Delays), 0)
		if r.MaxRetries == 0 {
			r.MaxRetries = NoRetries
		}
	}
	if r.MaxRetries == 0 {
		r.MaxRetries = DefaultMaxRetries
	}
	if r.MaxRetries < 0 {
		r.MaxRetries = 0
	}
	if r.InitialInterval <= 0 {
		r.InitialInterval = DefaultInitialInterval
	}
	if r.Jitter == 0 {
		r.Jitter = DefaultJitter
	}
	if r.Jitter < 0 {
		r.Jitter = 0
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = DefaultMaxRetryAfter
	}
	return r
}

// Delay returns the wait after the given failed attempt (1-based) when the
// receiver sent no Retry-After, before jitter: InitialInterval × 2^(attempt-1),
// capped by MaxInterval.
func (r Retry) Delay(attempt int) time.Duration {
	r = r.withDefaults()
	if r.Delays != nil {
		if attempt >= 1 && attempt <= len(r.Delays) {
			return r.Delays[attempt-1]
		}
		return 0
	}
	d := r.InitialInterval
	for i := 1; i < attempt; i++ {
		d *= 2
		if r.MaxInterval > 0 && d >= r.MaxInterval {
			return r.MaxInterval
		}
		if d <= 0 { // overflow
			return time.Duration(1<<63 - 1)
		}
	}
	if r.MaxInterval > 0 && d > r.MaxInterval {
		return r.MaxInterval
	}
	return d
}

// WorstCase returns the longest time Retry can spend on one message whose
// attempts each take at most attemptTimeout: every attempt plus every wait
// at its largest (jitter and MaxRetryAfter included). The Redis transport
// keeps its claim timeout above it.
func (r Retry) WorstCase(attemptTimeout time.Duration) time.Duration {
	r = r.withDefaults()
	total := time.Duration(r.MaxRetries+1) * attemptTimeout
	for a := 1; a <= r.MaxRetries; a++ {
		d := time.Duration(float64(r.Delay(a)) * (1 + r.Jitter))
		total += max(d, r.MaxRetryAfter)
	}
	return total
}

func (r Retry) wait(attempt int, err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return min(se.RetryAfter, r.MaxRetryAfter)
	}
	d := r.Delay(attempt)
	if r.Jitter > 0 {
		d += time.Duration(rand.Float64() * r.Jitter * float64(d))
	}
	return d
}

// Middleware implements message.HandlerMiddleware.
func (r Retry) Middleware(h message.HandlerFunc) message.HandlerFunc {
	r = r.withDefaults()
	return func(msg *message.Message) ([]*message.Message, error) {
		orig := msg.Context()
		defer msg.SetContext(orig)
		for attempt := 1; ; attempt++ {
			msg.SetContext(WithAttempt(orig, attempt))
			out, err := h(msg)
			if err == nil {
				return out, nil
			}
			if orig.Err() != nil {
				return nil, orig.Err()
			}
			if attempt > r.MaxRetries || !Retryable(err) {
				return nil, &GiveUpError{Attempts: attempt, Err: err}
			}
			delay := r.wait(attempt, err)
			if r.OnRetry != nil {
				r.OnRetry(msg, attempt, delay, err)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-orig.Done():
				t.Stop()
				return nil, orig.Err()
			}
		}
	}
}
