package transports

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/middleware"
)

// Redis keeps the retries every router shares in a sorted set, scored by
// due time, beside one hash per waiting retry holding the stream entry's
// fields. A script run by every consuming router moves the due ones to
// the retry stream atomically (XADD, then DEL and ZREM, in one script), so
// a due retry is taken by whichever router is alive, and a crash never
// loses one.
const (
	// delayMoveInterval is how often a consuming router moves due
	// retries to their stream.
	delayMoveInterval = 200 * time.Millisecond
	// delayMoveBatch caps the retries one run of the script moves.
	delayMoveBatch = 256
)

// moveDue: KEYS[1] the sorted set, KEYS[2] the retry stream; ARGV[1] now
// in ms, ARGV[2] the batch, ARGV[3] the prefix of the entry hashes. It
// returns how many it moved, how many still wait and the score (due time
// in ms) of the soonest, "" when none.
var moveDue = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#ids, redis.call('ZCARD', KEYS[1]), first[2] or ''}
`)

// delayedKey is the sorted set of retries waiting for topic.
func delayedKey(topic string) string { return topic + ":delayed" }

// delayedEntryPrefix prefixes the hash of each waiting retry of topic.
func delayedEntryPrefix(topic string) string { return topic + ":delayed:" }

// redisDelays caches what the mover last saw, by topic.
type redisDelays struct {
	mu sync.Mutex
	m  map[string]waiting
}

// waiting is what waits for one topic.
type waiting struct {
	n      int
	oldest time.Time
}

// PublishAt keeps msg in Redis, in the sorted set of topic, and the mover
// of every consuming router that subscribes to topic (through its
// RedisTransport) appends it to the stream topic at due: any topic, such
// as RetryTopic or an endpoint's retry topic (EndpointRetryTopic). While
// no router subscribes to topic its retries wait (ListDelayed shows them).
// It returns once Redis holds it (one script: the entry's hash and its score).
// It refuses with ErrStreamFull while MaxLen retries wait for topic.
func (t *RedisTransport) PublishAt(topic string, due time.Time, msg *message.Message) error {
	values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(topic, msg)
	if err != nil {
		return err
	}
	id := msg.UUID + ":" + msg.Metadata.Get(middleware.AttemptKey)
	if msg.Metadata.Get(middleware.HeldKey) != "" {
		id += heldSuffix // for Expedite's ZSCAN MATCH
	}
	ctx, cancel := context.WithTimeout(msg.Context(), t.cfg.publishTimeout())
	defer cancel()
	args := make([]any, 0, 3+2*len(values))
	args = append(args, streamMaxLen(t.cfg.MaxLen), due.UnixMilli(), id)
	for k, v := range values {
		args = append(args, k, v)
	}
	kept, err := keepDelayed.Run(ctx, t.pub.client, []string{delayedKey(topic), delayedEntryPrefix(topic) + id}, args...).Int()
	if err != nil {
		return fmt.Errorf("redis transport: delaying %s: %w", msg.UUID, err)
	}
	if kept == 0 {
		return fmt.Errorf("redis transport: delaying %s: %w", msg.UUID, ErrStreamFull)
	}
	return nil
}

// heldSuffix ends the member of a message Health held
// (middleware.HeldKey): uuid:attempt:held.
const heldSuffix = ":held"

// expediteBatch is how many members one ZSCAN of Expedite asks for.
const expediteBatch = 1000

// Expedite implements Expediter: the members of topic's sorted set that
// Health held (heldSuffix) and are not yet due are scored now, and the
// mover of any router moves them within delayMoveInterval. It scans the
// set (ZSCAN, not one long script) and lowers a score only if the member
// is still there (ZADD XX LT): one the mover took meanwhile is not added
// back, and every router may call it at once.
func (t *RedisTransport) Expedite(ctx context.Context, topic string) (int, error) {
	client := t.pub.client
	key := delayedKey(topic)
	now := float64(time.Now().UnixMilli())
	n := 0
	var cursor uint64
	for {
		kv, next, err := client.ZScan(ctx, key, cursor, "*"+heldSuffix, expediteBatch).Result()
		if err != nil {
			return n, fmt.Errorf("redis transport: bringing held events forward: %w", err)
		}
		var due []redis.Z
		for i := 0; i+1 < len(kv); i += 2 {
			if score, err := strconv.ParseFloat(kv[i+1], 64); err == nil && score > now {
				due = append(due, redis.Z{Score: now, Member: kv[i]})
			}
		}
		if len(due) > 0 {
			changed, err := client.ZAddArgs(ctx, key, redis.ZAddArgs{XX: true, LT: true, Ch: true, Members: due}).Result()
			if err != nil {
				return n, fmt.Errorf("redis transport: bringing held events forward: %w", err)
			}
			n += int(changed)
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// keepDelayed: KEYS[1] the sorted set, KEYS[2] the entry's hash; ARGV[1]
// the most retries that may wait (0: no bound), ARGV[2] the due time in
// ms, ARGV[3] the member, then the entry's fields and values. It keeps the
// entry and returns 1, or returns 0 when the set is full (an entry
// already kept is updated even then). One script is one round trip, and
// as atomic as MULTI: the hash and the score are kept together or not.
var keepDelayed = redis.NewScript(`
local max = tonumber(ARGV[1])
if max > 0 and redis.call('ZCARD', KEYS[1]) >= max and not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
`)

// Waiting returns how many retries waited and the earliest due time, over
// every topic the mover moves (those subscribed here), when it last looked
// (every delayMoveInterval, 200 ms).
func (t *RedisTransport) Waiting() (int, time.Time) {
	t.delays.mu.Lock()
	defer t.delays.mu.Unlock()
	total, oldest := 0, time.Time{}
	for _, w := range t.delays.m {
		total += w.n
		if !w.oldest.IsZero() && (oldest.IsZero() || w.oldest.Before(oldest)) {
			oldest = w.oldest
		}
	}
	return total, oldest
}

// WaitingOf is Waiting for the retries of topic alone (an endpoint's retry
// topic, say): 0 and the zero time when none wait, or when no subscription
// of this transport reads topic (the mover does not look at it).
func (t *RedisTransport) WaitingOf(topic string) (int, time.Time) {
	t.delays.mu.Lock()
	defer t.delays.mu.Unlock()
	w := t.delays.m[topic]
	return w.n, w.oldest
}

// moveLoop moves due retries to their streams until the transport closes:
// those of every topic a subscription of this transport reads (the poison
// topic aside), looked up afresh each time, so that a topic subscribed
// later (an endpoint added at runtime) is moved from then on, and one
// whose last subscription ended is no longer.
func (t *RedisTransport) moveLoop() {
	defer close(t.moved)
	tick := time.NewTicker(delayMoveInterval)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		err := t.moveOnce(t.topics())
		switch {
		case err == nil:
			failures = 0
		case t.ctx.Err() != nil:
			return
		default:
			failures++
			if failures == 1 || failures%50 == 0 { // once, then every 10s or so
				t.log.Warn("memhook: moving due retries failed, retrying", "error", err.Error(), "failures", failures)
			}
		}
	}
}

// moveOnce moves every retry of topics due now and notes what still
// waits. One pipeline runs the script for every topic: a round trip per
// look however many endpoints there are.
func (t *RedisTransport) moveOnce(topics []string) error {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.publishTimeout())
	defer cancel()
	seen := make(map[string]waiting, len(topics))
	for todo := topics; len(todo) > 0; {
		results, err := t.runMoves(ctx, todo)
		if err != nil {
			return err
		}
		var again []string
		for i, topic := range todo {
			r := results[i]
			seen[topic] = waiting{n: r.waiting, oldest: r.oldest}
			if r.moved == delayMoveBatch {
				again = append(again, topic)
			}
		}
		todo = again
	}
	t.delays.mu.Lock()
	t.delays.m = seen
	t.delays.mu.Unlock()
	return nil
}

// moveResult is one topic's answer of moveDue.
type moveResult struct {
	moved, waiting int
	oldest         time.Time
}

// runMoves runs moveDue for each topic in one pipeline, loading the script
// when Redis does not know it (a restart, SCRIPT FLUSH).
func (t *RedisTransport) runMoves(ctx context.Context, topics []string) ([]moveResult, error) {
	client := t.pub.client
	for try := 0; ; try++ {
		now := time.Now().UnixMilli()
		cmds := make([]*redis.Cmd, len(topics))
		pipe := client.Pipeline()
		for i, topic := range topics {
			cmds[i] = moveDue.EvalSha(ctx, pipe, []string{delayedKey(topic), topic}, now, delayMoveBatch, delayedEntryPrefix(topic))
		}
		_, err := pipe.Exec(ctx)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && try == 0 {
			if err := moveDue.Load(ctx, client).Err(); err != nil {
				return nil, fmt.Errorf("redis transport: loading the retry mover: %w", err)
			}
			continue
		}
		out := make([]moveResult, len(topics))
		for i, cmd := range cmds {
			vals, err := cmd.Slice()
			if err != nil {
				return nil, fmt.Errorf("redis transport: moving due retries to %s: %w", topics[i], err)
			}
			if len(vals) != 3 {
				return nil, fmt.Errorf("redis transport: moving due retries to %s: unexpected answer %v", topics[i], vals)
			}
			moved, _ := vals[0].(int64)
			n, _ := vals[1].(int64)
			out[i] = moveResult{moved: int(moved), waiting: int(n)}
			if s, _ := vals[2].(string); s != "" {
				if ms, err := strconv.ParseFloat(s, 64); err == nil {
					out[i].oldest = time.UnixMilli(int64(ms))
				}
			}
		}
		return out, nil
	}
}

// DelayedEntry is one retry waiting in Redis.
type DelayedEntry struct {
	ID      string    `json:"id"`
	Attempt int       `json:"attempt"`
	Type    string    `json:"event_type"`
	UserID  string    `json:"user_id"`
	Due     time.Time `json:"due"`
}

// ListDelayed returns up to limit retries waiting for topic in the Redis
// cfg names, soonest first (limit 0: all), for `memhook retries list`.
func ListDelayed(ctx context.Context, cfg RedisConfig, topic string, limit int) ([]DelayedEntry, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	client, err := cfg.newClient(1)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	stop := int64(-1)
	if limit > 0 {
		stop = int64(limit - 1)
	}
	zs, err := client.ZRangeWithScores(ctx, delayedKey(topic), 0, stop).Result()
	if err != nil {
		return nil, fmt.Errorf("redis transport: listing retries: %w", err)
	}
	out := make([]DelayedEntry, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		values, err := client.HGetAll(ctx, delayedEntryPrefix(topic)+id).Result()
		if err != nil {
			return nil, fmt.Errorf("redis transport: listing retries: %w", err)
		}
		if len(values) == 0 {
			continue // moved to the stream since ZRANGE: no longer waiting
		}
		fields := make(map[string]any, len(values))
		for k, v := range values {
			fields[k] = v
		}
		e := DelayedEntry{Due: time.UnixMilli(int64(z.Score)).UTC()}
		if msg, err := (redisstream.DefaultMarshallerUnmarshaller{}).Unmarshal(fields); err == nil {
			e.ID, e.Type, e.UserID = msg.UUID, msg.Metadata.Get("event_type"), msg.Metadata.Get("user_id")
			e.Attempt, _ = strconv.Atoi(msg.Metadata.Get(middleware.AttemptKey))
		} else {
			e.ID = id
		}
		out = append(out, e)
	}
	return out, nil
}
