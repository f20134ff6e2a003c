package transports_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus/event"
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

// ListDelayed shows what PublishAt keeps, soonest first, with the fields
// `memhook retries list` prints; it skips a retry whose entry was moved to
// the stream while it listed.
func TestListDelayed(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.RetryTopic = redistest.Name("retry")
	redistest.DeleteKeys(t, url, cfg.RetryTopic+"*")
	// Not consuming: no mover takes them back while the test looks.
	tr, err := transports.NewRedisTransport(cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	ctx := context.Background()

	if got, err := transports.ListDelayed(ctx, cfg, cfg.RetryTopic, 0); err != nil || len(got) != 0 {
		t.Fatalf("ListDelayed with nothing waiting = %v, %v", got, err)
	}
	now := time.Now().Truncate(time.Millisecond)
	waits := []struct {
		user    string
		attempt string
		due     time.Time
	}{
		{"u-late", "3", now.Add(time.Hour)},
		{"u-soon", "2", now.Add(time.Minute)},
		{"u-mid", "4", now.Add(10 * time.Minute)},
	}
	ids := map[string]string{}
	for _, w := range waits {
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{}`))
		msg.Metadata.Set(event.MetaType, "memory_added")
		msg.Metadata.Set(event.MetaUserID, w.user)
		msg.Metadata.Set(middleware.AttemptKey, w.attempt)
		if err := tr.PublishAt(cfg.RetryTopic, w.due, msg); err != nil {
			t.Fatal(err)
		}
		ids[w.user] = msg.UUID
	}
	if two, err := transports.ListDelayed(ctx, cfg, cfg.RetryTopic, 2); err != nil || len(two) != 2 ||
		two[0].UserID != "u-soon" || two[1].UserID != "u-mid" {
		t.Errorf("ListDelayed(limit 2) = %+v, %v; want u-soon and u-mid", two, err)
	}
	// A member whose entry is gone: what ListDelayed sees when the mover
	// moved it between reading the set and reading the entry.
	c := redis.NewClient(mustParseURL(t, url))
	defer c.Close()
	if err := c.ZAdd(ctx, cfg.RetryTopic+":delayed", redis.Z{Score: float64(now.UnixMilli()), Member: "gone:2"}).Err(); err != nil {
		t.Fatal(err)
	}

	got, err := transports.ListDelayed(ctx, cfg, cfg.RetryTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []transports.DelayedEntry{
		{ID: ids["u-soon"], Attempt: 2, Type: "memory_added", UserID: "u-soon", Due: now.Add(time.Minute).UTC()},
		{ID: ids["u-mid"], Attempt: 4, Type: "memory_added", UserID: "u-mid", Due: now.Add(10 * time.Minute).UTC()},
		{ID: ids["u-late"], Attempt: 3, Type: "memory_added", UserID: "u-late", Due: now.Add(time.Hour).UTC()},
	}
	if len(got) != len(want) {
		t.Fatalf("ListDelayed = %+v, want %d entries", got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func mustParseURL(t *testing.T, url string) *redis.Options {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// The mover follows the subscriptions: the retries of a topic no
// subscription reads wait; once one reads it (an endpoint added at
// runtime) they are moved and counted, per topic and in all; once its
// last subscription ends they wait again.
func TestRedisMoverFollowsSubscriptions(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	rc := rawClient(t, url)
	ctx := context.Background()
	crm := cfg.RetryTopic + ".crm" // an endpoint's retry topic
	retry := func(topic, id string, due time.Time) {
		t.Helper()
		msg := message.NewMessage(id, []byte("{}"))
		msg.Metadata.Set(middleware.AttemptKey, "2")
		if err := tr.PublishAt(topic, due, msg); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := tr.Subscriber(cfg.ConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, sub, cfg.RetryTopic) // the default endpoint's: starts the mover
	retry(crm, "crm-1", time.Now())
	later := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	retry(cfg.RetryTopic, "default-later", later)
	eventually(t, 5*time.Second, "the default retry topic's waiting retry counted", func() bool {
		n, oldest := tr.Waiting()
		return n == 1 && oldest.Equal(later)
	})
	time.Sleep(3 * 200 * time.Millisecond) // shows that nothing happens: three looks of the mover
	if n := rc.ZCard(ctx, crm+":delayed").Val(); n != 1 || rc.Exists(ctx, crm).Val() != 0 {
		t.Fatalf("a retry of a topic nobody here reads was moved (%d left waiting)", n)
	}
	if n, _ := tr.WaitingOf(crm); n != 0 {
		t.Errorf("WaitingOf(%s) = %d before anyone reads it, want 0 (not looked at)", crm, n)
	}

	crmSub, err := tr.Subscriber(cfg.ConsumerGroup + ".crm")
	if err != nil {
		t.Fatal(err)
	}
	crmCtx, stopCRM := context.WithCancel(ctx)
	defer stopCRM()
	ch, err := crmSub.Subscribe(crmCtx, crm)
	if err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, 10*time.Second)
	got.Ack()
	if got.UUID != "crm-1" {
		t.Fatalf("got %s, want crm-1", got.UUID)
	}
	crmLater := later.Add(-time.Minute)
	retry(crm, "crm-later", crmLater)
	eventually(t, 5*time.Second, "per-topic and total waiting counts", func() bool {
		n, oldest := tr.WaitingOf(crm)
		total, first := tr.Waiting()
		dn, doldest := tr.WaitingOf(cfg.RetryTopic)
		return n == 1 && oldest.Equal(crmLater) && dn == 1 && doldest.Equal(later) && total == 2 && first.Equal(crmLater)
	})

	stopCRM()
	eventually(t, 5*time.Second, "the ended subscription's topic left the mover", func() bool {
		n, _ := tr.WaitingOf(crm)
		total, _ := tr.Waiting()
		return n == 0 && total == 1
	})
	retry(crm, "crm-2", time.Now())
	time.Sleep(3 * 200 * time.Millisecond) // shows that nothing happens: three looks of the mover
	if n := rc.ZCard(ctx, crm+":delayed").Val(); n != 2 {
		t.Errorf("%d retries wait for %s after its subscription ended, want crm-later and crm-2", n, crm)
	}
}
