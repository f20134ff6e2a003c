package transports

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// Crash recovery by liveness. A handling lasts one attempt, so a consumer
// that stops announcing itself is gone, and its entries need not wait for
// MaxIdleTime: every consuming process writes, once a second, its consumer
// name to the sorted set EventsTopic + ":alive", scored by Redis's clock
// (TIME in the script, so the hosts' clocks do not matter). One set for
// every group and stream of the deployment: a process has one consumer
// name in all its groups. The claimer of each subscription looks, every
// aliveCheckInterval, at its group's consumers: one whose score is older
// than aliveTimeout is gone; its pending entries are claimed (XCLAIM with
// min-idle aliveMinIdle, so that two live claimers never take the same
// entry twice) and, once it holds nothing, it is removed from the group
// (XGROUP DELCONSUMER, in the same script as the check, so that no entry
// read in between is dropped). A consumer not in the set at all (a
// Watermill redisstream consumer, a memhook without heartbeats) is never
// judged: its entries wait for MaxIdleTime, as before.
const (
	// aliveInterval is how often a consuming process announces itself.
	aliveInterval = time.Second
	// aliveTimeout is how long without an announcement makes a consumer
	// gone: a few missed heartbeats, far below one attempt's timeout.
	aliveTimeout = 5 * time.Second
	// aliveCheckInterval is how often a subscription looks for consumers
	// of its group that are gone; aliveHurry is the wait instead when the
	// last look found more entries of a gone consumer than it had free
	// claim slots for.
	aliveCheckInterval = time.Second
	aliveHurry         = 100 * time.Millisecond
	// aliveMinIdle is the min-idle time of the claims of gone consumers'
	// entries: an entry another live claimer has just claimed is left to
	// it.
	aliveMinIdle = time.Second
	// aliveForget is how long a consumer stays in the set after its last
	// announcement; the set holds only the processes of the last hour.
	aliveForget = time.Hour
	// aliveLogEvery is how many failed heartbeats in a row are logged
	// once.
	aliveLogEvery = 60
)

// aliveKey is the sorted set of the consumers' last announcements.
func aliveKey(eventsTopic string) string { return eventsTopic + ":alive" }

// announce: KEYS[1] the alive set; ARGV[1] the consumer, ARGV[2] how many
// ms before now to score it (0: alive now; more than the timeout: gone),
// ARGV[3] aliveForget in ms. It returns Redis's time in ms.
var announce = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now - tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return now
`)

// takeOver: KEYS[1] the stream, KEYS[2] the alive set; ARGV[1] the group,
// ARGV[2] this consumer, ARGV[3] aliveTimeout in ms, ARGV[4] the min-idle
// in ms, ARGV[5] how many entries to claim at most, ARGV[6] "1" to judge
// the other consumers, ARGV[7] the idle time in ms above which this
// consumer's own entries are claimed too (those delivered before the
// subscription joined: to an earlier process with the same name), -1 for
// none. It returns the entries claimed from others, those claimed from
// itself, the consumers removed, the other consumers and counts claimed
// from (flat), and how many entries gone consumers still hold.
var takeOver = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local group, self = ARGV[1], ARGV[2]
local timeout, minIdle, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local judge, ownIdle = ARGV[6] == '1', tonumber(ARGV[7])
local claimed, own, removed, from, left = {}, {}, {}, {}, 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
  local name, pending
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = tonumber(c[i + 1]) end
  end
  local gone, into, idle = false, claimed, minIdle
  if name == self then
    gone, into, idle = ownIdle >= 0, own, math.max(minIdle, ownIdle)
  elseif judge then
    local seen = redis.call('ZSCORE', KEYS[2], name)
    gone = seen ~= false and now - tonumber(seen) > timeout
  end
  if gone and pending == 0 and name ~= self then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, name)
    table.insert(removed, name)
  elseif gone then
    local got = 0
    if count > 0 then
      local ids = {}
      for _, p in ipairs(redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, '-', '+', count, name)) do
        table.insert(ids, p[1])
      end
      if #ids > 0 then
        for _, e in ipairs(redis.call('XCLAIM', KEYS[1], group, self, idle, unpack(ids))) do
          if e then
            table.insert(into, e)
            got = got + 1
          end
        end
      end
    end
    count = count - got
    if name ~= self then
      if got > 0 then
        table.insert(from, name)
        table.insert(from, got)
      end
      left = left + pending - got
    end
  end
end
return {claimed, own, removed, from, left}
`)

// heartbeat announces a consumer alive every aliveInterval from start to
// stop, which announces it gone. A RedisTransport has one for all its
// subscribers (they share the consumer name); a RedisSubscriber made
// alone has its own.
type heartbeat struct {
	client   *redis.Client
	key      string
	consumer string
	logger   watermill.LoggerAdapter

	startOnce sync.Once
	stopOnce  sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when the loop ends

	mu    sync.Mutex
	since time.Time // start of the current run of heartbeats that reached Redis; zero after a failure
}

