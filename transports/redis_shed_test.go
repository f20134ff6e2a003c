package transports_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// publishN publishes n events with an event type and a user to topic and
// returns their UUIDs, in order.
func publishN(t *testing.T, p message.Publisher, topic string, n int) []string {
	t.Helper()
	var out []string
	for range n {
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{"event":"memory_added"}`))
		msg.Metadata.Set(event.MetaType, "memory_added")
		msg.Metadata.Set(event.MetaUserID, "u1")
		if err := p.Publish(topic, msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
		out = append(out, msg.UUID)
	}
	return out
}

// An entry leaves the events stream only once every consumer group has
// acknowledged it: with three groups the stream starts at the oldest
// entry one of them has not acknowledged — unread or pending — and a
// group that acknowledged everything holds nothing back.
func TestRedisTrimAckedWithManyGroups(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	rc := rawClient(t, url)
	publishN(t, p, cfg.EventsTopic, 10)
	all, err := rc.XRange(ctx, cfg.EventsTopic, "-", "+").Result()
	if err != nil || len(all) != 10 {
		t.Fatalf("XRANGE = %d, %v", len(all), err)
	}
	for _, g := range []string{"fast", "pending", "lagging"} {
		if err := rc.XGroupCreate(ctx, cfg.EventsTopic, g, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(group string, n int64) []string {
		t.Helper()
		st, err := rc.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{cfg.EventsTopic, ">"}, Count: n, Block: -1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range st[0].Messages {
			ids = append(ids, m.ID)
		}
		return ids
	}
	ack := func(group string, ids ...string) {
		t.Helper()
		if err := rc.XAck(ctx, cfg.EventsTopic, group, ids...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var pendingIDs []string
	for _, step := range []struct {
		name  string
		do    func()
		first int // index in all of the first entry left; len(all): none
	}{
		{"fast acks all, pending acks 6 of 10 read, lagging reads and acks 3", func() {
			ack("fast", read("fast", 10)...)
			pendingIDs = read("pending", 10)
			ack("pending", pendingIDs[:6]...)
			ack("lagging", read("lagging", 3)...)
		}, 3},
		{"lagging acks up to the 8th: pending's oldest unacked (7th) holds", func() {
			ack("lagging", read("lagging", 5)...)
		}, 6},
		{"pending acks the rest: lagging's unread 9th holds", func() {
			ack("pending", pendingIDs[6:]...)
		}, 8},
		{"lagging reads the 9th and holds it pending", func() {
			read("lagging", 1)
		}, 8},
		{"lagging acks everything: all acknowledged", func() {
			ack("lagging", all[8].ID)
			ack("lagging", read("lagging", 10)...)
		}, 10},
	} {
		step.do()
		if _, err := p.TrimAcked(ctx, cfg.EventsTopic); err != nil {
			t.Fatalf("%s: TrimAcked: %v", step.name, err)
		}
		left, err := rc.XRange(ctx, cfg.EventsTopic, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != len(all)-step.first || (len(left) > 0 && left[0].ID != all[step.first].ID) {
			t.Fatalf("%s: %d entries left, want the %d from entry %d", step.name, len(left), len(all)-step.first, step.first+1)
		}
	}
}

// ShedBacklog moves, past the bound, a group's oldest undelivered entries
// to the poison stream for its endpoint — undecodable ones too, as the
// subscriber poisons them — and nothing else: the group's pending entries
// and its newest stay, another group still gets everything, and two
// shedders at once shed the excess once.
func TestRedisShedBacklog(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	rc := rawClient(t, url)

	if n, b, err := p.ShedBacklog(ctx, cfg.EventsTopic, "g", "crm", 0); n != 0 || b != 0 || err != nil {
		t.Fatalf("ShedBacklog of a missing stream = %d, %d, %v; want nothing", n, b, err)
	}
	uuids := publishN(t, p, cfg.EventsTopic, 2)
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.EventsTopic, Values: map[string]any{"junk": "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	uuids = append(uuids, "") // the undecodable third entry
	uuids = append(uuids, publishN(t, p, cfg.EventsTopic, 8)...)
	if n, b, err := p.ShedBacklog(ctx, cfg.EventsTopic, "g", "crm", 0); n != 0 || b != 0 || err != nil {
		t.Fatalf("ShedBacklog of a missing group = %d, %d, %v; want nothing", n, b, err)
	}
	for _, g := range []string{"g", "other", "twice"} {
		if err := rc.XGroupCreate(ctx, cfg.EventsTopic, g, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A live consumer of g holds the first two, pending.
	if err := rc.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "live", Streams: []string{cfg.EventsTopic, ">"}, Count: 2, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}

	// Backlog 11: 9 unread, 2 pending. Bound 5: the 6 oldest unread go.
	shed, backlog, err := p.ShedBacklog(ctx, cfg.EventsTopic, "g", "crm", 5)
	if err != nil || shed != 6 || backlog != 5 {
		t.Fatalf("ShedBacklog(bound 5) = %d, %d, %v; want 6 shed, 5 left", shed, backlog, err)
	}
	if n, b, err := p.ShedBacklog(ctx, cfg.EventsTopic, "g", "crm", 5); n != 0 || b != 5 || err != nil {
		t.Fatalf("ShedBacklog at the bound = %d, %d, %v; want nothing shed, 5 left", n, b, err)
	}
	entries, err := newDLQ(t, cfg).ListFor(ctx, "crm", 0)
	if err != nil || len(entries) != 6 {
		t.Fatalf("crm's dead letters: %d, %v; want the 6 shed", len(entries), err)
	}
	for i, e := range entries {
		want := uuids[2+i]
		if e.UUID != want || e.Endpoint != "crm" || e.Topic != cfg.EventsTopic {
			t.Errorf("shed %d: %s for %q from %s; want %s for crm from %s", i, e.UUID, e.Endpoint, e.Topic, want, cfg.EventsTopic)
		}
		if i == 0 {
			if !e.Undecodable || e.Raw["junk"] != "1" || !strings.Contains(e.Reason, "backlog over 5") {
				t.Errorf("the undecodable entry shed as %+v, want its fields kept and the reason added", e)
			}
			continue
		}
		if e.Undecodable || e.Reason != transports.ShedReasonPrefix+"5" || e.Attempts != 0 || e.Status != 0 ||
			e.EventType != "memory_added" || e.Metadata.Get(event.MetaUserID) != "u1" || string(e.Payload) != `{"event":"memory_added"}` {
			t.Errorf("shed %d = %+v; want the event, its metadata, reason %q, 0 attempts", i, e, transports.ShedReasonPrefix+"5")
		}
	}
	consumers, err := rc.XInfoConsumers(ctx, cfg.EventsTopic, "g").Result()
	if err != nil || len(consumers) != 1 || consumers[0].Name != "live" || consumers[0].Pending != 2 {
		t.Errorf("consumers of g after shedding: %+v, %v; want only live, its 2 pending", consumers, err)
	}
	st, err := rc.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "live", Streams: []string{cfg.EventsTopic, ">"}, Count: 10, Block: -1}).Result()
	if err != nil || len(st[0].Messages) != 3 {
		t.Fatalf("g's next read: %v, %v; want the 3 newest", st, err)
	}
	groups, err := rc.XInfoGroups(ctx, cfg.EventsTopic).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g.Name == "other" && (g.Lag != 11 || g.Pending != 0) {
			t.Errorf("group other: lag %d, pending %d; want all 11 still to come", g.Lag, g.Pending)
		}
	}

	// Two shedders at once: the excess (11 - 4) goes once.
	var wg sync.WaitGroup
	var total atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, _, err := p.ShedBacklog(ctx, cfg.EventsTopic, "twice", "ops", 4)
			if err != nil {
				t.Error(err)
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	if total.Load() != 7 {
		t.Errorf("two shedders shed %d in all, want 7 (11 over a bound of 4)", total.Load())
	}
}

// A group left behind (its endpoint's routers gone) never makes the
// shared events stream refuse appends: its backlog past the bound
// (default MaxLen / 2) is shed to the poison stream, counted by OnShed,
// the stream trims again, and the groups that keep up get everything.
// Without the bound the same group fills the stream for everyone.
func TestRedisBoundKeepsOneStuckGroupFromFillingTheStream(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxLen = 100
	cfg.TrimInterval = 20 * time.Millisecond
	cfg.Consumers = 4
	var shedMu sync.Mutex
	shedFor := map[string]int{}
	cfg.OnShed = func(endpoint string, n int) {
		shedMu.Lock()
		shedFor[endpoint] += n
		shedMu.Unlock()
	}
	tr, err := transports.NewRedisTransport(cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tr.Close() })
	ctx := context.Background()
	rc := rawClient(t, url)

	// Two endpoints that keep up, acking everything.
	var got [2]atomic.Int64
	for i, g := range []string{"keeps-up-1", "keeps-up-2"} {
		sub, err := tr.Subscriber(g)
		if err != nil {
			t.Fatal(err)
		}
		ch := subscribe(t, sub, cfg.EventsTopic)
		go func() {
			for msg := range ch {
				got[i].Add(1)
				msg.Ack()
			}
		}()
	}
	// A third whose routers are gone: its group exists, nobody reads it.
	if err := rc.XGroupCreate(ctx, cfg.EventsTopic, "stuck", "0").Err(); err != nil {
		t.Fatal(err)
	}
	tr.Bound("stuck", "crm", 0)
	lagOf := func(group string) int64 {
		t.Helper()
		groups, err := rc.XInfoGroups(ctx, cfg.EventsTopic).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			if g.Name == group {
				return g.Lag
			}
		}
		t.Fatalf("no group %s", group)
		return 0
	}
	// Each round appends 30 through a fresh publisher, whose first
	// Publish asks Redis for the stream's length.
	round := func() ([]string, error) {
		p, err := transports.NewRedisPublisher(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var ids []string
		for range 30 {
			msg := message.NewMessage(watermill.NewUUID(), []byte("{}"))
			if err := p.Publish(cfg.EventsTopic, msg); err != nil {
				return ids, err
			}
			ids = append(ids, msg.UUID)
		}
		return ids, nil
	}
	var sent []string
	for r := range 10 { // 300 events, three times MaxLen
		ids, err := round()
		sent = append(sent, ids...)
		if err != nil {
			t.Fatalf("round %d: the stream refused an append: %v", r, err)
		}
		eventually(t, 10*time.Second, "the groups that keep up get every event, the stuck one's backlog is shed to 50 and the stream trimmed to it", func() bool {
			n := int64(len(sent))
			b, ok := tr.Backlog("stuck")
			return got[0].Load() == n && got[1].Load() == n && ok && b <= 50 && rc.XLen(ctx, cfg.EventsTopic).Val() <= 50
		})
	}
	shedMu.Lock()
	shed := shedFor["crm"]
	shedMu.Unlock()
	lag := lagOf("stuck")
	if int64(shed)+lag != int64(len(sent)) || lag != 50 {
		t.Errorf("shed %d and %d still waiting for the stuck group, want 250 and 50: every event shed or kept", shed, lag)
	}
	entries, err := newDLQ(t, cfg).ListFor(ctx, "crm", 0)
	if err != nil || len(entries) != shed {
		t.Fatalf("crm's dead letters: %d, %v; want the %d shed", len(entries), err, shed)
	}
	for i, e := range entries {
		if e.UUID != sent[i] || e.Reason != "backlog over 50" {
			t.Fatalf("dead letter %d: %s %q; want the oldest first, %s, reason %q", i, e.UUID, e.Reason, sent[i], "backlog over 50")
		}
	}

	// The counterfactual: unbound, the stuck group keeps every entry and
	// the stream soon refuses everyone's appends.
	tr.Unbound("stuck")
	if _, ok := tr.Backlog("stuck"); ok {
		t.Error("Backlog of an unbound group is known")
	}
	var refused error
	for r := 0; r < 5 && refused == nil; r++ {
		ids, err := round()
		sent = append(sent, ids...)
		refused = err
	}
	if !errors.Is(refused, transports.ErrStreamFull) {
		t.Fatalf("unbound, the stuck group never filled the stream (last error %v): the test shows nothing", refused)
	}
	shedMu.Lock()
	defer shedMu.Unlock()
	if shedFor["crm"] != shed || len(shedFor) != 1 {
		t.Errorf("shed after Unbound: %v, want still %d for crm only", shedFor, shed)
	}
}

// Bound's default is half of MaxLen, none for an unbounded stream.
func TestDefaultBacklogBound(t *testing.T) {
	for _, c := range []struct{ maxLen, want int64 }{
		{0, transports.DefaultMaxLen / 2},
		{100, 50},
		{1, 1},
		{transports.NoMaxLen, transports.NoMaxLen},
	} {
		t.Run(fmt.Sprint(c.maxLen), func(t *testing.T) {
			if got := transports.DefaultBacklogBound(c.maxLen); got != c.want {
				t.Errorf("DefaultBacklogBound(%d) = %d, want %d", c.maxLen, got, c.want)
			}
		})
	}
}
