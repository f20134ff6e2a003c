package transports_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// An ordered Redis group hands out one entry per key at a time, in the
// stream's order: the others are parked until Next (or an ack carrying
// PassTurnKey) passes the turn, which appends the next one to the retry
// stream; an entry without the key is not held.
func TestRedisOrder(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.TrimInterval = 20 * time.Millisecond // Backlog's look
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	const retry = "memory.events.retry.ordered"
	if err := tr.Order(cfg.EventsTopic, "ordered", "user_id", retry); err != nil {
		t.Fatal(err)
	}
	p := tr.Publisher()
	for _, m := range []*message.Message{keyed("a1", "a"), keyed("a2", "a"), keyed("n1", ""), keyed("a3", "a")} {
		if err := p.Publish(cfg.EventsTopic, m); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := tr.Subscriber("ordered")
	if err != nil {
		t.Fatal(err)
	}
	events := subscribe(t, sub, cfg.EventsTopic)
	retries := subscribe(t, sub, retry)
	got := receiveAll(t, events, 2)
	if got[0] != "a1" || got[1] != "n1" {
		t.Fatalf("handed out %v, want a1 and n1 (a2 and a3 parked behind a1)", got)
	}
	nothing(t, events, 200*time.Millisecond)
	// The backlog counts the parked ones: a1 and n1 are acknowledged
	// (receiveAll; a's turn not passed), a2 and a3 acknowledged in the
	// stream too but parked, still to deliver.
	tr.Bound("ordered", "ordered-ep", 1000)
	eventually(t, 10*time.Second, "a backlog of 2, the parked a2 and a3", func() bool {
		n, ok := tr.Backlog("ordered")
		return ok && n == 2
	})
	ctx := context.Background()
	if err := tr.Next(ctx, cfg.EventsTopic, "ordered", "a", "a2"); err != nil { // not its turn: nothing
		t.Fatal(err)
	}
	nothing(t, retries, 200*time.Millisecond)
	if err := tr.Next(ctx, cfg.EventsTopic, "ordered", "a", "a1"); err != nil {
		t.Fatal(err)
	}
	a2 := receive(t, retries, 10*time.Second)
	if a2.UUID != "a2" {
		t.Fatalf("after a1's turn %s came, want a2", a2.UUID)
	}
	// The turn passes with the ack this time.
	a2.Metadata.Set(transports.PassTurnKey, "a")
	a2.Ack()
	if a3 := receive(t, retries, 10*time.Second); a3.UUID != "a3" {
		t.Fatalf("after a2's ack %s came, want a3", a3.UUID)
	} else {
		a3.Ack()
	}
}
