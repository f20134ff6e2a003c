package transports

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/middleware"
)

// Redis keeps each rate limit's next free slot (its GCRA "theoretical
// arrival time", in microseconds of Redis's clock) in one key; a script
// takes the slot and moves the key on by one interval, atomically, so
// every router sharing the Redis shares the budget. The key expires once
// its slot has passed (plus a second): an idle budget costs nothing.

// reserveSlot: KEYS[1] the budget's key; ARGV[1] the interval in µs. It
// returns the wait until the slot taken, in µs.
var reserveSlot = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if slot < now then slot = now end
local nxt = slot + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', string.format('%d', math.ceil((nxt - now) / 1000) + 1000))
return slot - now
`)

// releaseSlot: KEYS[1] the budget's key; ARGV[1] the interval in µs. It
// moves the next free slot back by one interval.
var releaseSlot = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local nxt = cur - tonumber(ARGV[1])
if nxt <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', string.format('%d', math.ceil((nxt - now) / 1000) + 1000))
end
return 0
`)

// RateLimitKeyPrefix follows the events topic in the name of a rate
// limit's key: "memory.events:ratelimit:crm" for the key "crm".
const RateLimitKeyPrefix = ":ratelimit:"

// RedisLimiter is a middleware.Limiter whose budgets live in Redis,
// shared by every router using the same Redis and events topic: a key
// allows its events per period however many routers ask. Slots are
// counted on Redis's clock (TIME), so the routers' clocks need not agree.
// Safe for concurrent use.
type RedisLimiter struct {
	client   *redis.Client
	prefix   string
	interval int64 // µs
	timeout  time.Duration
}

var _ middleware.Limiter = (*RedisLimiter)(nil)

// Limiter returns a limiter allowing events attempts per period for each
// key, one every per/events rounded up to the microsecond (burst 1; see
// middleware.Limiter), on this transport's Redis connection, under the
// Redis key EventsTopic + RateLimitKeyPrefix + key. Its error is
// middleware.ErrBadRate. It works in a transport that only publishes too.
func (t *RedisTransport) Limiter(events int, per time.Duration) (*RedisLimiter, error) {
	interval, err := middleware.RateInterval(events, per)
	if err != nil {
		return nil, err
	}
	return &RedisLimiter{
		client:   t.pub.client,
		prefix:   t.cfg.EventsTopic + RateLimitKeyPrefix,
		interval: (interval + time.Microsecond - 1).Microseconds(), // never faster than asked
		timeout:  t.cfg.publishTimeout(),
	}, nil
}

// Reserve implements middleware.Limiter. It fails when Redis does not
// answer within the transport's publish timeout (DialTimeout +
// WriteTimeout + ReadTimeout) or refuses the write (full).
func (l *RedisLimiter) Reserve(ctx context.Context, key string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	us, err := reserveSlot.Run(ctx, l.client, []string{l.prefix + key}, l.interval).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis transport: reserving a slot of %s: %w", l.prefix+key, err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// Release implements middleware.Limiter.
func (l *RedisLimiter) Release(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := releaseSlot.Run(ctx, l.client, []string{l.prefix + key}, l.interval).Err(); err != nil {
		return fmt.Errorf("redis transport: releasing a slot of %s: %w", l.prefix+key, err)
	}
	return nil
}
