package transports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/wmlog"
)

// DefaultTrimInterval is RedisConfig.TrimInterval's default: how often a
// consuming Redis transport sheds the backlogs past their bound and
// removes the entries every consumer group acknowledged from the streams
// it reads.
const DefaultTrimInterval = 5 * time.Second

// RedisTransport is the Transport of router processes sharing Redis
// Streams: a RedisPublisher for every process and, in a process that
// consumes, a RedisSubscriber per consumer group. Its delay store
// (PublishAt) is a sorted set per topic every router shares; every
// consuming router moves the due retries of the topics it subscribes to
// onto their streams. Subscriptions join their group in the background,
// retrying while Redis is unreachable or full (logged at WARN, at most
// once per try); Ready reports until all have joined. While it consumes
// it trims, every RedisConfig.TrimInterval, the entries of the streams it
// reads (the poison stream aside) that every group acknowledged — first
// shedding the backlog of each group past its bound (see Bound), so that
// one group left behind never fills the events stream for all — and
// announces its consumer alive every second, one heartbeat for all its
// subscribers: when a process stops announcing itself, the others take
// over its entries within seconds (see RedisSubscriber). Nothing is lost
// at Close: what was not acked stays in the stream for another process.
type RedisTransport struct {
	cfg      RedisConfig
	log      *slog.Logger
	pub      *RedisPublisher
	consumes bool

	mu     sync.Mutex
	subs   []*RedisSubscriber
	closed bool

	trimOnce sync.Once
	stop     context.CancelFunc // ends the trim and move loops
	ctx      context.Context
	trimmed  chan struct{} // closed when the trim loop ends
	moved    chan struct{} // closed when the move loop ends
	delays   redisDelays
	alive    *heartbeat                      // of every subscriber's consumer (one name per process)
	bounds   bounds                          // the backlog bounds of the events stream's groups
	orders   map[string]map[string]orderSpec // by group and topic (Order); guarded by mu
}

var (
	_ Transport = (*RedisTransport)(nil)
	_ Delayer   = (*RedisTransport)(nil)
	_ Expediter = (*RedisTransport)(nil)
)

// NewRedisTransport returns a transport on the Redis cfg names. With
// consumes false this process only publishes: Subscriber returns
// ErrNoSubscriber. cfg.MaxIdleTime is required when it consumes. It does
// not connect: a Redis that is down shows in Ready and in the log.
func NewRedisTransport(cfg RedisConfig, consumes bool, log *slog.Logger) (*RedisTransport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wlog := wmlog.New(log, slog.LevelDebug)
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	if consumes && cfg.MaxIdleTime == 0 {
		return nil, errors.New("redis transport: MaxIdleTime is required to consume: set it to ClaimTimeout(the worst-case time to handle one message)")
	}
	pub, err := NewRedisPublisher(cfg, wlog)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	return &RedisTransport{cfg: cfg, log: log, pub: pub, consumes: consumes, ctx: ctx, stop: stop,
		trimmed: make(chan struct{}), moved: make(chan struct{}),
		alive: newHeartbeat(pub.client, cfg, wlog)}, nil
}

// Publisher returns the RedisPublisher.
func (t *RedisTransport) Publisher() message.Publisher { return t.pub }

// Subscriber returns a new RedisSubscriber of group, with this process's
// consumer name, creating the group where missing at RedisConfig's
// GroupStart (by default with the entries the stream holds). The first
// one starts the trim and move loops.
func (t *RedisTransport) Subscriber(group string) (message.Subscriber, error) {
	return t.SubscriberFrom(group, t.cfg.GroupStart)
}

