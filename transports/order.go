package transports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Orderer is implemented by the transports that can hand out a consumer
// group's messages one per key at a time, in the order they were
// accepted: memory (the order Publish took them) and Redis (the
// stream's order, whichever router reads them).
//
// Of an ordered group's messages on topic that carry a value for the
// metadata key (their key), one per key has the turn: it is handed out
// (and retried, through the retry topic) while the others of its key
// wait, parked. Next ends a turn, once its message is delivered or given
// up: the key's next message is published to the retry topic at once,
// where it has the turn in its own right. Messages without the key are
// not held.
type Orderer interface {
	// Order makes group's subscriptions of topic ordered by metaKey,
	// passing turns on through retryTopic. Call it before the group's
	// subscriber subscribes.
	Order(topic, group, metaKey, retryTopic string) error
	// Next ends the turn of the message uuid of key in group on topic. A
	// message that does not have the turn (a replayed dead letter, a
	// second call) changes nothing. On an error the turn stays: call it
	// again (the bus nacks the message, whose handling comes back).
	Next(ctx context.Context, topic, group, key, uuid string) error
}

var (
	_ Orderer = (*MemoryTransport)(nil)
	_ Orderer = (*RedisTransport)(nil)
)

// Order implements Orderer (Memory.Order).
func (t *MemoryTransport) Order(topic, group, metaKey, retryTopic string) error {
	t.m.Order(topic, group, metaKey, retryTopic)
	return nil
}

// Next implements Orderer (Memory.Next).
func (t *MemoryTransport) Next(_ context.Context, topic, group, key, uuid string) error {
	return t.m.Next(topic, group, key, uuid)
}

// parkedFullWait is how long an ordered subscription waits before it looks
// again at a parked count at its bound.
const parkedFullWait = time.Second

// parkedFull tells OnParkedFull (the transport logs it at WARN), at most
// once a minute, that reading waits for parked entries to go, and waits
// parkedFullWait.
func (sub *subscription) parkedFull() {
	s := sub.s
	if now := time.Now(); now.Sub(sub.lastFullLog) >= time.Minute {
		sub.lastFullLog = now
		if s.cfg.OnParkedFull != nil {
			s.cfg.OnParkedFull(s.cfg.ConsumerGroup, DefaultBacklogBound(s.cfg.MaxLen))
		}
	}
	sleepCtx(sub.intake, parkedFullWait)
}

// orderSpec is how a Redis subscription of an ordered group reads and
// passes turns on.
type orderSpec struct {
	metaKey     string
	eventsTopic string // where the turns are taken (the lists are its)
	retryTopic  string // where a turn passes on
	drainOnly   bool   // read as usual; only passing turns on works (DrainTurns, and the retry topic)
}

// PassTurnKey, set by a handler to the message's key on a message of an
// ordered group whose turn ends, makes a transport that passes turns on
// with acks (TurnOnAck) pass it on when it acknowledges the message.
const PassTurnKey = "memhook_pass_turn"

// TurnOnAck is implemented by Orderers that pass a turn on with the ack
// of its message (PassTurnKey) — Redis: in the script that acknowledges
// the entry, in the same batch as other acks — instead of on Next. An
// entry is then acknowledged with its turn passed on, or neither: a
// router killed between the two leaves its turn, and its redelivery
// (a duplicate) arrives before the key's next event.
type TurnOnAck interface {
	Orderer
	TurnOnAck()
}

// TurnOnAck implements TurnOnAck.
func (t *RedisTransport) TurnOnAck() {}

// turnPass is a turn passed on with an ack.
type turnPass struct{ key, uuid string }

