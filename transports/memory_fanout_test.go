package transports_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/transports"
)

// deadGroup makes group of topic exist with nobody reading it (an
// endpoint whose router went away): its subscription ends at once, its
// queue stays and keeps collecting messages.
func deadGroup(t *testing.T, m *transports.Memory, topic, group string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := m.Subscriber(group).Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case msg, ok := <-ch:
		if ok {
			t.Fatalf("message %s on a subscription of an empty topic", msg.UUID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ended subscription's channel never closed")
	}
}

// liveGroup subscribes group to topic until the test ends; the test reads
// and acks with take.
func liveGroup(t *testing.T, m *transports.Memory, topic, group string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := m.Subscriber(group).Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func take(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg := <-ch:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("no message handed out within 5s")
		return nil
	}
}

// sheds records what OnShed gets.
type sheds struct {
	mu   sync.Mutex
	got  []string // group/uuid
	msgs []*message.Message
}

func (s *sheds) onShed(topic, group string, msg *message.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, topic+"/"+group+"/"+msg.UUID)
	s.msgs = append(s.msgs, msg)
}

func (s *sheds) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 5s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Three groups on one topic, one never consuming: the other two get every
// message, Publish never fails, and the dead one sheds its oldest into
// OnShed — which may publish to the Memory itself (to a poison topic) —
// keeping its newest Capacity.
func TestMemoryFanOutDeadGroupShedsOldest(t *testing.T) {
	const capacity, published = 5, 50
	var m *transports.Memory
	var shed sheds
	m = newMemory(t, transports.MemoryConfig{Capacity: capacity, Workers: 1, OnShed: func(topic, group string, msg *message.Message) {
		shed.onShed(topic, group, msg)
		msg.Metadata.Set("shed_from", group)
		if err := m.Publish("poison", msg); err != nil {
			t.Errorf("publish to poison from OnShed: %v", err)
		}
	}})
	a := liveGroup(t, m, "events", "a")
	b := liveGroup(t, m, "events", "b")
	deadGroup(t, m, "events", "dead")
	poison := liveGroup(t, m, "poison", "poison")

	var want []string
	for i := range published {
		msg := message.NewMessage(strconv.Itoa(i), []byte("p"))
		msg.Metadata.Set("k", "v")
		if err := m.Publish("events", msg); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		for name, ch := range map[string]<-chan *message.Message{"a": a, "b": b} {
			got := take(t, ch)
			if got.UUID != msg.UUID {
				t.Fatalf("group %s got %s, want %s", name, got.UUID, msg.UUID)
			}
			got.Ack()
		}
		if i < published-capacity {
			want = append(want, "events/dead/"+strconv.Itoa(i))
		}
		if i >= capacity { // the dead group shed message i-capacity
			got := take(t, poison)
			if got.UUID != strconv.Itoa(i-capacity) || got.Metadata.Get("shed_from") != "dead" {
				t.Fatalf("poison message %d: %s from %q", i-capacity, got.UUID, got.Metadata.Get("shed_from"))
			}
			got.Ack()
		}
	}
	if got := shed.list(); !slices.Equal(got, want) {
		t.Fatalf("OnShed got %d messages %v,\nwant the %d oldest %v", len(got), got, published-capacity, want)
	}
	for _, msg := range shed.msgs {
		if msg.Metadata.Get("k") != "v" || string(msg.Payload) != "p" {
			t.Fatalf("shed copy of %s lost metadata or payload: %v %q", msg.UUID, msg.Metadata, msg.Payload)
		}
	}
	if n := m.QueuedOf("events", "dead"); n != capacity {
		t.Errorf("QueuedOf(dead) = %d, want %d", n, capacity)
	}
	if n := m.QueuedOf("events", "a"); n != 0 {
		t.Errorf("QueuedOf(a) = %d, want 0", n)
	}
	waitFor(t, "only the dead group's messages outstanding", func() bool {
		return m.Outstanding("events") == capacity && m.Outstanding("poison") == 0
	})
	var left []string
	for _, msg := range m.Shutdown()["events"] {
		left = append(left, msg.UUID)
	}
	slices.Sort(left)
	wantLeft := []string{"45", "46", "47", "48", "49"}
	if !slices.Equal(left, wantLeft) {
		t.Errorf("Shutdown left %v, want the dead group's newest %v", left, wantLeft)
	}
}

