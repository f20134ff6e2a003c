package transports

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/middleware"
)

// Every endpoint reads the one events stream through a consumer group of
// its own, and an entry leaves the stream only once every group has
// acknowledged it (TrimAcked). So a group left behind — an endpoint
// paused, or whose routers are all gone — would keep every entry since
// its position in the stream, until the publisher refuses appends
// (MaxLen) for every endpoint. A bound caps each group's backlog instead:
// past it, the group's oldest entries not yet delivered to it are moved
// to the poison stream, marked for its endpoint, where `memhook dlq`
// lists and replays them to that endpoint alone.

// ErrBacklogUnknown is returned by ShedBacklog when Redis does not report
// the consumer group's lag (Redis before 7.0, or entries deleted from the
// middle of the stream with XDEL): nothing is shed.
var ErrBacklogUnknown = errors.New("redis transport: Redis does not report the consumer group's lag (Redis 7.0 or later is needed to bound a backlog)")

// ShedReasonPrefix starts the reason (middleware.PoisonReasonKey) of an
// entry shed from a backlog past its bound; the bound follows: "backlog
// over 500000".
const ShedReasonPrefix = "backlog over "

// shedBatch caps the entries one run of the shed script moves, so that a
// run holds Redis for milliseconds only.
const shedBatch = 500

// shedConsumer is the consumer the shed script reads with; it exists only
// within one run of the script.
const shedConsumer = "memhook-shed"

// shedScript sheds one consumer group's backlog past its bound. KEYS: the
// stream, the poison stream. ARGV: group, bound, batch, consumer, then
// the endpoint, the reason, and the metadata keys of the endpoint, the
// reason, the topic, the status and the attempts. It reads the group's
// lag and pending count (XINFO GROUPS); past bound it reads, as a consumer
// of its own, the oldest entries not yet delivered to the group (at most
// batch, never more than the excess), appends to the poison stream each
// one's copy — its metadata (msgpack, as watermill-redisstream writes it)
// plus the poison keys; an entry that is not a Watermill message keeps
// its fields, the keys added as fields, as an undecodable entry is
// poisoned — acks them and deletes the consumer: atomic, so a live
// consumer never gets a shed entry, and a shed entry is always in the
// poison stream. It returns {shed, backlog left}; {-1, 0} when the stream
// or the group does not exist, {-2, 0} when Redis does not report the lag.
var shedScript = redis.NewScript(`
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err then
  return {-1, 0}
end
local found, lag, pending = false, nil, 0
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then
    found, lag, pending = true, f['lag'], f['pending']
    break
  end
end
if not found then
  return {-1, 0}
end
if type(lag) ~= 'number' then
  return {-2, 0}
end
local backlog = lag + pending
local n = math.min(backlog - tonumber(ARGV[2]), lag, tonumber(ARGV[3]))
if n <= 0 then
  return {0, backlog}
end
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[4], 'COUNT', n, 'STREAMS', KEYS[1], '>')
local ids = {}
if read then
  for _, e in ipairs(read[1][2]) do
    local fields = e[2]
    local out, md, hasUUID, decodable = {}, nil, false, true
    for i = 1, #fields, 2 do
      local k, v = fields[i], fields[i + 1]
      if k == '_watermill_message_uuid' then
        hasUUID = true
      end
      if k == 'metadata' then
        if v == '' then
          md = {}
        else
          local ok, t = pcall(cmsgpack.unpack, v)
          if ok and type(t) == 'table' then md = t else decodable = false end
        end
      else
        table.insert(out, k)
        table.insert(out, v)
      end
    end
    if hasUUID and decodable then
      md = md or {}
      md[ARGV[7]] = ARGV[5]
      md[ARGV[8]] = ARGV[6]
      md[ARGV[9]] = KEYS[1]
      md[ARGV[10]] = '0'
      md[ARGV[11]] = '0'
      table.insert(out, 'metadata')
      table.insert(out, cmsgpack.pack(md))
    else
      out = {}
      for i = 1, #fields do out[i] = fields[i] end
      table.insert(out, ARGV[7]); table.insert(out, ARGV[5])
      table.insert(out, ARGV[8]); table.insert(out, 'undecodable stream entry: ' .. ARGV[6])
      table.insert(out, ARGV[9]); table.insert(out, KEYS[1])
    end
    redis.call('XADD', KEYS[2], '*', unpack(out))
    table.insert(ids, e[1])
  end
end
if #ids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[4])
return {#ids, backlog - #ids}
`)

