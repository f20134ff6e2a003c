package transports_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redistest"
)

// aliveTimeout is the transport's: a consumer not heard of for this long
// is gone.
const aliveTimeout = 5 * time.Second

// proxy forwards TCP connections on loopback to a Redis; close cuts every
// connection through it at once and hangs up on new ones: to Redis, a
// process that died.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

// startProxy returns a proxy to the Redis at redisURL and the URL that
// reaches Redis through it.
func startProxy(t *testing.T, redisURL string) (*proxy, string) {
	t.Helper()
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(p.stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.isCut() {
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			if !p.track(c, up) {
				continue
			}
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	p.conns = append(p.conns, cs...)
	return true
}

func (p *proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// close cuts every connection; new ones are closed at once.
func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// resume forwards new connections again.
func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// stop closes the listener.
func (p *proxy) stop() {
	p.close()
	_ = p.ln.Close()
}

// consumers returns the names of the group's consumers and their pending
// counts.
func consumers(t *testing.T, rc *redis.Client, stream, group string) map[string]int64 {
	t.Helper()
	infos, err := rc.XInfoConsumers(context.Background(), stream, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64, len(infos))
	for _, c := range infos {
		out[c.Name] = c.Pending
	}
	return out
}

// A consumer whose heartbeat stops (here: its connection to Redis is cut
// while it holds entries, two handed to handlers and one read ahead) has
// its entries taken over by a live consumer within seconds, long before
// MaxIdleTime, and, once it holds nothing, is removed from the group.
func TestRedisGoneConsumersEntriesAreTakenOver(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxIdleTime = 10 * time.Minute // XAUTOCLAIM cannot explain a takeover
	cfg.Consumers = 2
	cfg.CloseTimeout = 100 * time.Millisecond
	ctx := context.Background()
	rc := rawClient(t, url)
	p := newRedisPublisher(t, cfg)

	cut, viaProxy := startProxy(t, url)
	acfg := cfg
	acfg.URL, acfg.Consumer = viaProxy, redistest.Name("A")
	a := newRedisSubscriber(t, acfg)
	cha := subscribe(t, a, cfg.EventsTopic)
	eventually(t, 5*time.Second, "A joined", func() bool { return a.Ready(ctx) == nil })
	const n = 3
	sent := map[string]bool{}
	for range n {
		m := message.NewMessage(watermill.NewUUID(), nil)
		sent[m.UUID] = true
		if err := p.Publish(cfg.EventsTopic, m); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, cha, 5*time.Second) // held, never acked
	receive(t, cha, 5*time.Second)
	eventually(t, 5*time.Second, "A holds all three", func() bool {
		return consumers(t, rc, cfg.EventsTopic, cfg.ConsumerGroup)[acfg.Consumer] == n
	})

	b := newRedisSubscriber(t, cfg)
	chb := subscribe(t, b, cfg.EventsTopic)
	cut.close()
	cutAt := time.Now()
	got := map[string]bool{}
	for len(got) < n {
		m := receive(t, chb, 3*aliveTimeout)
		if !sent[m.UUID] {
			t.Fatalf("B got %s, not one of A's", m.UUID)
		}
		got[m.UUID] = true
		m.Ack()
	}
	took := time.Since(cutAt)
	t.Logf("A's %d entries taken over by B %s after A was cut off", n, took.Round(time.Millisecond))
	if limit := aliveTimeout + 5*time.Second; took > limit {
		t.Errorf("takeover took %s, want within %s", took, limit)
	}
	eventually(t, 5*time.Second, "A removed from the group, nothing pending", func() bool {
		cs := consumers(t, rc, cfg.EventsTopic, cfg.ConsumerGroup)
		_, hasA := cs[acfg.Consumer]
		return !hasA && cs[cfg.Consumer] == 0
	})
}

// A live consumer handling an entry for longer than the heartbeat timeout
// (a slow webhook) keeps it: no other consumer takes it over, and it is
// acked once, by its handler.
func TestRedisLiveConsumersSlowHandlingIsNotTakenOver(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxIdleTime = 10 * time.Minute
	cfg.Consumers = 1
	ctx := context.Background()
	rc := rawClient(t, url)
	p := newRedisPublisher(t, cfg)
	acfg := cfg
	acfg.Consumer = redistest.Name("A")
	a := newRedisSubscriber(t, acfg)
	cha := subscribe(t, a, cfg.EventsTopic)
	eventually(t, 5*time.Second, "A joined", func() bool { return a.Ready(ctx) == nil })
	if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	held := receive(t, cha, 5*time.Second)
	b := newRedisSubscriber(t, cfg)
	chb := subscribe(t, b, cfg.EventsTopic)
	// Showing that nothing happens: B judges others once its own
	// heartbeat is steady (aliveTimeout), then looks every second; the
	// handling lasts past both and three looks more.
	nothing(t, chb, 2*aliveTimeout+3*time.Second)
	held.Ack()
	eventually(t, 5*time.Second, "acked", func() bool {
		return rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Val().Count == 0
	})
	ext, err := rc.XInfoConsumers(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ext, func(c redis.XInfoConsumer) bool { return c.Name == acfg.Consumer }) {
		t.Errorf("live consumer A removed from the group: %+v", ext)
	}
}

// A consumer closed cleanly announces itself gone: the others remove it
// from the group at once, and take over what it released.
func TestRedisClosedConsumerIsRemovedFromTheGroup(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxIdleTime = 10 * time.Minute
	cfg.Consumers = 1
	cfg.CloseTimeout = 100 * time.Millisecond
	ctx := context.Background()
	rc := rawClient(t, url)
	p := newRedisPublisher(t, cfg)
	acfg := cfg
	acfg.Consumer = redistest.Name("A")
	a := newRedisSubscriber(t, acfg)
	cha := subscribe(t, a, cfg.EventsTopic)
	eventually(t, 5*time.Second, "A joined", func() bool { return a.Ready(ctx) == nil })
	msg := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, msg); err != nil {
		t.Fatal(err)
	}
	receive(t, cha, 5*time.Second) // never acked: released at Close
	b := newRedisSubscriber(t, cfg)
	chb := subscribe(t, b, cfg.EventsTopic)
	eventually(t, 5*time.Second, "B joined", func() bool { return b.Ready(ctx) == nil })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got := receive(t, chb, 3*aliveTimeout)
	if got.UUID != msg.UUID {
		t.Fatalf("B got %s, want %s", got.UUID, msg.UUID)
	}
	got.Ack()
	eventually(t, 3*aliveTimeout, "A removed from the group", func() bool {
		_, hasA := consumers(t, rc, cfg.EventsTopic, cfg.ConsumerGroup)[acfg.Consumer]
		return !hasA
	})
}

// A router restarted under the same consumer name (a container restarted
// in place: same hostname, pid 1) gets back, within seconds, the entries
// its earlier process read and never acked: they are its own, so no other
// consumer would take them before MaxIdleTime.
func TestRedisRestartedConsumerTakesBackItsEntries(t *testing.T) {
	url := redistest.URL(t)
	cfg := redisConfig(t, url)
	cfg.MaxIdleTime = 10 * time.Minute
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	msg := message.NewMessage(watermill.NewUUID(), nil)
	if err := p.Publish(cfg.EventsTopic, msg); err != nil {
		t.Fatal(err)
	}
	// The earlier process: it reads the entry as cfg.Consumer and dies.
	old := rawClient(t, url)
	if err := old.XGroupCreateMkStream(ctx, cfg.EventsTopic, cfg.ConsumerGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := old.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: cfg.ConsumerGroup, Consumer: cfg.Consumer, Streams: []string{cfg.EventsTopic, ">"}, Count: 1,
	}).Err(); err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	start := time.Now()
	s := newRedisSubscriber(t, cfg)
	got := receive(t, subscribe(t, s, cfg.EventsTopic), 3*aliveTimeout)
	t.Logf("taken back %s after the restart", time.Since(start).Round(time.Millisecond))
	if got.UUID != msg.UUID {
		t.Fatalf("got %s, want %s", got.UUID, msg.UUID)
	}
	got.Ack()
}

// Redis killed and restarted from its append-only file: every consumer's
// last heartbeat is as old as the outage. A live consumer that gets back
// to Redis a little later than another (here: 2 s) keeps the entry its
// handler holds: the other judges no one until its own heartbeat has
// reached Redis for aliveTimeout in a row.
func TestRedisLiveConsumerKeepsItsEntriesAcrossARedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, srv.URL())
	cfg.MaxIdleTime = 10 * time.Minute
	cfg.Consumers = 1
	ctx := context.Background()
	p := newRedisPublisher(t, cfg)
	link, viaProxy := startProxy(t, srv.URL())
	acfg := cfg
	acfg.URL, acfg.Consumer = viaProxy, redistest.Name("A")
	a := newRedisSubscriber(t, acfg)
	cha := subscribe(t, a, cfg.EventsTopic)
	eventually(t, 5*time.Second, "A joined", func() bool { return a.Ready(ctx) == nil })
	if err := p.Publish(cfg.EventsTopic, message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	held := receive(t, cha, 5*time.Second)
	b := newRedisSubscriber(t, cfg)
	chb := subscribe(t, b, cfg.EventsTopic)
	eventually(t, 5*time.Second, "B joined", func() bool { return b.Ready(ctx) == nil })

	link.close()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(aliveTimeout + time.Second) // an outage longer than the heartbeat timeout
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // A still cut off, B back
	link.resume()
	// Showing that nothing happens: B's first judgement comes aliveTimeout
	// after it got back, A's heartbeat is back by then.
	nothing(t, chb, aliveTimeout+3*time.Second)
	held.Ack()
	rc := rawClient(t, srv.URL())
	eventually(t, 10*time.Second, "acked by A", func() bool {
		pending, err := rc.XPending(ctx, cfg.EventsTopic, cfg.ConsumerGroup).Result()
		return err == nil && pending.Count == 0
	})
}
