package transports_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// delayMemoryRetries is how many retries TestRedisDelayStoreMemory keeps
// waiting; delayMemoryOverhead bounds what each costs besides its payload
// (about 780 bytes on Redis 7.0): a second copy of the payload exceeds it.
const (
	delayMemoryRetries  = 10000
	delayMemoryOverhead = 1024
)

// What a long outage costs Redis: 10 000 retries of `memhook bench`'s
// event (a 421-byte envelope) wait in the delay store, put there by
// PublishAt as Schedule does; used_memory (INFO memory) before and after
// gives the bytes per waiting retry, logged (go test -v -run
// TestRedisDelayStoreMemory ./transports/). Each costs its payload and the
// bookkeeping around it — a hash per retry holding the stream entry's
// fields (uuid, msgpack metadata, payload) and a member of the sorted set
// — never several copies of the payload.
func TestRedisDelayStoreMemory(t *testing.T) {
	srv := redistest.Start(t) // a private server: used_memory is this test's alone
	cfg := transports.RedisConfig{URL: srv.URL(), RetryTopic: redistest.Name("retry")}
	tr, err := transports.NewRedisTransport(cfg, false, nil) // publishes only: nothing moves the retries
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	ctx := context.Background()

	payload := benchEnvelope(t)
	before := usedMemory(t, rc)
	due := time.Now().Add(time.Hour)
	// PublishAt makes two round trips to Redis, and this server syncs its
	// append-only file on every write: 16 at a time.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < delayMemoryRetries; i += 16 {
				msg := message.NewMessage(uuid.NewString(), payload)
				msg.Metadata.Set(event.MetaType, string(event.MemoryAdded))
				msg.Metadata.Set(event.MetaUserID, "user_1234567890")
				msg.Metadata.Set(middleware.AttemptKey, "2")
				if err := tr.PublishAt(cfg.RetryTopic, due, msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := usedMemory(t, rc)

	n, err := rc.ZCard(ctx, cfg.RetryTopic+":delayed").Result()
	if err != nil || n != delayMemoryRetries {
		t.Fatalf("%d retries wait in the sorted set (%v), want %d", n, err, delayMemoryRetries)
	}
	perRetry := float64(after-before) / delayMemoryRetries
	// The parts, as Redis counts them (MEMORY USAGE): one retry's hash, and
	// the sorted set shared out.
	first, err := rc.ZRange(ctx, cfg.RetryTopic+":delayed", 0, 0).Result()
	if err != nil || len(first) != 1 {
		t.Fatalf("first waiting retry: %v %v", first, err)
	}
	hash, err := rc.MemoryUsage(ctx, cfg.RetryTopic+":delayed:"+first[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	set, err := rc.MemoryUsage(ctx, cfg.RetryTopic+":delayed", 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d retries of a %d-byte envelope waiting: used_memory %d → %d bytes, %.0f bytes per waiting retry "+
		"(MEMORY USAGE: %d for its hash, %.0f for its share of the sorted set; the rest is the key space)",
		delayMemoryRetries, len(payload), before, after, perRetry, hash, float64(set)/delayMemoryRetries)
	if perRetry < float64(len(payload)) || perRetry > float64(len(payload)+delayMemoryOverhead) {
		t.Errorf("%.0f bytes per waiting retry of a %d-byte payload: want the payload once and at most %d bytes besides",
			perRetry, len(payload), delayMemoryOverhead)
	}
}

// benchEnvelope is the envelope of `memhook bench`'s event (cmd/memhook
// benchEvent with its default --payload-size 400): 421 bytes.
func benchEnvelope(t *testing.T) []byte {
	t.Helper()
	const content = "User prefers morning meetings before 10am and works from the North Austin facility."
	mem := func(pad int) event.Memory {
		return event.Memory{ID: "mem_9f8e7d6c5b4a", Content: content + strings.Repeat(".", pad),
			Metadata: map[string]any{"type": "preference", "category": "schedule"}}
	}
	meta := event.Meta{ID: uuid.NewString(), Time: time.Now(), BotVersion: "1.0.0"}
	e := event.NewMemoryAdded("user_1234567890", mem(0))
	e.RequestID = "req_0123456789abcdef"
	probe, err := event.Encode(e, meta)
	if err != nil {
		t.Fatal(err)
	}
	if pad := 400 - len(probe); pad > 0 {
		e = event.NewMemoryAdded("user_1234567890", mem(pad))
		e.RequestID = "req_0123456789abcdef"
	}
	b, err := event.Encode(e, meta)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// usedMemory returns INFO memory's used_memory, in bytes.
func usedMemory(t *testing.T, rc *redis.Client) int64 {
	t.Helper()
	info, err := rc.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no used_memory in INFO memory:\n%s", info)
	return 0
}
