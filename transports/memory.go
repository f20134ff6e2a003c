// Package transports holds the pub/subs under memhook's router. Each
// constructor returns Watermill's own message.Publisher and
// message.Subscriber; the bus chooses one with a switch.
package transports

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Errors returned by Memory.Publish.
var (
	// ErrQueueFull: the topic's queue holds Capacity messages (with
	// several consumer groups and MemoryConfig.OnShed set: every group's
	// queue does); the message was not accepted. Publish returns it at
	// once, never blocking. PublishAt returns it when Capacity messages
	// already wait for a group of the topic.
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
	// OnShed, when set, isolates the consumer groups of a topic from each
	// other: a message published to a topic with several groups is
	// refused (ErrQueueFull) only when every group's queue is full; a
	// full group gives up its oldest queued messages until it has room
	// (its queue and its waiting retries within Capacity, see PublishAt)
	// and OnShed gets a copy of each, with the topic and the group, to
	// keep it somewhere (the bus publishes it to its poison topic). A
	// full group with nothing queued to give up (its waiting retries fill
	// it) sheds the new message instead. OnShed is called on the publishing
	// goroutine once the Memory's lock is released, so it may publish to
	// the Memory; Drain waits for it to return. nil means no shedding: a
	// message is refused when any group's queue is full, so that no group
	// gets a message another missed. A topic with one group refuses when
	// it is full either way.
	OnShed func(topic, group string, msg *message.Message)
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
// it (with MemoryConfig.OnShed, a full group sheds its oldest instead of
// refusing for all); the subscriptions of one group share its queue
// (competing consumers); RemoveGroup ends a group. Memory.Subscribe
// subscribes as the unnamed group ""; Subscriber(name) returns a
// subscriber of a named group. Unlike watermill's gochannel it keeps
// messages published before anyone subscribes (the first group to
// subscribe to a topic takes them; a group that subscribes later gets the
// messages published from then on), never starts a goroutine per message
// (each subscription runs Workers goroutines), bounds memory by Capacity
// per group, and waits NackDelay (doubling) before handing out a nacked
// message again.
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

	// Messages PublishAt holds, counted under mu from PublishAt until
	// they are published (or taken back), by the consumer group they
	// count against, by topic, and in all.
	waitGroup map[string]int
	waitTopic map[string]int
	waitTotal int
	shedding  int // shed messages OnShed has not returned from yet
}

// groups are the queues of one topic, one per consumer group, in the
// order the groups appeared.
type groups struct {
	byName map[string]*queue
	order  []*queue
	names  []string // the groups' names in order, or [""] while there are none; replaced, never modified
	// retired are the queues RemoveGroup took out while messages of
	// theirs were in flight: Drain waits for those, Shutdown reports what
	// they still hold.
	retired []*queue
}

// setOrder makes order the topic's groups.
func (g *groups) setOrder(order []*queue) {
	g.order = order
	names := make([]string, 0, max(len(order), 1))
	for _, q := range order {
		names = append(names, q.name)
	}
	if len(names) == 0 {
		names = append(names, "")
	}
	g.names = names
}

type queue struct {
	name        string
	subscribed  bool // a subscription took from it: it is no longer the topic's backlog
	ch          chan *message.Message
	outstanding int                           // accepted and not yet acked; guarded by Memory.mu
	held        map[*message.Message]struct{} // taken by a worker and not yet acked
	lines       *lines                        // set by Order: one message per key at a time
}

// lines are the turns of an ordered queue (Memory.Order): per key, the
// message whose turn it is and those parked behind it, in the order
// accepted. Guarded by Memory.mu.
type lines struct {
	metaKey    string // the metadata key whose value is a message's key
	retryTopic string // where Next publishes a key's next message
	byKey      map[string]*line
	parked     int // messages parked behind another of their key
}

type line struct {
	turn    string             // UUID of the message whose turn it is
	waiting []*message.Message // parked, oldest first
}

// admitLocked reports whether msg goes into q's queue now: always on an
// unordered queue or for a message without a key; on an ordered one,
// when no message of its key has the turn (msg takes it). Otherwise msg
// is parked behind its key's last message. The caller holds m.mu.
func (q *queue) admitLocked(msg *message.Message) bool {
	o := q.lines
	if o == nil {
		return true
	}
	k := msg.Metadata.Get(o.metaKey)
	if k == "" {
		return true
	}
	if l := o.byKey[k]; l != nil {
		l.waiting = append(l.waiting, msg)
		o.parked++
		return false
	}
	o.byKey[k] = &line{turn: msg.UUID}
	return true
}

