package transports

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
)

// Errors returned by DLQ.Replay and DLQ.ReplayAll.
var (
	// ErrPoisonEntryNotFound: no entry of the poison stream has that id
	// (never there, already replayed or purged).
	ErrPoisonEntryNotFound = errors.New("transports: no such poison entry")
	// ErrUndecodable: the poison entry is not a Watermill message (it was
	// copied there because no subscriber could decode it), so it cannot be
	// replayed; it is left in place.
	ErrUndecodable = errors.New("transports: poison entry is not a Watermill message")
	// ErrOtherEndpoint: DLQ.ReplayFor was given the id of an entry
	// poisoned for another endpoint; it is left in place.
	ErrOtherEndpoint = errors.New("transports: poison entry is another endpoint's")
)

// PoisonEntry is one entry of the poison stream, as DLQ.List returns it.
type PoisonEntry struct {
	// ID is the stream entry id ("1712345678901-0"): what Replay takes.
	ID string
	// Time is when the entry was added, from its id.
	Time time.Time
	// UUID is the message UUID: the event id, sent as webhook-id. Empty for
	// an undecodable entry without one.
	UUID string
	// EventType is the metadata "event_type".
	EventType string
	// Reason, Status and Attempts are the metadata "reason_poisoned",
	// "status_poisoned" (the receiver's last HTTP status, 0 if it never
	// answered) and "attempts_poisoned" the PoisonQueue middleware set.
	Reason   string
	Status   int
	Attempts int
	// Topic is the metadata "topic_poisoned": the topic the message failed
	// on.
	Topic string
	// Endpoint is the endpoint the entry was poisoned (or shed) for: the
	// metadata middleware.EndpointKey, DefaultEndpointName for an entry
	// without it (the default endpoint's, or one poisoned before there
	// were endpoints). A replay goes to that endpoint only.
	Endpoint string
	// Payload is the message payload: the webhook body.
	Payload []byte
	// Metadata is the message's whole metadata, poison keys included; nil
	// when Undecodable.
	Metadata message.Metadata
	// Undecodable is set for an entry that is not a Watermill message: Raw
	// holds its fields, and Replay refuses it (ErrUndecodable).
	Undecodable bool
	Raw         map[string]string
}

// DLQ reads and empties the poison stream, for `memhook dlq list | replay |
// purge`, whole or for one endpoint (the …For methods). It owns its Redis
// client. Safe for concurrent use; two DLQs replaying the same entry at
// once replay it once.
//
// A replay goes to the endpoint the entry was poisoned for (its
// PoisonEntry.Endpoint) and to no other: it is appended, due now, to that
// endpoint's retry topic — RetryTopic for DefaultEndpointName, RetryTopic
// + "." + endpoint for another (EndpointRetryTopic with the default
// RetryTopic) — never to the events topic, where every endpoint would get
// it again. The endpoint's retry subscription, on any router, delivers it
// as its first attempt; while no router subscribes to that topic (the
// endpoint removed everywhere) it waits in the stream.
type DLQ struct {
	cfg    RedisConfig
	client *redis.Client

	closeOnce sync.Once
	closeErr  error
}

// NewDLQ returns a DLQ on cfg's PoisonTopic, replaying to the retry
// topics of cfg's RetryTopic (see DLQ). Replaying is not refused at
// MaxLen (the publisher's MaxLen handling applies to its own publishes).
// MaxIdleTime is not used. It does not connect.
func NewDLQ(cfg RedisConfig) (*DLQ, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	client, err := cfg.newClient(0)
	if err != nil {
		return nil, err
	}
	return &DLQ{cfg: cfg, client: client}, nil
}

// dlqBatch is how many entries ReplayAll reads at once.
const dlqBatch = 100

// Len returns how many entries the poison stream holds.
func (d *DLQ) Len(ctx context.Context) (int64, error) {
	n, err := d.client.XLen(ctx, d.cfg.PoisonTopic).Result()
	if err != nil {
		return 0, fmt.Errorf("redis transport: dlq: %w", err)
	}
	return n, nil
}

// List returns up to limit entries of the poison stream, oldest first;
// limit <= 0 returns them all. An empty or missing stream gives none.
func (d *DLQ) List(ctx context.Context, limit int) ([]PoisonEntry, error) {
	return d.ListFor(ctx, "", limit)
}

// ListFor is List for the entries of endpoint alone (their
// PoisonEntry.Endpoint; DefaultEndpointName takes those without one); ""
// lists every endpoint's.
func (d *DLQ) ListFor(ctx context.Context, endpoint string, limit int) ([]PoisonEntry, error) {
	var out []PoisonEntry
	start := "-"
	for {
		xs, err := d.client.XRangeN(ctx, d.cfg.PoisonTopic, start, "+", dlqBatch).Result()
		if err != nil {
			return nil, fmt.Errorf("redis transport: dlq: listing %s: %w", d.cfg.PoisonTopic, err)
		}
		for _, x := range xs {
			e, _ := decodePoison(x)
			if endpoint != "" && e.Endpoint != endpoint {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				return out, nil
			}
		}
		if len(xs) < dlqBatch {
			return out, nil
		}
		start = "(" + xs[len(xs)-1].ID
	}
}