// ackPassing acks ids on the subscription's stream and passes passes on,
// in one script (ackPass), in chunks that keep its arguments few.
func (sub *subscription) ackPassing(ctx context.Context, ids []string, passes []turnPass) error {
	const chunk = 500
	spec := sub.pass
	for len(ids) > 0 || len(passes) > 0 {
		ni, np := min(len(ids), chunk), min(len(passes), chunk)
		args := make([]any, 0, 4+ni+2*np)
		args = append(args, sub.s.cfg.ConsumerGroup, turnsPrefix(spec.eventsTopic, sub.s.cfg.ConsumerGroup),
			parkedPrefix(spec.eventsTopic, sub.s.cfg.ConsumerGroup), ni)
		for _, id := range ids[:ni] {
			args = append(args, id)
		}
		for _, p := range passes[:np] {
			args = append(args, p.key, p.uuid)
		}
		keys := []string{sub.topic, spec.retryTopic, parkedCountKey(spec.eventsTopic, sub.s.cfg.ConsumerGroup)}
		if err := ackPass.Run(ctx, sub.s.client, keys, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		ids, passes = ids[ni:], passes[np:]
	}
	return nil
}

// ackPass: KEYS[1] the stream acked, KEYS[2] the retry stream, KEYS[3] the
// parked count; ARGV[1] the group, ARGV[2] the prefix of its turn lists, ARGV[3] that of its
// parked hashes, ARGV[4] how many ids follow, then the ids, then pairs of
// key and UUID whose turn ends. It acks the ids and, for each pair whose
// UUID has its key's turn, passes the turn on: the UUID leaves the key's
// list, and the entry of the next one, if any, goes from its hash to the
// retry stream.
var ackPass = redis.NewScript(`
local n = tonumber(ARGV[4])
if n > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + n))
end
for i = 5 + n, #ARGV, 2 do
  local line = ARGV[2] .. ARGV[i]
  if redis.call('LINDEX', line, 0) == ARGV[i + 1] then
    redis.call('LPOP', line)
    local nxt = redis.call('LINDEX', line, 0)
    if nxt then
      local h = ARGV[3] .. nxt
      local f = redis.call('HGETALL', h)
      if #f > 0 then
        redis.call('XADD', KEYS[2], '*', unpack(f))
      end
      redis.call('DEL', h)
      redis.call('DECR', KEYS[3])
    end
  end
end
return n
`)

// On Redis a group's turns live in one list per key (named by
// turnsPrefix): the UUIDs of the key's messages, oldest first, the first
// one having the turn; a parked message's stream entry waits in a hash
// (named by parkedPrefix) until its turn comes. Reading and taking the turn is one
// script (readOrdered) that reads the group's new entries with
// XREADGROUP itself, so that every router takes turns in the stream's
// order; passing the turn on is another (ackPass).

// turnsPrefix prefixes the turn lists of group on topic.
func turnsPrefix(topic, group string) string { return topic + ":turns:" + group + ":" }

// parkedPrefix prefixes the hashes of the entries parked for group on
// topic.
func parkedPrefix(topic, group string) string { return topic + ":parked:" + group + ":" }

// parkedCountKey counts the entries parked for group on topic: reading
// stops at the bound (DefaultBacklogBound of MaxLen), so that parked
// entries, acknowledged in the stream and so out of MaxLen's reach, cannot
// grow Redis without end behind a user whose event keeps failing.
func parkedCountKey(topic, group string) string { return topic + ":parked-count:" + group }

// Order implements Orderer: the subscriptions of group on topic made from
// then on read with readOrdered.
func (t *RedisTransport) Order(topic, group, metaKey, retryTopic string) error {
	if metaKey == "" || retryTopic == "" {
		return errors.New("redis transport: Order needs a metadata key and a retry topic")
	}
	t.setOrder(group, orderSpec{metaKey: metaKey, eventsTopic: topic, retryTopic: retryTopic})
	if !t.consumes {
		return nil
	}
	// Marked, so that a router started later with ordering off looks for
	// the turns left (HasTurns) only where there may be some.
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.publishTimeout())
	defer cancel()
	if err := t.pub.client.Set(ctx, orderedKey(topic, group), "1", 0).Err(); err != nil {
		return fmt.Errorf("redis transport: marking group %s ordered: %w", group, err)
	}
	return nil
}

// orderedKey marks group as ordered on topic, once: turns may be left.
func orderedKey(topic, group string) string { return topic + ":ordered:" + group }

// DrainTurns makes Next pass on the turns group left on topic when it was
// ordered (HasTurns), while its subscriptions read as usual: the parked
// entries go out one by one as their predecessors are delivered.
func (t *RedisTransport) DrainTurns(topic, group, retryTopic string) {
	t.setOrder(group, orderSpec{eventsTopic: topic, retryTopic: retryTopic, drainOnly: true})
}

// setOrder keeps spec for group's subscriptions of its events topic and,
// passing turns on only, of its retry topic.
func (t *RedisTransport) setOrder(group string, spec orderSpec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.orders == nil {
		t.orders = map[string]map[string]orderSpec{}
	}
	if t.orders[group] == nil {
		t.orders[group] = map[string]orderSpec{}
	}
	t.orders[group][spec.eventsTopic] = spec
	retry := spec
	retry.drainOnly = true
	t.orders[group][spec.retryTopic] = retry
}

