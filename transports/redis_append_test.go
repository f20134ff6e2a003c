package transports_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
)

// Many goroutines publishing at once (their XADDs share pipelines) each
// get their own outcome, and every message is appended exactly once; a
// call's messages keep their order.
func TestRedisConcurrentPublishes(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	p := newRedisPublisher(t, cfg)
	const goroutines, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i == 0 {
					a := message.NewMessage(fmt.Sprintf("g%d-a", g), nil)
					b := message.NewMessage(fmt.Sprintf("g%d-b", g), nil)
					errs <- p.Publish(cfg.EventsTopic, a, b)
					continue
				}
				errs <- p.Publish(cfg.EventsTopic, message.NewMessage(fmt.Sprintf("g%d-%d", g, i), nil))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, err := rawClient(t, url).XRange(context.Background(), cfg.EventsTopic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	pos := map[string]int{}
	for i, e := range entries {
		id, _ := e.Values["_watermill_message_uuid"].(string)
		seen[id]++
		pos[id] = i
	}
	if len(entries) != goroutines*(each+1) || len(seen) != goroutines*(each+1) {
		t.Fatalf("%d entries, %d distinct, want %d of each", len(entries), len(seen), goroutines*(each+1))
	}
	for g := range goroutines {
		if a, b := pos[fmt.Sprintf("g%d-a", g)], pos[fmt.Sprintf("g%d-b", g)]; a > b {
			t.Errorf("goroutine %d: its two messages appended out of order", g)
		}
	}
}

// A message that cannot be appended (its stream is a string) fails alone;
// the error says how many of the call's messages were not published.
func TestRedisPublishReportsEachFailure(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	p := newRedisPublisher(t, cfg)
	if err := rawClient(t, url).Set(context.Background(), cfg.EventsTopic, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Publish(cfg.EventsTopic, message.NewMessage(fmt.Sprint(i), nil), message.NewMessage(fmt.Sprint(i, "b"), nil))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "2 of 2 messages not published") || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("error %v, want 2 of 2 not published, WRONGTYPE", err)
		}
	}
	if err := p.Publish(cfg.PoisonTopic, message.NewMessage("fine", nil)); err != nil {
		t.Errorf("a publish to another stream failed too: %v", err)
	}
}
