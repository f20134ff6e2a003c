package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/redisserver"
	"github.com/memhook/memhook/transports"
)

// benchRedisKeys are the patterns of the keys a redis run creates:
// memhook's streams and what goes with them (retry set, heartbeats, the
// duplicate guard), all named after the events or incoming topic.
func benchRedisKeys() []string { return []string{bus.Topic + "*", bus.IncomingTopic + "*"} }

// errRedisNotEmpty is returned by openRedisTarget for a --redis-url whose
// database holds keys: the bench deletes what it creates, so it only runs
// on a database that starts empty.
var errRedisNotEmpty = errors.New("the database is not empty")

// redisTarget is the Redis the redis runs use: a private redis-server this
// bench started, or the empty database --redis-url names.
type redisTarget struct {
	url     string              // given to the bench's bus and its serve children
	shown   string              // url redacted, for messages
	private *redisserver.Server // nil when --redis-url named the Redis
	dir     string              // the private server's directory
}

// openRedisTarget returns the Redis for the redis runs. With flagURL empty
// it starts a private redis-server (no persistence) on a free loopback
// port; without redis-server on PATH it returns skip, the reason to skip
// the redis runs. With flagURL set it uses that Redis only if it answers
// (else skip) and the database is empty (else an error wrapping
// errRedisNotEmpty): the runs then delete only keys they created.
func openRedisTarget(ctx context.Context, flagURL string) (r *redisTarget, skip string, err error) {
	if flagURL == "" {
		dir, err := os.MkdirTemp("", "memhook-bench-redis-")
		if err != nil {
			return nil, "", err
		}
		srv, err := redisserver.Start(redisserver.Config{Dir: dir})
		if err != nil {
			_ = os.RemoveAll(dir)
			if errors.Is(err, redisserver.ErrNotFound) {
				return nil, "no redis-server on PATH to start a private one (apt-get install redis-server), and no --redis-url given", nil
			}
			return nil, "", err
		}
		return &redisTarget{url: srv.URL(), shown: srv.URL(), private: srv, dir: dir}, "", nil
	}
	cfg := transports.RedisConfig{URL: flagURL}
	r = &redisTarget{url: flagURL, shown: cfg.RedactedURL()}
	opts, err := redis.ParseURL(flagURL)
	if err != nil {
		return nil, "", fmt.Errorf("--redis-url %s: %w", r.shown, err)
	}
	if err := transports.RedisPing(ctx, cfg); err != nil {
		return nil, fmt.Sprintf("Redis at %s (--redis-url) does not answer", r.shown), nil
	}
	c := redis.NewClient(opts)
	defer c.Close()
	keys, err := c.DBSize(ctx).Result()
	if err != nil {
		return nil, "", fmt.Errorf("--redis-url %s: %w", r.shown, err)
	}
	if keys != 0 {
		return nil, "", fmt.Errorf("--redis-url %s: %w (%d keys): memhook bench deletes the streams it creates, so it needs an empty database; "+
			"name another (redis://host:port/N) or leave --redis-url unset to have the bench start a private redis-server", r.shown, errRedisNotEmpty, keys)
	}
	return r, "", nil
}

// reset deletes what a previous run created, and checks that the database
// is then empty: keys the bench did not create mean that another client
// writes to it, and the runs stop rather than touch them.
func (r *redisTarget) reset(ctx context.Context) error {
	opts, err := redis.ParseURL(r.url)
	if err != nil {
		return fmt.Errorf("redis %s: %w", r.shown, err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	for _, pattern := range benchRedisKeys() {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				return fmt.Errorf("redis %s: deleting the bench's keys: %w", r.shown, err)
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("redis %s: deleting the bench's keys: %w", r.shown, err)
		}
	}
	keys, err := c.DBSize(ctx).Result()
	if err != nil {
		return fmt.Errorf("redis %s: %w", r.shown, err)
	}
	if keys != 0 {
		return fmt.Errorf("redis %s: the database holds %d keys memhook bench did not create (another client writes to it): stopping", r.shown, keys)
	}
	return nil
}

// close deletes the streams the runs created, leaving the database as
// empty as it was found, and stops the private server.
func (r *redisTarget) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r.private == nil {
		return r.reset(ctx)
	}
	return errors.Join(r.private.Stop(), os.RemoveAll(r.dir))
}
