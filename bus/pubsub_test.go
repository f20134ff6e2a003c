package bus_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

// A bus on a pub/sub the integrator brings (watermill's gochannel here)
// runs the same chain as on the built-in transports: events delivered,
// a refused one poisoned and handed to the poison handler, Send and Stats
// as usual, every group asked for by name.
func TestWithPubSubDeliversOverGoChannel(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	var mu sync.Mutex
	var groups []string
	subscribe := func(group string) (message.Subscriber, error) {
		mu.Lock()
		defer mu.Unlock()
		groups = append(groups, group)
		return gc, nil // gochannel has no groups: every subscriber gets every message, one subscriber per group here
	}
	f := start(t, fastRetry(bus.Config{}), nil, bus.WithPubSub(gc, subscribe), bus.WithMiddleware(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if msg.Metadata.Get(event.MetaUserID) == "refused" {
				return nil, errors.New("refused by the integrator's middleware")
			}
			return h(msg)
		}
	}))
	if got := f.bus.Config().Transport; got != bus.TransportPubSub {
		t.Errorf("Config().Transport = %q, want %q", got, bus.TransportPubSub)
	}
	const n = 200
	for i := range n {
		if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u1", event.Memory{ID: "m", Content: "x"})); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("refused", event.Memory{ID: "m", Content: "x"})); err != nil {
		t.Fatal(err)
	}
	p := f.waitPoison(t)
	if p.Metadata.Get(event.MetaUserID) != "refused" {
		t.Errorf("poisoned %v, want the refused event", p.Metadata)
	}
	eventually(t, "every event delivered", func() bool { return f.bus.Stats().Delivered == n })
	if got := len(f.rcv.Requests()); got != n {
		t.Errorf("receiver got %d requests, want %d", got, n)
	}
	out, err := f.bus.Send(context.Background(), event.NewPreferenceStored("u2", "tea", "drinks"))
	if err != nil || !out.Delivered || out.Status != 200 {
		t.Errorf("Send = %+v, %v; want delivered with 200", out, err)
	}
	s := f.bus.Stats()
	if s.Accepted != n+2 || s.Delivered != n+1 || s.Poisoned != 1 {
		t.Errorf("stats %+v, want accepted %d, delivered %d, poisoned 1", s, n+2, n+1)
	}
	if err := f.bus.Ready(context.Background()); err != nil {
		t.Errorf("Ready: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(groups)
	// The delivery group reads two topics: events and due retries.
	if want := []string{"memhook", "memhook", "memhook.incoming", "memhook.poison"}; !slices.Equal(groups, want) {
		t.Errorf("groups asked for %v, want %v", groups, want)
	}
}

// A bus given a publisher alone publishes and delivers nothing itself.
func TestWithPubSubPublishOnly(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer gc.Close()
	msgs, err := gc.Subscribe(context.Background(), bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(bus.Config{WebhookURL: "http://127.0.0.1:1/never"}, bus.WithPubSub(gc, nil))
	if err != nil {
		t.Fatal(err)
	}
	e := event.NewMemoryAdded("u1", event.Memory{ID: "m", Content: "x"})
	if err := b.Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		m.Ack()
		if m.Metadata.Get(event.MetaType) != string(event.MemoryAdded) {
			t.Errorf("published metadata %v", m.Metadata)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing published on the pub/sub")
	}
	if _, err := b.Send(context.Background(), e); !errors.Is(err, bus.ErrNotDelivering) {
		t.Errorf("Send = %v, want ErrNotDelivering", err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}
