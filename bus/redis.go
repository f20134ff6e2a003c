package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// redisState is what a bus on the Redis transport holds besides the
// publisher (b.pub).
type redisState struct {
	cfg     transports.RedisConfig
	pub     *transports.RedisPublisher
	sub     *transports.RedisSubscriber // the running router's, once started
	stop    context.CancelFunc          // ends the wait for Redis
	waiting sync.WaitGroup
	mu      sync.Mutex
	started bool // the delivery router runs
}

// RedisConfig returns the Redis transport's configuration derived from
// cfg: the stream's claim timeout (MaxIdleTime) is
// transports.ClaimTimeout(Retry.WorstCase(Timeout)), so that a slow but
// live delivery is never taken over by another router process.
func (c Config) RedisConfig() transports.RedisConfig {
	maxLen := c.RedisMaxLen
	if maxLen == Disabled {
		maxLen = transports.NoMaxLen
	}
	return transports.RedisConfig{
		URL:           c.RedisURL,
		ConsumerGroup: c.RedisGroup,
		Consumer:      c.RedisConsumer,
		MaxIdleTime:   transports.ClaimTimeout(c.retry().WorstCase(c.Timeout)),
		MaxLen:        maxLen,
		Consumers:     c.Concurrency,
		EventsTopic:   Topic,
		PoisonTopic:   PoisonTopic,
	}
}

// retry is the Retry middleware c configures (without hooks).
func (c Config) retry() middleware.Retry {
	retries := c.RetryCount
	if retries == Disabled {
		retries = middleware.NoRetries
	}
	return middleware.Retry{MaxRetries: retries, InitialInterval: c.RetryDelay, MaxRetryAfter: c.MaxRetryAfter}
}

// startRedis makes the publisher Emit appends with and, with
// WithDelivery, starts the delivery router once Redis answers: until then
// it retries with a WARN log line and Ready reports the error.
func (b *Bus) startRedis(wlog watermill.LoggerAdapter) error {
	rcfg := b.cfg.RedisConfig()
	pub, err := transports.NewRedisPublisher(rcfg, wlog)
	if err != nil {
		return err
	}
	b.pub = pub
	ctx, cancel := context.WithCancel(context.Background())
	b.redis = &redisState{cfg: rcfg, pub: pub, stop: cancel}
	if !b.webhook {
		return nil
	}
	// Made here so that a bad configuration fails New; a subscriber whose
	// router failed to start is closed, and the next try makes a new one.
	sub, err := transports.NewRedisSubscriber(rcfg, wlog)
	if err != nil {
		cancel()
		_ = pub.Close()
		return err
	}
	b.redis.waiting.Add(1)
	go func() {
		defer b.redis.waiting.Done()
		defer func() {
			if sub != nil {
				_ = sub.Close()
			}
		}()
		delay := 250 * time.Millisecond
		for {
			err := pub.Ping(ctx)
			if err == nil && sub == nil {
				sub, err = transports.NewRedisSubscriber(rcfg, wlog)
			}
			if err == nil {
				err = b.start(wlog, sub)
				if err == nil {
					b.redis.mu.Lock()
					b.redis.started = true
					b.redis.sub = sub
					b.redis.mu.Unlock()
					b.log.Info("memhook: delivering from Redis", "url", rcfg.RedactedURL(), "group", rcfg.ConsumerGroup,
						"consumer", rcfg.Consumer, "claim_after", rcfg.MaxIdleTime)
					sub = nil // the router's now; Close stops it
					b.trimLoop(ctx, pub)
					return
				}
				// Subscribing failed (a key of the wrong type, say): the
				// router may have closed sub; start afresh next time.
				_ = sub.Close()
				sub = nil
				if b.deliver != nil {
					_ = b.deliver.Close()
				}
				b.router, b.deliver = nil, nil
			}
			if ctx.Err() != nil {
				return
			}
			msg := "memhook: Redis not reachable, retrying"
			if errors.Is(err, transports.ErrRedisFull) {
				msg = "memhook: Redis is full (maxmemory reached, noeviction): cannot create the consumer group; free memory or raise maxmemory. Retrying"
			}
			b.log.Warn(msg, "url", rcfg.RedactedURL(), "retry_in", delay, "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 5*time.Second)
		}
	}()
	return nil
}

// trimEvery is how often a delivering process removes acknowledged
// entries from the streams.
const trimEvery = 5 * time.Second

// trimLoop removes, every trimEvery until ctx ends, the entries of the
// events and incoming streams that every consumer group acknowledged
// (never a pending or unread one): that, and not MAXLEN, keeps the streams
// bounded.
func (b *Bus) trimLoop(ctx context.Context, pub *transports.RedisPublisher) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, topic := range []string{Topic, IncomingTopic} {
			if _, err := pub.TrimAcked(ctx, topic); err != nil && ctx.Err() == nil {
				b.log.Warn("memhook: trimming acknowledged entries failed", "stream", topic, "error", err.Error())
			}
		}
	}
}

// ErrNotReady is returned by Ready while the transport is not connected.
var ErrNotReady = errors.New("bus: not ready")

// Ready reports whether the transport is connected: always on the memory
// and http transports (the queue is in-process); on Redis, whether Redis
// answers and, with WithDelivery, whether the delivery router runs.
func (b *Bus) Ready(ctx context.Context) error {
	if b.redis == nil {
		return nil
	}
	if err := b.redis.pub.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	if b.webhook {
		b.redis.mu.Lock()
		started := b.redis.started
		b.redis.mu.Unlock()
		if !started {
			return fmt.Errorf("%w: delivery router not started yet", ErrNotReady)
		}
	}
	return nil
}

// closeRedis stops the wait for Redis, the router (deliveries in flight
// finish, up to the subscriber's close timeout; entries not acknowledged
// are released to the group's other consumers, which claim them within
// seconds) and the publisher.
func (b *Bus) closeRedis() error {
	b.redis.stop()
	b.redis.waiting.Wait()
	errs := b.stopRouter()
	b.redis.mu.Lock()
	sub := b.redis.sub
	b.redis.mu.Unlock()
	if sub != nil {
		// The router closes it too, without waiting for the end: here
		// acks are flushed and unhandled entries released before we go.
		if err := sub.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.redis.pub.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