// hasOrder reports whether group's events topic is ordered here, or has
// its turns drained (DrainTurns): whether it may have parked entries.
func (t *RedisTransport) hasOrder(group string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.orders[group][t.cfg.EventsTopic]
	return ok
}

// Next implements Orderer: ackPass without an id to acknowledge checks the
// turn, passes it on and appends the next entry to the retry stream.
func (t *RedisTransport) Next(ctx context.Context, topic, group, key, uuid string) error {
	t.mu.Lock()
	spec, ok := t.orders[group][topic]
	t.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.publishTimeout())
	defer cancel()
	err := ackPass.Run(ctx, t.pub.client, []string{topic, spec.retryTopic, parkedCountKey(topic, group)},
		group, turnsPrefix(topic, group), parkedPrefix(topic, group), 0, key, uuid).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis transport: passing on the turn of %s: %w", uuid, err)
	}
	return nil
}

// readOrdered: KEYS[1] the stream; ARGV[1] the group, ARGV[2] the
// consumer, ARGV[3] the count, ARGV[4] the metadata key, ARGV[5] the
// prefix of the turn lists, ARGV[6] that of the parked hashes. It reads
// up to ARGV[3] new entries for the group; each whose key (the metadata
// key's value, from the msgpack metadata field watermill-redisstream
// writes) has no turn taken takes it and is returned, pending for the
// consumer as XREADGROUP left it; each whose key's turn is taken is
// parked (its fields in a hash, its UUID at the end of the key's list)
// and acknowledged, counted in KEYS[2]. Entries without a key are
// returned. It returns the entries and, when it read none, the group's
// last delivered id — or, without reading, {{}, 'full'} while ARGV[7]
// (above 0) entries are parked.
var readOrdered = redis.NewScript(`
local bound = tonumber(ARGV[7])
if bound > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= bound then
  return {{}, 'full'}
end
local res = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]), 'STREAMS', KEYS[1], '>')
local out = {}
if res and res[1] then
  for _, e in ipairs(res[1][2]) do
    local f = e[2]
    local uuid, md
    for i = 1, #f, 2 do
      if f[i] == '_watermill_message_uuid' then uuid = f[i+1] elseif f[i] == 'metadata' then md = f[i+1] end
    end
    local key
    if md and md ~= '' then
      local ok, t = pcall(cmsgpack.unpack, md)
      if ok and type(t) == 'table' then key = t[ARGV[4]] end
    end
    if type(key) == 'string' and key ~= '' and uuid then
      if redis.call('RPUSH', ARGV[5] .. key, uuid) == 1 then
        out[#out+1] = e
      else
        redis.call('HSET', ARGV[6] .. uuid, unpack(f))
        redis.call('XACK', KEYS[1], ARGV[1], e[1])
        redis.call('INCR', KEYS[2])
      end
    else
      out[#out+1] = e
    end
  end
end
if #out > 0 or (res and res[1] and #res[1][2] > 0) then return {out, ''} end
local last = ''
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, id
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i+1] elseif g[i] == 'last-delivered-id' then id = g[i+1] end
  end
  if name == ARGV[1] then last = id end
end
return {out, last}
`)

