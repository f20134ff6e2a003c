package transports_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// expediteStore is a Delayer that can Expedite.
type expediteStore interface {
	transports.Delayer
	transports.Expediter
}

// checkExpedite: of the messages waiting an hour, Expedite makes those
// Health held for the topic due now — they arrive on sub at once — and
// leaves a retry waiting out its schedule and what was held for another
// topic where they were. A second Expedite finds nothing to change.
func checkExpedite(t *testing.T, st expediteStore, topic, other string, sub <-chan *message.Message, waitingOf func(topic string) (int, time.Time)) {
	t.Helper()
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	wait := func(top, id, held string) {
		t.Helper()
		msg := message.NewMessage(id, []byte(`{}`))
		msg.Metadata.Set(middleware.AttemptKey, "2")
		if held != "" {
			msg.Metadata.Set(middleware.HeldKey, held)
		}
		if err := st.PublishAt(top, later, msg); err != nil {
			t.Fatal(err)
		}
	}
	wait(topic, "held-paused", string(middleware.StatePaused))
	wait(topic, "held-disabled", string(middleware.StateDisabled))
	wait(topic, "retry", "")
	wait(other, "held-elsewhere", string(middleware.StatePaused))

	start := time.Now()
	n, err := st.Expedite(ctx, topic)
	if err != nil || n != 2 {
		t.Fatalf("Expedite = %d, %v; want the 2 held for %s", n, err, topic)
	}
	var got []string
	for len(got) < 2 {
		select {
		case msg := <-sub:
			got = append(got, msg.UUID)
			msg.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("after Expedite only %v arrived, want held-paused and held-disabled", got)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"held-disabled", "held-paused"}) {
		t.Errorf("arrived %v, want the two held", got)
	}
	t.Logf("the held messages arrived %s after Expedite", time.Since(start).Round(time.Millisecond))
	select {
	case msg := <-sub:
		t.Errorf("%s arrived too: a retry waiting out its schedule was brought forward", msg.UUID)
	case <-time.After(500 * time.Millisecond):
	}
	if n, err := st.Expedite(ctx, topic); err != nil || n != 0 {
		t.Errorf("second Expedite = %d, %v; want nothing left to change", n, err)
	}
	eventually(t, 5*time.Second, "the retry waits for its own due time", func() bool {
		n, due := waitingOf(topic)
		return n == 1 && due.Sub(later).Abs() < time.Second
	})
	eventually(t, 5*time.Second, "what was held for another topic waits", func() bool {
		n, due := waitingOf(other)
		return n == 1 && due.Sub(later).Abs() < time.Second
	})
}

func TestMemoryExpedite(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{})
	defer m.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := m.Subscribe(ctx, "retry-a")
	if err != nil {
		t.Fatal(err)
	}
	checkExpedite(t, m, "retry-a", "retry-b", sub, m.WaitingOf)
}

func TestRedisExpedite(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	topic, other := redistest.Name("retry-a"), redistest.Name("retry-b")
	redistest.DeleteKeys(t, url, topic, topic+":delayed*", other, other+":delayed*")
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := tr.Subscriber(cfg.ConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := s.Subscribe(ctx, topic) // the mover moves topic's from now on; other's stays
	if err != nil {
		t.Fatal(err)
	}
	// As stored in Redis, whichever router moves the topic.
	waitingOf := func(topic string) (int, time.Time) {
		listed, err := transports.ListDelayed(ctx, cfg, topic, 0)
		if err != nil || len(listed) == 0 {
			return 0, time.Time{}
		}
		return len(listed), listed[0].Due
	}
	checkExpedite(t, tr, topic, other, sub, waitingOf)
}