// parkedLocked returns how many messages q parks (Order).
func (q *queue) parkedLocked() int {
	if q.lines == nil {
		return 0
	}
	return q.lines.parked
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

		waitGroup: map[string]int{},
		waitTopic: map[string]int{},
	}
	m.idle = sync.NewCond(&m.mu)
	m.delays = newTimerHeap(m.publishDue)
	return m, nil
}

func (m *Memory) newQueue(name string) *queue {
	return &queue{name: name, ch: make(chan *message.Message, m.cfg.Capacity), held: map[*message.Message]struct{}{}}
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
		backlog.name = group
		g.setOrder(g.order)
		return backlog
	}
	q := m.newQueue(group)
	g.byName[group] = q
	g.setOrder(append(slices.Clip(g.order), q))
	return q
}

// Publish appends the messages to the queue of every consumer group of
// topic (to the topic's backlog while it has none) without blocking. A
// group's room is Capacity less its queue and the messages PublishAt
// holds for it. When a group has no room, the message is refused for
// every group, or, with MemoryConfig.OnShed and another group with room,
// a full group sheds its oldest queued messages (see OnShed). A refusal returns an
// error wrapping ErrQueueFull that says how many of the messages were
// accepted (those before the first refused one); after Shutdown Publish
// returns ErrClosed.
func (m *Memory) Publish(topic string, messages ...*message.Message) error {
	return m.publishAll(topic, messages, true)
}

// PublishAt keeps msg and publishes it to topic at due (at once if due has
// passed), from one timer goroutine. A waiting message counts against the
// consumer groups topic has when PublishAt is called (its backlog "" when
// it has none), and against their queues of that name on every topic: a
// group's queue and the messages waiting for it together stay within
// Capacity when it is published to (an endpoint's events queue makes room
// for the retries waiting on its retry topic, the same group). PublishAt
// returns ErrQueueFull when Capacity messages already wait for one of
// those groups; messages waiting for another group do not count. Drain
// waits for them; Shutdown returns them.
func (m *Memory) PublishAt(topic string, due time.Time, msg *message.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.publishAtLocked(topic, due, msg)
}

// publishAtLocked is PublishAt; the caller holds m.mu.
func (m *Memory) publishAtLocked(topic string, due time.Time, msg *message.Message) error {
	if m.closed {
		return ErrClosed
	}
	names := m.groupNames(topic)
	for _, name := range names {
		if m.waitGroup[name] >= m.cfg.Capacity {
			return ErrQueueFull
		}
	}
	if !m.delays.add(delayedItem{due: due, topic: topic, msg: msg, groups: names}) {
		return ErrClosed
	}
	m.countWaiting(topic, names, 1)
	return nil
}

// Expedite implements Expediter: what Health held for topic is due now.
func (m *Memory) Expedite(_ context.Context, topic string) (int, error) {
	return m.delays.expedite(topic), nil
}

// Waiting returns how many messages PublishAt holds and the earliest due
// time (zero when none).
func (m *Memory) Waiting() (int, time.Time) {
	m.mu.Lock()
	n := m.waitTotal
	m.mu.Unlock()
	return n, m.delays.Oldest()
}

// WaitingOf returns how many messages PublishAt holds for topic and the
// earliest of their due times (zero when none): an endpoint's waiting
// retries when topic is its retry topic. It looks at every waiting
// message; it is meant for status, not for every publish.
func (m *Memory) WaitingOf(topic string) (int, time.Time) {
	m.mu.Lock()
	n := m.waitTopic[topic]
	m.mu.Unlock()
	if n == 0 {
		return 0, time.Time{}
	}
	return n, m.delays.oldestOf(topic)
}

// groupNames returns the names of topic's consumer groups, [""] while it
// has none. The caller holds m.mu.
func (m *Memory) groupNames(topic string) []string {
	if g := m.topics[topic]; g != nil && g.names != nil {
		return g.names
	}
	return backlogNames
}

var backlogNames = []string{""}

// countWaiting adds d messages waiting for topic and its groups names.
// The caller holds m.mu.
func (m *Memory) countWaiting(topic string, names []string, d int) {
	m.waitTotal += d
	if m.waitTopic[topic] += d; m.waitTopic[topic] == 0 {
		delete(m.waitTopic, topic)
	}
	for _, name := range names {
		if m.waitGroup[name] += d; m.waitGroup[name] == 0 {
			delete(m.waitGroup, name)
		}
	}
	if d < 0 {
		m.idle.Broadcast()
	}
}