// ShedBacklog bounds the backlog of consumer group on the stream topic:
// the entries not yet delivered to the group (XINFO GROUPS lag, Redis 7)
// plus those delivered and not yet acknowledged. Past max, it moves the
// group's oldest entries not yet delivered to it — as many as the backlog
// exceeds max, at most all of them — to the poison stream, then
// acknowledges them for that group alone: the other groups still get
// them. Each copy is the entry's message with, in metadata,
// middleware.EndpointKey endpoint, middleware.PoisonReasonKey "backlog
// over <max>" (ShedReasonPrefix), middleware.PoisonTopicKey topic, status
// and attempts "0" (never attempted); DLQ lists it with the endpoint's
// entries and replays it to that endpoint only. An entry that is not a
// Watermill message is copied with its fields as they are, the keys added
// as fields, as the subscriber copies an undecodable entry. Each move is
// atomic (one script): a live consumer never gets a shed entry, and no
// entry is shed without its copy; several routers shedding at once shed
// the excess once.
//
// It returns how many entries it moved and the backlog left. A missing
// stream or group sheds nothing and reports no backlog. It returns
// ErrBacklogUnknown (nothing shed) where Redis does not report the lag.
// A consuming RedisTransport calls it every RedisConfig.TrimInterval for each group
// given to Bound; call it directly only where no router does.
func (p *RedisPublisher) ShedBacklog(ctx context.Context, topic, group, endpoint string, max int64) (shed, backlog int64, err error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0, 0, ErrClosed
	}
	if max < 0 {
		max = 0
	}
	reason := ShedReasonPrefix + strconv.FormatInt(max, 10)
	for {
		res, err := shedScript.Run(ctx, p.client, []string{topic, p.cfg.PoisonTopic},
			group, max, shedBatch, shedConsumer, endpoint, reason,
			middleware.EndpointKey, middleware.PoisonReasonKey, middleware.PoisonTopicKey,
			middleware.PoisonStatusKey, middleware.PoisonAttemptsKey).Int64Slice()
		if err != nil {
			return shed, backlog, fmt.Errorf("redis transport: shedding the backlog of %s on %s: %w", group, topic, err)
		}
		if len(res) != 2 {
			return shed, backlog, fmt.Errorf("redis transport: shedding the backlog of %s on %s: unexpected answer %v", group, topic, res)
		}
		switch res[0] {
		case -1:
			return shed, 0, nil
		case -2:
			return shed, 0, fmt.Errorf("%w: group %s on %s", ErrBacklogUnknown, group, topic)
		}
		shed, backlog = shed+res[0], res[1]
		if res[0] < shedBatch {
			return shed, backlog, nil
		}
	}
}

// bounds are the backlog bounds registered with Bound, by group, and what
// the last look saw.
type bounds struct {
	mu sync.Mutex
	m  map[string]*bound
}

type bound struct {
	endpoint string
	max      int64
	backlog  int64 // at the last look; -1 before it
	warned   bool  // ErrBacklogUnknown logged
}

// DefaultBacklogBound returns the bound Bound applies when given 0, for a
// stream bounded at maxLen (RedisConfig.MaxLen): maxLen / 2, and none
// (NoMaxLen) for NoMaxLen. Half: after a trim the events stream holds
// about the largest backlog of its groups, so one group shed down to
// maxLen / 2 leaves the other half for the appends of the TrimInterval
// before the next shed — the stream stays below maxLen, and Publish never
// refuses because of one group left behind.
func DefaultBacklogBound(maxLen int64) int64 {
	if maxLen == NoMaxLen {
		return NoMaxLen
	}
	if maxLen == 0 {
		maxLen = DefaultMaxLen
	}
	return max(maxLen/2, 1)
}

