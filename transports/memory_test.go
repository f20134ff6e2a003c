package transports_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/memhook/memhook/transports"
)

func newMemory(t *testing.T, cfg transports.MemoryConfig) *transports.Memory {
	t.Helper()
	m, err := transports.NewMemory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMemoryPubSubSuite(t *testing.T) {
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:        false,
			ExactlyOnceDelivery:   true,
			GuaranteedOrder:       false,
			Persistent:            false,
			RequireSingleInstance: true,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			m := newMemory(t, transports.MemoryConfig{Capacity: 100_000, NackDelay: time.Millisecond})
			return m, m
		},
		nil,
	)
}

func TestMemoryPublishNeverBlocks(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 3})
	defer m.Close()
	for i := range 3 {
		if err := m.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- m.Publish("t", message.NewMessage("x", nil)) }()
	select {
	case err := <-done:
		if !errors.Is(err, transports.ErrQueueFull) {
			t.Fatalf("publish to a full queue: got %v, want ErrQueueFull", err)
		}
	case <-time.After(time.Second):
		t.Fatal("publish to a full queue blocked")
	}
	err := m.Publish("t", message.NewMessage("y", nil), message.NewMessage("z", nil))
	if !errors.Is(err, transports.ErrQueueFull) || err.Error() != "transports: memory queue is full: 0 of 2 messages accepted" {
		t.Fatalf("batch publish: got %v", err)
	}
	if got := m.Outstanding("t"); got != 3 {
		t.Fatalf("outstanding = %d, want 3", got)
	}
}

func TestMemoryKeepsMessagesPublishedBeforeSubscribe(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{})
	defer m.Close()
	if err := m.Publish("t", message.NewMessage("early", []byte("p"))); err != nil {
		t.Fatal(err)
	}
	ch, err := m.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-ch:
		if msg.UUID != "early" {
			t.Fatalf("got %s", msg.UUID)
		}
		msg.Ack()
	case <-time.After(2 * time.Second):
		t.Fatal("message published before Subscribe never arrived")
	}
}

// A nacked message comes back after NackDelay, doubling: never in a tight
// loop (watermill's gochannel resends at once).
func TestMemoryNackWaits(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{NackDelay: 50 * time.Millisecond, Workers: 1})
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("t", message.NewMessage("n", nil)); err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for len(times) < 4 {
		select {
		case msg := <-ch:
			times = append(times, time.Now())
			if len(times) < 4 {
				msg.Nack()
			} else {
				msg.Ack()
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("redelivery %d never came", len(times))
		}
	}
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	for i, w := range want {
		if got := times[i+1].Sub(times[i]); got < w {
			t.Errorf("redelivery %d after %s, want at least %s", i+1, got, w)
		}
	}
}

// Workers bounds the messages in flight per subscription, and Drain waits
// for them; Shutdown reports what was never acked.
func TestMemoryWorkersDrainAndShutdown(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Workers: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 10 {
		if err := m.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var held []*message.Message
	for range 4 {
		select {
		case msg := <-ch:
			held = append(held, msg)
		case <-time.After(2 * time.Second):
			t.Fatal("message not handed out")
		}
	}
	select {
	case msg := <-ch:
		t.Fatalf("a fifth message %s was handed out with 4 workers all waiting for acks", msg.UUID)
	case <-time.After(100 * time.Millisecond):
	}
	held[0].Ack()
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	if err := m.Drain(dctx, "t"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with unacked messages: got %v", err)
	}
	left := m.Shutdown()["t"]
	if len(left) != 9 {
		t.Fatalf("Shutdown reported %d messages, want 9", len(left))
	}
	for _, msg := range held[1:] {
		if msg.Context().Err() == nil {
			t.Errorf("in-flight message %s: context not cancelled by Shutdown", msg.UUID)
		}
		msg.Nack()
	}
	if err := m.Publish("t", message.NewMessage("late", nil)); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("publish after Shutdown: got %v", err)
	}
	if again := m.Shutdown(); again != nil {
		t.Fatalf("second Shutdown reported %v", again)
	}
}

// No goroutine per queued message: a backlog of 50 000 costs no goroutines.
func TestMemoryBacklogStartsNoGoroutines(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 50_000, Workers: 2})
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := m.Subscribe(ctx, "t"); err != nil { // nobody reads the channel
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for i := range 50_000 {
		if err := m.Publish("t", message.NewMessage(string(rune(i)), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Fatalf("goroutines went from %d to %d with a backlog", before, after)
	}
}
