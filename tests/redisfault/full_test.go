package redisfault_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// A router started while Redis is full (maxmemory, noeviction) with its
// consumer group already there joins it, becomes ready and drains the
// backlog: XGROUP CREATE is refused with OOM, but reading and acking work.
func TestRouterJoinsAFullRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	if err := rc.XGroupCreateMkStream(ctx, bus.Topic, transports.DefaultConsumerGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	emit(t, srv.URL(), n)
	if err := srv.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	c, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "full-a")...)
	r.waitReady(t, 15*time.Second)
	c.waitDistinct(t, n, 30*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		groups, err := rc.XInfoGroups(ctx, bus.Topic).Result()
		if err == nil && len(groups) == 1 && groups[0].Pending == 0 && groups[0].EntriesRead == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog not all acknowledged on the full Redis: %+v %v\n%s", groups, err, r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(r.log(), "not reachable") {
		t.Errorf("a full Redis was logged as not reachable:\n%s", r.log())
	}
}

// A router started while Redis is full and its consumer group is missing
// says that Redis is full — not that it is unreachable — and stays not
// ready; once memory is freed it creates the group and delivers what was
// queued.
func TestRouterOnAFullRedisWithoutItsGroup(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	const n = 5
	emit(t, srv.URL(), n) // the stream exists, the group does not
	if err := srv.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	c, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "full-b")...)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(r.log(), "Redis is full (maxmemory reached") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line saying Redis is full:\n%s", r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(r.log(), "not reachable") {
		t.Errorf("a full Redis was logged as not reachable:\n%s", r.log())
	}
	r.wantNotReady(t)
	if err := srv.Free(ctx); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, 30*time.Second)
	c.waitDistinct(t, n, 30*time.Second)
}
