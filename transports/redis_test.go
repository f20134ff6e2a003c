package transports_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// redisConfig returns a config on url whose topics and group no other test
// uses; the streams are deleted when t ends.
func redisConfig(t testing.TB, url string) transports.RedisConfig {
	cfg := transports.RedisConfig{
		URL:           url,
		ConsumerGroup: redistest.Name("group"),
		Consumer:      redistest.Name("consumer"),
		EventsTopic:   redistest.Name("events"),
		PoisonTopic:   redistest.Name("poison"),
		RetryTopic:    redistest.Name("retry"),
		MaxIdleTime:   30 * time.Second,
		NackDelay:     10 * time.Millisecond,
	}
	redistest.DeleteKeys(t, url, cfg.EventsTopic, cfg.PoisonTopic, cfg.EventsTopic+":alive", cfg.RetryTopic+"*")
	return cfg
}

func newRedisPublisher(t *testing.T, cfg transports.RedisConfig) *transports.RedisPublisher {
	t.Helper()
	p, err := transports.NewRedisPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newRedisSubscriber(t *testing.T, cfg transports.RedisConfig) *transports.RedisSubscriber {
	t.Helper()
	s, err := transports.NewRedisSubscriber(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawClient is a plain go-redis client for looking at, or tampering with,
// what the transport wrote.
func rawClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func subscribe(t *testing.T, s message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	// A Redis subscription joins its group in the background: wait, as
	// the tests expect the group to exist once subscribed.
	if rs, ok := s.(interface{ Ready(context.Context) error }); ok {
		deadline := time.Now().Add(10 * time.Second)
		for rs.Ready(ctx) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("subscription to %s never joined its group: %v", topic, rs.Ready(ctx))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return ch
}

// receive waits up to d for a message.
func receive(t *testing.T, ch <-chan *message.Message, d time.Duration) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return msg
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
		return nil
	}
}

// nothing asserts that no message arrives within d.
func nothing(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case msg := <-ch:
		t.Fatalf("unexpected message %s", msg.UUID)
	case <-time.After(d):
	}
}

// eventually polls cond every 20ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	return deadport.Held(t).Addr()
}

func TestRedisPubSubSuite(t *testing.T) {
	url := redistest.URL(t)
	pubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		cfg := redisConfig(t, url)
		cfg.ConsumerGroup = group
		cfg.Consumers = 4
		cfg.MaxIdleTime = 2 * time.Second
		return newRedisPublisher(t, cfg), newRedisSubscriber(t, cfg)
	}
	// As in production, every pub/sub the suite makes is one more process
	// of the same consumer group (its own consumer name), competing for
	// the entries; TestConsumerGroups makes other groups.
	group := redistest.Name("group")
	prefix := redistest.Name("suite")
	redistest.DeleteKeys(t, url, prefix+"*")
	tests.TestPubSub(t,
		tests.Features{
			GenerateTopicFunc:   func(tc tests.TestContext) string { return prefix + "." + string(tc.TestID) },
			ConsumerGroups:      true,
			ExactlyOnceDelivery: false, // at least once: an entry unacked for MaxIdleTime is delivered again
			GuaranteedOrder:     false,
			// Consumers subscriptions hand messages out side by side.
			GuaranteedOrderWithSingleSubscriber: false,
			Persistent:                          true,
			RequireSingleInstance:               false,
			// A new subscriber joins the group and gets what the group has
			// not consumed; only a new group starts at the first entry.
			NewSubscriberReceivesOldMessages: false,
			ContextPreserved:                 false,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return pubSub(t, group) },
		pubSub,
	)
}