func newHeartbeat(client *redis.Client, cfg RedisConfig, logger watermill.LoggerAdapter) *heartbeat {
	ctx, cancel := context.WithCancel(context.Background())
	return &heartbeat{client: client, key: aliveKey(cfg.EventsTopic), consumer: cfg.Consumer, logger: logger,
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// start starts the heartbeat, at once, if it has not started.
func (h *heartbeat) start() {
	h.startOnce.Do(func() { go h.loop() })
}

func (h *heartbeat) loop() {
	defer close(h.done)
	tick := time.NewTicker(aliveInterval)
	defer tick.Stop()
	failures := 0
	for {
		ctx, cancel := context.WithTimeout(h.ctx, aliveInterval)
		err := announce.Run(ctx, h.client, []string{h.key}, h.consumer, 0, aliveForget.Milliseconds()).Err()
		cancel()
		h.mu.Lock()
		switch {
		case err == nil && h.since.IsZero():
			h.since = time.Now()
		case err != nil && h.ctx.Err() == nil: // not cut short by stop
			h.since = time.Time{}
		}
		h.mu.Unlock()
		if err != nil && h.ctx.Err() == nil {
			if failures%aliveLogEvery == 0 {
				h.logger.Error("redis transport: heartbeat failed: the group's other consumers may take over this one's entries", err,
					watermill.LogFields{"consumer": h.consumer, "failures": failures + 1})
			}
			failures++
		} else {
			failures = 0
		}
		select {
		case <-tick.C:
		case <-h.ctx.Done():
			return
		}
	}
}

// steady reports whether the heartbeats have reached Redis for aliveTimeout
// without a failure: only then does this process judge others. After
// Redis was unreachable (or restarted from a snapshot) every consumer's
// announcement is old; each gets aliveTimeout to renew it.
func (h *heartbeat) steady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.since.IsZero() && time.Since(h.since) >= aliveTimeout
}

// stop ends the heartbeat and, if it started and its last heartbeat
// reached Redis, announces the consumer gone, so that the group's other
// consumers take over what it left pending and remove it from the group at
// once. Idempotent.
func (h *heartbeat) stop() {
	h.stopOnce.Do(func() {
		started := false
		h.startOnce.Do(func() { close(h.done) }) // never started: nothing to announce
		select {
		case <-h.done:
		default:
			started = true
		}
		h.cancel()
		<-h.done
		h.mu.Lock()
		reached := !h.since.IsZero()
		h.mu.Unlock()
		if !started || !reached { // nothing to say, or Redis not answering: do not wait for it
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), ackFlushTimeout)
		defer cancel()
		gone := (aliveTimeout + time.Millisecond).Milliseconds()
		if err := announce.Run(ctx, h.client, []string{h.key}, h.consumer, gone, aliveForget.Milliseconds()).Err(); err != nil {
			h.logger.Debug("redis transport: announcing the consumer gone failed; the others notice within seconds",
				watermill.LogFields{"consumer": h.consumer, "err": err})
		}
	})
}

// takeOverOnce runs takeOver for the subscription with up to n claim
// slots: it claims entries of consumers that are gone (when judge) and,
// unless ownIdle is negative, this consumer's own entries idle for longer
// than ownIdle (left by an earlier process of its name) that this process
// does not have out, and removes gone consumers holding nothing. It
// returns the entries claimed from others and from itself, and whether
// gone consumers hold more.
func (sub *subscription) takeOverOnce(n int, judge bool, ownIdle time.Duration) (others, own []redis.XMessage, more bool, err error) {
	s := sub.s
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	ownMs := int64(-1)
	if ownIdle >= 0 {
		ownMs = ownIdle.Milliseconds()
	}
	ctx, cancel := context.WithTimeout(sub.intake, s.cfg.publishTimeout())
	defer cancel()
	res, err := takeOver.Run(ctx, s.client, []string{sub.topic, aliveKey(s.cfg.EventsTopic)},
		s.cfg.ConsumerGroup, s.cfg.Consumer, aliveTimeout.Milliseconds(), aliveMinIdle.Milliseconds(),
		n, flag(judge), ownMs).Slice()
	if err != nil {
		return nil, nil, false, err
	}
	if len(res) != 5 {
		return nil, nil, false, fmt.Errorf("redis transport: taking over entries: unexpected answer %v", res)
	}
	others, own = scriptEntries(res[0]), scriptEntries(res[1])
	// Another subscription of this process to the topic may have had an
	// entry out since before this one joined.
	own = slices.DeleteFunc(own, func(m redis.XMessage) bool { return s.isOut(sub.key(m.ID)) })
	fields := watermill.LogFields{"topic": sub.topic, "group": s.cfg.ConsumerGroup}
	removed, _ := res[2].([]any)
	for _, name := range removed {
		s.logger.Info("redis transport: removed a gone consumer holding nothing from the group",
			fields.Add(watermill.LogFields{"consumer": name}))
	}
	from, _ := res[3].([]any)
	if len(own) > 0 {
		from = append(from, s.cfg.Consumer, int64(len(own)))
	}
	for i := 0; i+1 < len(from); i += 2 {
		name, _ := from[i].(string)
		count, _ := from[i+1].(int64)
		if s.cfg.OnTakeOver != nil {
			s.cfg.OnTakeOver(sub.topic, name, int(count))
			continue
		}
		what := "redis transport: took over the entries of a consumer whose heartbeat is gone"
		if name == s.cfg.Consumer {
			what = "redis transport: took over the entries left by an earlier process of this consumer"
		}
		s.logger.Info(what, fields.Add(watermill.LogFields{"consumer": name, "entries": count}))
	}
	left, _ := res[4].(int64)
	return others, own, left > 0, nil
}

// scriptEntries turns XCLAIM's answer, as a script returns it, into
// stream entries.
func scriptEntries(v any) []redis.XMessage {
	list, _ := v.([]any)
	out := make([]redis.XMessage, 0, len(list))
	for _, e := range list {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			continue
		}
		id, _ := pair[0].(string)
		kv, _ := pair[1].([]any)
		values := make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			if k, ok := kv[i].(string); ok {
				values[k] = kv[i+1]
			}
		}
		out = append(out, redis.XMessage{ID: id, Values: values})
	}
	return out
}

// scriptGroupLost reports a takeOver that failed because the stream or its
// group is gone (a Redis restarted without persistence): Redis 7 answers
// with the command's error, 6.2 wraps it in the script's.
func scriptGroupLost(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "NOGROUP") || strings.Contains(msg, "no such key")
}
