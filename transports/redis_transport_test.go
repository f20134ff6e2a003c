package transports_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// receiveAll takes the messages of ch, acking each, until n arrived, and
// returns their UUIDs sorted (workers hand them out concurrently).
func receiveAll(t *testing.T, ch <-chan *message.Message, n int) []string {
	t.Helper()
	var out []string
	for range n {
		msg := receive(t, ch, 10*time.Second)
		msg.Ack()
		out = append(out, msg.UUID)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...[]string) []string {
	out := slices.Concat(s...)
	slices.Sort(out)
	return out
}

// A group created at GroupStartNewest (an endpoint added at runtime) gets
// the events appended after it joined, one created at start-up
// (Subscriber, GroupStartOldest) those already there too; a group that
// exists keeps its position whatever the start asked.
func TestRedisSubscriberFrom(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	p := newRedisPublisher(t, cfg)
	before := publishN(t, p, cfg.EventsTopic, 3)

	oldest, err := tr.Subscriber("at-start")
	if err != nil {
		t.Fatal(err)
	}
	added, err := tr.SubscriberFrom("added", transports.GroupStartNewest)
	if err != nil {
		t.Fatal(err)
	}
	addedCtx, stopAdded := context.WithCancel(context.Background())
	addedCh, err := added.Subscribe(addedCtx, cfg.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the added endpoint's group joined", func() bool {
		return tr.Ready(context.Background()) == nil
	})
	after := publishN(t, p, cfg.EventsTopic, 2)
	if got := receiveAll(t, addedCh, 2); !slices.Equal(got, sorted(after)) {
		t.Fatalf("the group created at GroupStartNewest got %v, want only the events appended after it joined %v", got, after)
	}
	nothing(t, addedCh, 200*time.Millisecond)
	if got := receiveAll(t, subscribe(t, oldest, cfg.EventsTopic), 5); !slices.Equal(got, sorted(before, after)) {
		t.Fatalf("the group created at start-up got %v, want all 5 %v", got, sorted(before, after))
	}

	// The added endpoint's subscription ends (a router restarting), an
	// event comes meanwhile: the group resumes where it was.
	stopAdded()
	for range addedCh { // until the subscription has ended
	}
	missed := publishN(t, p, cfg.EventsTopic, 1)
	again, err := tr.SubscriberFrom("added", transports.GroupStartNewest)
	if err != nil {
		t.Fatal(err)
	}
	if got := receiveAll(t, subscribe(t, again, cfg.EventsTopic), 1); got[0] != missed[0] {
		t.Fatalf("the existing group resumed with %s, want %s appended while it was away", got[0], missed[0])
	}
}

// RemoveGroup refuses while the group is subscribed here, then deletes
// the group and its bound: the stream trims past what it never read, the
// transport stays ready without the closed subscriber, and removing it
// again is no error.
func TestRedisRemoveGroup(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.TrimInterval = 20 * time.Millisecond
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	ctx := context.Background()
	rc := rawClient(t, url)
	p := newRedisPublisher(t, cfg)

	stays, err := tr.Subscriber("stays")
	if err != nil {
		t.Fatal(err)
	}
	staysCh := subscribe(t, stays, cfg.EventsTopic)
	removed, err := tr.Subscriber("removed")
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, removed, cfg.EventsTopic) // never acks: all it reads stays pending
	tr.Bound("removed", "crm", 1000)
	publishN(t, p, cfg.EventsTopic, 5)
	receiveAll(t, staysCh, 5)
	eventually(t, 5*time.Second, "the removed group's backlog looked at", func() bool {
		n, ok := tr.Backlog("removed")
		return ok && n == 5
	})
	if err := tr.RemoveGroup(ctx, "removed"); !errors.Is(err, transports.ErrGroupInUse) {
		t.Fatalf("RemoveGroup while subscribed = %v, want ErrGroupInUse", err)
	}
	if err := removed.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.RemoveGroup(ctx, "removed"); err != nil {
		t.Fatalf("RemoveGroup: %v", err)
	}
	groups, err := rc.XInfoGroups(ctx, cfg.EventsTopic).Result()
	if err != nil || len(groups) != 1 || groups[0].Name != "stays" {
		t.Fatalf("groups after RemoveGroup: %+v, %v; want only stays", groups, err)
	}
	if _, ok := tr.Backlog("removed"); ok {
		t.Error("the removed group is still bound")
	}
	eventually(t, 5*time.Second, "the stream trimmed of what only the removed group held", func() bool {
		return rc.XLen(ctx, cfg.EventsTopic).Val() == 0
	})
	if err := tr.Ready(ctx); err != nil {
		t.Errorf("Ready with a closed subscriber: %v", err)
	}
	if err := tr.RemoveGroup(ctx, "removed"); err != nil {
		t.Errorf("RemoveGroup of a gone group: %v", err)
	}
	other := cfg
	other.EventsTopic = redistest.Name("events")
	redistest.DeleteKeys(t, url, other.EventsTopic)
	nostream, err := transports.NewRedisTransport(other, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = nostream.Close() })
	if err := nostream.RemoveGroup(ctx, "any"); err != nil {
		t.Errorf("RemoveGroup on a missing stream: %v", err)
	}
}
