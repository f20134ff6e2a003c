// Package transports holds the pub/subs under memhook's router. Each
// constructor returns Watermill's own message.Publisher and
// message.Subscriber; the bus chooses one with a switch.
package transports

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Errors returned by Memory.Publish.
var (
	// ErrQueueFull: the topic's queue holds Capacity messages; the message
	// was not accepted. Publish returns it at once, never blocking.
	ErrQueueFull = errors.New("transports: memory queue is full")
	// ErrClosed: the transport is closed or closing.
	ErrClosed = errors.New("transports: closed")
)

// MemoryConfig configures the in-memory transport.
type MemoryConfig struct {
	// Capacity bounds each topic's queue (messages accepted and not yet
	// handed to a subscriber); 0 means 10 000.
	Capacity int
	// Workers is how many messages one subscription holds at once, handed
	// out and not yet acked (deliveries in flight); 0 means 16.
	Workers int
	// NackDelay is the first wait before a nacked message is handed out
	// again; it doubles up to 32 times as long. 0 means 100ms.
	NackDelay time.Duration
	// Logger; nil means watermill.NopLogger.
	Logger watermill.LoggerAdapter
}

func (c *MemoryConfig) setDefaults() {
	if c.Capacity == 0 {
		c.Capacity = 10_000
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.NackDelay == 0 {
		c.NackDelay = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
}

// Validate reports every problem of the config at once.
func (c MemoryConfig) Validate() error {
	var errs []error
	if c.Capacity < 0 {
		errs = append(errs, fmt.Errorf("memory transport: Capacity must not be negative, got %d", c.Capacity))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("memory transport: Workers must not be negative, got %d", c.Workers))
	}
	if c.NackDelay < 0 {
		errs = append(errs, fmt.Errorf("memory transport: NackDelay must not be negative, got %s", c.NackDelay))
	}
	return errors.Join(errs...)
}

// Memory is the embedded transport: one bounded FIFO queue per topic,
// shared by every subscription of that topic (competing consumers, like one
// consumer group). Unlike watermill's gochannel it keeps messages published
// before anyone subscribes, never starts a goroutine per message (each
// subscription runs Workers goroutines), bounds memory by Capacity, and
// waits NackDelay (doubling) before handing out a nacked message again.
//
// Messages live only in this process: Shutdown reports those not acked.
type Memory struct {
	cfg MemoryConfig

	mu      sync.Mutex
	topics  map[string]*queue
	closed  bool
	closing chan struct{} // closed by Shutdown: workers stop taking messages
	abort   context.CancelFunc
	ctx     context.Context // parent of every handed-out message's context
	workers sync.WaitGroup
	idle    *sync.Cond // signalled when a topic's outstanding count drops
}

type queue struct {
	ch          chan *message.Message
	outstanding int                           // accepted and not yet acked; guarded by Memory.mu
	held        map[*message.Message]struct{} // taken by a worker and not yet acked
}

var (
	_ message.Publisher  = (*Memory)(nil)
	_ message.Subscriber = (*Memory)(nil)
)

// NewMemory returns an empty in-memory transport.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Memory{
		cfg:     cfg,
		topics:  map[string]*queue{},
		closing: make(chan struct{}),
		abort:   cancel,
		ctx:     ctx,
	}
	m.idle = sync.NewCond(&m.mu)
	return m, nil
}

func (m *Memory) topic(name string) *queue {
	q := m.topics[name]
	if q == nil {
		q = &queue{ch: make(chan *message.Message, m.cfg.Capacity), held: map[*message.Message]struct{}{}}
		m.topics[name] = q
	}
	return q
}

// Publish appends the messages to topic's queue without blocking. When the
// queue is full it returns an error wrapping ErrQueueFull that says how many
// of the messages were accepted (those before the first refused one); after
// Shutdown it returns ErrClosed.
func (m *Memory) Publish(topic string, messages ...*message.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	q := m.topic(topic)
	for i, msg := range messages {
		select {
		case q.ch <- msg: // handOut sends copies; the original stays here
			q.outstanding++
		default:
			if len(messages) == 1 {
				return ErrQueueFull
			}
			return fmt.Errorf("%w: %d of %d messages accepted", ErrQueueFull, i, len(messages))
		}
	}
	return nil
}

// Subscribe starts Workers goroutines that hand the topic's messages out on
// the returned channel, each waiting for its message's ack before taking the
// next. The channel closes when ctx is done or the transport shuts down. A
// message handed out carries a context that Shutdown cancels when its
// deadline passes.
func (m *Memory) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	q := m.topic(topic)
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	for range m.cfg.Workers {
		wg.Add(1)
		m.workers.Add(1)
		go func() {
			defer m.workers.Done()
			defer wg.Done()
			m.work(ctx, topic, q, out)
		}()
	}
	m.workers.Add(1) // Shutdown returns only after out is closed
	go func() {
		defer m.workers.Done()
		wg.Wait()
		close(out)
	}()
	return out, nil
}

func (m *Memory) work(ctx context.Context, topic string, q *queue, out chan<- *message.Message) {
	// Each message's context is a child of this worker's, not of m.ctx
	// directly: the parent's list of children is then per worker, and the
	// workers do not contend for one lock. Shutdown still cancels them all.
	wctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.closing:
			return
		case msg := <-q.ch:
			m.mu.Lock()
			q.held[msg] = struct{}{}
			m.mu.Unlock()
			if !m.handOut(ctx, wctx, q, msg, out) {
				m.putBack(topic, q, msg)
				return
			}
		}
	}
}

