package redisserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// FillKey is the key Fill stores to use up the server's memory.
const FillKey = "redistest:fill"

// fillSize is the size of FillKey's value; maxmemory is set fillHeadroom
// above what the server used before it was stored.
const (
	fillSize     = 4 << 20
	fillHeadroom = 1 << 20
)

// Fill makes the server full, as a production Redis at maxmemory with
// maxmemory-policy noeviction is: it stores a 4 MB string under FillKey,
// then sets maxmemory 1 MB above what the server used before and the
// policy to noeviction. From then on Redis refuses, with an OOM error,
// every command that may allocate (XADD, XGROUP CREATE, SET …), while
// reads, deletions, XREADGROUP, XACK and XAUTOCLAIM still work. Free
// undoes it. Fill returns an error rather than failing a test, so it may
// run outside the test goroutine.
func (s *Server) Fill(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		return fmt.Errorf("redisserver: filling: %w", err)
	}
	used, err := usedMemory(ctx, c)
	if err != nil {
		return err
	}
	if err := c.Set(ctx, FillKey, strings.Repeat("x", fillSize), 0).Err(); err != nil {
		return fmt.Errorf("redisserver: filling: %w", err)
	}
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", strconv.FormatInt(used+fillHeadroom, 10)}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			return fmt.Errorf("redisserver: filling: CONFIG SET %s: %w", kv[0], err)
		}
	}
	// Check that it took: a SET must be refused.
	err = c.Set(ctx, FillKey+":probe", "x", time.Second).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		return fmt.Errorf("redisserver: filled, yet a SET got %v, not OOM", err)
	}
	return nil
}

// Free deletes FillKey, so that the server has room again under the
// maxmemory Fill set.
func (s *Server) Free(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Del(ctx, FillKey).Err(); err != nil {
		return fmt.Errorf("redisserver: freeing: %w", err)
	}
	return nil
}

func usedMemory(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redisserver: INFO memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redisserver: INFO memory has no used_memory")
}