// SubscriberFrom is Subscriber creating group, on the streams where it is
// missing, at start: GroupStartNewest for the events subscription of an
// endpoint added at runtime, which gets the events appended from then on;
// GroupStartOldest for those made at start-up (nothing published before
// the first router started is missed) and for retry topics (a retry may
// be moved there before the group exists). A group that exists keeps its
// position: a router restarted, or a second router, resumes where the
// group is.
func (t *RedisTransport) SubscriberFrom(group string, start GroupStart) (message.Subscriber, error) {
	if !t.consumes {
		return nil, ErrNoSubscriber
	}
	cfg := t.cfg
	cfg.ConsumerGroup = group
	cfg.GroupStart = start
	if cfg.OnJoinRetry == nil {
		cfg.OnJoinRetry = func(topic string, err error, retryIn time.Duration) {
			what := "memhook: Redis refuses the consumer group, retrying"
			var ne net.Error
			switch {
			case errors.Is(err, ErrRedisFull):
				what = "memhook: Redis is full (maxmemory reached, noeviction): cannot create the consumer group; free memory or raise maxmemory. Retrying"
			case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNREFUSED):
				what = "memhook: Redis not reachable, retrying"
			}
			t.log.Warn(what, "url", cfg.RedactedURL(), "stream", topic, "group", group, "retry_in", retryIn, "error", err.Error())
		}
	}
	if cfg.OnJoined == nil {
		cfg.OnJoined = func(topic string) {
			t.log.Info("memhook: consuming from Redis", "url", cfg.RedactedURL(), "stream", topic,
				"group", group, "consumer", cfg.Consumer, "claim_after", cfg.MaxIdleTime)
		}
	}
	if cfg.OnParkedFull == nil {
		cfg.OnParkedFull = func(group string, bound int64) {
			t.log.Warn("memhook: an ordered endpoint has as many events parked behind their users' turns as its bound: it reads no more until some are delivered (its backlog then grows in the stream, bounded as usual)",
				"stream", t.cfg.EventsTopic, "group", group, "bound", bound)
		}
	}
	if cfg.OnTakeOver == nil {
		cfg.OnTakeOver = func(topic, consumer string, entries int) {
			what := "memhook: took over the entries of a router whose heartbeat is gone"
			if consumer == cfg.Consumer {
				what = "memhook: took over the entries left by an earlier process with this consumer name"
			}
			t.log.Warn(what, "stream", topic, "group", group, "consumer", consumer, "entries", entries)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	sub, err := newRedisSubscriber(cfg, wmlog.New(t.log, slog.LevelDebug), t.alive)
	if err != nil {
		return nil, err
	}
	sub.orders = t.orders[group]
	t.subs = append(t.subs, sub)
	t.trimOnce.Do(func() {
		go t.trimLoop()
		go t.moveLoop()
	})
	return sub, nil
}

// Delivers reports whether this process consumes (NewRedisTransport's
// consumes).
func (t *RedisTransport) Delivers() bool { return t.consumes }

// Ready returns nil when Redis answers and every subscription to the
// events stream has joined its group. The other streams' subscriptions
// (retries, poison, incoming) join as soon as they can, each failure
// logged: a full Redis refuses to create a group, and a router whose
// events group exists must still drain its backlog there.
func (t *RedisTransport) Ready(ctx context.Context) error {
	if err := t.pub.Ping(ctx); err != nil {
		return err
	}
	for _, s := range t.liveSubs() {
		if err := s.readyFor(ctx, t.cfg.EventsTopic); err != nil && !s.isClosed() {
			return err
		}
	}
	return nil
}

// Drain returns at once: entries not yet handled stay in the stream.
func (t *RedisTransport) Drain(context.Context) error { return nil }

// Close stops the trim loop and closes the subscribers (deliveries in
// flight finish, up to CloseTimeout; entries not acked are released to the
// group's other consumers), announces the consumer gone (the others remove
// it from their groups) and closes the publisher. It returns no messages: they
// stay in Redis.
func (t *RedisTransport) Close() (Left, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, nil
	}
	t.closed = true
	subs := t.subs
	t.mu.Unlock()
	t.stop()
	t.trimOnce.Do(func() { close(t.trimmed); close(t.moved) }) // when the loops never started
	<-t.trimmed
	<-t.moved
	var errs []error
	for _, s := range subs {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	t.alive.stop() // after the subscribers released their entries
	if err := t.pub.Close(); err != nil {
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// trimLoop sheds the backlogs past their bound (see Bound), then removes
// the entries of the streams read here that every consumer group
// acknowledged (never a pending or unread one), every
// RedisConfig.TrimInterval until
// Close: that, and not MAXLEN, keeps the streams bounded. The poison
// stream is left to DLQ.
func (t *RedisTransport) trimLoop() {
	defer close(t.trimmed)
	tick := time.NewTicker(t.cfg.TrimInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.shedAll()
		for _, topic := range t.topics() {
			if _, err := t.pub.TrimAcked(t.ctx, topic); err != nil && t.ctx.Err() == nil {
				t.log.Warn("memhook: trimming acknowledged entries failed", "stream", topic, "error", err.Error())
			}
		}
	}
}

// liveSubs returns the subscribers not closed, forgetting the closed
// ones (an endpoint removed at runtime closes its subscribers).
func (t *RedisTransport) liveSubs() []*RedisSubscriber {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return slices.Clone(t.subs) // Close closes them
	}
	t.subs = slices.DeleteFunc(t.subs, (*RedisSubscriber).isClosed)
	return slices.Clone(t.subs)
}

// topics are the streams read here, the poison stream aside, once each.
func (t *RedisTransport) topics() []string {
	var out []string
	for _, s := range t.liveSubs() {
		for _, topic := range s.topics() {
			if topic != t.cfg.PoisonTopic && !slices.Contains(out, topic) {
				out = append(out, topic)
			}
		}
	}
	return out
}

// ErrGroupInUse is returned by RemoveGroup while a subscriber of this
// transport still reads the events stream as that group: close it first.
var ErrGroupInUse = errors.New("redis transport: the consumer group is still subscribed here")

// RemoveGroup deletes consumer group from the events stream (XGROUP
// DESTROY), with its position and pending entries, and its bound (see
// Unbound): the stream is then trimmed as if it never existed. The bus
// calls it when an endpoint is removed, once the endpoint's subscribers
// are closed (their attempts in flight done); it returns ErrGroupInUse
// while a subscriber of this transport still reads the events stream as
// group. A router process that still subscribes as group (its endpoints
// file not reloaded yet) does not create it again at the stream's start,
// delivering the whole stream again to the endpoint being removed: the
// group is marked removed for an hour (set just before XGROUP DESTROY),
// and a subscription that finds its group missing and marked stops
// reading it (ErrGroupRemoved, logged) until its router reloads; one that
// joins the group (a router started with the endpoint) clears the mark.
// An endpoint added again later starts afresh (SubscriberFrom
// GroupStartNewest). Removing a group
// that does not exist is no error. Its retry stream and the retries
// waiting for it are left alone: they resume if the endpoint comes back,
// and ListDelayed shows them. An ordered group's parked entries join them
// (dissolveTurns).
func (t *RedisTransport) RemoveGroup(ctx context.Context, group string) error {
	for _, s := range t.liveSubs() {
		if s.cfg.ConsumerGroup != group {
			continue
		}
		if slices.Contains(s.topics(), t.cfg.EventsTopic) {
			return fmt.Errorf("%w: %s on %s", ErrGroupInUse, group, t.cfg.EventsTopic)
		}
	}
	t.Unbound(group)
	ctx, cancel := context.WithTimeout(ctx, t.cfg.publishTimeout())
	defer cancel()
	// Marked first: a router that sees the group missing then knows it
	// was removed, and does not create it again.
	if err := t.pub.client.Set(ctx, removedKey(t.cfg.EventsTopic, group), time.Now().UTC().Format(time.RFC3339), removedFor).Err(); err != nil {
		return fmt.Errorf("redis transport: removing group %s from %s: %w", group, t.cfg.EventsTopic, err)
	}
	err := t.pub.client.XGroupDestroy(ctx, t.cfg.EventsTopic, group).Err()
	if err != nil && !redis.HasErrorPrefix(err, "The XGROUP subcommand requires the key to exist") { // no stream: no group
		return fmt.Errorf("redis transport: removing group %s from %s: %w", group, t.cfg.EventsTopic, err)
	}
	return t.dissolveTurns(ctx, t.cfg.EventsTopic, group)
}