// Bound caps the backlog of consumer group on the events stream at max
// entries (0: DefaultBacklogBound(MaxLen); NoMaxLen: no cap, as Unbound):
// every TrimInterval, before it trims, this transport moves the group's
// oldest entries not yet delivered to it, past max, to the poison stream
// for endpoint (see RedisPublisher.ShedBacklog), then calls OnShed with
// endpoint and how many (unset: logs them at WARN). Only while it
// consumes (from its first Subscriber to Close); every consuming router
// with the bound sheds, together once. The bus calls it for each
// endpoint's group; calling it again replaces the bound.
func (t *RedisTransport) Bound(group, endpoint string, max int64) {
	if max == 0 {
		max = DefaultBacklogBound(t.cfg.MaxLen)
	}
	if max < 0 {
		t.Unbound(group)
		return
	}
	t.bounds.mu.Lock()
	defer t.bounds.mu.Unlock()
	if t.bounds.m == nil {
		t.bounds.m = map[string]*bound{}
	}
	t.bounds.m[group] = &bound{endpoint: endpoint, max: max, backlog: -1}
}

// Unbound removes the bound of group (Bound): its backlog is never shed.
// RemoveGroup calls it.
func (t *RedisTransport) Unbound(group string) {
	t.bounds.mu.Lock()
	defer t.bounds.mu.Unlock()
	delete(t.bounds.m, group)
}

// Backlog returns the backlog of a bound group (see Bound) on the events
// stream when this transport last looked, every TrimInterval: the entries
// not yet delivered to it plus those delivered and not acknowledged, plus
// for an ordered group those parked behind their user's turn (0 for a
// group not created yet). ok is false for a group not bound, before
// the first look, or where Redis does not report it (ErrBacklogUnknown).
func (t *RedisTransport) Backlog(group string) (n int64, ok bool) {
	t.bounds.mu.Lock()
	defer t.bounds.mu.Unlock()
	b := t.bounds.m[group]
	if b == nil || b.backlog < 0 {
		return 0, false
	}
	return b.backlog, true
}

// shedAll sheds the backlog of every bound group past its bound.
func (t *RedisTransport) shedAll() {
	t.bounds.mu.Lock()
	type job struct {
		group, endpoint string
		max             int64
	}
	jobs := make([]job, 0, len(t.bounds.m))
	for g, b := range t.bounds.m {
		jobs = append(jobs, job{g, b.endpoint, b.max})
	}
	t.bounds.mu.Unlock()
	for _, j := range jobs {
		shed, backlog, err := t.pub.ShedBacklog(t.ctx, t.cfg.EventsTopic, j.group, j.endpoint, j.max)
		if shed > 0 {
			if t.cfg.OnShed != nil {
				t.cfg.OnShed(j.endpoint, int(shed))
			} else {
				t.log.Warn("memhook: endpoint backlog over its bound: its oldest events moved to the dead-letter queue",
					"endpoint", j.endpoint, "group", j.group, "bound", j.max, "shed", shed, "stream", t.cfg.EventsTopic)
			}
		}
		if err == nil && t.hasOrder(j.group) {
			// An ordered group's parked entries are acknowledged in the
			// stream (so not in its lag or pending), and still to deliver.
			parked, perr := t.pub.client.Get(t.ctx, parkedCountKey(t.cfg.EventsTopic, j.group)).Int64()
			if perr == nil && parked > 0 {
				backlog += parked
			}
		}
		unknown := errors.Is(err, ErrBacklogUnknown)
		if err != nil && !unknown && t.ctx.Err() == nil {
			t.log.Warn("memhook: shedding an endpoint backlog failed", "endpoint", j.endpoint, "group", j.group, "error", err.Error())
		}
		t.bounds.mu.Lock()
		if b := t.bounds.m[j.group]; b != nil && b.endpoint == j.endpoint {
			switch {
			case unknown:
				b.backlog = -1
				if !b.warned {
					b.warned = true
					t.log.Warn("memhook: cannot bound the endpoint's backlog: Redis does not report consumer group lag (Redis 7.0 or later needed)",
						"endpoint", j.endpoint, "group", j.group)
				}
			case err == nil:
				b.backlog = backlog
			}
		}
		t.bounds.mu.Unlock()
	}
}
