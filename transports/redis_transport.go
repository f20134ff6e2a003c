package transports

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/wmlog"
)

// TrimInterval is how often a consuming Redis transport removes the
// entries every consumer group acknowledged from the streams it reads.
const TrimInterval = 5 * time.Second

// RedisTransport is the Transport of router processes sharing Redis
// Streams: a RedisPublisher for every process and, in a process that
// consumes, a RedisSubscriber per consumer group. Its delay store
// (PublishAt) is a sorted set every router shares; every consuming router
// moves the due retries to RetryTopic. Subscriptions join their
// group in the background, retrying while Redis is unreachable or full
// (logged at WARN, at most once per try); Ready reports until all have
// joined. While it consumes it trims, every TrimInterval, the entries of
// the streams it reads (the poison stream aside) that every group
// acknowledged, and announces its consumer alive every second, one
// heartbeat for all its subscribers: when a process stops announcing
// itself, the others take over its entries within seconds (see
// RedisSubscriber). Nothing is lost at Close: what was not acked stays in
// the stream for another process.
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
	alive    *heartbeat // of every subscriber's consumer (one name per process)
}

var (
	_ Transport = (*RedisTransport)(nil)
	_ Delayer   = (*RedisTransport)(nil)
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
// consumer name. The first one starts the trim loop.
func (t *RedisTransport) Subscriber(group string) (message.Subscriber, error) {
	if !t.consumes {
		return nil, ErrNoSubscriber
	}
	cfg := t.cfg
	cfg.ConsumerGroup = group
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
	t.subs = append(t.subs, sub)
	t.trimOnce.Do(func() {
		go t.trimLoop()
		go t.moveLoop([]string{t.cfg.RetryTopic})
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
	t.mu.Lock()
	subs := slices.Clone(t.subs)
	t.mu.Unlock()
	for _, s := range subs {
		if err := s.readyFor(ctx, t.cfg.EventsTopic); err != nil {
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

// trimLoop removes, every TrimInterval until Close, the entries of the
// streams read here that every consumer group acknowledged (never a
// pending or unread one): that, and not MAXLEN, keeps the streams bounded.
// The poison stream is left to DLQ.
func (t *RedisTransport) trimLoop() {
	defer close(t.trimmed)
	tick := time.NewTicker(TrimInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		for _, topic := range t.topics() {
			if _, err := t.pub.TrimAcked(t.ctx, topic); err != nil && t.ctx.Err() == nil {
				t.log.Warn("memhook: trimming acknowledged entries failed", "stream", topic, "error", err.Error())
			}
		}
	}
}

// topics are the streams read here, the poison stream aside, once each.
func (t *RedisTransport) topics() []string {
	t.mu.Lock()
	subs := slices.Clone(t.subs)
	t.mu.Unlock()
	var out []string
	for _, s := range subs {
		for _, topic := range s.topics() {
			if topic != t.cfg.PoisonTopic && !slices.Contains(out, topic) {
				out = append(out, topic)
			}
		}
	}
	return out
}
