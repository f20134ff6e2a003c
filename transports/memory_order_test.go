package transports_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/transports"
)

func keyed(uuid, key string) *message.Message {
	m := message.NewMessage(uuid, nil)
	if key != "" {
		m.Metadata.Set("user_id", key)
	}
	return m
}

// An ordered memory group hands out one message per key at a time; Next
// passes the turn to the key's next message through the retry topic; a
// message without the key is not held; parked messages count against
// Capacity and are reported by RemoveGroup and Shutdown, never lost.
func TestMemoryOrder(t *testing.T) {
	m, err := transports.NewMemory(transports.MemoryConfig{Capacity: 5})
	if err != nil {
		t.Fatal(err)
	}
	m.Order("events", "g", "user_id", "retry")
	for _, msg := range []*message.Message{keyed("a1", "a"), keyed("a2", "a"), keyed("b1", "b"), keyed("n1", ""), keyed("a3", "a")} {
		if err := m.Publish("events", msg); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.QueuedOf("events", "g"); got != 5 {
		t.Errorf("QueuedOf = %d, want 5 (3 queued, 2 parked)", got)
	}
	if err := m.Publish("events", keyed("c1", "c")); err == nil {
		t.Error("a sixth message accepted: parked messages must count against Capacity 5")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := m.Subscriber("g").Subscribe(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	retries, err := m.Subscriber("g").Subscribe(ctx, "retry")
	if err != nil {
		t.Fatal(err)
	}
	take := func(ch <-chan *message.Message) string {
		t.Helper()
		select {
		case msg := <-ch:
			msg.Ack()
			return msg.UUID
		case <-time.After(2 * time.Second):
			t.Fatal("nothing handed out")
			return ""
		}
	}
	got := map[string]bool{}
	for range 3 {
		got[take(events)] = true
	}
	if !got["a1"] || !got["b1"] || !got["n1"] {
		t.Fatalf("handed out %v, want a1, b1 and n1 (a2, a3 wait for a1)", got)
	}
	select {
	case msg := <-events:
		t.Fatalf("%s handed out while a1 has the turn", msg.UUID)
	case <-time.After(50 * time.Millisecond):
	}
	if err := m.Next("events", "g", "a", "a2"); err != nil { // not its turn: nothing changes
		t.Fatal(err)
	}
	if err := m.Next("events", "g", "a", "a1"); err != nil {
		t.Fatal(err)
	}
	if id := take(retries); id != "a2" {
		t.Fatalf("after a1's turn, %s came, want a2", id)
	}
	if err := m.Next("events", "g", "a", "a1"); err != nil { // a second Next of a1 changes nothing
		t.Fatal(err)
	}
	select {
	case msg := <-retries:
		t.Fatalf("%s handed out while a2 has the turn", msg.UUID)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	left := m.Shutdown()
	found := false
	for _, msg := range left["events"] {
		found = found || msg.UUID == "a3"
	}
	if !found {
		t.Errorf("Shutdown left %v, want the parked a3 among them", left)
	}
}
