package redisfault_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// A router started while Redis is full (maxmemory, noeviction) with its
// consumer group already there joins it, becomes ready and drains the
// backlog: XGROUP CREATE is refused with OOM, but reading and acking work.
func TestRouterJoinsAFullRedis(t *testing.T) {
	const n = 20
	srv, rc := fullWithBacklog(t, n)
	ctx := context.Background()
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

// An event the receiver refuses for good (400) while Redis is full cannot
// be copied to the poison stream (XADD is refused with OOM). The receiver
// still gets it once: the poison copy is retried, and logged with the
// reason, without POSTing the event again; nothing is lost, and once memory
// is freed every event reaches the poison stream.
func TestPermanentFailureOnAFullRedisIsPostedOnce(t *testing.T) {
	const n = 16
	srv, rc := fullWithBacklog(t, n)
	ctx := context.Background()
	var mu sync.Mutex
	posts := map[string]int{} // by webhook-id
	count := func() (requests, duplicates int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range posts {
			requests += c
			duplicates += c - 1
		}
		return requests, duplicates
	}
	rcv, err := receiver.Start(func(_ http.ResponseWriter, req *http.Request, _ int) int {
		mu.Lock()
		defer mu.Unlock()
		posts[req.Header.Get("webhook-id")]++
		return http.StatusBadRequest
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "full-poison")...)
	r.waitReady(t, 15*time.Second)
	// Each of the MEMHOOK_CONCURRENCY (8) workers takes an event; it holds
	// it until the poison copy is written.
	if err := rcv.WaitFor(8, 15*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, r.log())
	}
	// Sleep to show that no event is POSTed again while the poison copies
	// keep failing.
	time.Sleep(4 * time.Second)
	if requests, dups := count(); dups != 0 {
		t.Errorf("receiver got %d requests, %d of them for an event it had already refused with 400: want each event once", requests, dups)
	}
	if !strings.Contains(r.log(), "OOM") || !strings.Contains(r.log(), "poison") {
		t.Errorf("no log line giving the reason the poison copies fail (OOM):\n%s", r.log())
	}
	if err := srv.Free(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		poisoned, perr := rc.XLen(ctx, bus.PoisonTopic).Result()
		groups, gerr := rc.XInfoGroups(ctx, bus.Topic).Result()
		if perr == nil && gerr == nil && poisoned == n && len(groups) == 1 && groups[0].Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after freeing memory: poison stream holds %d (%v), events group %+v (%v), want %d poisoned, none pending\n%s",
				poisoned, perr, groups, gerr, n, r.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if requests, dups := count(); requests != n || dups != 0 {
		t.Errorf("receiver got %d requests in all, %d duplicates; want %d, each event once", requests, dups, n)
	}
}

// fullWithBacklog starts a private redis-server whose events stream holds
// n events for the router's consumer group, then fills it (maxmemory,
// noeviction). The client is closed when t ends.
func fullWithBacklog(t *testing.T, n int) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rc.Close() })
	if err := rc.XGroupCreateMkStream(ctx, bus.Topic, transports.DefaultConsumerGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	emit(t, srv.URL(), n)
	if err := srv.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	return srv, rc
}
