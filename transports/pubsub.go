package transports

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// PubSub is the Transport over any Watermill pub/sub an integrator brings
// (NATS JetStream, Kafka, AMQP, SQL …): pub is where messages are
// published, and subscribe(group) returns a subscriber of consumer group
// group, as Watermill's Pub/Sub suite's consumer-group constructor does.
// Durability, redelivery of what was not acked, and scale-out are the
// broker's: Drain returns at once and Close returns no messages.
//
// Retries wait in this process (PublishAt, a timer heap) and are
// published when due: a process that crashes loses the retries it held
// (the events were acknowledged to the broker when scheduled). Drain waits
// for them; Close returns those still waiting.
//
// Close closes the subscribers subscribe returned; pub belongs to the
// caller, who closes it after the bus.
type PubSub struct {
	pub       message.Publisher
	subscribe func(group string) (message.Subscriber, error)
	delays    *timerHeap

	mu     sync.Mutex
	subs   []message.Subscriber
	closed bool
}

var (
	_ Transport = (*PubSub)(nil)
	_ Delayer   = (*PubSub)(nil)
	_ Expediter = (*PubSub)(nil)
)

// NewPubSub returns the transport over pub and subscribe; subscribe nil
// means this process only publishes.
func NewPubSub(pub message.Publisher, subscribe func(group string) (message.Subscriber, error)) (*PubSub, error) {
	if pub == nil {
		return nil, errors.New("transports: NewPubSub: the publisher is required")
	}
	p := &PubSub{pub: pub, subscribe: subscribe}
	p.delays = newTimerHeap(func(it delayedItem) error { return pub.Publish(it.topic, it.msg) })
	return p, nil
}

// PublishAt keeps msg in this process and publishes it to topic at due.
func (p *PubSub) PublishAt(topic string, due time.Time, msg *message.Message) error {
	if !p.delays.add(delayedItem{due: due, topic: topic, msg: msg}) {
		return ErrClosed
	}
	return nil
}

// Waiting implements Delayer.
func (p *PubSub) Waiting() (int, time.Time) { return p.delays.Len(), p.delays.Oldest() }

// Expedite implements Expediter.
func (p *PubSub) Expedite(_ context.Context, topic string) (int, error) {
	return p.delays.expedite(topic), nil
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

// Drain waits until no retry waits in this process, or ctx ends; what was
// not handled otherwise stays with the broker.
func (p *PubSub) Drain(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for p.delays.Len() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close closes the subscribers made through Subscriber, not pub, and
// returns the retries that were still waiting.
func (p *PubSub) Close() (Left, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil
	}
	p.closed = true
	left := p.delays.close()
	var errs []error
	for _, s := range p.subs {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return left, errors.Join(errs...)
}
