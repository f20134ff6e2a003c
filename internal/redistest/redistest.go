// Package redistest gives tests a real Redis: the one REDIS_URL names, or a
// private redis-server started on a free loopback port for the test and
// stopped when it ends. A test that can have neither is skipped, never
// failed: install redis-server (apt-get install redis-server) or set
// REDIS_URL to run it.
//
// Tests sharing a server stay independent by using their own stream and
// group names (see Name); a private server holds one test's data only.
package redistest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redisserver"
)

const skipHint = "set REDIS_URL or install redis-server (apt-get install redis-server) to run"

// URL returns the URL of a Redis for t: REDIS_URL when it is set (shared:
// use Name for keys), otherwise a private redis-server without persistence,
// started for t on a free loopback port and stopped in t.Cleanup. It never
// uses a system Redis on 6379 unless REDIS_URL names it. Without either, t
// is skipped. Call it from the test goroutine.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return start(t, false).URL()
}

// Start starts a private redis-server for t, whatever REDIS_URL says, so
// that the test can stop, kill and restart it. It writes an append-only
// file synced on every write, so Restart and even Kill lose nothing Redis
// acknowledged, as with a production Redis that persists. The server is
// stopped in t.Cleanup. Without redis-server on PATH, t is skipped. Call it
// from the test goroutine.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

// Name returns base followed by a random suffix: a stream, topic or group
// name no other test uses, for tests sharing a server.
func Name(base string) string {
	return base + "." + watermill.NewShortUUID()
}

// DeleteKeys registers a t.Cleanup that deletes, on the Redis at url,
// every key matching one of the glob patterns (SCAN MATCH): what a test
// wrote to a shared REDIS_URL server. Failures are reported with t.Errorf.
func DeleteKeys(t testing.TB, url string, patterns ...string) {
	t.Helper()
	t.Cleanup(func() {
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Errorf("redistest: %v", err)
			return
		}
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range patterns {
			iter := c.Scan(ctx, 0, p, 1000).Iterator()
			for iter.Next(ctx) {
				if err := c.Del(ctx, iter.Val()).Err(); err != nil {
					t.Errorf("redistest: deleting %s: %v", iter.Val(), err)
					return
				}
			}
			if err := iter.Err(); err != nil {
				t.Errorf("redistest: scanning %s: %v", p, err)
			}
		}
	})
}

// Server is a redis-server process owned by one test (see
// internal/redisserver). Its methods are safe from several goroutines and
// return errors rather than failing the test, so they may run outside the
// test goroutine.
type Server = redisserver.Server

func start(t testing.TB, persistent bool) *Server {
	t.Helper()
	s, err := redisserver.Start(redisserver.Config{Dir: t.TempDir(), Persistent: persistent})
	if errors.Is(err, redisserver.ErrNotFound) {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found on PATH under CI=true: a missing install step (" + skipHint + ")")
		}
		t.Skip("redis-server not found on PATH: " + skipHint)
	}
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return s
}