func TestRedisConfigValidate(t *testing.T) {
	valid := transports.RedisConfig{URL: "redis://:s3cret@127.0.0.1:6379/2", MaxIdleTime: time.Minute}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if err := (transports.RedisConfig{}).Validate(); err != nil {
		t.Fatalf("zero config (defaults) must be valid: %v", err)
	}
	tests := []struct {
		name   string
		change func(*transports.RedisConfig)
		want   []string
	}{
		{"scheme", func(c *transports.RedisConfig) { c.URL = "http://:s3cret@host:6379" }, []string{"URL", "scheme"}},
		{"db", func(c *transports.RedisConfig) { c.URL = "redis://:s3cret@host:6379/abc" }, []string{"URL", "database", "REDACTED"}},
		{"unparsable", func(c *transports.RedisConfig) { c.URL = "redis://:s3cret@host:port x/0" }, []string{"URL"}},
		{"password in the query", func(c *transports.RedisConfig) { c.URL = "redis://host/0?password=s3cret" }, []string{"URL", "password"}},
		// Without "//" url.Parse sees an opaque URL and go-redis dialled
		// 127.0.0.1:6379; the error showed the password.
		{"opaque", func(c *transports.RedisConfig) { c.URL = "redis:s3cret@host:6380" }, []string{"URL", "redis:REDACTED", "redis://"}},
		{"opaque rediss", func(c *transports.RedisConfig) { c.URL = "rediss::s3cret@host:6380/1" }, []string{"URL", "rediss:REDACTED", "rediss://"}},
		{"no host", func(c *transports.RedisConfig) { c.URL = "redis://:s3cret@/0" }, []string{"URL", "host is missing"}},
		{"port only", func(c *transports.RedisConfig) { c.URL = "redis://:s3cret@:6379/0" }, []string{"URL", "host is missing"}},
		{"unix without a path", func(c *transports.RedisConfig) { c.URL = "unix://:s3cret@" }, []string{"URL", "socket path"}},
		// go-redis quotes a bad path; a password put there by mistake must not show.
		{"password as the db", func(c *transports.RedisConfig) { c.URL = "redis://host:6379/s3cretPassw0rd" }, []string{"URL", "database", "REDACTED"}},
		{"bad option value", func(c *transports.RedisConfig) { c.URL = "redis://host:6379/0?dial_timeout=s3cret" }, []string{"URL", "dial_timeout"}},
		{"bare option", func(c *transports.RedisConfig) { c.URL = "redis://host:6379/0?s3cret" }, []string{"URL", "unexpected option"}},
		{"MaxIdleTime", func(c *transports.RedisConfig) { c.MaxIdleTime = -time.Second }, []string{"MaxIdleTime"}},
		{"MaxLen", func(c *transports.RedisConfig) { c.MaxLen = -5 }, []string{"MaxLen"}},
		{"Consumers", func(c *transports.RedisConfig) { c.Consumers = -1 }, []string{"Consumers"}},
		{"same topics", func(c *transports.RedisConfig) { c.EventsTopic, c.PoisonTopic = "x", "x" }, []string{"PoisonTopic", "EventsTopic"}},
		{"poison is default events", func(c *transports.RedisConfig) { c.PoisonTopic = transports.DefaultEventsTopic }, []string{"PoisonTopic"}},
		{"NackDelay", func(c *transports.RedisConfig) { c.NackDelay = -1 }, []string{"NackDelay"}},
		{"DialTimeout", func(c *transports.RedisConfig) { c.DialTimeout = -1 }, []string{"DialTimeout"}},
		{"ReadTimeout", func(c *transports.RedisConfig) { c.ReadTimeout = -1 }, []string{"ReadTimeout"}},
		{"WriteTimeout", func(c *transports.RedisConfig) { c.WriteTimeout = -1 }, []string{"WriteTimeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q echoes the password", err)
			}
		})
	}
	t.Run("every problem at once", func(t *testing.T) {
		c := valid
		c.MaxLen, c.Consumers, c.NackDelay = -5, -1, -1
		err := c.Validate()
		for _, w := range []string{"MaxLen", "Consumers", "NackDelay"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v does not mention %s", err, w)
			}
		}
	})
	t.Run("NoMaxLen", func(t *testing.T) {
		c := valid
		c.MaxLen = transports.NoMaxLen
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewRedisSubscriberRequiresMaxIdleTime(t *testing.T) {
	_, err := transports.NewRedisSubscriber(transports.RedisConfig{}, nil)
	if err == nil || !strings.Contains(err.Error(), "MaxIdleTime") || !strings.Contains(err.Error(), "ClaimTimeout") {
		t.Fatalf("got %v, want an error asking for MaxIdleTime", err)
	}
	// The publisher and the DLQ do not need it.
	p, err := transports.NewRedisPublisher(transports.RedisConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	d, err := transports.NewDLQ(transports.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
}

func TestClaimTimeout(t *testing.T) {
	tests := []struct {
		name      string
		worstCase time.Duration
		want      time.Duration
	}{
		{"zero", 0, transports.ClaimMargin},
		{"negative", -time.Hour, transports.ClaimMargin},
		{"one minute", time.Minute, 4*time.Minute + transports.ClaimMargin},
		// The seed's defaults: 30s timeout, 3 retries from 1s, Retry-After
		// up to 60s: 4×30s + 3×60s = 5m per message.
		{"memhook defaults", middleware.Retry{}.WorstCase(30 * time.Second), 20*time.Minute + transports.ClaimMargin},
		{"saturates", time.Duration(1<<63 - 1), time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transports.ClaimTimeout(tt.worstCase); got != tt.want {
				t.Fatalf("ClaimTimeout(%s) = %s, want %s", tt.worstCase, got, tt.want)
			}
		})
	}
}

func TestRedisRedactedURL(t *testing.T) {
	c := transports.RedisConfig{URL: "rediss://user:s3cret@cache.example:6380/3"}
	if got := c.RedactedURL(); strings.Contains(got, "s3cret") || !strings.Contains(got, "cache.example:6380/3") {
		t.Fatalf("RedactedURL() = %q", got)
	}
	if got := (transports.RedisConfig{}).RedactedURL(); got != transports.DefaultRedisURL {
		t.Fatalf("RedactedURL() of the default = %q", got)
	}
	tests := []struct{ in, want string }{
		{"redis://:s3cret@cache.example:6380/3?client_name=s3cret2#s3cret3", "redis://REDACTED@cache.example:6380/3?client_name=REDACTED#REDACTED"},
		{"redis:s3cret@host:6380", "redis:REDACTED"},
		{"unix:///run/redis/redis.sock?db=2", "unix:///run/redis/redis.sock?db=REDACTED"},
		{"redis://host:6379/s3cretPassw0rd", "redis://host:6379/REDACTED"},
	}
	for _, tt := range tests {
		if got := (transports.RedisConfig{URL: tt.in}).RedactedURL(); got != tt.want {
			t.Errorf("RedactedURL() of %q = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedisPublishWithRedisUnreachable(t *testing.T) {
	cfg := transports.RedisConfig{URL: "redis://:s3cret@" + closedPort(t) + "/0", EventsTopic: "events"}
	p := newRedisPublisher(t, cfg)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), []byte("{}"))) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Publish to a closed port succeeded")
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q echoes the password", err)
		}
		t.Logf("Publish failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(3 * time.Second):
		t.Fatal("Publish with Redis unreachable did not return within 3s")
	}
	if err := transports.RedisPing(context.Background(), cfg); err == nil {
		t.Fatal("RedisPing of a closed port succeeded")
	}
	if err := p.Ping(context.Background()); err == nil {
		t.Fatal("Ping of a closed port succeeded")
	}
}

func TestRedisPing(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	if err := transports.RedisPing(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	p := newRedisPublisher(t, cfg)
	if err := p.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := newRedisSubscriber(t, cfg)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	_ = s.Close()
	if err := p.Ping(context.Background()); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Ping after Close: %v, want ErrClosed", err)
	}
	if err := p.Publish(cfg.EventsTopic, message.NewMessage("x", nil)); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Subscribe(context.Background(), cfg.EventsTopic); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func TestRedisCloseIsIdempotentAndConcurrent(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() { defer wg.Done(); _ = p.Close() }()
		go func() { defer wg.Done(); _ = s.Close() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("message after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription channel not closed by Close")
	}
}

// Consumers is how many messages one subscription holds unacked at once.
func TestRedisConsumersBoundMessagesInFlight(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	cfg.Consumers = 4
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	for range 6 {
		if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
			t.Fatal(err)
		}
	}
	var held []*message.Message
	for range 4 {
		held = append(held, receive(t, ch, 5*time.Second))
	}
	nothing(t, ch, 300*time.Millisecond)
	held[0].Ack()
	receive(t, ch, 5*time.Second).Ack()
	for _, m := range held[1:] {
		m.Ack()
	}
	receive(t, ch, 5*time.Second).Ack()
}

// An entry that is not a Watermill message goes to the poison stream,
// fields and all, and the subscription goes on.
func TestRedisUndecodableEntryIsPoisoned(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.Consumers = 1 // one subscription: it must survive both entries
	var undecodable atomic.Int32
	cfg.OnUndecodable = func(topic, reason string) {
		if topic == cfg.EventsTopic && reason != "" {
			undecodable.Add(1)
		}
	}
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic) // creates the stream and the group
	rc := rawClient(t, url)
	ctx := context.Background()
	garbage := []map[string]any{
		{"foo": "bar"}, // no UUID
		{"_watermill_message_uuid": "u-1", "metadata": "\xc1\xffnot msgpack", "payload": "x"},
	}
	for _, g := range garbage {
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: cfg.EventsTopic, Values: g}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	good := []*message.Message{message.NewMessage(watermill.NewUUID(), []byte("a")), message.NewMessage(watermill.NewUUID(), []byte("b"))}
	for _, m := range good {
		if err := p.Publish(cfg.EventsTopic, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range good {
		got := receive(t, ch, 5*time.Second)
		if got.UUID != want.UUID || string(got.Payload) != string(want.Payload) {
			t.Fatalf("got %s %q, want %s %q", got.UUID, got.Payload, want.UUID, want.Payload)
		}
		got.Ack()
	}

	eventually(t, 5*time.Second, "both undecodable entries in the poison stream", func() bool {
		return rc.XLen(ctx, cfg.PoisonTopic).Val() == 2
	})
	poisoned, err := rc.XRange(ctx, cfg.PoisonTopic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range poisoned {
		for k, v := range garbage[i] {
			if x.Values[k] != v {
				t.Errorf("poison entry %d: field %s = %q, want %q", i, k, x.Values[k], v)
			}
		}
		if r, _ := x.Values["reason_poisoned"].(string); !strings.Contains(r, "undecodable") {
			t.Errorf("poison entry %d: reason_poisoned = %q", i, r)
		}
		if x.Values["topic_poisoned"] != cfg.EventsTopic {
			t.Errorf("poison entry %d: topic_poisoned = %q", i, x.Values["topic_poisoned"])
		}
	}
	eventually(t, 5*time.Second, "nothing pending in the group", func() bool {
		return rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Val().Count == 0
	})
	if n := undecodable.Load(); n != 2 {
		t.Errorf("OnUndecodable called %d times, want 2", n)
	}

	// The DLQ shows them, and will not replay them.
	d, err := transports.NewDLQ(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	entries, err := d.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || !entries[0].Undecodable || entries[0].Raw["foo"] != "bar" || entries[1].UUID != "u-1" ||
		!strings.Contains(entries[1].Reason, "undecodable") || entries[1].Topic != cfg.EventsTopic {
		t.Fatalf("List = %+v", entries)
	}
	if n, err := d.Replay(ctx, entries[0].ID); n != 0 || !errors.Is(err, transports.ErrUndecodable) {
		t.Fatalf("Replay of an undecodable entry = %d, %v; want 0, ErrUndecodable", n, err)
	}

	// On the poison stream itself an undecodable entry is acked and left.
	pch := subscribe(t, s, cfg.PoisonTopic)
	okMsg := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.PoisonTopic, okMsg); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, pch, 5*time.Second); got.UUID != okMsg.UUID {
		t.Fatalf("got %s from the poison stream, want %s", got.UUID, okMsg.UUID)
	} else {
		got.Ack()
	}
	eventually(t, 5*time.Second, "poison group has nothing pending", func() bool {
		return rc.XPending(ctx, cfg.PoisonTopic, cfg.ConsumerGroup).Val().Count == 0
	})
	if n := rc.XLen(ctx, cfg.PoisonTopic).Val(); n != 3 {
		t.Fatalf("poison stream holds %d entries, want 3", n)
	}
}

// The entries of a consumer that died are delivered to another after
// MaxIdleTime, and not before.
func TestRedisDeadConsumersEntriesAreClaimed(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxIdleTime = time.Second
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	msg := message.NewMessage(watermill.NewUUID(), []byte("held by a dead consumer"))
	if err := p.Publish(cfg.EventsTopic, msg); err != nil {
		t.Fatal(err)
	}

	// Consumer A reads the entry and dies without acking: its client is
	// closed with nothing said to Redis.
	a := rawClient(t, url)
	if err := a.XGroupCreateMkStream(ctx, cfg.EventsTopic, cfg.ConsumerGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	xs, err := a.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: cfg.ConsumerGroup, Consumer: "A", Streams: []string{cfg.EventsTopic, ">"}, Count: 1, Block: time.Second,
	}).Result()
	if err != nil || len(xs) != 1 || len(xs[0].Messages) != 1 {
		t.Fatalf("A's read: %v %v", xs, err)
	}
	readAt := time.Now()
	_ = a.Close()

	b := newRedisSubscriber(t, cfg) // another consumer name
	ch := subscribe(t, b, cfg.EventsTopic)
	got := receive(t, ch, 10*time.Second)
	if took := time.Since(readAt); took < cfg.MaxIdleTime {
		t.Fatalf("claimed after %s, before MaxIdleTime %s", took, cfg.MaxIdleTime)
	}
	if got.UUID != msg.UUID {
		t.Fatalf("got %s, want %s", got.UUID, msg.UUID)
	}
	got.Ack()
	rc := rawClient(t, url)
	eventually(t, 5*time.Second, "entry acked", func() bool {
		return rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Val().Count == 0
	})
}

// The hazard ClaimTimeout guards against: a message handled for longer
// than MaxIdleTime is delivered again, by this very process.
func TestRedisMessageHeldPastMaxIdleTimeIsDeliveredAgain(t *testing.T) {
	cfg := redisConfig(t, redistest.URL(t))
	cfg.MaxIdleTime = 300 * time.Millisecond
	cfg.Consumers = 2
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	msg := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, msg); err != nil {
		t.Fatal(err)
	}
	first := receive(t, ch, 5*time.Second)
	again := receive(t, ch, 5*time.Second) // first is still unacked
	if first.UUID != msg.UUID || again.UUID != msg.UUID {
		t.Fatalf("got %s then %s, want %s twice", first.UUID, again.UUID, msg.UUID)
	}
	first.Ack()
	again.Ack()
}

// Why ClaimTimeout multiplies the worst case: redisstream reads ahead, so
// an entry's idle time runs while the entries before it are handled. Each
// message here is handled in 600ms, one at a time; with MaxIdleTime at
// 1.7 × that, some are delivered twice, at 4 × that, none.
func TestRedisReadAheadEntriesAgeWhileWaiting(t *testing.T) {
	const handle = 600 * time.Millisecond
	tests := []struct {
		name        string
		maxIdleTime time.Duration
		duplicates  bool
	}{
		{"MaxIdleTime 1.7 × handler", handle * 17 / 10, true},
		{"MaxIdleTime 4 × handler", 4 * handle, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := redisConfig(t, redistest.URL(t))
			cfg.MaxIdleTime = tt.maxIdleTime
			cfg.Consumers = 1
			p := newRedisPublisher(t, cfg)
			s := newRedisSubscriber(t, cfg)
			ch := subscribe(t, s, cfg.EventsTopic)
			const n = 6
			for range n {
				if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
					t.Fatal(err)
				}
			}
			seen := map[string]int{}
			deliveries := 0
			for deadline := time.After(15 * time.Second); ; {
				select {
				case msg := <-ch:
					time.Sleep(handle)
					msg.Ack()
					seen[msg.UUID]++
					deliveries++
					continue
				case <-time.After(tt.maxIdleTime + time.Second):
				case <-deadline:
				}
				break
			}
			t.Logf("%d messages, %d deliveries", n, deliveries)
			if len(seen) != n {
				t.Fatalf("%d distinct messages, want %d", len(seen), n)
			}
			if got := deliveries > n; got != tt.duplicates {
				t.Fatalf("duplicates: %v, want %v", got, tt.duplicates)
			}
		})
	}
}

