package transports_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

func newRedisSeen(t *testing.T, cfg transports.RedisConfig) *transports.RedisSeen {
	t.Helper()
	s, err := transports.NewRedisSeen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type seenState struct{ claimed, done bool }

func begin(t *testing.T, s *transports.RedisSeen, id string, inProgress time.Duration) seenState {
	t.Helper()
	claimed, done, err := s.Begin(context.Background(), id, inProgress)
	if err != nil {
		t.Fatalf("Begin(%s): %v", id, err)
	}
	return seenState{claimed, done}
}

// Two stores on one Redis (two routers) see each other's ids: new, then in
// progress, then done for the window; a failure forgets the id.
func TestRedisSeen(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	redistest.DeleteKeys(t, url, cfg.EventsTopic+transports.SeenKeySuffix+"*")
	a, b := newRedisSeen(t, cfg), newRedisSeen(t, cfg)
	ctx := context.Background()
	raw := rawClient(t, url)
	const window = time.Minute

	if got := begin(t, a, "e1", 30*time.Second); got != (seenState{claimed: true}) {
		t.Fatalf("first Begin = %+v, want claimed", got)
	}
	key := cfg.EventsTopic + ".seen:e1"
	if a.Key("e1") != key {
		t.Errorf("Key = %q, want %q", a.Key("e1"), key)
	}
	if v, _ := raw.Get(ctx, key).Result(); v != "pending" {
		t.Errorf("%s = %q while in progress, want pending", key, v)
	}
	if ttl := raw.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("in-progress TTL %s, want at most 30s", ttl)
	}
	if got := begin(t, b, "e1", 30*time.Second); got != (seenState{}) {
		t.Fatalf("Begin on the other router while in progress = %+v, want neither claimed nor done", got)
	}
	if err := a.End(ctx, "e1", true, window); err != nil {
		t.Fatal(err)
	}
	if ttl := raw.PTTL(ctx, key).Val(); ttl <= 30*time.Second || ttl > window {
		t.Errorf("done TTL %s, want the window (%s)", ttl, window)
	}
	for _, s := range []*transports.RedisSeen{a, b, newRedisSeen(t, cfg)} { // the last: after a restart
		if got := begin(t, s, "e1", 30*time.Second); got != (seenState{done: true}) {
			t.Errorf("Begin after processing = %+v, want done", got)
		}
	}

	// A failure forgets the id: the sender's retry is processed.
	begin(t, a, "e2", 30*time.Second)
	if err := a.End(ctx, "e2", false, window); err != nil {
		t.Fatal(err)
	}
	if n := raw.Exists(ctx, a.Key("e2")).Val(); n != 0 {
		t.Errorf("key of a failed id still there")
	}
	if got := begin(t, b, "e2", 30*time.Second); got != (seenState{claimed: true}) {
		t.Errorf("Begin after a failure = %+v, want claimed", got)
	}
	// ... but a late failure does not erase a done mark set meanwhile.
	if err := b.End(ctx, "e2", true, window); err != nil {
		t.Fatal(err)
	}
	if err := a.End(ctx, "e2", false, window); err != nil {
		t.Fatal(err)
	}
	if got := begin(t, a, "e2", 30*time.Second); got != (seenState{done: true}) {
		t.Errorf("Begin after a done mark and a late failure = %+v, want done", got)
	}

	// The claim of a router that died lapses after its in-progress time.
	begin(t, a, "e3", 50*time.Millisecond)
	eventually(t, 5*time.Second, "the claim on e3 lapses", func() bool {
		return begin(t, b, "e3", 30*time.Second).claimed
	})
}

// With Redis unreachable Begin fails and claims nothing, within the
// client's timeouts; the error does not carry the URL's password.
func TestRedisSeenRedisDown(t *testing.T) {
	addr := closedPort(t)
	cfg := transports.RedisConfig{URL: "redis://:hunter2-password@" + addr + "/0", DialTimeout: 200 * time.Millisecond}
	s := newRedisSeen(t, cfg)
	start := time.Now()
	claimed, done, err := s.Begin(context.Background(), "e1", time.Second)
	if err == nil || claimed || done {
		t.Fatalf("Begin with Redis down = %t, %t, %v; want an error", claimed, done, err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error reveals the password: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Begin took %s with Redis down", took)
	}
	if err := s.End(context.Background(), "e1", true, time.Minute); err == nil {
		t.Error("End with Redis down succeeded")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