// When a publish is refused: a single group refuses when full (OnShed or
// not); several groups refuse when all are full, or when any is full and
// there is no OnShed; otherwise the full ones shed.
func TestMemoryFanOutWhenRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dead     int
		live     bool
		onShed   bool
		wantErr  bool
		wantShed []string
	}{
		{name: "one full group with OnShed", dead: 1, onShed: true, wantErr: true},
		{name: "one full group", dead: 1, wantErr: true},
		{name: "every group full", dead: 2, onShed: true, wantErr: true},
		{name: "one of two full without OnShed", dead: 1, live: true, wantErr: true},
		{name: "one of two full with OnShed", dead: 1, live: true, onShed: true, wantShed: []string{"t/dead0/m0"}},
		{name: "two of three full with OnShed", dead: 2, live: true, onShed: true, wantShed: []string{"t/dead0/m0", "t/dead1/m0"}},
		{name: "one live group", live: true, onShed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var shed sheds
			cfg := transports.MemoryConfig{Capacity: 2, Workers: 1}
			if tc.onShed {
				cfg.OnShed = shed.onShed
			}
			m := newMemory(t, cfg)
			defer m.Close()
			var live <-chan *message.Message
			if tc.live {
				live = liveGroup(t, m, "t", "live")
			}
			for i := range tc.dead {
				deadGroup(t, m, "t", "dead"+strconv.Itoa(i))
			}
			publish := func(id string) error {
				err := m.Publish("t", message.NewMessage(id, nil))
				if err == nil && live != nil {
					take(t, live).Ack()
				}
				return err
			}
			for _, id := range []string{"m0", "m1"} {
				if err := publish(id); err != nil {
					t.Fatalf("publish %s to queues with room: %v", id, err)
				}
			}
			err := publish("m2")
			if tc.wantErr != errors.Is(err, transports.ErrQueueFull) {
				t.Errorf("third publish: %v, want ErrQueueFull %v", err, tc.wantErr)
			}
			if got := shed.list(); !slices.Equal(got, tc.wantShed) {
				t.Errorf("shed %v, want %v", got, tc.wantShed)
			}
			for i := range tc.dead {
				if n := m.QueuedOf("t", "dead"+strconv.Itoa(i)); n != 2 {
					t.Errorf("dead group %d holds %d, want 2 (full)", i, n)
				}
			}
		})
	}
}

// A batch to a topic whose every group is full says how many were
// accepted, with shedding as without.
func TestMemoryFanOutBatchRefusedWhenAllFull(t *testing.T) {
	var shed sheds
	m := newMemory(t, transports.MemoryConfig{Capacity: 2, Workers: 1, OnShed: shed.onShed})
	defer m.Close()
	deadGroup(t, m, "t", "x")
	deadGroup(t, m, "t", "y")
	err := m.Publish("t", message.NewMessage("1", nil), message.NewMessage("2", nil), message.NewMessage("3", nil))
	if !errors.Is(err, transports.ErrQueueFull) || err.Error() != "transports: memory queue is full: 2 of 3 messages accepted" {
		t.Fatalf("batch: got %v", err)
	}
	if got := shed.list(); len(got) != 0 {
		t.Errorf("shed %v, want none", got)
	}
	if n := m.Outstanding("t"); n != 4 {
		t.Errorf("outstanding %d, want 4 (two messages in two groups)", n)
	}
}

