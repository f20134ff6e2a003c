package transports

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrStreamFull is returned by RedisPublisher.Publish when the stream holds
// MaxLen entries or more: the message is not appended (the caller keeps
// it). Entries leave the stream only once every consumer group has
// acknowledged them (TrimAcked), so a stream stays full while its routers
// are down or behind.
var ErrStreamFull = errors.New("redis transport: stream is full (MaxLen unacknowledged entries)")

// lengthCheckEvery is how often Publish asks Redis for a stream's length;
// in between it uses the last answer, so a stream may exceed MaxLen by what
// is published in that time.
const lengthCheckEvery = time.Second

// lengths caches stream lengths for the MaxLen check.
type lengths struct {
	mu sync.Mutex
	m  map[string]lengthAt
}

type lengthAt struct {
	n  int64
	at time.Time
}

// full reports whether topic holds max entries or more, asking Redis at
// most once per lengthCheckEvery.
func (l *lengths) full(ctx context.Context, client *redis.Client, topic string, max int64) (bool, error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]lengthAt{}
	}
	c, ok := l.m[topic]
	l.mu.Unlock()
	if !ok || time.Since(c.at) > lengthCheckEvery {
		n, err := client.XLen(ctx, topic).Result()
		if err != nil {
			return false, err
		}
		c = lengthAt{n: n, at: time.Now()}
		l.mu.Lock()
		l.m[topic] = c
		l.mu.Unlock()
	}
	return c.n >= max, nil
}

// TrimAcked removes from the stream topic every entry that all its
// consumer groups have acknowledged, and nothing else: for each group the
// bound is its oldest pending entry, or, with none pending, its last
// delivered entry; the stream is trimmed (XTRIM MINID) below the lowest
// bound of all groups, exactly (not "~": the call is rare, the bound
// precise). A stream without groups is not trimmed: nobody has
// acknowledged anything. It returns how many entries were removed. Router
// processes call it periodically.
func (p *RedisPublisher) TrimAcked(ctx context.Context, topic string) (int64, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0, ErrClosed
	}
	groups, err := p.client.XInfoGroups(ctx, topic).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "no such key") {
			return 0, nil
		}
		return 0, fmt.Errorf("redis transport: trimming %s: %w", topic, err)
	}
	if len(groups) == 0 {
		return 0, nil
	}
	minID := ""
	for _, g := range groups {
		bound := nextID(g.LastDeliveredID) // all delivered and none pending: all acknowledged
		if g.Pending > 0 {
			pend, err := p.client.XPending(ctx, topic, g.Name).Result()
			if err != nil {
				return 0, fmt.Errorf("redis transport: trimming %s: %w", topic, err)
			}
			bound = pend.Lower
		}
		if minID == "" || lessID(bound, minID) {
			minID = bound
		}
	}
	if minID == "" || minID == "0-1" { // nothing delivered yet
		return 0, nil
	}
	n, err := p.client.XTrimMinID(ctx, topic, minID).Result()
	if err != nil {
		return 0, fmt.Errorf("redis transport: trimming %s: %w", topic, err)
	}
	return n, nil
}

// nextID is the smallest stream entry id after id ("ms-seq").
func nextID(id string) string {
	var ms, seq uint64
	_, _ = fmt.Sscanf(id, "%d-%d", &ms, &seq)
	if seq == ^uint64(0) {
		return fmt.Sprintf("%d-0", ms+1)
	}
	return fmt.Sprintf("%d-%d", ms, seq+1)
}

// lessID orders stream entry ids ("ms-seq").
func lessID(a, b string) bool {
	var am, as, bm, bs uint64
	_, _ = fmt.Sscanf(a, "%d-%d", &am, &as)
	_, _ = fmt.Sscanf(b, "%d-%d", &bm, &bs)
	if am != bm {
		return am < bm
	}
	return as < bs
}