// publishDue publishes a message of the delay store that came due; it
// stops counting as waiting once its topic accepts it.
func (m *Memory) publishDue(it delayedItem) error {
	m.mu.Lock()
	_, shed, err := m.publishLocked(it.topic, []*message.Message{it.msg}, false)
	if err == nil {
		m.countWaiting(it.topic, it.groups, -1)
	}
	m.mu.Unlock()
	m.handShed(shed)
	return err
}

// shedMsg is a message a full group gave up, handed to OnShed once
// m.mu is released.
type shedMsg struct {
	topic, group string
	msg          *message.Message
}

// publishAll appends messages to topic; counting delayed, room is left
// for the messages PublishAt holds.
func (m *Memory) publishAll(topic string, messages []*message.Message, countDelayed bool) error {
	m.mu.Lock()
	accepted, shed, err := m.publishLocked(topic, messages, countDelayed)
	m.mu.Unlock()
	m.handShed(shed)
	switch {
	case err == nil || !errors.Is(err, ErrQueueFull) || len(messages) == 1:
		return err
	}
	return fmt.Errorf("%w: %d of %d messages accepted", err, accepted, len(messages))
}

// publishLocked appends messages to every group's queue of topic until
// one is refused, and returns how many were accepted and what full groups
// shed for them (counted in m.shedding). The caller holds m.mu and hands
// the shed messages to handShed once it released it.
func (m *Memory) publishLocked(topic string, messages []*message.Message, countDelayed bool) (int, []shedMsg, error) {
	if m.closed {
		return 0, nil, ErrClosed
	}
	g := m.topics[topic]
	if g == nil || len(g.order) == 0 {
		m.group(topic, "")
		g = m.topics[topic]
	}
	room := func(q *queue) int {
		n := cap(q.ch) - len(q.ch) - q.parkedLocked()
		if countDelayed {
			n -= m.waitGroup[q.name]
		}
		return n
	}
	var shed []shedMsg
	accepted := 0
	for _, msg := range messages {
		full := 0
		for _, q := range g.order {
			if room(q) <= 0 {
				full++
			}
		}
		if full == len(g.order) || full > 0 && m.cfg.OnShed == nil {
			break
		}
	queues:
		for _, q := range g.order {
			for room(q) <= 0 { // only workers take meanwhile: room only grows
				select {
				case old := <-q.ch:
					q.outstanding--
					shed = append(shed, shedMsg{topic: topic, group: q.name, msg: old})
				default: // nothing queued to give up: its waiting messages fill it
					shed = append(shed, shedMsg{topic: topic, group: q.name, msg: msg})
					continue queues
				}
			}
			q.outstanding++
			if q.admitLocked(msg) {
				q.ch <- msg // handOut sends copies; the original stays here
			}
		}
		accepted++
	}
	m.shedding += len(shed)
	if accepted < len(messages) {
		return accepted, shed, ErrQueueFull
	}
	return accepted, shed, nil
}

// handShed hands each shed message to OnShed, as a copy (the original
// may still be queued for other groups), then stops counting it. It is
// called without m.mu.
func (m *Memory) handShed(shed []shedMsg) {
	if len(shed) == 0 {
		return
	}
	for _, s := range shed {
		m.passTurn(s.topic, s.group, s.msg)
		m.cfg.OnShed(s.topic, s.group, s.msg.Copy())
	}
	m.mu.Lock()
	m.shedding -= len(shed)
	m.idle.Broadcast()
	m.mu.Unlock()
}

// takeParkedLocked empties q's lines (Order) and returns what they parked,
// key by key, oldest first. The caller holds m.mu.
func (q *queue) takeParkedLocked() []*message.Message {
	if q.lines == nil {
		return nil
	}
	var out []*message.Message
	for _, l := range q.lines.byKey {
		out = append(out, l.waiting...)
	}
	clear(q.lines.byKey)
	q.lines.parked = 0
	return out
}

// Order makes the queue of group on topic ordered by metaKey: of the
// messages published from then on that carry a value for metaKey (their
// key), one per key at a time is in the queue or out with a subscription
// — it has its key's turn — and the others wait, parked in the order
// Publish accepted them, counted against the group's Capacity. Next ends
// a turn: it hands the key's next message to retryTopic, where it has
// the turn in turn. Messages without the key are not held. Call Order
// before publishing to the group (an endpoint's group, made by it).
func (m *Memory) Order(topic, group, metaKey, retryTopic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.group(topic, group)
	if q.lines == nil {
		q.lines = &lines{byKey: map[string]*line{}}
	}
	q.lines.metaKey, q.lines.retryTopic = metaKey, retryTopic
}