// decodePoison reads x; it also returns the decoded message, nil when the
// entry is undecodable.
func decodePoison(x redis.XMessage) (PoisonEntry, *message.Message) {
	e := PoisonEntry{ID: x.ID}
	if ms, _, ok := strings.Cut(x.ID, "-"); ok {
		if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
			e.Time = time.UnixMilli(n)
		}
	}
	msg, err := unmarshalEntry(x.Values)
	if err != nil {
		e.Undecodable = true
		e.Raw = make(map[string]string, len(x.Values))
		for k, v := range x.Values {
			e.Raw[k] = fmt.Sprint(v)
		}
		e.UUID = e.Raw[redisstream.UUIDHeaderKey]
		e.Payload = []byte(e.Raw["payload"])
		e.Reason, e.Topic = e.Raw[poisonReasonKey], e.Raw[poisonTopicKey]
		e.Endpoint = cmp.Or(e.Raw[middleware.EndpointKey], DefaultEndpointName)
		return e, nil
	}
	e.UUID, e.Payload, e.Metadata = msg.UUID, msg.Payload, msg.Metadata
	e.EventType = msg.Metadata.Get(event.MetaType)
	e.Reason = msg.Metadata.Get(poisonReasonKey)
	e.Topic = msg.Metadata.Get(poisonTopicKey)
	e.Status, _ = strconv.Atoi(msg.Metadata.Get(poisonStatusKey))
	e.Attempts, _ = strconv.Atoi(msg.Metadata.Get(poisonAttemptsKey))
	e.Endpoint = cmp.Or(msg.Metadata.Get(middleware.EndpointKey), DefaultEndpointName)
	return e, msg
}

// unmarshalEntry decodes an entry in watermill's default stream format,
// turning a panic into an error.
func unmarshalEntry(values map[string]any) (msg *message.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("panic decoding: %v", r)
		}
	}()
	msg, err = redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	if err == nil && msg == nil {
		err = errors.New("decoded to no message")
	}
	return msg, err
}

// replayScript deletes the poison entry and, only if it was still there,
// adds the message to the endpoint's retry stream: atomic, so an entry is
// replayed once even by two DLQs at once, and is never both replayed and
// kept. KEYS: poison stream, retry stream. ARGV: entry id, then field,
// value, …
var replayScript = redis.NewScript(`
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
local args = {'XADD', KEYS[2], '*'}
for i = 2, #ARGV do
  table.insert(args, ARGV[i])
end
return redis.call(unpack(args))
`)

// Replay puts each named poison entry back, due now, on the retry topic
// of its endpoint (see DLQ) — same message UUID, so the webhook-id stays
// the same; same payload and metadata minus the poison keys (reason,
// topic, status, attempts) and the attempt number, so it starts again
// from attempt 1 — and deletes it from the poison stream, atomically. It
// returns how many were replayed, and every failure joined:
// ErrPoisonEntryNotFound, ErrUndecodable (the entry stays) or a Redis
// error.
func (d *DLQ) Replay(ctx context.Context, entryIDs ...string) (int, error) {
	return d.ReplayFor(ctx, "", entryIDs...)
}

