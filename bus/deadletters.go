package bus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// The dead-letter queue of every transport (issue #13). An event that
// failed for good for an endpoint is published to PoisonTopic; the bus's
// poison consumer keeps it. On Redis the poison stream is the queue,
// shared by every process on it (transports.DLQ). On the others (memory,
// http, a brought pub/sub) it is a bounded ring in this process, fed by
// the poison consumer of this process: Config.DeadLetterMax entries, the
// oldest leaving first; it does not outlive the process.

// DefaultDeadLetterLimit is how many dead letters DeadLetters returns
// when DeadLetterFilter.Limit is 0.
const DefaultDeadLetterLimit = 100

// UnknownDeadLettersError is returned by Replay for the ids its
// dead-letter queue does not hold (never there, replayed or purged
// already, or left past DeadLetterMax); the others were replayed.
type UnknownDeadLettersError struct {
	IDs []string
}

// Error implements error.
func (e *UnknownDeadLettersError) Error() string {
	return fmt.Sprintf("bus: no such dead letter: %s", strings.Join(e.IDs, ", "))
}

// DeadLetters returns the dead letters f selects, oldest first: on Redis
// those of the poison stream (every process's), elsewhere those this
// process's poison consumer kept. Limit 0 means DefaultDeadLetterLimit; a
// negative one is an error. A payload that is not JSON (a foreign
// producer's) is given as a JSON string. An endpoint nothing knows has
// none.
func (b *Bus) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("bus: DeadLetterFilter.Limit must not be negative, got %d", f.Limit)
	}
	return b.dead.list(ctx, deadLetterQuery{
		endpoint: f.Endpoint, since: f.Since, limit: cmp.Or(f.Limit, DefaultDeadLetterLimit),
	})
}

// Replay sends again each dead letter ids names (DeadLetter.ID), once
// however often it is named, to its own endpoint only, and takes it out
// of the queue. It goes out as its endpoint's retries do, from attempt 1,
// with the same webhook-id; its filter applies again. On Redis it goes to
// the endpoint's retry stream, which any router delivering to that
// endpoint takes; elsewhere to this process's route of the endpoint (on
// transport http: back to the router, as the first time).
//
// It returns how many it replayed. The ids it does not hold are listed in
// an *UnknownDeadLettersError, the others replayed all the same: a
// request repeated after a partial failure replays what is left. A dead
// letter that could not be sent (its endpoint no longer delivered here
// (ErrUnknownEndpoint), a full queue, Redis unreachable) stays in the
// queue, its error joined to the result. ErrClosed after Close.
func (b *Bus) Replay(ctx context.Context, ids []string) (int, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, ErrClosed
	}
	once := make([]string, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			once = append(once, id)
		}
	}
	n, unknown, err := b.dead.replay(ctx, once)
	if len(unknown) > 0 {
		err = errors.Join(&UnknownDeadLettersError{IDs: unknown}, err)
	}
	return n, err
}

// RecoverEndpoint replays (see Replay) every event that ended in the
// dead-letter queue of endpoint at or after since, each once: of an event
// poisoned several times there, its newest entry (the older ones stay
// listed). It returns how many it replayed; a dead letter replayed or
// purged meanwhile by someone else is not counted and is no error.
// ErrUnknownEndpoint for an endpoint this process does not deliver to
// (nor, where it delivers to none, configures); ErrClosed after Close.
func (b *Bus) RecoverEndpoint(ctx context.Context, endpoint string, since time.Time) (int, error) {
	if !b.knowsEndpoint(endpoint) {
		return 0, fmt.Errorf("%w: %q", ErrUnknownEndpoint, endpoint)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, ErrClosed
	}
	dls, err := b.dead.list(ctx, deadLetterQuery{endpoint: endpoint, since: since})
	if err != nil {
		return 0, err
	}
	newest := map[string]int{} // event id → index of its newest dead letter
	for i, dl := range dls {
		newest[cmp.Or(dl.EventID, "entry "+dl.ID)] = i
	}
	var ids []string
	for i, dl := range dls {
		if newest[cmp.Or(dl.EventID, "entry "+dl.ID)] == i {
			ids = append(ids, dl.ID)
		}
	}
	n, _, err := b.dead.replay(ctx, ids)
	return n, err
}