// Next ends the turn of the message uuid of key on the ordered queue of
// group on topic (Order), once it is delivered or given up: the key's
// next parked message, if any, gets the turn and is published to the
// queue's retry topic at once (through the delay store, so that it keeps
// its room). A message that does not have its key's turn (a replayed
// dead letter, a second Next) changes nothing. When the retry topic has
// no room the turn stays and Next returns the error: call it again.
func (m *Memory) Next(topic, group, key, uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nextLocked(topic, group, key, uuid)
}

func (m *Memory) nextLocked(topic, group, key, uuid string) error {
	g := m.topics[topic]
	if g == nil {
		return nil
	}
	q := g.byName[group]
	if q == nil || q.lines == nil {
		return nil
	}
	o := q.lines
	l := o.byKey[key]
	if l == nil || l.turn != uuid {
		return nil
	}
	if len(l.waiting) == 0 {
		delete(o.byKey, key)
		return nil
	}
	next := l.waiting[0]
	if err := m.publishAtLocked(o.retryTopic, time.Time{}, next); err != nil {
		return err
	}
	l.waiting[0] = nil
	l.waiting = l.waiting[1:]
	l.turn = next.UUID
	o.parked--
	q.outstanding--
	m.idle.Broadcast()
	return nil
}

// passTurn passes on the turn of msg, shed from an ordered queue, so that
// its key's next message is not held back for ever; a failure is logged
// (the turn stays with a message that is gone: that key waits until
// Shutdown reports its parked messages).
func (m *Memory) passTurn(topic, group string, msg *message.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.topics[topic]
	if g == nil || g.byName[group] == nil || g.byName[group].lines == nil {
		return
	}
	key := msg.Metadata.Get(g.byName[group].lines.metaKey)
	if key == "" {
		return
	}
	if err := m.nextLocked(topic, group, key, msg.UUID); err != nil {
		m.cfg.Logger.Error("memory transport: passing on the turn of a shed message failed", err,
			watermill.LogFields{"topic": topic, "group": group, "uuid": msg.UUID})
	}
}

// RemoveGroup ends consumer group group of topic (an endpoint removed):
// it gets no message published from then on, the messages PublishAt holds
// stop counting against it, and RemoveGroup returns the messages its
// queue held, oldest first, for the caller to keep (the bus poisons them).
// When group was topic's last group it also returns the messages
// PublishAt holds for topic, soonest due first: nobody would take them.
// Messages in flight are not returned: the group's subscriptions may
// still finish them (Drain waits for them); close the group's subscribers
// to end those. A message a subscription gives back after RemoveGroup
// (it ended before a handler took it) is reported by Shutdown. A group of
// that name subscribing again later is a new group (see Memory: it gets
// the messages published from then on). Removing a group that does not
// exist returns nil.
func (m *Memory) RemoveGroup(topic, group string) []*message.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.topics[topic]
	if g == nil || g.byName[group] == nil {
		return nil
	}
	q := g.byName[group]
	delete(g.byName, group)
	g.setOrder(slices.DeleteFunc(slices.Clone(g.order), func(o *queue) bool { return o == q }))
	var left []*message.Message
	for taken := true; taken; {
		select {
		case msg := <-q.ch:
			left = append(left, msg)
		default:
			taken = false
		}
	}
	left = append(left, q.takeParkedLocked()...)
	q.outstanding -= len(left)
	g.retired = slices.DeleteFunc(g.retired, func(r *queue) bool { return r.outstanding == 0 })
	if q.outstanding > 0 {
		g.retired = append(g.retired, q)
	}
	if len(g.order) == 0 {
		for _, it := range m.delays.removeTopic(topic) {
			m.countWaiting(it.topic, it.groups, -1)
			left = append(left, it.msg)
		}
	}
	m.idle.Broadcast()
	return left
}

// QueuedOf returns how many messages wait in the queue of group on topic,
// not yet handed out, parked ones (Order) included: an endpoint's backlog
// on the events topic or on its retry topic. 0 when the group does not
// exist.
func (m *Memory) QueuedOf(topic, group string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.topics[topic]; g != nil {
		if q := g.byName[group]; q != nil {
			return len(q.ch) + q.parkedLocked()
		}
	}
	return 0
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
	gate   Gate
}

var (
	_ message.Subscriber = (*MemoryGroup)(nil)
	_ Gated              = (*MemoryGroup)(nil)
)

// SetGate makes the group's subscriptions made from then on ask gate
// before each worker takes a message.
func (g *MemoryGroup) SetGate(gate Gate) { g.gate = gate }

