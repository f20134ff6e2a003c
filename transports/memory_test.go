package transports_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/memhook/memhook/transports"
)

func newMemory(t *testing.T, cfg transports.MemoryConfig) *transports.Memory {
	t.Helper()
	m, err := transports.NewMemory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMemoryPubSubSuite(t *testing.T) {
	shared := &sharedMemory{byTest: map[string]*transports.Memory{}}
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:        true,
			ExactlyOnceDelivery:   true,
			GuaranteedOrder:       false,
			Persistent:            false,
			RequireSingleInstance: true,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			m := newMemory(t, transports.MemoryConfig{Capacity: 100_000, NackDelay: time.Millisecond})
			return m, m
		},
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			m := shared.get(t)
			return nopClosePublisher{m}, m.Subscriber(group)
		},
	)
}

// sharedMemory hands every consumer-group constructor call of one test the
// same Memory, as a broker is shared: closing what a call returned ends
// that group's subscriptions, not the transport.
type sharedMemory struct {
	mu     sync.Mutex
	byTest map[string]*transports.Memory
}

func (s *sharedMemory) get(t *testing.T) *transports.Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.byTest[t.Name()]; m != nil {
		return m
	}
	m := newMemory(t, transports.MemoryConfig{Capacity: 100_000, NackDelay: time.Millisecond})
	s.byTest[t.Name()] = m
	return m
}

type nopClosePublisher struct{ message.Publisher }

func (nopClosePublisher) Close() error { return nil }

