package transports

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SeenKeySuffix follows the events stream's name in the prefix of
// RedisSeen's keys: with the default stream, an id's key is
// "memory.events.seen:<id>".
const SeenKeySuffix = ".seen:"

// Values of a RedisSeen key.
const (
	seenPending = "pending"
	seenDone    = "done"
)

// seenBegin sets the key to pending for ARGV[1] ms unless it exists, in
// one step: "" when it did (the caller holds the id), else the value.
var seenBegin = redis.NewScript(`
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then return '' end
return redis.call('GET', KEYS[1])
`)

// seenForget deletes the key if it is still pending: a done mark set by
// another router after this one's claim lapsed is kept.
var seenForget = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'pending' then return redis.call('DEL', KEYS[1]) end
return 0
`)

// RedisSeen is the duplicate guard's store (handlers.SeenStore) in Redis:
// every router process on the same Redis and events stream shares it, and
// it survives their restarts, so that a signed request replayed to another
// router, or after a restart, is processed once. An id is a key under
// EventsTopic + SeenKeySuffix, set with SET NX PX to "pending" while one
// request processes it and to "done" for the replay window once it was
// processed; a failure deletes it, so that the sender's retry is
// processed. Keys expire on their own. It owns its Redis client. Safe for
// concurrent use.
type RedisSeen struct {
	client *redis.Client
	prefix string

	closeOnce sync.Once
	closeErr  error
}

// NewRedisSeen returns a RedisSeen on the Redis cfg names, its keys under
// cfg.EventsTopic + SeenKeySuffix: the ids are those of events bound for
// that stream, whichever consumer groups read it. MaxIdleTime is not used.
// It does not connect.
func NewRedisSeen(cfg RedisConfig) (*RedisSeen, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	client, err := cfg.newClient(0)
	if err != nil {
		return nil, err
	}
	return &RedisSeen{client: client, prefix: cfg.EventsTopic + SeenKeySuffix}, nil
}

// Key returns the Redis key of id.
func (s *RedisSeen) Key(id string) string { return s.prefix + id }

// Begin claims id for inProgress (at least a millisecond), unless it is
// pending or done: see handlers.SeenStore. An error (Redis unreachable,
// a timeout) claims nothing.
func (s *RedisSeen) Begin(ctx context.Context, id string, inProgress time.Duration) (claimed, done bool, err error) {
	v, err := seenBegin.Run(ctx, s.client, []string{s.Key(id)}, max(inProgress.Milliseconds(), 1)).Text()
	if err != nil {
		return false, false, fmt.Errorf("redis transport: duplicate guard: %w", err)
	}
	switch v {
	case "":
		return true, false, nil
	case seenDone:
		return false, true, nil
	case seenPending:
		return false, false, nil
	}
	return false, false, fmt.Errorf("redis transport: duplicate guard: key %s holds %q, not %q or %q", s.Key(id), v, seenPending, seenDone)
}

// End marks id done for window (at least a millisecond) when ok, whoever
// holds it; otherwise deletes it if it is still pending.
func (s *RedisSeen) End(ctx context.Context, id string, ok bool, window time.Duration) error {
	var err error
	if ok {
		err = s.client.Set(ctx, s.Key(id), seenDone, max(window, time.Millisecond)).Err()
	} else {
		err = seenForget.Run(ctx, s.client, []string{s.Key(id)}).Err()
	}
	if err != nil {
		return fmt.Errorf("redis transport: duplicate guard: %w", err)
	}
	return nil
}

// Close closes the Redis client. It is idempotent and safe from several
// goroutines.
func (s *RedisSeen) Close() error {
	s.closeOnce.Do(func() {
		if err := s.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			s.closeErr = err
		}
	})
	return s.closeErr
}
