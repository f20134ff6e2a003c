package transports

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// PubSub is the Transport over any Watermill pub/sub an integrator brings
// (NATS JetStream, Kafka, AMQP, SQL …): pub is where messages are
// published, and subscribe(group) returns a subscriber of consumer group
// group, as Watermill's Pub/Sub suite's consumer-group constructor does.
// Durability, redelivery of what was not acked, and scale-out are the
// broker's: Drain returns at once and Close returns no messages.
//
// Close closes the subscribers subscribe returned; pub belongs to the
// caller, who closes it after the bus.
type PubSub struct {
	pub       message.Publisher
	subscribe func(group string) (message.Subscriber, error)

	mu     sync.Mutex
	subs   []message.Subscriber
	closed bool
}

var _ Transport = (*PubSub)(nil)

// NewPubSub returns the transport over pub and subscribe; subscribe nil
// means this process only publishes.
func NewPubSub(pub message.Publisher, subscribe func(group string) (message.Subscriber, error)) (*PubSub, error) {
	if pub == nil {
		return nil, errors.New("transports: NewPubSub: the publisher is required")
	}
	return &PubSub{pub: pub, subscribe: subscribe}, nil
}

// Publisher returns pub.
func (p *PubSub) Publisher() message.Publisher { return p.pub }

// Subscriber calls subscribe(group); ErrNoSubscriber when it is nil.
func (p *PubSub) Subscriber(group string) (message.Subscriber, error) {
	if p.subscribe == nil {
		return nil, ErrNoSubscriber
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	sub, err := p.subscribe(group)
	if err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, errors.New("transports: the subscribe func returned no subscriber")
	}
	p.subs = append(p.subs, sub)
	return sub, nil
}

// Delivers reports whether a subscribe func was given.
func (p *PubSub) Delivers() bool { return p.subscribe != nil }

// Ready is nil: a brought pub/sub reports its own connection trouble on
// Publish and Subscribe.
func (p *PubSub) Ready(context.Context) error { return nil }

// Drain returns at once: what was not handled stays with the broker.
func (p *PubSub) Drain(context.Context) error { return nil }

// Close closes the subscribers made through Subscriber, not pub.
func (p *PubSub) Close() (Left, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil
	}
	p.closed = true
	var errs []error
	for _, s := range p.subs {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return nil, errors.Join(errs...)
}
