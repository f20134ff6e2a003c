package transports

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Transport is what a bus runs on: a publisher where events are put and,
// where this process consumes them, a subscriber per consumer group, as
// Watermill's Pub/Sub suite understands consumer groups: every group gets
// each message of a topic, and within one group each message goes to one
// of its subscribers. Each implementation owns its lifecycle: connecting,
// readiness, background work, draining and closing.
//
// The bus calls Publisher and Subscriber while it starts, Ready whenever it
// is asked, then Drain and Close once, in that order.
type Transport interface {
	// Publisher is where the bus publishes its events, poisoned events
	// and incoming events. It stays usable until Close.
	Publisher() message.Publisher
	// Subscriber returns a subscriber of consumer group group. It returns
	// ErrNoSubscriber on a transport this process only publishes to.
	Subscriber(group string) (message.Subscriber, error)
	// Delivers reports whether this process runs the delivery chain on
	// the events topic: false where another process does (transport http
	// hands its events to a router; a Redis or brought pub/sub transport
	// opened only to publish).
	Delivers() bool
	// Ready returns nil once the transport is connected and every
	// subscription made through it has joined its group, otherwise an
	// error saying what it waits for.
	Ready(ctx context.Context) error
	// Drain waits until every message published so far has been handled
	// (acked), or ctx ends (its error is returned). A durable transport
	// returns at once: its messages survive the process.
	Drain(ctx context.Context) error
	// Close stops the transport: it stops handing out messages, ends its
	// background work and closes what it opened. It returns the messages
	// that were accepted and never handled, by topic; a durable transport
	// returns none (they stay with the broker). Close is idempotent.
	Close() (Left, error)
}

// Left is what a non-durable transport held at Close: the messages of
// each topic that were accepted and never acked.
type Left map[string][]*message.Message

// ErrNoSubscriber is returned by Transport.Subscriber on a transport that
// this process only publishes to.
var ErrNoSubscriber = errors.New("transports: this process does not consume from this transport")

// Depth is implemented by transports that know how many messages of a
// topic wait in this process: Queued not yet handed out, Outstanding
// accepted and not yet acked (queued or in flight).
type Depth interface {
	Queued(topic string) int
	Outstanding(topic string) int
}

// Delayer is implemented by transports that keep retries themselves
// until they are due: the memory transport in process, Redis in a sorted
// set every router shares, a brought pub/sub in process.
type Delayer interface {
	// PublishAt publishes msg to topic at due. It returns nil once msg is
	// kept as durably as the transport keeps its messages.
	PublishAt(topic string, due time.Time, msg *message.Message) error
	// Waiting returns how many messages wait and the earliest due time
	// (zero when none).
	Waiting() (int, time.Time)
}

// Expediter is implemented by the Delayers that can bring forward what
// middleware.Health held: Expedite makes every message waiting for topic
// that carries middleware.HeldKey due now, and returns how many it
// changed. Retries waiting out their schedule (no HeldKey) keep their due
// time. The bus calls it for an endpoint's retry topic once the endpoint
// is active again, so that the events taken before it was paused or
// disabled go out at once, not at the end of their hold.
type Expediter interface {
	Expedite(ctx context.Context, topic string) (int, error)
}

// Gate is called by a subscription before it takes messages: it blocks
// while the subscription should take none — its endpoint is paused — and
// returns nil once it may, or ctx's error when the subscription ends
// first. middleware.Breaker.Wait is one.
type Gate func(ctx context.Context) error

// Gated is implemented by the subscribers of the built-in transports: once
// SetGate is called (before Subscribe), each subscription asks gate before
// it takes a message — a memory worker before it takes the next one from
// its queue, a Redis subscription before each read of new entries (it
// still claims those of gone consumers) — so that the events of an endpoint that takes no attempts stay
// unread in the transport rather than being taken and put back.
type Gated interface {
	SetGate(gate Gate)
}