// Subscribe is Memory.Subscribe for the group: it ends when ctx is done,
// the group subscriber is closed or the transport shuts down.
func (g *MemoryGroup) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.ctx, cancel)
	out, err := g.m.subscribe(ctx, topic, g.group, g.gate)
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
	return m.subscribe(ctx, topic, "", nil)
}

func (m *Memory) subscribe(ctx context.Context, topic, group string, gate Gate) (<-chan *message.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	q := m.group(topic, group)
	q.subscribed = true
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	var gctx context.Context // ends with ctx or at Shutdown: what gate waits under
	if gate != nil {
		var gcancel context.CancelFunc
		gctx, gcancel = context.WithCancel(ctx)
		wg.Add(1)
		m.workers.Add(1)
		go func() {
			defer m.workers.Done()
			defer wg.Done()
			select {
			case <-gctx.Done():
			case <-m.closing:
				gcancel()
			}
		}()
	}
	for range m.cfg.Workers {
		wg.Add(1)
		m.workers.Add(1)
		go func() {
			defer m.workers.Done()
			defer wg.Done()
			m.work(ctx, topic, q, out, gctx, gate)
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

func (m *Memory) work(ctx context.Context, topic string, q *queue, out chan<- *message.Message, gctx context.Context, gate Gate) {
	// Each message's context is a child of this worker's, not of m.ctx
	// directly: the parent's list of children is then per worker, and the
	// workers do not contend for one lock. Shutdown still cancels them all.
	wctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	wait := time.NewTimer(handOffWait) // reused by every hand-out that waits (no stale tick since Go 1.23)
	wait.Stop()
	for {
		if gate != nil && gate(gctx) != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-m.closing:
			return
		case msg := <-q.ch:
			m.mu.Lock()
			q.held[msg] = struct{}{}
			m.mu.Unlock()
			if !m.handOut(ctx, wctx, q, msg, out, wait) {
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
// first and msg is still to be delivered (the caller puts it back). t is
// the worker's timer, stopped.
func (m *Memory) handOut(ctx, parent context.Context, q *queue, msg *message.Message, out chan<- *message.Message, t *time.Timer) bool {
	delay := m.cfg.NackDelay
	for {
		cctx, cancel := context.WithCancel(parent)
		c := handOutCopy(cctx, msg)
		select {
		case out <- c:
		default:
			t.Reset(handOffWait)
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
		t.Reset(delay)
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

// handOutCopy is msg.Copy() in ctx, with the metadata cloned in one go
// rather than set key by key (Copy's map growth was 2 % of a memory
// router's CPU).
func handOutCopy(ctx context.Context, msg *message.Message) *message.Message {
	c := message.NewMessage(msg.UUID, msg.Payload)
	if msg.Metadata != nil {
		c.Metadata = maps.Clone(msg.Metadata)
	}
	c.SetContext(ctx)
	return c
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
// acked (queued or in flight), summed over its consumer groups (and those
// RemoveGroup removed while messages of theirs were in flight).
func (m *Memory) Outstanding(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	if g := m.topics[topic]; g != nil {
		for _, q := range g.order {
			n += q.outstanding
		}
		for _, q := range g.retired {
			n += q.outstanding
		}
	}
	return n
}

// Queued returns how many messages of topic wait in its queues, summed over
// its consumer groups (as Outstanding).
func (m *Memory) Queued(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	if g := m.topics[topic]; g != nil {
		for _, q := range g.order {
			n += len(q.ch)
		}
		for _, q := range g.retired {
			n += len(q.ch)
		}
	}
	return n
}

// Drain waits until every message of the given topics (of every topic
// when none is given) has been acked, none waits in PublishAt for them,
// and OnShed has returned for every shed message, or ctx is done (its
// error is returned). Of a group RemoveGroup removed it waits for the
// messages in flight only. It does not refuse publishes: the
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
				for _, q := range g.retired {
					busy = busy || q.outstanding > len(q.ch) // what is queued there has no taker
				}
			}
			busy = busy || m.waitTopic[t] > 0
		}
		busy = busy || m.shedding > 0 || len(topics) == 0 && m.waitTotal > 0
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
	clear(m.waitGroup)
	clear(m.waitTopic)
	m.waitTotal = 0
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
		for _, q := range slices.Concat(g.order, g.retired) {
			for msg := range q.held {
				add(msg)
			}
			for len(q.ch) > 0 {
				add(<-q.ch)
			}
			for _, msg := range q.takeParkedLocked() {
				add(msg)
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
