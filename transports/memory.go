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

// Defaults of MemoryConfig.
const (
	DefaultCapacity        = 10_000
	DefaultWorkers         = 16
	DefaultMemoryNackDelay = 100 * time.Millisecond
)

// MemoryConfig configures the in-memory transport.
type MemoryConfig struct {
	// Capacity bounds each topic's queue per consumer group (messages
	// accepted and not yet handed to a subscriber); 0 means
	// DefaultCapacity, 10 000.
	Capacity int
	// Workers is how many messages one subscription holds at once, handed
	// out and not yet acked (deliveries in flight); 0 means
	// DefaultWorkers, 16.
	Workers int
	// NackDelay is the first wait before a nacked message is handed out
	// again; it doubles up to 32 times as long. 0 means
	// DefaultMemoryNackDelay, 100ms.
	NackDelay time.Duration
	// Logger; nil means watermill.NopLogger.
	Logger watermill.LoggerAdapter
}

func (c *MemoryConfig) setDefaults() {
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.NackDelay == 0 {
		c.NackDelay = DefaultMemoryNackDelay
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

// Memory is the embedded transport: one bounded FIFO queue per topic and
// consumer group. Every group of a topic gets each message published to
// it; the subscriptions of one group share its queue (competing
// consumers). Memory.Subscribe subscribes as the unnamed group "";
// Subscriber(name) returns a subscriber of a named group. Unlike
// watermill's gochannel it keeps messages published before anyone
// subscribes (the first group to subscribe to a topic takes them; a group
// that subscribes later gets the messages published from then on), never
// starts a goroutine per message (each subscription runs Workers
// goroutines), bounds memory by Capacity, and waits NackDelay (doubling)
// before handing out a nacked message again.
//
// Messages live only in this process: Shutdown reports those not acked.
type Memory struct {
	cfg MemoryConfig

	mu      sync.Mutex
	topics  map[string]*groups
	closed  bool
	closing chan struct{} // closed by Shutdown: workers stop taking messages
	abort   context.CancelFunc
	ctx     context.Context // parent of every handed-out message's context
	workers sync.WaitGroup
	idle    *sync.Cond // signalled when a topic's outstanding count drops
	delays  *timerHeap // messages PublishAt holds until they are due
}

// groups are the queues of one topic, one per consumer group, in the
// order the groups appeared.
type groups struct {
	byName map[string]*queue
	order  []*queue
}

type queue struct {
	subscribed  bool // a subscription took from it: it is no longer the topic's backlog
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
		topics:  map[string]*groups{},
		closing: make(chan struct{}),
		abort:   cancel,
		ctx:     ctx,
	}
	m.idle = sync.NewCond(&m.mu)
	m.delays = newTimerHeap(func(topic string, msg *message.Message) error { return m.publish(topic, msg, false) })
	return m, nil
}

func (m *Memory) newQueue() *queue {
	return &queue{ch: make(chan *message.Message, m.cfg.Capacity), held: map[*message.Message]struct{}{}}
}

// group returns the queue of group on topic, made if missing. The first
// group to subscribe to a topic takes the backlog published before any
// group existed. The caller holds m.mu.
func (m *Memory) group(topic, group string) *queue {
	g := m.topics[topic]
	if g == nil {
		g = &groups{byName: map[string]*queue{}}
		m.topics[topic] = g
	}
	if q := g.byName[group]; q != nil {
		return q
	}
	if backlog := g.byName[""]; backlog != nil && !backlog.subscribed && len(g.order) == 1 {
		delete(g.byName, "")
		g.byName[group] = backlog
		return backlog
	}
	q := m.newQueue()
	g.byName[group] = q
	g.order = append(g.order, q)
	return q
}

// Publish appends the messages to the queue of every consumer group of
// topic (to the topic's backlog while it has none) without blocking. When a
// queue is full it returns an error wrapping ErrQueueFull that says how
// many of the messages were accepted (those before the first refused one,
// by every group); after Shutdown it returns ErrClosed.
func (m *Memory) Publish(topic string, messages ...*message.Message) error {
	return m.publishAll(topic, messages, true)
}

// PublishAt keeps msg and publishes it to topic at due (at once if due has
// passed), from one timer goroutine. Messages waiting count towards every
// queue's Capacity: PublishAt returns ErrQueueFull when Capacity messages
// already wait, and Publish refuses while a queue and the waiting messages
// together hold Capacity. Drain waits for them; Shutdown returns them.
func (m *Memory) PublishAt(topic string, due time.Time, msg *message.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.delays.Len() >= m.cfg.Capacity {
		return ErrQueueFull
	}
	if !m.delays.add(topic, msg, due) {
		return ErrClosed
	}
	return nil
}

// Waiting returns how many messages PublishAt holds and the earliest due
// time (zero when none).
func (m *Memory) Waiting() (int, time.Time) { return m.delays.Len(), m.delays.Oldest() }

// publish appends messages to topic; counting delayed, room is left for
// the messages PublishAt holds.
func (m *Memory) publish(topic string, msg *message.Message, countDelayed bool) error {
	return m.publishAll(topic, []*message.Message{msg}, countDelayed)
}

func (m *Memory) publishAll(topic string, messages []*message.Message, countDelayed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	g := m.topics[topic]
	if g == nil || len(g.order) == 0 {
		m.group(topic, "")
		g = m.topics[topic]
	}
	room := len(messages)
	delayed := 0
	if countDelayed {
		delayed = m.delays.Len()
	}
	for _, q := range g.order {
		room = max(min(room, cap(q.ch)-len(q.ch)-delayed), 0)
	}
	for _, msg := range messages[:room] {
		for _, q := range g.order {
			q.ch <- msg // handOut sends copies; the original stays here
			q.outstanding++
		}
	}
	switch {
	case room == len(messages):
		return nil
	case len(messages) == 1:
		return ErrQueueFull
	}
	return fmt.Errorf("%w: %d of %d messages accepted", ErrQueueFull, room, len(messages))
}

// Subscriber returns a subscriber of consumer group group: it gets every
// message published to a topic once the group exists (see Memory), shared
// among that group's subscriptions. Closing it ends its subscriptions, not
// the transport; the group's queue stays and keeps collecting messages.
func (m *Memory) Subscriber(group string) message.Subscriber {
	ctx, cancel := context.WithCancel(context.Background())
	return &MemoryGroup{m: m, group: group, ctx: ctx, cancel: cancel}
}

// MemoryGroup is a subscriber of one consumer group of a Memory.
type MemoryGroup struct {
	m      *Memory
	group  string
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
}

var _ message.Subscriber = (*MemoryGroup)(nil)

// Subscribe is Memory.Subscribe for the group: it ends when ctx is done,
// the group subscriber is closed or the transport shuts down.
func (g *MemoryGroup) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.ctx, cancel)
	out, err := g.m.subscribe(ctx, topic, g.group)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	return out, nil
}