// Retries waiting count against their own group only: an endpoint's
// waiting retries fill its own room (its events queue sheds), never
// another endpoint's, and PublishAt refuses only for the group whose
// retries fill Capacity.
func TestMemoryWaitingCountsPerGroup(t *testing.T) {
	var shed sheds
	m := newMemory(t, transports.MemoryConfig{Capacity: 3, Workers: 1, OnShed: shed.onShed})
	defer m.Close()
	for _, g := range []string{"a", "b"} {
		deadGroup(t, m, "events", g)
		deadGroup(t, m, "retry."+g, g)
	}
	now := time.Now()
	for i := range 3 {
		if err := m.PublishAt("retry.a", now.Add(time.Hour+time.Duration(i)*time.Minute), message.NewMessage("ra"+strconv.Itoa(i), nil)); err != nil {
			t.Fatalf("PublishAt %d for a: %v", i, err)
		}
	}
	if err := m.PublishAt("retry.a", now.Add(time.Hour), message.NewMessage("ra3", nil)); !errors.Is(err, transports.ErrQueueFull) {
		t.Errorf("PublishAt with Capacity of a's retries waiting: %v, want ErrQueueFull", err)
	}
	if err := m.PublishAt("retry.b", now.Add(2*time.Hour), message.NewMessage("rb0", nil)); err != nil {
		t.Errorf("PublishAt for b while a's retries fill a: %v", err)
	}
	if err := m.Publish("retry.b", message.NewMessage("rb-now", nil)); err != nil {
		t.Errorf("Publish to b's retry topic while a's retries fill a: %v", err)
	}
	if err := m.Publish("events", message.NewMessage("e0", nil)); err != nil {
		t.Errorf("Publish to events while a's retries fill a: %v", err)
	}
	if got, want := shed.list(), []string{"events/a/e0"}; !slices.Equal(got, want) {
		t.Errorf("shed %v, want %v: a's room is taken by its retries", got, want)
	}
	if a, b := m.QueuedOf("events", "a"), m.QueuedOf("events", "b"); a != 0 || b != 1 {
		t.Errorf("events queued a=%d b=%d, want 0 and 1", a, b)
	}
	// b: 1 retry waiting + 1 queued on events; the third message shows
	// its room is Capacity less its own retries, not a's.
	if err := m.Publish("events", message.NewMessage("e1", nil)); err != nil {
		t.Fatal(err)
	}
	if n := m.QueuedOf("events", "b"); n != 2 {
		t.Errorf("b holds %d on events, want 2", n)
	}
	if err := m.Publish("events", message.NewMessage("e2", nil)); !errors.Is(err, transports.ErrQueueFull) {
		t.Errorf("publish with a and b both full: %v, want ErrQueueFull", err)
	}

	if n, due := m.WaitingOf("retry.a"); n != 3 || !due.Equal(now.Add(time.Hour)) {
		t.Errorf("WaitingOf(retry.a) = %d, %s; want 3 and the soonest due", n, due)
	}
	if n, due := m.WaitingOf("retry.b"); n != 1 || !due.Equal(now.Add(2*time.Hour)) {
		t.Errorf("WaitingOf(retry.b) = %d, %s; want 1, %s", n, due, now.Add(2*time.Hour))
	}
	if n, due := m.WaitingOf("events"); n != 0 || !due.IsZero() {
		t.Errorf("WaitingOf(events) = %d, %s; want none", n, due)
	}
	if n, due := m.Waiting(); n != 4 || !due.Equal(now.Add(time.Hour)) {
		t.Errorf("Waiting() = %d, %s; want 4 in all", n, due)
	}
	left := m.Shutdown()
	if n := len(left["retry.a"]); n != 3 {
		t.Errorf("Shutdown returned %d of a's retries, want 3", n)
	}
	if n := len(left["retry.b"]); n != 2 {
		t.Errorf("Shutdown returned %d on retry.b, want 2 (one waiting, one queued)", n)
	}
	if n, _ := m.Waiting(); n != 0 {
		t.Errorf("Waiting() after Shutdown = %d", n)
	}
}

