package bus

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// ErrBacklogFull is the reason, in the poison queue, of an event moved
// out of an endpoint's backlog that passed its bound (the endpoint was
// dead, slow or paused for long): its other endpoints got it.
var ErrBacklogFull = errors.New("endpoint's backlog over its bound")

// ErrEndpointRemoved is the reason, in the poison queue, of an event that
// still waited for an endpoint when SetEndpoints removed it.
var ErrEndpointRemoved = errors.New("endpoint removed while the event waited for it")

// onShed moves an event a full endpoint gave up to make room (the memory
// transport's MemoryConfig.OnShed, Redis's bound) to the poison queue,
// tagged with the endpoint, counted, and logged at WARN at most once a
// second: never silently dropped.
func (b *Bus) onShed(topic, group string, msg *message.Message) {
	r := b.routeOfGroup(group)
	if r == nil {
		b.log.Error("memhook: event shed by an unknown consumer group", "group", group, "id", msg.UUID)
		return
	}
	r.shed.Add(1)
	r.toPoison(msg, topic, fmt.Errorf("%w (%d events, MEMHOOK_QUEUE_CAPACITY)", ErrBacklogFull, b.cfg.QueueCapacity))
	now := time.Now().UnixNano()
	if last := r.lastShedLog.Load(); now-last >= int64(time.Second) && r.lastShedLog.CompareAndSwap(last, now) {
		b.log.Warn("memhook: endpoint backlog over its bound: its oldest events go to the poison queue",
			"endpoint", r.displayName(), "id", msg.UUID, "shed_total", r.shed.Load(), "bound", b.cfg.QueueCapacity)
	}
}

// toPoison publishes msg, which will not be attempted for r, to the
// poison topic with err as its reason, and counts it poisoned.
func (r *route) toPoison(msg *message.Message, topic string, err error) {
	p := middleware.Poisoned(msg, err)
	if r.name != "" {
		p.Metadata.Set(middleware.EndpointKey, r.name)
	}
	p.Metadata.Set(middleware.PoisonTopicKey, topic)
	r.stats.of(msg.Metadata.Get(event.MetaType)).poisoned.Add(1)
	if perr := r.b.pub.Publish(PoisonTopic, p); perr != nil {
		r.b.log.Error("memhook: event not attempted for an endpoint, and the poison queue refused it: payload logged as lost",
			"endpoint", r.displayName(), "id", msg.UUID, "event", msg.Metadata.Get(event.MetaType), "reason", err.Error(), "error", perr.Error())
	}
}

// routeOfGroup returns the route whose consumer group is group.
func (b *Bus) routeOfGroup(group string) *route {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	for _, r := range b.routes {
		if r.group == group {
			return r
		}
	}
	return nil
}

// fannedOut reports whether this process delivers to several endpoints.
func (b *Bus) fannedOut() bool {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	return len(b.routes) > 1
}

// onRedisShed counts and logs (at WARN, at most once a second) the events
// the Redis transport moved out of endpoint's backlog to the poison
// stream (RedisConfig.OnShed); the poison stream holds them.
func (b *Bus) onRedisShed(endpoint string, n int) {
	r := b.route(endpoint)
	if r == nil {
		b.log.Warn("memhook: events shed from the backlog of an endpoint this router does not know", "endpoint", endpoint, "shed", n)
		return
	}
	r.shed.Add(uint64(n))
	r.stats.unknown.poisoned.Add(uint64(n)) // their types are in the poison stream, not here
	now := time.Now().UnixNano()
	if last := r.lastShedLog.Load(); now-last >= int64(time.Second) && r.lastShedLog.CompareAndSwap(last, now) {
		b.log.Warn("memhook: endpoint backlog over its bound: its oldest events go to the poison stream",
			"endpoint", endpoint, "shed", n, "shed_total", r.shed.Load(), "bound", transports.DefaultBacklogBound(b.cfg.RedisConfig().MaxLen))
	}
}
