package middleware

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// PoisonTopic is where memhook puts messages that failed for good.
const PoisonTopic = "memory.events.poison"

// Metadata keys PoisonQueue sets on the poisoned copy of a message. The
// reason and topic keys are watermill's own (middleware.ReasonForPoisonedKey,
// PoisonedTopicKey), so watermill tooling reads them too.
const (
	PoisonReasonKey   = "reason_poisoned"
	PoisonTopicKey    = "topic_poisoned"
	PoisonStatusKey   = "status_poisoned"
	PoisonAttemptsKey = "attempts_poisoned"
	// EndpointKey names the endpoint a message is for, on the copies
	// that leave its subscription: a retry in the delay store, a poisoned
	// event, an event shed from a backlog past its bound. A replay goes to
	// that endpoint only.
	EndpointKey = "memhook_endpoint"
	// OrderBrokenKey, on an event of an endpoint with ordering user, says
	// in a poisoned entry that the user's order was broken there: the
	// user's later events went on without it.
	OrderBrokenKey = "order_broken"
)

// DefaultPoisonRetryFor is PoisonQueue.RetryFor's default.
const DefaultPoisonRetryFor = 10 * time.Second

// NoPoisonRetry as PoisonQueue.RetryFor: a failed publish to the poison
// topic is tried once per handling.
const NoPoisonRetry time.Duration = -1

// The wait between two tries of a failed publish to the poison topic
// starts at poisonRetryMin and doubles up to poisonRetryMax, counting the
// failures of earlier handlings.
const (
	poisonRetryMin = 100 * time.Millisecond
	poisonRetryMax = 5 * time.Second
)

// PoisonQueue publishes every message whose handler fails for good to Topic
// on Publisher, with the reason, the last HTTP status (0 when the receiver
// never answered) and the number of attempts in metadata, then acks the
// original: the chain goes on with the next message. It sits outside Retry,
// so it sees only final failures.
//
// Two failures are not poisoned: a cancelled message context (shutdown:
// the error is returned, the message nacked and kept by the transport), and
// a publish to the poison topic that keeps failing (a full or unreachable
// Redis). A failed publish is tried again, after 100 ms doubling up to 5 s,
// for RetryFor and while the message's context lives, each failure reported
// to OnPublishFailed; when it still fails, the error is returned, so the
// message is nacked and a durable transport hands it out again. That
// message is marked, in metadata under a key private to this middleware,
// so that its next handling goes straight to the poison publish: the
// handlers below do not run again for it, and a receiver that refused an
// event for good does not get it again. (A transport that hands out a
// fresh copy — another process claiming the entry — has no mark, and runs
// the handlers again.) A panic in the handlers below is recovered and
// poisoned with its stack, so one bad message cannot loop.
type PoisonQueue struct {
	// Publisher receives poisoned messages; required.
	Publisher message.Publisher
	// Topic is the poison topic; empty means PoisonTopic.
	Topic string
	// SourceTopic is what the poisoned copy names as the topic it came
	// from (PoisonTopicKey); empty means the topic the handler subscribes
	// to. The handler of retries names the events topic, where a replay
	// belongs.
	SourceTopic string
	// RetryFor is how long one handling keeps trying a failed publish to
	// Topic before it nacks the message. 0 means DefaultPoisonRetryFor,
	// 10s; NoPoisonRetry tries once.
	RetryFor time.Duration
	// OnPoisoned, if set, is called after the message was published to the
	// poison topic, with the poisoned copy and the failure. When the
	// publish succeeded on a handling after the one that failed, the
	// failure is rebuilt from the copy's metadata: its text is the reason,
	// and it wraps a *StatusError when a status was recorded.
	OnPoisoned func(poisoned *message.Message, err error)
	// OnPublishFailed, if set, is called after each failed publish to the
	// poison topic, with the poisoned copy, how many publishes of it failed
	// so far (earlier handlings included), the wait before the next try (0
	// when this handling gives up: the message is nacked) and the error.
	// For logging; it must not block.
	OnPublishFailed func(poisoned *message.Message, failures int, retryIn time.Duration, err error)
}

