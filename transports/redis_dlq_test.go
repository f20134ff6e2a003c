package transports_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// poison publishes n messages to the poison stream the way the router's
// PoisonQueue does, and returns them.
func poison(t *testing.T, p message.Publisher, cfg transports.RedisConfig, n int) []*message.Message {
	t.Helper()
	return poisonFor(t, p, cfg, "", n)
}

// poisonFor is poison for endpoint: the copies name it under
// middleware.EndpointKey, unless it is "" (as before there were
// endpoints).
func poisonFor(t *testing.T, p message.Publisher, cfg transports.RedisConfig, endpoint string, n int) []*message.Message {
	t.Helper()
	var out []*message.Message
	for i := range n {
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"event":"memory.add","n":%d}`, i))
		msg.Metadata.Set(event.MetaType, "memory.add")
		msg.Metadata.Set(event.MetaUserID, "u1")
		msg.Metadata.Set(middleware.AttemptKey, "4") // poisoned at its fourth attempt, from the retry topic
		poisoned := middleware.Poisoned(msg, &middleware.GiveUpError{Attempts: 4, Err: &middleware.StatusError{Code: 503}})
		poisoned.Metadata.Set(middleware.PoisonTopicKey, cfg.EventsTopic) // the router's context says so
		if endpoint != "" {
			msg.Metadata.Set(middleware.EndpointKey, endpoint)
			poisoned.Metadata.Set(middleware.EndpointKey, endpoint)
		}
		if err := p.Publish(cfg.PoisonTopic, poisoned); err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
	}
	return out
}

func newDLQ(t *testing.T, cfg transports.RedisConfig) *transports.DLQ {
	t.Helper()
	d, err := transports.NewDLQ(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestDLQListReplayPurge(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	d := newDLQ(t, cfg)

	if entries, err := d.List(ctx, 0); err != nil || len(entries) != 0 {
		t.Fatalf("List of a missing stream = %v, %v", entries, err)
	}
	sent := poison(t, p, cfg, 3)

	entries, err := d.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("List returned %d entries, want 3", len(entries))
	}
	for i, e := range entries {
		if e.UUID != sent[i].UUID || e.EventType != "memory.add" || e.Status != 503 || e.Attempts != 4 ||
			e.Topic != cfg.EventsTopic || e.Reason == "" || string(e.Payload) != string(sent[i].Payload) ||
			e.Undecodable || e.ID == "" || time.Since(e.Time) > time.Minute {
			t.Errorf("entry %d = %+v", i, e)
		}
	}
	if two, err := d.List(ctx, 2); err != nil || len(two) != 2 || two[1].ID != entries[1].ID {
		t.Fatalf("List(2) = %v, %v", two, err)
	}

	// Replay one: on the default endpoint's retry stream (the entries name
	// no endpoint), due now, with the same UUID, metadata without the
	// poison keys, and gone from the poison stream; nothing goes to the
	// events stream, where every endpoint would get it.
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.RetryTopic)
	if n, err := d.Replay(ctx, entries[0].ID); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	got := receive(t, ch, 5*time.Second)
	if got.UUID != sent[0].UUID || string(got.Payload) != string(sent[0].Payload) {
		t.Fatalf("replayed %s %q, want %s %q", got.UUID, got.Payload, sent[0].UUID, sent[0].Payload)
	}
	if got.Metadata.Get(event.MetaType) != "memory.add" || got.Metadata.Get(event.MetaUserID) != "u1" {
		t.Errorf("replayed metadata lost: %v", got.Metadata)
	}
	for _, k := range []string{middleware.PoisonReasonKey, middleware.PoisonTopicKey, middleware.PoisonStatusKey, middleware.PoisonAttemptsKey, middleware.AttemptKey} {
		if _, ok := got.Metadata[k]; ok {
			t.Errorf("replayed message still carries %s", k)
		}
	}
	got.Ack()
	if n := rawClient(t, url).XLen(ctx, cfg.EventsTopic).Val(); n != 0 {
		t.Errorf("events stream holds %d entries after a replay, want 0", n)
	}
	if n, _ := d.Len(ctx); n != 2 {
		t.Fatalf("poison stream holds %d entries after one replay, want 2", n)
	}
	if n, err := d.Replay(ctx, entries[0].ID, "1-1"); n != 0 || !errors.Is(err, transports.ErrPoisonEntryNotFound) {
		t.Fatalf("Replay of gone entries = %d, %v; want 0, ErrPoisonEntryNotFound", n, err)
	}
	if n, err := d.Replay(ctx, "not-an-id"); n != 0 || err == nil {
		t.Fatalf("Replay of a malformed id = %d, %v", n, err)
	}

	// ReplayAll replays the decodable rest and leaves an undecodable entry.
	rc := rawClient(t, url)
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.PoisonTopic, Values: map[string]any{"junk": "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := d.ReplayAll(ctx)
	if n != 2 || !errors.Is(err, transports.ErrUndecodable) {
		t.Fatalf("ReplayAll = %d, %v; want 2, ErrUndecodable", n, err)
	}
	want := map[string]bool{sent[1].UUID: true, sent[2].UUID: true}
	for range 2 {
		got := receive(t, ch, 5*time.Second)
		if !want[got.UUID] {
			t.Fatalf("unexpected replayed message %s", got.UUID)
		}
		delete(want, got.UUID)
		got.Ack()
	}

	// Purge empties the stream but keeps it and its groups.
	pch := subscribe(t, s, cfg.PoisonTopic) // creates the poison group
	_ = pch
	purged, err := d.Purge(ctx)
	if err != nil || purged != 1 {
		t.Fatalf("Purge = %d, %v; want 1", purged, err)
	}
	if n, _ := d.Len(ctx); n != 0 {
		t.Fatalf("poison stream holds %d entries after Purge", n)
	}
	groups, err := rc.XInfoGroups(ctx, cfg.PoisonTopic).Result()
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups of the poison stream after Purge: %v, %v", groups, err)
	}
	if n, err := d.ReplayAll(ctx); n != 0 || err != nil {
		t.Fatalf("ReplayAll of an empty stream = %d, %v", n, err)
	}
}

// ReplayAll stops at the entries that were there when it began: one
// poisoned again meanwhile waits for the next call.
func TestDLQReplayAllDoesNotChaseNewEntries(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	d := newDLQ(t, cfg)
	poison(t, p, cfg, 250) // more than one batch

	// A router that poisons every replayed message again at once.
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.RetryTopic)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case msg, ok := <-ch:
				if !ok {
					return
				}
				_ = p.Publish(cfg.PoisonTopic, middleware.Poisoned(msg, errors.New("again")))
				msg.Ack()
			case <-stop:
				return
			}
		}
	}()
	n, err := d.ReplayAll(ctx)
	if err != nil || n != 250 {
		t.Fatalf("ReplayAll = %d, %v; want 250", n, err)
	}
}

// Two DLQs replaying the same entries at once replay each once.
func TestDLQConcurrentReplayReplaysOnce(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	poison(t, p, cfg, 50)
	d1, d2 := newDLQ(t, cfg), newDLQ(t, cfg)
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 2)
	for _, d := range []*transports.DLQ{d1, d2} {
		go func() {
			n, err := d.ReplayAll(ctx)
			res <- result{n, err}
		}()
	}
	total := 0
	for range 2 {
		select {
		case r := <-res:
			if r.err != nil {
				t.Fatal(r.err)
			}
			total += r.n
		case <-time.After(10 * time.Second):
			t.Fatal("ReplayAll did not return")
		}
	}
	if total != 50 {
		t.Fatalf("replayed %d in all, want 50", total)
	}
	if n := rawClient(t, cfg.URL).XLen(ctx, cfg.RetryTopic).Val(); n != 50 {
		t.Fatalf("retry stream holds %d, want 50", n)
	}
}

// Each endpoint's dead letters: listed, replayed and purged apart, an
// entry without an endpoint counting as the default endpoint's; a replay
// goes to that endpoint's retry topic alone, its endpoint kept, never to
// the events topic every endpoint reads.
func TestDLQPerEndpoint(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	d := newDLQ(t, cfg)
	rc := rawClient(t, url)
	legacy := poisonFor(t, p, cfg, "", 2) // before endpoints: the default endpoint's
	crm := poisonFor(t, p, cfg, "crm", 3)
	named := poisonFor(t, p, cfg, transports.DefaultEndpointName, 1)
	ops := poisonFor(t, p, cfg, "ops", 1)
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.PoisonTopic, Values: map[string]any{
		"junk": "1", middleware.EndpointKey: "crm"}}).Err(); err != nil {
		t.Fatal(err)
	}
	uuids := func(ms ...[]*message.Message) []string {
		var out []string
		for _, m := range ms {
			for _, x := range m {
				out = append(out, x.UUID)
			}
		}
		return out
	}
	listed := func(endpoint string, limit int) []string {
		t.Helper()
		es, err := d.ListFor(ctx, endpoint, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			if want := endpoint; want != "" && e.Endpoint != want {
				t.Errorf("ListFor(%q) returned an entry of %q", endpoint, e.Endpoint)
			}
			out = append(out, e.UUID)
		}
		return out
	}
	for _, c := range []struct {
		name     string
		endpoint string
		limit    int
		want     []string
	}{
		{"default takes the entries without an endpoint", transports.DefaultEndpointName, 0, uuids(legacy, named)},
		{"crm, its undecodable entry too", "crm", 0, append(uuids(crm), "")},
		{"limit counts the endpoint's entries", "crm", 2, uuids(crm)[:2]},
		{"unknown endpoint", "nobody", 0, nil},
		{"all", "", 0, append(uuids(legacy, crm, named, ops), "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := listed(c.endpoint, c.limit); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("ListFor(%q, %d) = %v, want %v", c.endpoint, c.limit, got, c.want)
			}
		})
	}

	all, err := d.ListFor(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	opsID := all[len(all)-2].ID // the junk entry came last
	if n, err := d.ReplayFor(ctx, "crm", opsID); n != 0 || !errors.Is(err, transports.ErrOtherEndpoint) {
		t.Fatalf("ReplayFor(crm, an ops entry) = %d, %v; want 0, ErrOtherEndpoint", n, err)
	}
	n, err := d.ReplayAllFor(ctx, "crm")
	if n != 3 || !errors.Is(err, transports.ErrUndecodable) {
		t.Fatalf("ReplayAllFor(crm) = %d, %v; want 3 and the undecodable one left", n, err)
	}
	crmRetry := cfg.RetryTopic + ".crm"
	xs, err := rc.XRange(ctx, crmRetry, "-", "+").Result()
	if err != nil || len(xs) != 3 {
		t.Fatalf("%s holds %d entries (%v), want crm's 3", crmRetry, len(xs), err)
	}
	for i, x := range xs {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(x.Values)
		if err != nil {
			t.Fatal(err)
		}
		if msg.UUID != crm[i].UUID || msg.Metadata.Get(middleware.EndpointKey) != "crm" || middleware.AttemptOf(msg) != 1 ||
			msg.Metadata.Get(middleware.PoisonReasonKey) != "" {
			t.Errorf("replayed %d: %s %v; want %s for crm at attempt 1 without poison keys", i, msg.UUID, msg.Metadata, crm[i].UUID)
		}
	}
	for _, topic := range []string{cfg.EventsTopic, cfg.RetryTopic, cfg.RetryTopic + ".ops"} {
		if n := rc.XLen(ctx, topic).Val(); n != 0 {
			t.Errorf("%s holds %d entries after replaying crm's, want 0", topic, n)
		}
	}
	if got := listed("crm", 0); fmt.Sprint(got) != "[]" {
		t.Errorf("crm's entries after its replay: %v, want only the undecodable one", got)
	}
	// Replay by id goes to the entry's own endpoint.
	if n, err := d.Replay(ctx, opsID); n != 1 || err != nil {
		t.Fatalf("Replay(ops entry) = %d, %v", n, err)
	}
	if n := rc.XLen(ctx, cfg.RetryTopic+".ops").Val(); n != 1 {
		t.Errorf("ops's retry stream holds %d, want 1", n)
	}
	purged, err := d.PurgeFor(ctx, transports.DefaultEndpointName)
	if err != nil || purged != 3 {
		t.Fatalf("PurgeFor(default) = %d, %v; want 3", purged, err)
	}
	if left, _ := d.Len(ctx); left != 1 {
		t.Errorf("poison stream holds %d after purging default's, want crm's undecodable entry", left)
	}
}