// MaxLen bounds the events stream by refusing appends, never by trimming
// unread entries; TrimAcked removes exactly the entries every group has
// acknowledged; the poison stream is not bounded.
func TestRedisStreamBoundAndTrimAcked(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxLen = 50
	cfg.Consumers = 1
	p := newRedisPublisher(t, cfg)
	ctx := context.Background()
	if n, err := p.TrimAcked(ctx, cfg.EventsTopic); err != nil || n != 0 {
		t.Fatalf("TrimAcked on a missing stream = %d, %v", n, err)
	}
	for i := range 50 {
		if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // past the length cache
	if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), []byte("x"))); !errors.Is(err, transports.ErrStreamFull) {
		t.Fatalf("publish to a full stream: %v, want ErrStreamFull", err)
	}
	for range 300 {
		if err := p.Publish(cfg.PoisonTopic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
			t.Fatalf("the poison stream is bounded: %v", err)
		}
	}
	rc := rawClient(t, url)
	if n, err := p.TrimAcked(ctx, cfg.EventsTopic); err != nil || n != 0 {
		t.Fatalf("TrimAcked without a group = %d, %v: nothing is acknowledged yet", n, err)
	}
	// A group acks the first 20 entries and holds the 21st unacked.
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	for range 20 {
		receive(t, ch, 5*time.Second).Ack()
	}
	held := receive(t, ch, 5*time.Second)
	defer held.Ack()
	all, err := rc.XRange(ctx, cfg.EventsTopic, "-", "+").Result()
	if err != nil || len(all) < 21 {
		t.Fatalf("XRANGE = %d entries, %v", len(all), err)
	}
	var pend *redis.XPending
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		pend, err = rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Result()
		// Acks go to Redis in batches: wait until the 20 acknowledged
		// left the pending list and the held 21st is its lowest.
		if err == nil && pend.Count >= 1 && pend.Lower == all[20].ID {
			break // the held entry, and those read ahead
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %+v, %v; want the held entry", pend, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n, err := p.TrimAcked(ctx, cfg.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	left, err := rc.XRange(ctx, cfg.EventsTopic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 || len(left) != 30 || left[0].ID != pend.Lower {
		t.Errorf("TrimAcked removed %d, %d left starting at %s; want the 20 acknowledged removed, the stream starting at the pending %s",
			n, len(left), left[0].ID, pend.Lower)
	}
	if n := rc.XLen(ctx, cfg.PoisonTopic).Val(); n != 300 {
		t.Errorf("poison stream holds %d entries, want all 300", n)
	}
}