// Close ends the group's subscriptions; it is idempotent.
func (g *MemoryGroup) Close() error {
	g.cancel()
	return nil
}

// Subscribe starts Workers goroutines that hand the topic's messages out on
// the returned channel, each waiting for its message's ack before taking the
// next. The channel closes when ctx is done or the transport shuts down. A
// message handed out carries a context that Shutdown cancels when its
// deadline passes.
func (m *Memory) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return m.subscribe(ctx, topic, "")
}

func (m *Memory) subscribe(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	q := m.group(topic, group)
	q.subscribed = true
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
// acked (queued or in flight), summed over its consumer groups.
func (m *Memory) Outstanding(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	if g := m.topics[topic]; g != nil {
		for _, q := range g.order {
			n += q.outstanding
		}
	}
	return n
}

// Queued returns how many messages of topic wait in its queues, summed over
// its consumer groups.
func (m *Memory) Queued(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	if g := m.topics[topic]; g != nil {
		for _, q := range g.order {
			n += len(q.ch)
		}
	}
	return n
}

// Drain waits until every message of the given topics (of every topic
// when none is given) has been acked, or ctx is done (its error is
// returned). It does not refuse publishes: the
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
		names := topics
		if len(names) == 0 {
			for t := range m.topics {
				names = append(names, t)
			}
		}
		for _, t := range names {
			if g := m.topics[t]; g != nil {
				for _, q := range g.order {
					busy = busy || q.outstanding > 0
				}
			}
		}
		busy = busy || m.delays.Len() > 0
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
func (m *Memory) Shutdown() Left {
	m.mu.Lock()
	if m.closed && isClosed(m.closing) {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.closing)
	m.mu.Unlock()

	m.abort()
	delayed := m.delays.close()
	done := make(chan struct{})
	go func() { m.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		m.cfg.Logger.Error("memory transport: handlers still running after shutdown", nil, nil)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	left := delayed
	if left == nil {
		left = Left{}
	}
	for name, g := range m.topics {
		seen := map[*message.Message]struct{}{} // a message left in several groups is reported once
		add := func(msg *message.Message) {
			if _, ok := seen[msg]; !ok {
				seen[msg] = struct{}{}
				left[name] = append(left[name], msg)
			}
		}
		for _, q := range g.order {
			for msg := range q.held {
				add(msg)
			}
			for len(q.ch) > 0 {
				add(<-q.ch)
			}
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