// A group whose waiting retries grew while events were queued sheds as
// many of its oldest as it takes to hold, queued and waiting, Capacity.
func TestMemoryShedsUntilWithinCapacity(t *testing.T) {
	var shed sheds
	m := newMemory(t, transports.MemoryConfig{Capacity: 4, Workers: 1, OnShed: shed.onShed})
	defer m.Close()
	live := liveGroup(t, m, "events", "live")
	deadGroup(t, m, "events", "x")
	deadGroup(t, m, "retry.x", "x")
	publish := func(id string) {
		t.Helper()
		if err := m.Publish("events", message.NewMessage(id, nil)); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		take(t, live).Ack()
	}
	for _, id := range []string{"e0", "e1", "e2"} {
		publish(id)
	}
	for i := range 3 { // PublishAt looks at waiting retries only
		if err := m.PublishAt("retry.x", time.Now().Add(time.Hour), message.NewMessage("r"+strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	publish("e3")
	if got, want := shed.list(), []string{"events/x/e0", "events/x/e1", "events/x/e2"}; !slices.Equal(got, want) {
		t.Errorf("shed %v, want %v", got, want)
	}
	if n := m.QueuedOf("events", "x"); n != 1 {
		t.Errorf("x holds %d queued with 3 retries waiting, want 1 (Capacity 4)", n)
	}
}

// A due retry stops counting against its group once published: the
// group's room comes back.
func TestMemoryDueRetryFreesRoom(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 2, Workers: 1})
	defer m.Close()
	retries := liveGroup(t, m, "retry", "g")
	deadGroup(t, m, "events", "g")
	for i := range 2 {
		if err := m.PublishAt("retry", time.Now().Add(50*time.Millisecond), message.NewMessage("r"+strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Publish("events", message.NewMessage("e0", nil)); !errors.Is(err, transports.ErrQueueFull) {
		t.Fatalf("publish with the group's room taken by its retries: %v, want ErrQueueFull", err)
	}
	take(t, retries).Ack()
	take(t, retries).Ack()
	if n, _ := m.WaitingOf("retry"); n != 0 {
		t.Errorf("WaitingOf after both were published: %d", n)
	}
	if err := m.Publish("events", message.NewMessage("e1", nil)); err != nil {
		t.Errorf("publish once the retries were published: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Drain(ctx, "retry"); err != nil {
		t.Errorf("Drain(retry) once both retries were acked: %v", err)
	}
}

// RemoveGroup: the group gets nothing published afterwards, its queued
// messages come back to the caller in order, its message in flight is
// finished (Drain waits for it), and the other groups go on.
func TestMemoryRemoveGroup(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 10, Workers: 1})
	defer m.Close()
	a := liveGroup(t, m, "t", "a")
	b := liveGroup(t, m, "t", "b")
	for i := range 4 {
		if err := m.Publish("t", message.NewMessage("m"+strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	inFlight := take(t, b) // m0, at once (else it is offered again after the rest); m1..m3 stay queued for b
	if inFlight.UUID != "m0" {
		t.Fatalf("b got %s first, want m0", inFlight.UUID)
	}
	for range 4 {
		take(t, a).Ack()
	}
	var ids []string
	for _, msg := range m.RemoveGroup("t", "b") {
		ids = append(ids, msg.UUID)
	}
	if want := []string{"m1", "m2", "m3"}; !slices.Equal(ids, want) {
		t.Fatalf("RemoveGroup returned %v, want %v", ids, want)
	}
	if n := m.QueuedOf("t", "b"); n != 0 {
		t.Errorf("QueuedOf removed group = %d", n)
	}
	if err := m.Publish("t", message.NewMessage("m4", nil)); err != nil {
		t.Fatal(err)
	}
	if got := take(t, a); got.UUID != "m4" {
		t.Fatalf("a got %s, want m4", got.UUID)
	} else {
		got.Ack()
	}
	waitFor(t, "only b's message in flight outstanding", func() bool { return m.Outstanding("t") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := m.Drain(ctx, "t"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with the removed group's message in flight: %v, want DeadlineExceeded", err)
	}
	inFlight.Ack()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Drain(ctx, "t"); err != nil {
		t.Fatalf("Drain once it was acked: %v", err)
	}
	select {
	case msg := <-b: // a sleep only to show that nothing more comes to b
		t.Fatalf("removed group got %s", msg.UUID)
	case <-time.After(200 * time.Millisecond):
	}
	if got := m.RemoveGroup("t", "b"); got != nil {
		t.Errorf("removing b again returned %v", got)
	}
	if got := m.RemoveGroup("nothing", "b"); got != nil {
		t.Errorf("removing from an unknown topic returned %v", got)
	}
}

// Removing a topic's last group returns the retries waiting for it too
// (nobody would take them) and stops counting them.
func TestMemoryRemoveLastGroupReturnsWaiting(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 10, Workers: 1})
	defer m.Close()
	deadGroup(t, m, "retry.x", "x")
	deadGroup(t, m, "retry.y", "y")
	now := time.Now()
	for i, id := range []string{"late", "soon"} {
		if err := m.PublishAt("retry.x", now.Add(time.Hour-time.Duration(i)*time.Minute), message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PublishAt("retry.y", now.Add(time.Hour), message.NewMessage("y", nil)); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("retry.x", message.NewMessage("queued", nil)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, msg := range m.RemoveGroup("retry.x", "x") {
		ids = append(ids, msg.UUID)
	}
	if want := []string{"queued", "soon", "late"}; !slices.Equal(ids, want) {
		t.Fatalf("RemoveGroup returned %v, want %v (queued, then waiting soonest first)", ids, want)
	}
	if n, _ := m.WaitingOf("retry.x"); n != 0 {
		t.Errorf("WaitingOf(retry.x) = %d after its last group went", n)
	}
	if n, _ := m.Waiting(); n != 1 {
		t.Errorf("Waiting() = %d, want 1 (y's)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Drain(ctx, "retry.x"); err != nil {
		t.Errorf("Drain(retry.x) once its group was removed: %v", err)
	}
}

// A group subscribing after messages flowed gets those published from
// then on, not earlier ones.
func TestMemoryGroupAddedLater(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 10, Workers: 1})
	defer m.Close()
	a := liveGroup(t, m, "t", "a")
	for _, id := range []string{"m0", "m1"} {
		if err := m.Publish("t", message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
		take(t, a).Ack()
	}
	c := liveGroup(t, m, "t", "c")
	if err := m.Publish("t", message.NewMessage("m2", nil)); err != nil {
		t.Fatal(err)
	}
	take(t, a).Ack()
	if got := take(t, c); got.UUID != "m2" {
		t.Fatalf("the group added later got %s first, want m2", got.UUID)
	} else {
		got.Ack()
	}
	waitFor(t, "every message acked", func() bool { return m.Outstanding("t") == 0 })
}

// Drain waits for OnShed to return (the shed message is on its way to the
// poison topic), and Shutdown reports what the full group kept.
func TestMemoryDrainWaitsForOnShed(t *testing.T) {
	entered, release := make(chan string, 1), make(chan struct{})
	m := newMemory(t, transports.MemoryConfig{Capacity: 1, Workers: 1, OnShed: func(_, _ string, msg *message.Message) {
		entered <- msg.UUID
		<-release
	}})
	live := liveGroup(t, m, "t", "live")
	deadGroup(t, m, "t", "dead")
	if err := m.Publish("t", message.NewMessage("m0", nil)); err != nil {
		t.Fatal(err)
	}
	take(t, live).Ack()
	published := make(chan error, 1)
	go func() { published <- m.Publish("t", message.NewMessage("m1", nil)) }()
	select {
	case id := <-entered:
		if id != "m0" {
			t.Fatalf("shed %s, want m0", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnShed never called")
	}
	take(t, live).Ack()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := m.Drain(ctx, "none"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain while OnShed runs: %v, want DeadlineExceeded", err)
	}
	close(release)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Drain(ctx, "none"); err != nil {
		t.Fatalf("Drain once OnShed returned: %v", err)
	}
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("publish that shed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish never returned")
	}
	waitFor(t, "only the dead group's message outstanding", func() bool { return m.Outstanding("t") == 1 })
	left := m.Shutdown()["t"]
	if len(left) != 1 || left[0].UUID != "m1" {
		t.Errorf("Shutdown left %v, want [m1]", left)
	}
}

// The transport the bus runs on passes the fan-out knobs through: OnShed
// from its config, and the per-group and per-topic counts.
func TestMemoryTransportFanOut(t *testing.T) {
	var shed sheds
	tr, err := transports.NewMemoryTransport(transports.MemoryConfig{Capacity: 1, Workers: 1, OnShed: shed.onShed})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	subscribe := func(topic, group string) <-chan *message.Message {
		sub, err := tr.Subscriber(group)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	live := subscribe(transports.DefaultRetryTopic, "memhook")
	dead := subscribe(transports.DefaultRetryTopic, "memhook.endpoint.dead")
	for _, id := range []string{"m0", "m1"} {
		if err := tr.Publisher().Publish(transports.DefaultRetryTopic, message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
		take(t, live).Ack()
		if id == "m0" {
			if got := take(t, dead); got.UUID != "m0" { // held, never acked
				t.Fatalf("dead got %s", got.UUID)
			}
		}
	}
	if n := tr.QueuedOf(transports.DefaultRetryTopic, "memhook.endpoint.dead"); n != 1 {
		t.Errorf("QueuedOf = %d, want 1", n)
	}
	if err := tr.Publisher().Publish(transports.DefaultRetryTopic, message.NewMessage("m2", nil)); err != nil {
		t.Fatal(err)
	}
	take(t, live).Ack()
	if got, want := shed.list(), []string{transports.DefaultRetryTopic + "/memhook.endpoint.dead/m1"}; !slices.Equal(got, want) {
		t.Errorf("shed %v, want %v", got, want)
	}
	due := time.Now().Add(time.Hour)
	if err := tr.PublishAt(transports.EndpointRetryTopic("dead"), due, message.NewMessage("r", nil)); err != nil {
		t.Fatal(err)
	}
	if n, at := tr.WaitingOf(transports.EndpointRetryTopic("dead")); n != 1 || !at.Equal(due) {
		t.Errorf("WaitingOf = %d, %s", n, at)
	}
	left := tr.RemoveGroup(transports.DefaultRetryTopic, "memhook.endpoint.dead")
	if len(left) != 1 || left[0].UUID != "m2" {
		t.Errorf("RemoveGroup returned %v, want [m2]", left)
	}
}

// A due retry its full queue keeps refusing waits on (counted, tried
// again) and Shutdown returns it.
func TestMemoryDueRetryRefusedIsKept(t *testing.T) {
	m := newMemory(t, transports.MemoryConfig{Capacity: 1, Workers: 1})
	deadGroup(t, m, "retry", "g")
	if err := m.Publish("retry", message.NewMessage("queued", nil)); err != nil {
		t.Fatal(err)
	}
	if err := m.PublishAt("retry", time.Now(), message.NewMessage("due", nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // only to show that the refused one is not lost meanwhile
	if n, _ := m.WaitingOf("retry"); n != 1 {
		t.Errorf("WaitingOf = %d while its queue refuses it, want 1", n)
	}
	var ids []string
	for _, msg := range m.Shutdown()["retry"] {
		ids = append(ids, msg.UUID)
	}
	slices.Sort(ids)
	if want := []string{"due", "queued"}; !slices.Equal(ids, want) {
		t.Errorf("Shutdown left %v, want %v", ids, want)
	}
}
