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
	// and a reader goroutine that outlives Close by as much.
	blockTime = time.Second
	// maxClaimInterval caps how often pending entries are checked for ones
	// idle longer than MaxIdleTime.
	maxClaimInterval = 5 * time.Second
	// resubscribeMin and resubscribeMax bound the wait before a
	// subscription that ended on its own is made again.
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// RedisSubscriber reads Redis streams as one consumer of a consumer group,
// through watermill-redisstream. Each Subscribe call handles up to
// Consumers messages at once; an entry is acked (XACK) when its message is
// acked, and a nacked message is handed out again after NackDelay. An entry
// left unacked — its process crashed, or its handler ran past MaxIdleTime
// — is taken over by a consumer of the group after MaxIdleTime and
// delivered again: delivery is at least once.
//
// An entry that is not a Watermill message (it cannot be decoded) does not
// end the subscription, as it would with redisstream alone: it is copied,
// fields unchanged plus reason_poisoned and topic_poisoned, to the poison
// stream and acked. On the poison stream itself it is only acked, and stays
// there for DLQ.
//
// A subscription whose reads fail because its consumer group is gone (a
// Redis restarted without persistence, a deleted stream) is made again,
// which recreates the group. Safe for concurrent use.
type RedisSubscriber struct {
	cfg    RedisConfig
	client *redis.Client
	inner  *redisstream.Subscriber
	logger watermill.LoggerAdapter
	mark   string // metadata key flagging an undecodable entry; random, so no producer can set it

	mu      sync.Mutex // guards closed and every call of inner.Subscribe
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // forwarders

	closeOnce sync.Once
	closeErr  error
}

var _ message.Subscriber = (*RedisSubscriber)(nil)

// NewRedisSubscriber returns a subscriber with its own Redis client:
// closing it closes that client only. cfg.MaxIdleTime is required (see
// ClaimTimeout). It does not connect: Subscribe does. logger receives
// redisstream's logs and memhook's; nil means none.
func NewRedisSubscriber(cfg RedisConfig, logger watermill.LoggerAdapter) (*RedisSubscriber, error) {
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
	}
	s.logger = closingLogger{LoggerAdapter: logger, closing: s.closing}
	s.inner, err = redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:                        client,
		Unmarshaller:                  flaggingUnmarshaller{mark: s.mark},
		Consumer:                      cfg.Consumer,
		ConsumerGroup:                 cfg.ConsumerGroup,
		NackResendSleep:               cfg.NackDelay,
		BlockTime:                     blockTime,
		ClaimInterval:                 min(max(cfg.MaxIdleTime/2, 10*time.Millisecond), maxClaimInterval),
		MaxIdleTime:                   cfg.MaxIdleTime,
		OldestId:                      "0", // a new group starts with the entries already there
		ShouldStopOnReadErrors:        groupLost,
		DisableIndefiniteInitialBlock: true,
	}, s.logger)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis transport: %w", err)
	}
	return s, nil
}

// groupLost ends a subscription whose group no longer exists, so that it
// is made again (see forward); other read errors are logged and retried by
// redisstream.
func groupLost(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP")
}

// Subscribe reads the stream named topic (created, with the consumer group,
// if missing) through Consumers redisstream subscriptions, merged into the
// returned channel: up to Consumers messages are out at once, each
// carrying a context cancelled when ctx ends or the subscriber closes. The
// channel is closed when ctx is done or on Close. Messages come in stream
// order per subscription, not overall. It returns an error when Redis
// cannot create the group (unreachable, wrong type of key), or ErrClosed.
func (s *RedisSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	ins := make([]<-chan *message.Message, s.cfg.Consumers)
	for i := range ins {
		in, err := s.inner.Subscribe(ctx, topic)
		if err != nil {
			cancel() // ends the subscriptions made so far
			return nil, fmt.Errorf("redis transport: subscribing to %s: %w", topic, err)
		}
		ins[i] = in
	}
	out := make(chan *message.Message)
	var forwarders sync.WaitGroup
	for _, in := range ins {
		forwarders.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer forwarders.Done()
			s.forward(ctx, topic, in, out)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		forwarders.Wait()
		cancel()
		close(out)
	}()
	return out, nil
}

// forward passes the messages of one redisstream subscription to out,
// diverting undecodable ones, and makes the subscription again if it ends
// while ctx is live and the subscriber open.
func (s *RedisSubscriber) forward(ctx context.Context, topic string, in <-chan *message.Message, out chan<- *message.Message) {
	backoff := resubscribeMin
	for {
		if in == nil {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			}
			backoff = min(2*backoff, resubscribeMax)
			var err error
			if in, err = s.subscribeAgain(ctx, topic); err != nil {
				if errors.Is(err, ErrClosed) {
					return
				}
				s.logger.Error("redis transport: subscribing again failed", err, watermill.LogFields{"topic": topic, "retry_in": backoff})
				continue
			}
			s.logger.Info("redis transport: subscribed again", watermill.LogFields{"topic": topic})
		}
		for msg := range in {
			backoff = resubscribeMin
			if reason, bad := msg.Metadata[s.mark]; bad {
				s.divert(ctx, topic, msg, reason)
				continue
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				return // unacked: redisstream gives it up, Redis keeps it pending
			case <-s.closing:
				return
			}
		}
		if ctx.Err() != nil || isClosed(s.closing) {
			return
		}
		in = nil
		s.logger.Error("redis transport: subscription ended (consumer group lost?); subscribing again", nil,
			watermill.LogFields{"topic": topic, "group": s.cfg.ConsumerGroup, "retry_in": backoff})
	}
}

func (s *RedisSubscriber) subscribeAgain(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.inner.Subscribe(ctx, topic)
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

// Close ends every subscription — messages out and not yet acked stay
// pending in Redis, to be taken over after MaxIdleTime — closes the
// channels Subscribe returned and the Redis client. It is idempotent and
// safe from several goroutines: later calls wait for the first and return
// its result.
func (s *RedisSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.mu.Unlock()
		s.closeErr = s.inner.Close() // ends its subscriptions, then closes s.client
		s.wg.Wait()
	})
	return s.closeErr
}

// flaggingUnmarshaller decodes entries with watermill's default stream
// format. An entry it cannot decode becomes a message whose metadata holds
// the entry's fields and, under mark, the reason, for forward to divert:
// redisstream ends the subscription on an unmarshal error.
type flaggingUnmarshaller struct{ mark string }

func (u flaggingUnmarshaller) Unmarshal(values map[string]any) (msg *message.Message, err error) {
	defer func() {
		if r := recover(); r != nil { // the reader goroutine has no recover: a panic would end the process
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
