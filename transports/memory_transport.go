package transports

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// MemoryTransport is the Transport of one process: a Memory holds the
// messages, every consumer group has its own queue in it, and nothing
// survives the process: Close returns what was never handled.
type MemoryTransport struct {
	m *Memory
}

var (
	_ Transport = (*MemoryTransport)(nil)
	_ Depth     = (*MemoryTransport)(nil)
	_ Delayer   = (*MemoryTransport)(nil)
	_ Expediter = (*MemoryTransport)(nil)
)

// NewMemoryTransport returns a transport over a new Memory.
func NewMemoryTransport(cfg MemoryConfig) (*MemoryTransport, error) {
	m, err := NewMemory(cfg)
	if err != nil {
		return nil, err
	}
	return &MemoryTransport{m: m}, nil
}

// Publisher returns the Memory.
func (t *MemoryTransport) Publisher() message.Publisher { return t.m }

// Subscriber returns a subscriber of group (Memory.Subscriber).
func (t *MemoryTransport) Subscriber(group string) (message.Subscriber, error) {
	return t.m.Subscriber(group), nil
}

// Delivers is true: the queue is in this process.
func (t *MemoryTransport) Delivers() bool { return true }

// Ready is always nil.
func (t *MemoryTransport) Ready(context.Context) error { return nil }

// Drain waits until every message of every topic has been acked.
func (t *MemoryTransport) Drain(ctx context.Context) error { return t.m.Drain(ctx) }

// Close shuts the Memory down and returns what it still held.
func (t *MemoryTransport) Close() (Left, error) { return t.m.Shutdown(), nil }

// PublishAt implements Delayer (Memory.PublishAt).
func (t *MemoryTransport) PublishAt(topic string, due time.Time, msg *message.Message) error {
	return t.m.PublishAt(topic, due, msg)
}

// Waiting implements Delayer.
func (t *MemoryTransport) Waiting() (int, time.Time) { return t.m.Waiting() }

// Expedite implements Expediter.
func (t *MemoryTransport) Expedite(ctx context.Context, topic string) (int, error) {
	return t.m.Expedite(ctx, topic)
}

// Queued implements Depth.
func (t *MemoryTransport) Queued(topic string) int { return t.m.Queued(topic) }

// Outstanding implements Depth.
func (t *MemoryTransport) Outstanding(topic string) int { return t.m.Outstanding(topic) }

// WaitingOf returns how many retries wait for topic and the earliest due
// time (Memory.WaitingOf): an endpoint's, on its retry topic.
func (t *MemoryTransport) WaitingOf(topic string) (int, time.Time) { return t.m.WaitingOf(topic) }

// QueuedOf returns how many messages wait in group's queue on topic
// (Memory.QueuedOf): an endpoint's backlog.
func (t *MemoryTransport) QueuedOf(topic, group string) int { return t.m.QueuedOf(topic, group) }

// RemoveGroup ends group on topic and returns what it held
// (Memory.RemoveGroup): an endpoint removed at reload.
func (t *MemoryTransport) RemoveGroup(topic, group string) []*message.Message {
	return t.m.RemoveGroup(topic, group)
}
