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