// PurgeDeadLetters deletes the dead letters of endpoint ("" every
// endpoint's) and returns how many. On Redis the poison stream stays, so
// that the routers reading it go on.
func (b *Bus) PurgeDeadLetters(ctx context.Context, endpoint string) (int, error) {
	return b.dead.purge(ctx, endpoint)
}

// Event returns what is known of the event id: its envelope, from the
// newest of its dead letters, and its attempts. The attempt log does not
// feed it yet: Attempts is empty, and an event no dead letter holds is
// ErrUnknownEvent.
func (b *Bus) Event(ctx context.Context, id string) (EventRecord, error) {
	dls, err := b.dead.list(ctx, deadLetterQuery{eventID: id})
	if err != nil {
		return EventRecord{}, err
	}
	if len(dls) == 0 {
		return EventRecord{}, fmt.Errorf("%w: %q", ErrUnknownEvent, id)
	}
	return EventRecord{ID: id, Envelope: dls[len(dls)-1].Payload, Attempts: []Attempt{}}, nil
}

// DeadLettersEvicted returns how many dead letters this process's queue
// let go, the oldest first, to stay within Config.DeadLetterMax; 0 on
// Redis, whose poison stream keeps them.
func (b *Bus) DeadLettersEvicted() uint64 { return b.dead.evicted() }