// A subscription whose consumer group disappears (Redis restarted without
// persistence, stream deleted) is made again, group and all.
func TestRedisSubscriptionSurvivesLostGroup(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.Consumers = 2
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)
	m1 := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, m1); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, 5*time.Second).Ack()

	rc := rawClient(t, url)
	ctx := context.Background()
	if err := rc.Del(ctx, cfg.EventsTopic).Err(); err != nil {
		t.Fatal(err)
	}
	// Readers now get NOGROUP; the group comes back once they subscribe
	// again. Entries published meanwhile are read from the start.
	m2 := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, m2); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, 15*time.Second)
	if got.UUID != m2.UUID {
		t.Fatalf("got %s, want %s", got.UUID, m2.UUID)
	}
	got.Ack()
}

// Redis killed and restarted under a running subscriber: publishing fails
// fast while it is down, and delivery resumes, nothing lost, once it is
// back.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, srv.URL())
	p := newRedisPublisher(t, cfg)
	s := newRedisSubscriber(t, cfg)
	ch := subscribe(t, s, cfg.EventsTopic)

	before := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, before); err != nil {
		t.Fatal(err)
	}
	// Published and not yet read when Redis dies: it must survive.
	unread := message.NewMessage(watermill.NewUUID(), nil)
	held := receive(t, ch, 5*time.Second)
	if err := p.Publish(cfg.EventsTopic, unread); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err == nil {
		t.Fatal("Publish with Redis down succeeded")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Publish with Redis down took %s", took)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	held.Ack() // its XACK is retried until Redis answers
	after := message.NewMessage(watermill.NewUUID(), nil)
	eventually(t, 10*time.Second, "publish after restart", func() bool {
		return p.Publish(cfg.EventsTopic, after) == nil
	})
	want := map[string]bool{unread.UUID: true, after.UUID: true}
	for len(want) > 0 {
		got := receive(t, ch, 15*time.Second)
		if !want[got.UUID] && got.UUID != before.UUID {
			t.Fatalf("unexpected message %s", got.UUID)
		}
		delete(want, got.UUID)
		got.Ack()
	}
}
