package transports_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redistest"
)

// commandCalls returns how many times Redis ran each of cmds (lower case)
// since it started, from INFO commandstats.
func commandCalls(t *testing.T, rc *redis.Client, cmds ...string) map[string]int {
	t.Helper()
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := make(map[string]int, len(cmds))
	for _, line := range strings.Split(info, "\n") {
		for _, c := range cmds {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+c+":calls=")
			if !ok {
				continue
			}
			n, _, _ := strings.Cut(rest, ",")
			if calls[c], err = strconv.Atoi(n); err != nil {
				t.Fatalf("commandstats line %q: %v", line, err)
			}
		}
	}
	return calls
}

// Entries are read in batches and acked in batches: far fewer XREADGROUP
// and XACK than entries, and nothing left pending.
func TestRedisReadsAndAcksInBatches(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.Consumers = 16
	const n = 200
	p := newRedisPublisher(t, cfg)
	for range n {
		if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	rc := rawClient(t, url)
	before := commandCalls(t, rc, "xack", "xreadgroup")
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	seen := map[string]bool{}
	for len(seen) < n {
		// Take what the workers hand out, then ack it all, as a router
		// running Consumers handlers side by side does.
		held := []*message.Message{receive(t, ch, 10*time.Second)}
		for len(held) < cfg.Consumers && len(seen)+len(held) < n {
			held = append(held, receive(t, ch, 10*time.Second))
		}
		for _, m := range held {
			seen[m.UUID] = true
			m.Ack()
		}
	}
	ctx := context.Background()
	eventually(t, 10*time.Second, "nothing pending", func() bool {
		return rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Val().Count == 0
	})
	after := commandCalls(t, rc, "xack", "xreadgroup")
	xacks, reads := after["xack"]-before["xack"], after["xreadgroup"]-before["xreadgroup"]
	t.Logf("%d entries: %d XACK, %d XREADGROUP", n, xacks, reads)
	if xacks > n/2 {
		t.Errorf("%d XACK for %d entries: acks are not batched", xacks, n)
	}
	if reads > n/2 {
		t.Errorf("%d XREADGROUP for %d entries: reads are not batched", reads, n)
	}
}

// A nacked message is handed out again, a new message with the same
// UUID, payload and metadata, without Redis delivering the entry again.
func TestRedisNackedMessageIsHandedOutAgainWithoutReading(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.NackDelay = 50 * time.Millisecond
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	sent := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	sent.Metadata.Set("k", "v")
	if err := p.Publish(cfg.EventsTopic, sent); err != nil {
		t.Fatal(err)
	}
	first := receive(t, ch, 5*time.Second)
	nackedAt := time.Now()
	first.Nack()
	again := receive(t, ch, 5*time.Second)
	if took := time.Since(nackedAt); took < cfg.NackDelay {
		t.Errorf("handed out again after %s, before NackDelay %s", took, cfg.NackDelay)
	}
	if again == first || again.UUID != sent.UUID || string(again.Payload) != "payload" || again.Metadata.Get("k") != "v" {
		t.Fatalf("got %p %s %q %v after nacking %p; want a new message equal to %s", again, again.UUID, again.Payload, again.Metadata, first, sent.UUID)
	}
	rc := rawClient(t, url)
	ctx := context.Background()
	pending, err := rc.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: cfg.EventsTopic, Group: cfg.ConsumerGroup, Start: "-", End: "+", Count: 10,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].RetryCount != 1 {
		t.Fatalf("pending = %+v; want the entry, delivered once by Redis", pending)
	}
	again.Ack()
	eventually(t, 5*time.Second, "entry acked", func() bool {
		return rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Val().Count == 0
	})
}

// Close sends the acks made before it, does not wait for a handler that
// never acks, and leaves that handler's entry pending.
func TestRedisCloseFlushesAcksAndLeavesUnackedPending(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.Consumers = 4
	cfg.CloseTimeout = 300 * time.Millisecond
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	for range 4 {
		if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
			t.Fatal(err)
		}
	}
	var held *message.Message
	for i := range 4 {
		m := receive(t, ch, 5*time.Second)
		if i == 0 {
			held = m // never acked
			continue
		}
		m.Ack()
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a handler that never acks")
	}
	select {
	case <-held.Context().Done():
	default:
		t.Error("the held message's context is not cancelled by Close")
	}
	rc := rawClient(t, url)
	pending, err := rc.XPending(context.Background(), cfg.EventsTopic, cfg.ConsumerGroup).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 1 {
		t.Fatalf("%d entries pending after Close, want the one never acked", pending.Count)
	}
	// Released: claimable by another consumer at once.
	ext, err := rc.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: cfg.EventsTopic, Group: cfg.ConsumerGroup, Start: "-", End: "+", Count: 10,
	}).Result()
	if err != nil || len(ext) != 1 || ext[0].Idle < cfg.MaxIdleTime {
		t.Fatalf("pending entry not released (idle below MaxIdleTime %s): %+v %v", cfg.MaxIdleTime, ext, err)
	}
}

// When Subscribe's context ends (a router closing cancels it at once) a
// message out keeps its context until its handler acks it, within
// CloseTimeout, and the ack reaches Redis.
func TestRedisHandlersFinishAfterSubscribeCtxEnds(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.Consumers = 2
	cfg.CloseTimeout = 10 * time.Second
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Subscribe(ctx, cfg.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 5*time.Second)
	cancel()
	time.Sleep(200 * time.Millisecond)
	if m.Context().Err() != nil {
		t.Fatal("the message's context ended with Subscribe's, before its handler finished")
	}
	m.Ack()
	select {
	case _, open := <-ch:
		if open {
			t.Fatal("a message handed out after Subscribe's context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after the handler finished")
	}
	// The last XACK goes out as the subscription ends, just after the
	// channel closes.
	rc := rawClient(t, url)
	eventually(t, 5*time.Second, "the ack in Redis", func() bool {
		pending, err := rc.XPending(context.Background(), cfg.EventsTopic, cfg.ConsumerGroup).Result()
		return err == nil && pending.Count == 0
	})
}