// readOrderedEntries reads new entries of an ordered subscription: those
// readOrdered returns; when it read none, it waits (up to blockTime) for
// an entry after the group's last delivered id, without taking it, and
// returns none: the caller reads again.
func (sub *subscription) readOrderedEntries(n int) ([]redis.XMessage, error) {
	s := sub.s
	res, err := readOrdered.Run(sub.intake, s.client, []string{sub.topic, parkedCountKey(sub.topic, s.cfg.ConsumerGroup)},
		s.cfg.ConsumerGroup, s.cfg.Consumer, n, sub.order.metaKey,
		turnsPrefix(sub.topic, s.cfg.ConsumerGroup), parkedPrefix(sub.topic, s.cfg.ConsumerGroup),
		max(DefaultBacklogBound(s.cfg.MaxLen), 0)).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("redis transport: reading in order: unexpected answer %v", res)
	}
	entries, _ := res[0].([]any)
	msgs := make([]redis.XMessage, 0, len(entries))
	for _, e := range entries {
		pair, ok := e.([]any)
		if !ok || len(pair) != 2 {
			continue
		}
		id, _ := pair[0].(string)
		fields, _ := pair[1].([]any)
		values := make(map[string]any, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			values[k] = fields[i+1]
		}
		msgs = append(msgs, redis.XMessage{ID: id, Values: values})
	}
	if len(entries) > 0 {
		return msgs, nil
	}
	last, _ := res[1].(string)
	if last == "full" {
		sub.parkedFull()
		return nil, nil
	}
	if last != "" {
		sub.lastSeen = last
	}
	if sub.lastSeen == "" {
		sub.lastSeen = "0-0"
	}
	got, err := s.client.XRead(sub.intake, &redis.XReadArgs{
		Streams: []string{sub.topic, sub.lastSeen}, Count: 1, Block: blockTime,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, st := range got {
		for _, m := range st.Messages {
			sub.lastSeen = m.ID
		}
	}
	return nil, nil
}

// HasTurns reports whether group keeps turns on topic in Redis: parked
// entries of an ordered group, left by a router whose endpoint has
// ordering off now. Such a group's deliveries must still pass turns on
// (Next) until the parked entries are out, or they would wait for ever.
func (t *RedisTransport) HasTurns(ctx context.Context, topic, group string) (bool, error) {
	n, err := t.pub.client.Exists(ctx, orderedKey(topic, group)).Result()
	if err != nil {
		return false, fmt.Errorf("redis transport: looking for turns of group %s: %w", group, err)
	}
	if n == 0 {
		return false, nil // never ordered: no SCAN of the whole keyspace
	}
	var cursor uint64
	for {
		keys, next, err := t.pub.client.Scan(ctx, cursor, turnsPrefix(topic, group)+"*", 1000).Result()
		if err != nil {
			return false, fmt.Errorf("redis transport: looking for turns of group %s: %w", group, err)
		}
		if len(keys) > 0 {
			return true, nil
		}
		if next == 0 {
			return false, nil // the mark stays: another router may order the group still
		}
		cursor = next
	}
}

// dissolveTurns: KEYS[1] a key's turn list, KEYS[2] the retry topic's
// delayed set; ARGV[1] the prefix of the parked hashes, ARGV[2] that of
// the delayed entries' hashes, ARGV[3] now in ms. Each parked entry
// becomes a retry due now (its hash renamed to a delayed entry's); the
// list goes. The first UUID, whose turn it was, is left out: its entry
// was in flight with the group (or waits as a retry already).
var dissolveTurns = redis.NewScript(`
local ids = redis.call('LRANGE', KEYS[1], 1, -1)
for _, id in ipairs(ids) do
  local h = ARGV[1] .. id
  if redis.call('EXISTS', h) == 1 then
    redis.call('RENAME', h, ARGV[2] .. 'o:' .. id)
    redis.call('ZADD', KEYS[2], ARGV[3], 'o:' .. id)
  end
end
redis.call('DEL', KEYS[1])
return #ids
`)

// dissolveTurns hands what group parked on topic (ordered) to its retry
// topic's delay set, due now, and removes its turns: called once the group
// is removed, so that a parked event is neither lost nor waits for a turn
// that will never pass. The retries wait for the endpoint as its others
// do (they resume if it comes back).
func (t *RedisTransport) dissolveTurns(ctx context.Context, topic, group string) error {
	t.mu.Lock()
	spec, ok := t.orders[group][topic]
	t.mu.Unlock()
	if !ok {
		return nil
	}
	var cursor uint64
	for {
		keys, next, err := t.pub.client.Scan(ctx, cursor, turnsPrefix(topic, group)+"*", 1000).Result()
		if err != nil {
			return fmt.Errorf("redis transport: removing the turns of group %s: %w", group, err)
		}
		for _, k := range keys {
			err := dissolveTurns.Run(ctx, t.pub.client, []string{k, delayedKey(spec.retryTopic)},
				parkedPrefix(topic, group), delayedEntryPrefix(spec.retryTopic), time.Now().UnixMilli()).Err()
			if err != nil {
				return fmt.Errorf("redis transport: removing the turns of group %s: %w", group, err)
			}
		}
		if next == 0 {
			return t.pub.client.Del(ctx, parkedCountKey(topic, group)).Err()
		}
		cursor = next
	}
}
