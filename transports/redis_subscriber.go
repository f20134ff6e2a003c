package transports

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Metadata keys of a poisoned message. They are the PoisonQueue
// middleware's (middleware.PoisonReasonKey, …), repeated here because
// transports does not import middleware.
const (
	poisonReasonKey   = "reason_poisoned"
	poisonTopicKey    = "topic_poisoned"
	poisonStatusKey   = "status_poisoned"
	poisonAttemptsKey = "attempts_poisoned"
)

const (
	// blockTime is how long one XREADGROUP waits for a new entry. It
	// returns at once when one arrives; longer means fewer idle commands,
	// and a Close that waits as much for the reader.
	blockTime = time.Second
	// maxClaimInterval caps how often pending entries are checked for ones
	// idle longer than MaxIdleTime.
	maxClaimInterval = 5 * time.Second
	// resubscribeMin and resubscribeMax bound the wait before a failed
	// read is tried again.
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// RedisSubscriber reads Redis streams as one consumer of a consumer group.
// Each Subscribe call handles up to Consumers messages at once. One reader
// reads new entries in batches (XREADGROUP … COUNT n) and keeps at most
// 2 × Consumers out: those being handled and, ready for the next free
// handler, at most as many as handlers. An entry is acked when its message
// is acked, the acks of a subscription going to Redis together: one XACK
// for all those made while the previous one ran. A nacked message is handed out
// again after NackDelay, without reading it again. While it subscribes, the
// subscriber announces its consumer alive every second (a heartbeat, see
// redis_alive.go); an entry whose consumer stopped announcing itself — its
// process crashed or lost Redis — is taken over by a live consumer of the
// group within seconds (aliveTimeout, 5 s, then the next look, every
// second) and delivered again, and a gone consumer holding nothing is
// removed from the group. An entry left unacked by a live consumer for
// MaxIdleTime, or by a consumer without a heartbeat (another Watermill
// consumer), is taken over (XAUTOCLAIM) after MaxIdleTime. Delivery is at
// least once.
//
// An entry that is not a Watermill message (it cannot be decoded) does not
// end the subscription: it is copied, fields unchanged plus reason_poisoned
// and topic_poisoned, to the poison stream and acked. On the poison stream
// itself it is only acked, and stays there for DLQ.
//
// A subscription whose reads fail because its consumer group is gone (a
// Redis restarted without persistence, a deleted stream) creates the group
// again and goes on. Entries use watermill-redisstream's format, so any
// redisstream producer or consumer interoperates. Safe for concurrent use.
type RedisSubscriber struct {
	cfg    RedisConfig
	client *redis.Client
	logger watermill.LoggerAdapter
	mark   string // metadata key flagging an undecodable entry; random, so no producer can set it
	decode flaggingUnmarshaller
	alive  *heartbeat           // announces cfg.Consumer alive while subscribing
	owns   bool                 // alive is this subscriber's own, stopped at Close
	gate   Gate                 // asked before each read of new entries; nil: none
	orders map[string]orderSpec // by topic: the ordered ones (RedisTransport.Order)

	mu           sync.Mutex // guards closed, subs and s.wg.Add
	closed       bool
	subs         []*subscription
	closing      chan struct{}
	intake       context.Context // cancelled when Close starts: nothing more is read or handed out
	cancelIntake context.CancelFunc
	wg           sync.WaitGroup // every subscription's goroutines

	flightMu sync.Mutex
	flights  map[string]*flight // entries out, by topic and id

	closeOnce sync.Once
	closeErr  error
}

var (
	_ message.Subscriber = (*RedisSubscriber)(nil)
	_ Gated              = (*RedisSubscriber)(nil)
)

// SetGate makes the subscriptions made from then on ask gate before each
// read of new entries; call it before Subscribe.
func (s *RedisSubscriber) SetGate(gate Gate) { s.gate = gate }

// NewRedisSubscriber returns a subscriber with its own Redis client:
// closing it closes that client only. cfg.MaxIdleTime is required (see
// ClaimTimeout). It does not connect: Subscribe does, and starts the
// heartbeat of cfg.Consumer, which Close ends, announcing the consumer
// gone. Two subscribers with the same Consumer should come from one
// RedisTransport, which gives them one heartbeat. logger receives
// memhook's logs; nil means none.
func NewRedisSubscriber(cfg RedisConfig, logger watermill.LoggerAdapter) (*RedisSubscriber, error) {
	return newRedisSubscriber(cfg, logger, nil)
}

// newRedisSubscriber is NewRedisSubscriber with the heartbeat alive, or
// its own when nil.
func newRedisSubscriber(cfg RedisConfig, logger watermill.LoggerAdapter, alive *heartbeat) (*RedisSubscriber, error) {
	err := cfg.prepare()
	if cfg.MaxIdleTime == 0 {
		err = errors.Join(err, errors.New("redis transport: MaxIdleTime is required: set it to ClaimTimeout(the worst-case time to handle one message)"))
	}
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	client, err := cfg.newClient(10*runtime.GOMAXPROCS(0) + 16*cfg.Consumers)
	if err != nil {
		return nil, err
	}
	s := &RedisSubscriber{
		cfg:     cfg,
		client:  client,
		mark:    "_memhook_undecodable_" + watermill.NewShortUUID(),
		closing: make(chan struct{}),
		flights: make(map[string]*flight),
	}
	s.decode = flaggingUnmarshaller{mark: s.mark}
	s.intake, s.cancelIntake = context.WithCancel(context.Background())
	s.logger = closingLogger{LoggerAdapter: logger, closing: s.closing}
	s.alive, s.owns = alive, alive == nil
	if s.owns {
		s.alive = newHeartbeat(client, cfg, s.logger)
	}
	return s, nil
}

// ErrRedisFull is wrapped in the error Subscribe returns (and the
// subscription logs) when Redis refuses to create the consumer group
// because it is full: used memory reached maxmemory and maxmemory-policy
// is noeviction. Reading, acking and claiming still work on a full Redis,
// so a group that exists is joined anyway; a missing one can be created
// only once memory is freed or maxmemory raised.
var ErrRedisFull = errors.New("redis transport: Redis is full (maxmemory reached, maxmemory-policy noeviction)")

// groupLost reports a read, claim or ack that failed because the consumer
// group no longer exists: the group is created again (see recover).
func groupLost(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP")
}

// createGroup creates the consumer group of topic, and the stream if
// missing; a new group starts at start ("0": with the entries already
// there; "$": with those appended from now on). A full
// Redis refuses XGROUP CREATE with OOM before looking whether the group
// exists: then the groups are read (XINFO GROUPS works on a full Redis),
// and a group that exists is joined; a missing one is an error wrapping
// ErrRedisFull.
func (s *RedisSubscriber) createGroup(ctx context.Context, topic, start string) error {
	err := s.client.XGroupCreateMkStream(ctx, topic, s.cfg.ConsumerGroup, start).Err()
	if redis.HasErrorPrefix(err, "BUSYGROUP") {
		return nil
	}
	if !redis.HasErrorPrefix(err, "OOM") {
		return err
	}
	exists, ierr := s.groupExists(ctx, topic)
	switch {
	case ierr != nil:
		return fmt.Errorf("%w: cannot create consumer group %s (%v), nor check whether it exists: %w",
			ErrRedisFull, s.cfg.ConsumerGroup, err, ierr)
	case exists:
		return nil
	}
	return fmt.Errorf("%w: cannot create consumer group %s until memory is freed or maxmemory raised: %v",
		ErrRedisFull, s.cfg.ConsumerGroup, err)
}

// ErrGroupRemoved: the consumer group was removed on purpose (its
// endpoint removed, RedisTransport.RemoveGroup, by this router or
// another), so a subscription that lost it does not create it again.
var ErrGroupRemoved = errors.New("the consumer group was removed (its endpoint removed, by this router or another): not created again; reload this router's endpoints")

// removedKey marks group removed from topic (RemoveGroup) for
// removedFor, so that routers whose endpoints file is not reloaded yet
// do not create it again at the stream's start — delivering the whole
// stream again to an endpoint being removed.
func removedKey(topic, group string) string { return topic + ":removed:" + group }

const removedFor = time.Hour

// recreateLost creates again a consumer group found missing while
// subscribed: at the stream's start (GroupStartOldest: a stream made
// again, by a Redis restarted without persistence, loses nothing), unless
// it was removed on purpose (ErrGroupRemoved).
func (s *RedisSubscriber) recreateLost(ctx context.Context, topic string) error {
	n, err := s.client.Exists(ctx, removedKey(topic, s.cfg.ConsumerGroup)).Result()
	if err == nil && n > 0 {
		return ErrGroupRemoved
	}
	return s.createGroup(ctx, topic, GroupStartOldest.id())
}

// groupExists reports whether topic's stream has the consumer group.
func (s *RedisSubscriber) groupExists(ctx context.Context, topic string) (bool, error) {
	groups, err := s.client.XInfoGroups(ctx, topic).Result()
	if redis.HasErrorPrefix(err, "no such key") { // go-redis drops "ERR " before comparing
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, g := range groups {
		if g.Name == s.cfg.ConsumerGroup {
			return true, nil
		}
	}
	return false, nil
}

// Subscribe reads the stream named topic (created, with the consumer group,
// if missing) into the returned channel: up to Consumers messages are out
// at once. It returns at once: the subscription joins the group in the
// background, trying again (OnJoinRetry, or an error log line, says why)
// while Redis is unreachable, full or refuses the group; Ready reports
// until every subscription has joined. When ctx ends or Close begins,
// nothing more is read or handed out; each message out keeps its context
// until it is acked or nacked, or for CloseTimeout more (a closing
// Watermill router cancels ctx at once, while its handlers still run),
// then the entries not acked are released to the group's other consumers
// and the channel is closed. Messages come in stream order, except for
// those nacked or taken over. It returns ErrClosed after Close.
func (s *RedisSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	// Reading and handing out stop when ctx ends or Close begins; the
	// messages out keep their context, so that their handlers can finish,
	// until they are acked or nacked, or for CloseTimeout more (the
	// router cancels ctx as soon as it closes).
	intake, cancelIntake := context.WithCancel(ctx)
	stopIntake := context.AfterFunc(s.intake, cancelIntake)
	msgs, cancelMsgs := context.WithCancel(context.WithoutCancel(ctx))
	sub := &subscription{
		s:       s,
		topic:   topic,
		ctx:     msgs,
		intake:  intake,
		out:     make(chan *message.Message),
		queue:   make(chan delivery, 3*s.cfg.Consumers), // readLimit + claimLimit
		unacked: make(map[string]struct{}),
		freed:   make(chan struct{}, 1),
		ackKick: make(chan struct{}, 1),
		joined:  make(chan struct{}),
	}
	if o, ok := s.orders[topic]; ok {
		sub.pass = &o
		if !o.drainOnly {
			sub.order = &o
		}
	}
	s.subs = append(s.subs, sub)
	s.alive.start()
	sub.start(cancelMsgs, func() { stopIntake(); cancelIntake(); cancelMsgs() })
	return sub.out, nil
}

// Ready returns nil when Redis answers and every subscription has joined
// its consumer group; otherwise why not.
func (s *RedisSubscriber) Ready(ctx context.Context) error { return s.readyFor(ctx, "") }

// readyFor is Ready for the subscriptions of topic alone ("": all).
func (s *RedisSubscriber) readyFor(ctx context.Context, topic string) error {
	if err := s.Ping(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	subs := append([]*subscription(nil), s.subs...)
	s.mu.Unlock()
	for _, sub := range subs {
		if topic != "" && sub.topic != topic {
			continue
		}
		if err := sub.joinState(); err != nil {
			return err
		}
	}
	return nil
}

func (s *RedisSubscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// divert copies an undecodable entry to the poison stream and acks it; if
// the copy fails it nacks it, to try again after NackDelay.
func (s *RedisSubscriber) divert(ctx context.Context, topic string, msg *message.Message, reason string) {
	fields := watermill.LogFields{"topic": topic, "reason": reason, "message_uuid": msg.Metadata[redisstream.UUIDHeaderKey]}
	if topic == s.cfg.PoisonTopic {
		s.logger.Error("redis transport: undecodable entry in the poison stream, left there", nil, fields)
		msg.Ack()
		s.undecodable(topic, reason)
		return
	}
	values := make(map[string]any, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		if k != s.mark {
			values[k] = v
		}
	}
	values[poisonReasonKey] = "undecodable stream entry: " + reason
	values[poisonTopicKey] = topic
	pctx, cancel := context.WithTimeout(ctx, s.cfg.publishTimeout())
	id, err := s.client.XAdd(pctx, &redis.XAddArgs{Stream: s.cfg.PoisonTopic, Values: values}).Result()
	cancel()
	if err != nil {
		s.logger.Error("redis transport: cannot copy an undecodable entry to the poison stream, will retry", err, fields)
		msg.Nack()
		return
	}
	fields["poison_id"] = id
	s.logger.Error("redis transport: undecodable entry copied to the poison stream", nil, fields)
	msg.Ack()
	s.undecodable(topic, reason)
}

func (s *RedisSubscriber) undecodable(topic, reason string) {
	if s.cfg.OnUndecodable != nil {
		s.cfg.OnUndecodable(topic, reason)
	}
}

// Ping checks that Redis answers on the subscriber's client, within ctx
// and at most DialTimeout + ReadTimeout: a readiness probe.
func (s *RedisSubscriber) Ping(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return ping(ctx, s.client, s.cfg)
}

// Close ends every subscription: it stops reading, claiming and handing
// out at once, lets handlers finish the messages they hold (acked or
// nacked) for up to CloseTimeout, then cancels the contexts of those still
// held. Acks made are sent; every entry read or claimed and not acked
// (never handed out, waiting out a NackDelay, or cut) is released to the
// group's other consumers, which claim it at their next claim tick
// instead of after MaxIdleTime. Then it closes the channels Subscribe
// returned, ends the heartbeat (announcing the consumer gone, so that the
// others remove it from the group) unless a RedisTransport owns it, and
// closes the Redis client. It is idempotent and safe from several
// goroutines: later calls wait for the first and return its result.
func (s *RedisSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.mu.Unlock()
		s.cancelIntake() // each subscription gives its handlers CloseTimeout
		s.wg.Wait()      // the readers' blocked reads end within blockTime
		if s.owns {
			s.alive.stop()
		}
		s.closeErr = s.client.Close()
	})
	return s.closeErr
}

// flaggingUnmarshaller decodes entries with watermill's default stream
// format. An entry it cannot decode becomes a message whose metadata holds
// the entry's fields and, under mark, the reason, for deliver to divert:
// it never returns an error.
type flaggingUnmarshaller struct{ mark string }

func (u flaggingUnmarshaller) Unmarshal(values map[string]any) (msg *message.Message, err error) {
	defer func() {
		if r := recover(); r != nil { // the worker goroutines have no recover: a panic would end the process
			msg, err = nil, fmt.Errorf("panic decoding: %v", r)
		}
		if err == nil && msg == nil {
			err = errors.New("decoded to no message")
		}
		if err != nil {
			msg = message.NewMessage("", nil)
			for k, v := range values {
				str, ok := v.(string)
				if !ok {
					str = fmt.Sprint(v)
				}
				msg.Metadata[k] = str
			}
			msg.Metadata[u.mark] = err.Error()
			err = nil
		}
	}()
	return redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
}

// closingLogger logs errors at debug level once closing is closed: reads
// cut short by Close are expected.
type closingLogger struct {
	watermill.LoggerAdapter
	closing <-chan struct{}
}

func (l closingLogger) Error(msg string, err error, fields watermill.LogFields) {
	select {
	case <-l.closing:
		l.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
	default:
		l.LoggerAdapter.Error(msg, err, fields)
	}
}

func (l closingLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return closingLogger{LoggerAdapter: l.LoggerAdapter.With(fields), closing: l.closing}
}

// topics returns the topics of the subscriptions running.
func (s *RedisSubscriber) topics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for _, sub := range s.subs {
		out = append(out, sub.topic)
	}
	return out
}