// ReplayFor is Replay for entries of endpoint ("": any): an entry of
// another endpoint is left in place, the error wrapping ErrOtherEndpoint.
func (d *DLQ) ReplayFor(ctx context.Context, endpoint string, entryIDs ...string) (int, error) {
	n := 0
	var errs []error
	for _, id := range entryIDs {
		xs, err := d.client.XRange(ctx, d.cfg.PoisonTopic, id, id).Result()
		if err != nil {
			errs = append(errs, fmt.Errorf("redis transport: dlq: reading %s: %w", id, err))
			continue
		}
		if len(xs) == 0 {
			errs = append(errs, fmt.Errorf("%w: %s", ErrPoisonEntryNotFound, id))
			continue
		}
		if e, _ := decodePoison(xs[0]); endpoint != "" && e.Endpoint != endpoint {
			errs = append(errs, fmt.Errorf("%w: %s is endpoint %s's, not %s's", ErrOtherEndpoint, id, e.Endpoint, endpoint))
			continue
		}
		if err := d.replay(ctx, xs[0]); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// ReplayAll replays, oldest first, every entry the poison stream held when
// it was called (entries poisoned again meanwhile are left for the next
// call), each to its own endpoint (see Replay). Undecodable entries are
// skipped and stay; the error then wraps ErrUndecodable with their count.
// It returns how many were replayed; on a Redis error it stops there.
func (d *DLQ) ReplayAll(ctx context.Context) (int, error) {
	return d.ReplayAllFor(ctx, "")
}

// ReplayAllFor is ReplayAll for the entries of endpoint alone ("": every
// endpoint's); the others stay.
func (d *DLQ) ReplayAllFor(ctx context.Context, endpoint string) (int, error) {
	last, err := d.client.XRevRangeN(ctx, d.cfg.PoisonTopic, "+", "-", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("redis transport: dlq: reading %s: %w", d.cfg.PoisonTopic, err)
	}
	if len(last) == 0 {
		return 0, nil
	}
	n, skipped, firstSkipped := 0, 0, ""
	start := "-"
	for {
		xs, err := d.client.XRangeN(ctx, d.cfg.PoisonTopic, start, last[0].ID, dlqBatch).Result()
		if err != nil {
			return n, fmt.Errorf("redis transport: dlq: reading %s: %w", d.cfg.PoisonTopic, err)
		}
		for _, x := range xs {
			if e, _ := decodePoison(x); endpoint != "" && e.Endpoint != endpoint {
				continue
			}
			err := d.replay(ctx, x)
			switch {
			case err == nil:
				n++
			case errors.Is(err, ErrUndecodable):
				if skipped == 0 {
					firstSkipped = x.ID
				}
				skipped++
			case errors.Is(err, ErrPoisonEntryNotFound): // replayed or purged meanwhile
			default:
				return n, err
			}
		}
		if len(xs) < dlqBatch {
			break
		}
		start = "(" + xs[len(xs)-1].ID
	}
	if skipped > 0 {
		return n, fmt.Errorf("%w: %d entries left in place, the first %s", ErrUndecodable, skipped, firstSkipped)
	}
	return n, nil
}

// replay moves the poison entry x to its endpoint's retry topic.
func (d *DLQ) replay(ctx context.Context, x redis.XMessage) error {
	e, msg := decodePoison(x)
	if msg == nil {
		return fmt.Errorf("%w: %s", ErrUndecodable, x.ID)
	}
	for _, k := range []string{poisonReasonKey, poisonTopicKey, poisonStatusKey, poisonAttemptsKey, middleware.AttemptKey} { // a replay starts from attempt 1
		delete(msg.Metadata, k)
	}
	target := d.cfg.endpointRetryTopic(e.Endpoint)
	values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(target, msg)
	if err != nil {
		return fmt.Errorf("redis transport: dlq: encoding %s: %w", x.ID, err)
	}
	args := make([]any, 0, 1+2*len(values))
	args = append(args, x.ID)
	for k, v := range values {
		args = append(args, k, v)
	}
	err = replayScript.Run(ctx, d.client, []string{d.cfg.PoisonTopic, target}, args...).Err()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: %s", ErrPoisonEntryNotFound, x.ID)
	}
	if err != nil {
		return fmt.Errorf("redis transport: dlq: replaying %s: %w", x.ID, err)
	}
	return nil
}

// Purge deletes every entry of the poison stream and returns how many. The
// stream itself and its consumer groups stay, so routers reading it go on.
func (d *DLQ) Purge(ctx context.Context) (int64, error) {
	n, err := d.client.XTrimMaxLen(ctx, d.cfg.PoisonTopic, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("redis transport: dlq: purging %s: %w", d.cfg.PoisonTopic, err)
	}
	return n, nil
}

// PurgeFor deletes the entries of endpoint alone (see ListFor) and
// returns how many; "" purges every endpoint's, as Purge.
func (d *DLQ) PurgeFor(ctx context.Context, endpoint string) (int64, error) {
	if endpoint == "" {
		return d.Purge(ctx)
	}
	var n int64
	start := "-"
	for {
		xs, err := d.client.XRangeN(ctx, d.cfg.PoisonTopic, start, "+", dlqBatch).Result()
		if err != nil {
			return n, fmt.Errorf("redis transport: dlq: purging %s: %w", d.cfg.PoisonTopic, err)
		}
		var ids []string
		for _, x := range xs {
			if e, _ := decodePoison(x); e.Endpoint == endpoint {
				ids = append(ids, x.ID)
			}
		}
		if len(ids) > 0 {
			del, err := d.client.XDel(ctx, d.cfg.PoisonTopic, ids...).Result()
			n += del
			if err != nil {
				return n, fmt.Errorf("redis transport: dlq: purging %s: %w", d.cfg.PoisonTopic, err)
			}
		}
		if len(xs) < dlqBatch {
			return n, nil
		}
		start = "(" + xs[len(xs)-1].ID
	}
}

// endpointRetryTopic is the retry topic of endpoint: RetryTopic for the
// default endpoint, RetryTopic + "." + endpoint for another; with the
// default RetryTopic, EndpointRetryTopic(endpoint).
func (c RedisConfig) endpointRetryTopic(endpoint string) string {
	if endpoint == DefaultEndpointName {
		return c.RetryTopic
	}
	return c.RetryTopic + "." + endpoint
}

// Close closes the DLQ's Redis client. It is idempotent and safe from
// several goroutines.
func (d *DLQ) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.client.Close() })
	return d.closeErr
}