// Middleware implements message.HandlerMiddleware.
func (p PoisonQueue) Middleware(h message.HandlerFunc) message.HandlerFunc {
	if p.Publisher == nil {
		panic("middleware: PoisonQueue needs a Publisher")
	}
	q := poisoner{
		PoisonQueue: p,
		topic:       cmp.Or(p.Topic, PoisonTopic),
		retryFor:    p.RetryFor,
		// Random, so that no producer can set it.
		mark: "_memhook_poison_pending_" + watermill.NewShortUUID(),
	}
	if q.retryFor == 0 {
		q.retryFor = DefaultPoisonRetryFor
	}
	return func(msg *message.Message) (out []*message.Message, err error) {
		if v, pending := msg.Metadata[q.mark]; pending {
			failed, _ := strconv.Atoi(v)
			return nil, q.poisonAgain(msg, failed)
		}
		defer func() {
			if rec := recover(); rec != nil {
				err = fmt.Errorf("panic in handler: %v\n%s", rec, debug.Stack())
				out = nil
			}
			if err == nil {
				return
			}
			if msg.Context().Err() != nil && errors.Is(err, context.Canceled) {
				return
			}
			if ns := (*NotScheduledError)(nil); errors.As(err, &ns) {
				return // nacked: the transport hands it out again
			}
			poisoned := Poisoned(msg, err)
			if p.SourceTopic != "" {
				poisoned.Metadata.Set(PoisonTopicKey, p.SourceTopic)
			}
			if perr := q.poison(msg, poisoned, err, 0); perr != nil {
				out, err = nil, perr
				return
			}
			out, err = nil, nil
		}()
		return h(msg)
	}
}

// poisoner is a PoisonQueue with its defaults applied.
type poisoner struct {
	PoisonQueue
	topic    string
	retryFor time.Duration
	// mark flags, in a message's metadata, a message whose poisoned copy
	// could not be published; its value counts the failed publishes.
	mark string
}

// poison publishes poisoned, the copy of msg for failure, trying again
// while it fails, for retryFor and while msg's context lives; failed is
// how many publishes failed on earlier handlings. Once published it calls
// OnPoisoned and returns nil. Otherwise it marks msg and returns the error
// to nack it with.
func (q poisoner) poison(msg, poisoned *message.Message, failure error, failed int) error {
	ctx := msg.Context()
	deadline := time.Now().Add(q.retryFor)
	for {
		perr := q.Publisher.Publish(q.topic, poisoned)
		if perr == nil {
			if q.OnPoisoned != nil {
				q.OnPoisoned(poisoned, failure)
			}
			return nil
		}
		failed++
		wait := min(poisonRetryMin<<min(failed-1, 10), poisonRetryMax, time.Until(deadline))
		if wait < 0 || ctx.Err() != nil {
			wait = 0
		}
		if q.OnPublishFailed != nil {
			q.OnPublishFailed(poisoned, failed, wait, perr)
		}
		if wait == 0 || !sleepCtx(ctx, wait) {
			for _, k := range []string{PoisonReasonKey, PoisonTopicKey, PoisonStatusKey, PoisonAttemptsKey} {
				msg.Metadata.Set(k, poisoned.Metadata.Get(k))
			}
			msg.Metadata.Set(q.mark, strconv.Itoa(failed))
			return errors.Join(failure, fmt.Errorf("cannot publish to poison topic %s: %w", q.topic, perr))
		}
	}
}

// poisonAgain publishes the poisoned copy of msg, marked by an earlier
// handling whose publish failed; its metadata holds the failure.
func (q poisoner) poisonAgain(msg *message.Message, failed int) error {
	poisoned := message.NewMessage(msg.UUID, msg.Payload)
	poisoned.SetContext(msg.Context())
	for k, v := range msg.Metadata {
		if k != q.mark {
			poisoned.Metadata.Set(k, v)
		}
	}
	status, _ := strconv.Atoi(msg.Metadata.Get(PoisonStatusKey))
	return q.poison(msg, poisoned, &earlierFailure{reason: msg.Metadata.Get(PoisonReasonKey), status: status}, failed)
}

// earlierFailure is the failure of a message that failed for good on an
// earlier handling, rebuilt from its metadata.
type earlierFailure struct {
	reason string
	status int
}

func (e *earlierFailure) Error() string { return e.reason }

func (e *earlierFailure) Unwrap() error {
	if e.status == 0 {
		return nil
	}
	return &StatusError{Code: e.status}
}

// sleepCtx waits d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Poisoned returns the copy of msg PoisonQueue publishes for failure err:
// same UUID and payload, metadata plus the reason, status and attempts.
func Poisoned(msg *message.Message, err error) *message.Message {
	c := message.NewMessage(msg.UUID, msg.Payload)
	c.SetContext(msg.Context()) // in-process values (e.g. who waits for the outcome) follow
	for k, v := range msg.Metadata {
		c.Metadata.Set(k, v)
	}
	attempts := 1
	var give *GiveUpError
	if errors.As(err, &give) {
		attempts = give.Attempts
	}
	status := 0
	var se *StatusError
	if errors.As(err, &se) {
		status = se.Code
	}
	c.Metadata.Set(PoisonReasonKey, err.Error())
	c.Metadata.Set(PoisonTopicKey, message.SubscribeTopicFromCtx(msg.Context()))
	c.Metadata.Set(PoisonStatusKey, strconv.Itoa(status))
	c.Metadata.Set(PoisonAttemptsKey, strconv.Itoa(attempts))
	return c
}
