package redisfault_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/redistest"
)

// A router whose first subscription fails although Redis answers (the
// events key holds a string, so the consumer group cannot be made) keeps
// trying with a fresh subscriber, and delivers once the key is fixed.
func TestRouterRecoversFromAFailedSubscribe(t *testing.T) {
	srv := redistest.Start(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, bus.Topic, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cnt, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "wrongtype-a")...)
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(r.log(), "WRONGTYPE") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two failed tries naming WRONGTYPE:\n%s", r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + r.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d while subscribing fails, want 503", resp.StatusCode)
	}
	if err := c.Del(ctx, bus.Topic).Err(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, 30*time.Second)
	emit(t, srv.URL(), 10)
	cnt.waitDistinct(t, 10, 30*time.Second)
}