// knowsEndpoint reports whether a replay to endpoint has a taker: a
// route here; where this process delivers to none, an endpoint of its
// configuration (Redis: another router delivers it), or, on transport
// http, the default one (the router).
func (b *Bus) knowsEndpoint(name string) bool {
	if b.route(name) != nil {
		return true
	}
	if b.delivers {
		return false
	}
	if !b.transport.Delivers() && b.cfg.Transport == TransportHTTP {
		return name == DefaultEndpoint
	}
	for _, e := range b.cfg.endpoints() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// deadLetterStore is a dead-letter queue: the ring of this process or
// the Redis poison stream.
type deadLetterStore interface {
	// keep takes a message the poison consumer got.
	keep(msg *message.Message)
	list(ctx context.Context, q deadLetterQuery) ([]DeadLetter, error)
	// replay replays each of ids (no duplicates), returning how many it
	// replayed, those it does not hold, and the other failures joined.
	replay(ctx context.Context, ids []string) (n int, unknown []string, err error)
	purge(ctx context.Context, endpoint string) (int, error)
	evicted() uint64
	close() error
}

// deadLetterQuery selects dead letters, oldest first; a zero field does
// not select.
type deadLetterQuery struct {
	endpoint, eventID string
	since             time.Time
	limit             int
}

func (q deadLetterQuery) match(dl *DeadLetter) bool {
	return (q.endpoint == "" || dl.Endpoint == q.endpoint) &&
		(q.eventID == "" || dl.EventID == q.eventID) &&
		!dl.PoisonedAt.Before(q.since)
}

// newDeadLetterStore returns the dead-letter queue of b's transport.
func (b *Bus) newDeadLetterStore() deadLetterStore {
	if _, ok := b.transport.(*transports.RedisTransport); ok {
		return &redisDeadLetters{cfg: b.cfg.RedisConfig()}
	}
	max := b.cfg.DeadLetterMax
	if max == Disabled {
		max = 0
	}
	return &ring{max: max, send: b.resend, log: b.log}
}

// resend publishes a replayed dead letter of endpoint: to its route's
// retry topic, due now; on transport http to the events topic, which the
// forwarder hands to the router again.
func (b *Bus) resend(endpoint string, msg *message.Message) error {
	if !b.transport.Delivers() {
		return b.pub.Publish(Topic, msg)
	}
	r := b.route(endpoint)
	if r == nil {
		return fmt.Errorf("%w: %q", ErrUnknownEndpoint, endpoint)
	}
	return b.transport.(transports.Delayer).PublishAt(r.retryTopic, time.Now(), msg) // every transport that delivers has one
}

// replayResetKeys are the metadata keys a replayed dead letter loses: the
// poison keys and the attempt's, so that it starts again from attempt 1.
var replayResetKeys = []string{
	middleware.PoisonReasonKey, middleware.PoisonTopicKey, middleware.PoisonStatusKey, middleware.PoisonAttemptsKey,
	middleware.AttemptKey, middleware.RateSlotKey, middleware.RateLimitedKey, middleware.OrderBrokenKey,
}

// deadLetterOf reads a poisoned copy. Its endpoint is
// middleware.EndpointKey, DefaultEndpoint without it.
func deadLetterOf(id string, at time.Time, msg *message.Message) DeadLetter {
	status, _ := strconv.Atoi(msg.Metadata.Get(middleware.PoisonStatusKey))
	attempts, _ := strconv.Atoi(msg.Metadata.Get(middleware.PoisonAttemptsKey))
	return DeadLetter{
		ID:          id,
		EventID:     msg.UUID,
		EventType:   msg.Metadata.Get(event.MetaType),
		UserID:      msg.Metadata.Get(event.MetaUserID),
		Endpoint:    cmp.Or(msg.Metadata.Get(middleware.EndpointKey), DefaultEndpoint),
		Reason:      msg.Metadata.Get(middleware.PoisonReasonKey),
		Status:      status,
		Attempts:    attempts,
		PoisonedAt:  at.UTC(),
		OrderBroken: msg.Metadata.Get(middleware.OrderBrokenKey),
		Payload:     jsonPayload(msg.Payload),
	}
}

// jsonPayload is p, copied, as JSON: p itself when it is JSON, else p as
// a JSON string.
func jsonPayload(p []byte) json.RawMessage {
	if json.Valid(p) {
		return slices.Clone(p)
	}
	s, _ := json.Marshal(string(p))
	return s
}

// ring is the dead-letter queue of this process: at most max entries,
// the oldest leaving first.
type ring struct {
	max  int
	send func(endpoint string, msg *message.Message) error
	log  *slog.Logger

	mu      sync.Mutex
	seq     uint64
	entries []ringEntry // oldest first: seq ascending

	gone    atomic.Uint64 // evicted past max
	lastLog atomic.Int64  // Unix nanoseconds of the last eviction logged
}

type ringEntry struct {
	seq uint64
	dl  DeadLetter
	msg *message.Message // what a replay sends: the poison keys gone
}

func (g *ring) keep(poisoned *message.Message) {
	if g.max == 0 {
		return
	}
	msg := message.NewMessage(poisoned.UUID, slices.Clone(poisoned.Payload))
	for k, v := range poisoned.Metadata {
		if !slices.Contains(replayResetKeys, k) {
			msg.Metadata.Set(k, v)
		}
	}
	g.mu.Lock()
	g.seq++
	e := ringEntry{seq: g.seq, dl: deadLetterOf(strconv.FormatUint(g.seq, 10), time.Now(), poisoned), msg: msg}
	full := len(g.entries) >= g.max
	var evicted DeadLetter
	if full {
		evicted = g.entries[0].dl
		g.entries[0] = ringEntry{} // for the collector: the array's start stays until append moves it
		g.entries = g.entries[1:]
	}
	g.entries = append(g.entries, e)
	g.mu.Unlock()
	if !full {
		return
	}
	total := g.gone.Add(1)
	now := time.Now().UnixNano()
	if last := g.lastLog.Load(); now-last >= int64(time.Second) && g.lastLog.CompareAndSwap(last, now) {
		g.log.Warn("memhook: dead-letter queue full (MEMHOOK_DLQ_MAX): its oldest entries leave it",
			"id", evicted.EventID, "endpoint", evicted.Endpoint, "evicted_total", total, "bound", g.max)
	}
}

func (g *ring) list(_ context.Context, q deadLetterQuery) ([]DeadLetter, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []DeadLetter
	for i := range g.entries {
		dl := &g.entries[i].dl
		if !q.match(dl) {
			continue
		}
		c := *dl
		c.Payload = slices.Clone(dl.Payload)
		out = append(out, c)
		if q.limit > 0 && len(out) == q.limit {
			break
		}
	}
	return out, nil
}

func (g *ring) replay(_ context.Context, ids []string) (int, []string, error) {
	n := 0
	var unknown []string
	var errs []error
	for _, id := range ids {
		e, ok := g.take(id)
		if !ok {
			unknown = append(unknown, id)
			continue
		}
		msg := message.NewMessage(e.msg.UUID, e.msg.Payload)
		msg.Metadata = maps.Clone(e.msg.Metadata)
		if err := g.send(e.dl.Endpoint, msg); err != nil {
			g.put(e)
			errs = append(errs, fmt.Errorf("bus: replaying dead letter %s (event %s, endpoint %s): %w", id, e.dl.EventID, e.dl.Endpoint, err))
			continue
		}
		n++
	}
	return n, unknown, errors.Join(errs...)
}

// take removes the entry id names.
func (g *ring) take(id string) (ringEntry, bool) {
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return ringEntry{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	i, ok := slices.BinarySearchFunc(g.entries, seq, func(e ringEntry, seq uint64) int { return cmp.Compare(e.seq, seq) })
	if !ok {
		return ringEntry{}, false
	}
	e := g.entries[i]
	g.entries = slices.Delete(g.entries, i, i+1)
	return e, true
}

// put puts back an entry take removed, in its place; if the ring has
// filled meanwhile, it is older than every entry and leaves instead.
func (g *ring) put(e ringEntry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.entries) >= g.max && g.entries[0].seq > e.seq {
		g.gone.Add(1)
		return
	}
	i, _ := slices.BinarySearchFunc(g.entries, e.seq, func(e ringEntry, seq uint64) int { return cmp.Compare(e.seq, seq) })
	g.entries = slices.Insert(g.entries, i, e)
	if len(g.entries) > g.max {
		g.entries = slices.Delete(g.entries, 0, 1)
		g.gone.Add(1)
	}
}

func (g *ring) purge(_ context.Context, endpoint string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	before := len(g.entries)
	g.entries = slices.DeleteFunc(g.entries, func(e ringEntry) bool { return endpoint == "" || e.dl.Endpoint == endpoint })
	return before - len(g.entries), nil
}

func (g *ring) evicted() uint64 { return g.gone.Load() }

func (g *ring) close() error { return nil }

// redisDeadLetters is the poison stream, through a transports.DLQ made
// at first use.
type redisDeadLetters struct {
	cfg transports.RedisConfig

	mu     sync.Mutex
	dlq    *transports.DLQ
	closed bool
}

// streamID is a Redis stream entry id in full, as DeadLetter.ID holds it.
var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

func (s *redisDeadLetters) get() (*transports.DLQ, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.dlq == nil {
		d, err := transports.NewDLQ(s.cfg)
		if err != nil {
			return nil, fmt.Errorf("bus: dead letters: %w", err)
		}
		s.dlq = d
	}
	return s.dlq, nil
}

// keep does nothing: the poison stream keeps the entry.
func (s *redisDeadLetters) keep(*message.Message) {}

func (s *redisDeadLetters) list(ctx context.Context, q deadLetterQuery) ([]DeadLetter, error) {
	d, err := s.get()
	if err != nil {
		return nil, err
	}
	limit := q.limit
	if !q.since.IsZero() || q.eventID != "" {
		limit = 0 // filtered here
	}
	entries, err := d.ListFor(ctx, q.endpoint, limit)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for _, e := range entries {
		dl := DeadLetter{
			ID:         e.ID,
			EventID:    e.UUID,
			EventType:  e.EventType,
			UserID:     e.Metadata.Get(event.MetaUserID),
			Endpoint:   e.Endpoint,
			Reason:     e.Reason,
			Status:     e.Status,
			Attempts:   e.Attempts,
			PoisonedAt: e.Time.UTC(),
			Payload:    jsonPayload(e.Payload),
		}
		if !q.match(&dl) {
			continue
		}
		out = append(out, dl)
		if q.limit > 0 && len(out) == q.limit {
			break
		}
	}
	return out, nil
}

func (s *redisDeadLetters) replay(ctx context.Context, ids []string) (int, []string, error) {
	d, err := s.get()
	if err != nil {
		return 0, nil, err
	}
	n := 0
	var unknown []string
	var errs []error
	for _, id := range ids {
		if !streamID.MatchString(id) {
			unknown = append(unknown, id)
			continue
		}
		_, err := d.ReplayFor(ctx, "", id)
		switch {
		case err == nil:
			n++
		case errors.Is(err, transports.ErrPoisonEntryNotFound):
			unknown = append(unknown, id)
		default:
			errs = append(errs, err)
		}
	}
	return n, unknown, errors.Join(errs...)
}

func (s *redisDeadLetters) purge(ctx context.Context, endpoint string) (int, error) {
	d, err := s.get()
	if err != nil {
		return 0, err
	}
	n, err := d.PurgeFor(ctx, endpoint)
	return int(n), err
}

func (s *redisDeadLetters) evicted() uint64 { return 0 }

func (s *redisDeadLetters) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.dlq == nil {
		return nil
	}
	return s.dlq.Close()
}
