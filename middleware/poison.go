package middleware

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"

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
)

// PoisonQueue publishes every message whose handler fails for good to Topic
// on Publisher, with the reason, the last HTTP status (0 when the receiver
// never answered) and the number of attempts in metadata, then acks the
// original: the chain goes on with the next message. It sits outside Retry,
// so it sees only final failures.
//
// Two failures are not poisoned: a cancelled message context (shutdown:
// the error is returned, the message nacked and kept by the transport), and
// a failed publish to the poison topic (the error is returned and the
// message nacked, so a durable transport delivers it again later). A panic
// in the handlers below is recovered and poisoned with its stack, so one bad
// message cannot loop.
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
	// OnPoisoned, if set, is called after the message was published to the
	// poison topic, with the poisoned copy and the failure.
	OnPoisoned func(poisoned *message.Message, err error)
}

// Middleware implements message.HandlerMiddleware.
func (p PoisonQueue) Middleware(h message.HandlerFunc) message.HandlerFunc {
	if p.Publisher == nil {
		panic("middleware: PoisonQueue needs a Publisher")
	}
	topic := p.Topic
	if topic == "" {
		topic = PoisonTopic
	}
	return func(msg *message.Message) (out []*message.Message, err error) {
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
			if perr := p.Publisher.Publish(topic, poisoned); perr != nil {
				err = errors.Join(err, fmt.Errorf("cannot publish to poison topic %s: %w", topic, perr))
				return
			}
			if p.OnPoisoned != nil {
				p.OnPoisoned(poisoned, err)
			}
			out, err = nil, nil
		}()
		return h(msg)
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