// handOffWait is how long a worker offers a message to a subscription that
// does not read before it puts the message back for another subscription.
// The router reads at once, so this only matters for a subscription whose
// reader went away without cancelling it.
const handOffWait = 100 * time.Millisecond

// handOut sends msg until it is acked; false means the subscription ended
// first and msg is still to be delivered (the caller puts it back).
func (m *Memory) handOut(ctx, parent context.Context, q *queue, msg *message.Message, out chan<- *message.Message) bool {
	delay := m.cfg.NackDelay
	for {
		c := msg.Copy()
		cctx, cancel := context.WithCancel(parent)
		c.SetContext(cctx)
		select {
		case out <- c:
		default:
			t := time.NewTimer(handOffWait)
			select {
			case out <- c:
				t.Stop()
			case <-t.C:
				cancel()
				if m.requeue(q, msg) {
					return true
				}
				continue
			case <-ctx.Done():
				t.Stop()
				cancel()
				return false
			case <-m.closing:
				t.Stop()
				cancel()
				return false
			}
		}
		acked, nacked := m.waitAck(c)
		cancel()
		if acked {
			m.mu.Lock()
			delete(q.held, msg)
			q.outstanding--
			m.idle.Broadcast()
			m.mu.Unlock()
			return true
		}
		if !nacked {
			return false // shut down while the handler held it
		}
		// Nacked: wait before handing it out again, never spin.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-m.ctx.Done():
			t.Stop()
			return false
		}
		delay = min(delay*2, m.cfg.NackDelay*32)
	}
}

// waitAck waits for the handler's verdict on c. After Shutdown it waits at
// most abortGrace more (the handler's context is cancelled, so it returns
// soon), then gives up: acked and nacked both false.
func (m *Memory) waitAck(c *message.Message) (acked, nacked bool) {
	select {
	case <-c.Acked():
		return true, false
	case <-c.Nacked():
		return false, true
	case <-m.ctx.Done():
	}
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-c.Acked():
		return true, false
	case <-c.Nacked():
		return false, true
	case <-t.C:
		return false, false
	}
}

// abortGrace is how long a handler may take to give back a message after
// Shutdown cancelled its context.
const abortGrace = 500 * time.Millisecond

// requeue moves a held message back to the tail of its queue; false when
// the queue is full.
func (m *Memory) requeue(q *queue, msg *message.Message) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case q.ch <- msg:
		delete(q.held, msg)
		return true
	default:
		return false
	}
}

// putBack returns a message the subscription could not deliver to the
// queue, so another subscription, or Shutdown's report, finds it.
func (m *Memory) putBack(topic string, q *queue, msg *message.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(q.held, msg)
	select {
	case q.ch <- msg:
	default:
		// Cannot happen while publishing is refused after close; if the
		// subscription ended while publishers filled the queue, the message
		// stays counted as outstanding and is reported by Shutdown.
		q.held[msg] = struct{}{}
		m.cfg.Logger.Error("memory transport: queue full, message kept aside", ErrQueueFull,
			watermill.LogFields{"topic": topic, "uuid": msg.UUID})
	}
}

// Outstanding returns how many messages of topic were accepted and not yet
// acked (queued or in flight).
func (m *Memory) Outstanding(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.topics[topic]; q != nil {
		return q.outstanding
	}
	return 0
}

// Queued returns how many messages of topic wait in its queue.
func (m *Memory) Queued(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.topics[topic]; q != nil {
		return len(q.ch)
	}
	return 0
}

// Drain waits until every message of the given topics has been acked, or
// ctx is done (its error is returned). It does not refuse publishes: the
// caller stops its own producers first, while handlers may still publish
// (to a poison topic, say).
func (m *Memory) Drain(ctx context.Context, topics ...string) error {
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.idle.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		busy := false
		for _, t := range topics {
			if q := m.topics[t]; q != nil && q.outstanding > 0 {
				busy = true
			}
		}
		if !busy {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		m.idle.Wait()
	}
}

// Shutdown stops the transport: it refuses publishes, stops handing out
// messages, cancels the context of those in flight and waits (up to a
// second) for their handlers to give them back. It returns every message
// that was accepted and never acked, per topic, so that the caller can
// report them. Call Drain first to let them finish. Shutdown is idempotent;
// a second call returns nothing.
func (m *Memory) Shutdown() map[string][]*message.Message {
	m.mu.Lock()
	if m.closed && isClosed(m.closing) {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.closing)
	m.mu.Unlock()

	m.abort()
	done := make(chan struct{})
	go func() { m.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		m.cfg.Logger.Error("memory transport: handlers still running after shutdown", nil, nil)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	left := map[string][]*message.Message{}
	for name, q := range m.topics {
		for msg := range q.held {
			left[name] = append(left[name], msg)
		}
		for len(q.ch) > 0 {
			left[name] = append(left[name], <-q.ch)
		}
	}
	return left
}

// Close implements message.Publisher and message.Subscriber: Shutdown,
// discarding the report. It is idempotent.
func (m *Memory) Close() error {
	m.Shutdown()
	return nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
