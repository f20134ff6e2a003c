package bus

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// Stats counts what became of the events a Bus was given. Every accepted
// event ends Delivered, Filtered, Poisoned or, at a Close cut short,
// Undelivered; Dropped events were refused by a full queue and never
// accepted.
type Stats struct {
	Accepted    uint64 `json:"accepted"`
	Delivered   uint64 `json:"delivered"`
	Retried     uint64 `json:"retried"` // retry attempts, not events
	Filtered    uint64 `json:"filtered"`
	Poisoned    uint64 `json:"poisoned"`
	Dropped     uint64 `json:"dropped"`
	Undelivered uint64 `json:"undelivered"`
	Invalid     uint64 `json:"invalid"` // Emit calls refused as invalid
	Queued      int    `json:"queued"`
	InFlight    int    `json:"in_flight"`
	// RetriesWaiting counts the events whose next attempt waits in the
	// delay store (on Redis: all routers', as last seen, at most 200 ms
	// ago); OldestRetryDue is the earliest due time among them, zero when
	// none waits.
	RetriesWaiting int       `json:"retries_waiting"`
	OldestRetryDue time.Time `json:"oldest_retry_due,omitzero"`
}

type counters struct {
	accepted, delivered, retried, filtered, poisoned, dropped, undelivered atomic.Uint64
}

func (c *counters) add(s *Stats) {
	s.Accepted += c.accepted.Load()
	s.Delivered += c.delivered.Load()
	s.Retried += c.retried.Load()
	s.Filtered += c.filtered.Load()
	s.Poisoned += c.poisoned.Load()
	s.Dropped += c.dropped.Load()
	s.Undelivered += c.undelivered.Load()
}

// stats holds one counters per event type, built once: the map is only
// read afterwards, so lookups need no lock.
type stats struct {
	byType  map[string]*counters
	unknown counters // messages without a known type (foreign producers)
	invalid atomic.Uint64
}

func newStats() *stats {
	s := &stats{byType: map[string]*counters{}}
	for _, t := range event.Types() {
		s.byType[string(t)] = &counters{}
	}
	return s
}

func (s *stats) of(t string) *counters {
	if c := s.byType[t]; c != nil {
		return c
	}
	return &s.unknown
}

// Stats returns the counters summed over event types, and the queue's
// current depth and deliveries in flight.
func (b *Bus) Stats() Stats {
	var s Stats
	for _, c := range b.stats.byType {
		c.add(&s)
	}
	b.stats.unknown.add(&s)
	s.Invalid = b.stats.invalid.Load()
	if d, ok := b.transport.(transports.Depth); ok {
		s.Queued = d.Queued(Topic) + d.Queued(RetryTopic)
		s.InFlight = max(d.Outstanding(Topic)+d.Outstanding(RetryTopic)-s.Queued, 0)
	}
	if d, ok := b.transport.(transports.Delayer); ok && b.delivers {
		s.RetriesWaiting, s.OldestRetryDue = d.Waiting()
	}
	return s
}

// StatsByType returns the counters of each event type (Queued and InFlight
// are left zero), for metrics labelled by type.
func (b *Bus) StatsByType() map[event.Type]Stats {
	out := make(map[event.Type]Stats, len(b.stats.byType))
	for t, c := range b.stats.byType {
		var s Stats
		c.add(&s)
		out[event.Type(t)] = s
	}
	return out
}

// logAttrs returns the attributes every delivery log line has, or nil when
// level is off (so the hot path builds nothing).
func (b *Bus) logAttrs(level slog.Level, msg *message.Message) []any {
	if !b.log.Enabled(context.Background(), level) {
		return nil
	}
	return []any{
		"event", msg.Metadata.Get(event.MetaType),
		"id", msg.UUID,
		"user_id", msg.Metadata.Get(event.MetaUserID),
		"url", b.WebhookURL(),
	}
}

func (b *Bus) onDelivered(msg *message.Message, status, attempt int, took time.Duration) {
	t := msg.Metadata.Get(event.MetaType)
	b.stats.of(t).delivered.Add(1)
	if o := outcomeFrom(msg); o != nil {
		o.Delivered, o.Status, o.Attempts = true, status, attempt
	}
	if b.opts.observe != nil {
		b.opts.observe(event.Type(t), status, took)
	}
	// The one line per event on the hot path: Attrs built in place, no
	// []any to convert, nothing at all when INFO is off.
	if ctx := context.Background(); b.log.Enabled(ctx, slog.LevelInfo) {
		b.log.LogAttrs(ctx, slog.LevelInfo, "memhook: webhook delivered",
			slog.String("event", t),
			slog.String("id", msg.UUID),
			slog.String("user_id", msg.Metadata.Get(event.MetaUserID)),
			slog.String("url", b.url),
			slog.Int("status", status),
			slog.Int("attempt", attempt),
			slog.Duration("duration", took))
	}
}

func (b *Bus) onRetry(msg *message.Message, attempt int, delay time.Duration, err error) {
	b.stats.of(msg.Metadata.Get(event.MetaType)).retried.Add(1)
	if attrs := b.logAttrs(slog.LevelWarn, msg); attrs != nil {
		b.log.Warn("memhook: webhook failed, retrying", append(attrs,
			"status", statusOf(err), "attempt", attempt, "retry_in", delay, "error", err.Error())...)
	}
}

func (b *Bus) onPoisoned(poisoned *message.Message, err error) {
	b.stats.of(poisoned.Metadata.Get(event.MetaType)).poisoned.Add(1)
	if o := outcomeFrom(poisoned); o != nil {
		o.Poisoned, o.Status, o.Error = true, statusOf(err), err.Error()
		o.Attempts, _ = strconv.Atoi(poisoned.Metadata.Get(middleware.PoisonAttemptsKey))
	}
	if attrs := b.logAttrs(slog.LevelError, poisoned); attrs != nil {
		b.log.Error("memhook: webhook failed for good, sent to poison queue", append(attrs,
			"status", statusOf(err),
			"attempts", poisoned.Metadata.Get(middleware.PoisonAttemptsKey),
			"error", err.Error())...)
	}
}

func (b *Bus) onFiltered(msg *message.Message) {
	b.stats.of(msg.Metadata.Get(event.MetaType)).filtered.Add(1)
	if o := outcomeFrom(msg); o != nil {
		o.Filtered = true
	}
	b.log.Debug("memhook: event filtered out", "event", msg.Metadata.Get(event.MetaType), "id", msg.UUID)
}

func statusOf(err error) int {
	var se *middleware.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