// Every consumer group gets every message, each once, and within a group
// the subscriptions share the messages; the first group to subscribe takes
// what was published before any group existed.
func TestMemoryConsumerGroups(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 100, Workers: 2})
	pub := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if err := m.Publish("t", message.NewMessage(id, nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub("early")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a1, err := m.Subscriber("a").Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := m.Subscriber("a").Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Subscriber("b").Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	pub("m1", "m2", "m3", "m4")
	got := map[string][]string{}
	take := func(wait time.Duration) bool {
		select {
		case msg := <-a1:
			got["a"] = append(got["a"], msg.UUID)
			msg.Ack()
		case msg := <-a2:
			got["a"] = append(got["a"], msg.UUID)
			msg.Ack()
		case msg := <-b:
			got["b"] = append(got["b"], msg.UUID)
			msg.Ack()
		case <-time.After(wait):
			return false
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for (len(got["a"]) < 5 || len(got["b"]) < 4) && time.Now().Before(deadline) {
		take(time.Until(deadline))
	}
	for take(300 * time.Millisecond) { // only to show that nothing more comes
	}
	slices.Sort(got["a"])
	slices.Sort(got["b"])
	if want := []string{"early", "m1", "m2", "m3", "m4"}; !slices.Equal(got["a"], want) {
		t.Errorf("group a got %v, want %v each once", got["a"], want)
	}
	if want := []string{"m1", "m2", "m3", "m4"}; !slices.Equal(got["b"], want) {
		t.Errorf("group b got %v, want %v", got["b"], want)
	}
	if n := m.Outstanding("t"); n != 0 {
		t.Errorf("%d outstanding after every ack, want 0", n)
	}
}

// A queue that cannot take a message refuses it for every group: no
// group gets an event another missed.
func TestMemoryFullGroupRefusesForAll(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 2, Workers: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, g := range []string{"slow", "fast"} {
		if _, err := m.Subscriber(g).Subscribe(ctx, "t"); err != nil { // nobody reads: the queues fill
			t.Fatal(err)
		}
	}
	var accepted int
	for i := range 50 {
		err := m.Publish("t", message.NewMessage(strconv.Itoa(i), nil))
		if errors.Is(err, transports.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if accepted == 50 {
		t.Fatal("50 messages accepted by queues of capacity 2")
	}
	if got, want := m.Outstanding("t"), 2*accepted; got != want {
		t.Errorf("outstanding %d, want %d: every accepted message in both groups", got, want)
	}
}

func TestMemoryPublishNeverBlocks(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 3})
	defer m.Close()
	for i := range 3 {
		if err := m.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- m.Publish("t", message.NewMessage("x", nil)) }()
	select {
	case err := <-done:
		if !errors.Is(err, transports.ErrQueueFull) {
			t.Fatalf("publish to a full queue: got %v, want ErrQueueFull", err)
		}
	case <-time.After(time.Second):
		t.Fatal("publish to a full queue blocked")
	}
	err := m.Publish("t", message.NewMessage("y", nil), message.NewMessage("z", nil))
	if !errors.Is(err, transports.ErrQueueFull) || err.Error() != "transports: memory queue is full: 0 of 2 messages accepted" {
		t.Fatalf("batch publish: got %v", err)
	}
	if got := m.Outstanding("t"); got != 3 {
		t.Fatalf("outstanding = %d, want 3", got)
	}
}

func TestMemoryKeepsMessagesPublishedBeforeSubscribe(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{})
	defer m.Close()
	if err := m.Publish("t", message.NewMessage("early", []byte("p"))); err != nil {
		t.Fatal(err)
	}
	ch, err := m.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-ch:
		if msg.UUID != "early" {
			t.Fatalf("got %s", msg.UUID)
		}
		msg.Ack()
	case <-time.After(2 * time.Second):
		t.Fatal("message published before Subscribe never arrived")
	}
}

// A nacked message comes back after NackDelay, doubling: never in a tight
// loop (watermill's gochannel resends at once).
func TestMemoryNackWaits(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{NackDelay: 50 * time.Millisecond, Workers: 1})
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("t", message.NewMessage("n", nil)); err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for len(times) < 4 {
		select {
		case msg := <-ch:
			times = append(times, time.Now())
			if len(times) < 4 {
				msg.Nack()
			} else {
				msg.Ack()
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("redelivery %d never came", len(times))
		}
	}
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	for i, w := range want {
		if got := times[i+1].Sub(times[i]); got < w {
			t.Errorf("redelivery %d after %s, want at least %s", i+1, got, w)
		}
	}
}

// Workers bounds the messages in flight per subscription, and Drain waits
// for them; Shutdown reports what was never acked.
func TestMemoryWorkersDrainAndShutdown(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Workers: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 10 {
		if err := m.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	var held []*message.Message
	for range 4 {
		select {
		case msg := <-ch:
			held = append(held, msg)
		case <-time.After(2 * time.Second):
			t.Fatal("message not handed out")
		}
	}
	select {
	case msg := <-ch:
		t.Fatalf("a fifth message %s was handed out with 4 workers all waiting for acks", msg.UUID)
	case <-time.After(100 * time.Millisecond):
	}
	held[0].Ack()
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	if err := m.Drain(dctx, "t"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with unacked messages: got %v", err)
	}
	left := m.Shutdown()["t"]
	if len(left) != 9 {
		t.Fatalf("Shutdown reported %d messages, want 9", len(left))
	}
	for _, msg := range held[1:] {
		if msg.Context().Err() == nil {
			t.Errorf("in-flight message %s: context not cancelled by Shutdown", msg.UUID)
		}
		msg.Nack()
	}
	if err := m.Publish("t", message.NewMessage("late", nil)); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("publish after Shutdown: got %v", err)
	}
	if again := m.Shutdown(); again != nil {
		t.Fatalf("second Shutdown reported %v", again)
	}
}

// No goroutine per queued message: a backlog of 50 000 costs no goroutines.
func TestMemoryBacklogStartsNoGoroutines(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 50_000, Workers: 2})
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := m.Subscribe(ctx, "t"); err != nil { // nobody reads the channel
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for i := range 50_000 {
		if err := m.Publish("t", message.NewMessage(string(rune(i)), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Fatalf("goroutines went from %d to %d with a backlog", before, after)
	}
}

// A message PublishAt holds is published when due, counts towards
// Capacity while it waits, keeps Drain waiting, and is returned by
// Shutdown if it never came due.
func TestMemoryPublishAt(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 3, Workers: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	retries, err := m.Subscribe(ctx, "retry")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m.PublishAt("retry", start.Add(150*time.Millisecond), message.NewMessage("soon", nil)); err != nil {
		t.Fatal(err)
	}
	if err := m.PublishAt("retry", start.Add(time.Hour), message.NewMessage("later", nil)); err != nil {
		t.Fatal(err)
	}
	if n, oldest := m.Waiting(); n != 2 || !oldest.Equal(start.Add(150*time.Millisecond)) {
		t.Errorf("Waiting() = %d, %s; want 2 and the soonest due time", n, oldest)
	}
	// Two wait, so the events queue of capacity 3 takes one more.
	if err := m.Publish("events", message.NewMessage("e1", nil)); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("events", message.NewMessage("e2", nil)); !errors.Is(err, transports.ErrQueueFull) {
		t.Errorf("second publish: %v, want ErrQueueFull (waiting retries count)", err)
	}
	select {
	case msg := <-retries:
		if msg.UUID != "soon" {
			t.Fatalf("got %s, want soon", msg.UUID)
		}
		if took := time.Since(start); took < 150*time.Millisecond {
			t.Errorf("published after %s, before its due time", took)
		}
		msg.Ack()
	case <-time.After(5 * time.Second):
		t.Fatal("the due message was never published")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	if err := m.Drain(dctx, "retry"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v, want it to wait for the retry due in an hour", err)
	}
	left := m.Shutdown()
	var ids []string
	for _, msg := range left["retry"] {
		ids = append(ids, msg.UUID)
	}
	if !slices.Equal(ids, []string{"later"}) {
		t.Errorf("Shutdown left %v on retry, want [later]", ids)
	}
}
