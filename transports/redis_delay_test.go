package transports_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// A retry handed to Redis waits in the shared sorted set, is listed, and
// reaches the retry stream once due, whichever consuming transport moves
// it: here one that did not schedule it.
func TestRedisDelayStore(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.RetryTopic = redistest.Name("retry")
	redistest.DeleteKeys(t, url, cfg.RetryTopic, cfg.RetryTopic+":delayed")
	scheduler, err := transports.NewRedisTransport(cfg, false, nil) // publishes only: moves nothing
	if err != nil {
		t.Fatal(err)
	}
	defer scheduler.Close()
	mover, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mover.Close()

	msg := message.NewMessage("evt-1", []byte(`{"event":"memory_added"}`))
	msg.Metadata.Set("event_type", "memory_added")
	msg.Metadata.Set(middleware.AttemptKey, "2")
	due := time.Now().Add(time.Second)
	if err := scheduler.PublishAt(cfg.RetryTopic, due, msg); err != nil {
		t.Fatal(err)
	}
	listed, err := transports.ListDelayed(context.Background(), cfg, cfg.RetryTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != "evt-1" || listed[0].Attempt != 2 || listed[0].Type != "memory_added" {
		t.Fatalf("listed %+v, want evt-1, attempt 2", listed)
	}

	sub, err := mover.Subscriber(cfg.ConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, cfg.RetryTopic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		got.Ack()
		if time.Now().Before(due) {
			t.Errorf("moved %s before its due time", time.Until(due))
		}
		if got.UUID != "evt-1" || middleware.AttemptOf(got) != 2 || string(got.Payload) != string(msg.Payload) {
			t.Errorf("got %s attempt %d %q", got.UUID, middleware.AttemptOf(got), got.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the due retry never reached the retry stream")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, err := transports.ListDelayed(context.Background(), cfg, cfg.RetryTopic, 0)
		if err == nil && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after the move: %+v %v", left, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
