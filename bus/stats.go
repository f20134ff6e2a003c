package bus

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
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

func (s *stats) add(out *Stats) {
	for _, c := range s.byType {
		c.add(out)
	}
	s.unknown.add(out)
	out.Invalid += s.invalid.Load()
}

// sinks returns every sink counting for this bus: Emit's, each endpoint's,
// and those of endpoints since removed.
func (b *Bus) sinks() []*sink {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	out := make([]*sink, 0, 1+len(b.routes)+len(b.retired))
	out = append(out, b.forward)
	for _, r := range b.routes {
		out = append(out, r.sink)
	}
	return append(out, b.retired...)
}

// Stats returns the counters summed over event types, and the queue's
// current depth and deliveries in flight. Accepted, Dropped and Invalid
// count events; Delivered, Retried, Filtered, Poisoned and Undelivered
// count them per endpoint, summed: with one endpoint each accepted event
// ends once, with three it ends three times, once for each
// (EndpointStats has them apart).
func (b *Bus) Stats() Stats {
	var s Stats
	for _, k := range b.sinks() {
		k.stats.add(&s)
	}
	if d, ok := b.transport.(transports.Depth); ok {
		topics := b.topics()
		out := 0
		for _, t := range topics {
			s.Queued += d.Queued(t)
			out += d.Outstanding(t)
		}
		s.InFlight = max(out-s.Queued, 0)
	}
	if d, ok := b.transport.(transports.Delayer); ok && b.delivers {
		s.RetriesWaiting, s.OldestRetryDue = d.Waiting()
	}
	return s
}

// topics are the topics this process delivers from: the events topic and
// each endpoint's retry topic.
func (b *Bus) topics() []string {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	out := []string{Topic}
	for _, r := range b.routes {
		out = append(out, r.retryTopic)
	}
	if len(b.routes) == 0 {
		out = append(out, RetryTopic)
	}
	return out
}

// StatsByType returns the counters of each event type, summed over
// endpoints as Stats does (Queued and InFlight are left zero), for
// metrics labelled by type.
func (b *Bus) StatsByType() map[event.Type]Stats {
	out := make(map[event.Type]Stats, len(b.stats.byType))
	for _, k := range b.sinks() {
		for t, c := range k.stats.byType {
			s := out[event.Type(t)]
			c.add(&s)
			out[event.Type(t)] = s
		}
	}
	return out
}

// logAttrs returns the attributes every delivery log line has, or nil when
// level is off (so the hot path builds nothing). The default endpoint's
// lines name no endpoint, as before endpoints existed.
func (k *sink) logAttrs(level slog.Level, msg *message.Message) []any {
	if !k.b.log.Enabled(context.Background(), level) {
		return nil
	}
	attrs := []any{
		"event", msg.Metadata.Get(event.MetaType),
		"id", msg.UUID,
		"user_id", msg.Metadata.Get(event.MetaUserID),
	}
	if k.name != "" {
		attrs = append(attrs, "endpoint", k.name)
	}
	return append(attrs, "url", *k.url.Load())
}

func (k *sink) onDelivered(msg *message.Message, status, attempt int, took time.Duration) {
	b := k.b
	t := msg.Metadata.Get(event.MetaType)
	k.stats.of(t).delivered.Add(1)
	k.lastSuccess.Store(time.Now().UnixNano())
	if o := outcomeFrom(msg); o != nil {
		o.Delivered, o.Status, o.Attempts = true, status, attempt
	}
	if b.opts.observe != nil {
		b.opts.observe(event.Type(t), status, took)
	}
	// The one line per event on the hot path: Attrs built in place, no
	// []any to convert, nothing at all when INFO is off; the Record goes
	// to the handler as Logger.LogAttrs would send it, with the source it
	// would find (deliveredPC) but without looking it up every time.
	ctx := context.Background()
	h := b.log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "memhook: webhook delivered", deliveredPC())
	if k.name != "" {
		r.AddAttrs(
			slog.String("event", t),
			slog.String("id", msg.UUID),
			slog.String("user_id", msg.Metadata.Get(event.MetaUserID)),
			slog.String("endpoint", k.name),
			slog.String("url", *k.url.Load()),
			slog.Int("status", status),
			slog.Int("attempt", attempt),
			slog.Duration("duration", took))
	} else {
		r.AddAttrs(
			slog.String("event", t),
			slog.String("id", msg.UUID),
			slog.String("user_id", msg.Metadata.Get(event.MetaUserID)),
			slog.String("url", *k.url.Load()),
			slog.Int("status", status),
			slog.Int("attempt", attempt),
			slog.Duration("duration", took))
	}
	_ = h.Handle(ctx, r) // as Logger.LogAttrs: a handler's error is not the delivery's
}

// deliveredPCs holds the program counter of onDelivered's line, looked
// up once (runtime.Callers, which Logger.LogAttrs calls for every line,
// was a sixth of the line's cost): a handler with AddSource shows the
// source the Logger would have shown.
var deliveredPCs atomic.Uintptr

// deliveredPC returns its caller's program counter, the first time from
// runtime.Callers and then from deliveredPCs: it has one caller.
func deliveredPC() uintptr {
	if pc := deliveredPCs.Load(); pc != 0 {
		return pc
	}
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:]) // 0: Callers, 1: deliveredPC, 2: its caller
	deliveredPCs.Store(pcs[0])
	return pcs[0]
}

func (k *sink) onRetry(msg *message.Message, attempt int, delay time.Duration, err error) {
	k.stats.of(msg.Metadata.Get(event.MetaType)).retried.Add(1)
	k.failed(err)
	if attrs := k.logAttrs(slog.LevelWarn, msg); attrs != nil {
		k.b.log.Warn("memhook: webhook failed, retrying", append(attrs,
			"status", statusOf(err), "attempt", attempt, "retry_in", delay, "error", err.Error())...)
	}
}

// failed notes err as the endpoint's last failure.
func (k *sink) failed(err error) {
	k.lastFailure.Store(time.Now().UnixNano())
	e := err.Error()
	k.lastError.Store(&e)
}

func (k *sink) onPoisoned(poisoned *message.Message, err error) {
	k.stats.of(poisoned.Metadata.Get(event.MetaType)).poisoned.Add(1)
	k.failed(err)
	if o := outcomeFrom(poisoned); o != nil {
		o.Poisoned, o.Status, o.Error = true, statusOf(err), err.Error()
		o.Attempts, _ = strconv.Atoi(poisoned.Metadata.Get(middleware.PoisonAttemptsKey))
	}
	if attrs := k.logAttrs(slog.LevelError, poisoned); attrs != nil {
		k.b.log.Error("memhook: webhook failed for good, sent to poison queue", append(attrs,
			"status", statusOf(err),
			"attempts", poisoned.Metadata.Get(middleware.PoisonAttemptsKey),
			"error", err.Error())...)
	}
}

func (k *sink) onFiltered(msg *message.Message) {
	k.stats.of(msg.Metadata.Get(event.MetaType)).filtered.Add(1)
	if o := outcomeFrom(msg); o != nil {
		o.Filtered = true
	}
	k.b.log.Debug("memhook: event filtered out", "event", msg.Metadata.Get(event.MetaType), "id", msg.UUID)
}

func statusOf(err error) int {
	var se *middleware.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
