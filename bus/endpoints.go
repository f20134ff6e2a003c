package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// EndpointStats is what became of the events of one endpoint.
type EndpointStats struct {
	Name string `json:"name"`
	// URL is redacted: no credentials, no query.
	URL    string `json:"url"`
	State  string `json:"state"` // active, paused or disabled
	Events string `json:"events"`
	// Ordering is OrderingUser when the endpoint's events of one user go
	// one at a time; empty otherwise.
	Ordering    string `json:"ordering,omitempty"`
	Delivered   uint64 `json:"delivered"`
	Retried     uint64 `json:"retried"` // retry attempts scheduled
	Filtered    uint64 `json:"filtered"`
	Poisoned    uint64 `json:"poisoned"`
	Undelivered uint64 `json:"undelivered"`
	// Shed counts, of those Poisoned, its events moved to its dead-letter
	// queue because its backlog passed its bound.
	Shed        uint64    `json:"shed"`
	Retrying    int       `json:"retrying"` // its events whose next attempt waits
	Backlog     int       `json:"backlog"`  // its events not yet handled here
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Failures counts the attempts that failed in a row.
	Failures int `json:"failures"`
	// NextProbe is, paused after failures, when this router lets its
	// next probe out; zero otherwise. Probing is true while one is out.
	NextProbe time.Time `json:"next_probe,omitzero"`
	Probing   bool      `json:"probing,omitempty"`
}

// EndpointStats returns the endpoints this process delivers to, the
// default one first, in the order of Config.Endpoints.
func (b *Bus) EndpointStats() []EndpointStats {
	b.routesMu.RLock()
	routes := append([]*route(nil), b.routes...)
	b.routesMu.RUnlock()
	out := make([]EndpointStats, 0, len(routes))
	for _, r := range routes {
		var s Stats
		r.stats.add(&s)
		v := r.version()
		es := EndpointStats{
			Name:        r.displayName(),
			URL:         *r.url.Load(),
			State:       string(r.breaker.State()),
			Events:      v.events.String(),
			Delivered:   s.Delivered,
			Retried:     s.Retried,
			Filtered:    s.Filtered,
			Poisoned:    s.Poisoned,
			Undelivered: s.Undelivered,
			Shed:        r.shed.Load(),
			LastSuccess: unixNano(r.lastSuccess.Load()),
			LastFailure: unixNano(r.lastFailure.Load()),
		}
		if v.ep.ordered() {
			es.Ordering = OrderingUser
		}
		snap := r.breaker.Snapshot()
		es.Failures, es.NextProbe, es.Probing = snap.Failures, snap.NextProbe, snap.Probing
		if e := r.lastError.Load(); e != nil {
			es.LastError = *e
		}
		es.Retrying, es.Backlog = b.depthOf(r)
		out = append(out, es)
	}
	return out
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// depthOf returns how many of r's events wait for a retry, and how many
// wait to be handled, as far as the transport knows.
func (b *Bus) depthOf(r *route) (retrying, backlog int) {
	type waitingOf interface {
		WaitingOf(topic string) (int, time.Time)
	}
	if w, ok := b.transport.(waitingOf); ok {
		retrying, _ = w.WaitingOf(r.retryTopic)
	}
	type queuedOf interface {
		QueuedOf(topic, group string) int
	}
	if q, ok := b.transport.(queuedOf); ok {
		backlog = q.QueuedOf(Topic, r.group) + q.QueuedOf(r.retryTopic, r.group)
	}
	if rt, ok := b.transport.(*transports.RedisTransport); ok {
		n, _ := rt.Backlog(r.group) // as of the last trim
		backlog = int(n)
	}
	return retrying, backlog
}

// ErrNoRouter is returned by SetEndpoints on a bus that runs no delivery
// here.
var ErrNoRouter = errors.New("bus: no endpoint is delivered in this process")

// SetEndpoints makes eps the endpoints beside the default one (which the
// seed's variables define and which stays as it is), without losing an
// event: an added endpoint gets the events emitted from then on (from
// SetEndpoints' return: on Redis it returns once the endpoint's consumer
// group exists, or with an error saying it does not yet); a
// removed one stops after the attempts it has in flight (on memory, the
// events still queued for it are left to Close's *UndeliveredError; on
// Redis its consumer group is removed); a changed one applies its new
// settings (URL, secret, token, filter, schedule …) from its next
// attempt. `memhook serve` calls it on SIGHUP. It returns every problem
// of eps at once and changes nothing then; ctx bounds the wait for a
// removed endpoint's attempts. It returns ErrNoRouter where this process
// does not deliver (transport http, Redis without WithDelivery) or where
// it was started with no endpoint at all.
func (b *Bus) SetEndpoints(ctx context.Context, eps []Endpoint) error {
	if err := validateEndpoints(eps); err != nil {
		return err
	}
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if !b.delivers || b.router == nil {
		return ErrNoRouter
	}
	b.reload.Lock()
	defer b.reload.Unlock()
	want := map[string]Endpoint{}
	for _, e := range eps {
		want[e.Name] = b.cfg.resolve(e)
	}
	b.routesMu.RLock()
	current := append([]*route(nil), b.routes...)
	b.routesMu.RUnlock()
	var errs []error
	kept := make([]*route, 0, len(eps)+1)
	have := map[string]bool{}
	for _, r := range current {
		name := r.displayName()
		have[name] = true
		if name == DefaultEndpoint {
			kept = append(kept, r)
			continue
		}
		e, ok := want[name]
		switch {
		case !ok:
			if err := r.stop(ctx); err != nil {
				errs = append(errs, err)
			}
			b.removeGroup(r)
			b.log.Info("memhook: endpoint removed", "endpoint", name)
			b.routesMu.Lock()
			b.retired = append(b.retired, r.sink)
			b.routesMu.Unlock()
			continue
		case r.version().ep.ordered() != e.ordered():
			errs = append(errs, fmt.Errorf("bus: endpoint %s: ordering cannot change on a running bus (its subscription reads in turns or not); the endpoint is unchanged: restart, or add it under another name", name))
		case !reflect.DeepEqual(r.version().ep, e):
			if err := r.update(e); err != nil {
				errs = append(errs, fmt.Errorf("bus: endpoint %s: %w", name, err))
			} else {
				b.log.Info("memhook: endpoint changed", "endpoint", name, "url", *r.url.Load())
			}
		}
		kept = append(kept, r)
	}
	var added []*route
	for _, e := range eps {
		if have[e.Name] {
			continue
		}
		r, err := b.newRoute(b.router, want[e.Name], true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		added = append(added, r)
	}
	// The order of Config.Endpoints, the default endpoint first.
	order := map[string]int{DefaultEndpoint: -1}
	for i, e := range eps {
		order[e.Name] = i
	}
	routes := append(kept, added...)
	for i := 1; i < len(routes); i++ {
		for j := i; j > 0 && order[routes[j].displayName()] < order[routes[j-1].displayName()]; j-- {
			routes[j], routes[j-1] = routes[j-1], routes[j]
		}
	}
	b.routesMu.Lock()
	b.routes = routes
	b.routesMu.Unlock()
	b.rebound()
	if len(added) > 0 {
		if err := b.router.RunHandlers(b.runCtx); err != nil {
			errs = append(errs, fmt.Errorf("bus: starting added endpoints: %w", err))
		}
		for _, r := range added {
			if err := r.joined(ctx); err != nil {
				errs = append(errs, fmt.Errorf("bus: endpoint %s: %w", r.displayName(), err))
			}
			b.log.Info("memhook: endpoint added", "endpoint", r.displayName(), "url", *r.url.Load())
		}
	}
	return errors.Join(errs...)
}

// removeGroup lets the transport forget the consumer group of a removed
// endpoint, where it can.
func (b *Bus) removeGroup(r *route) {
	type queueRemover interface { // memory: what still waited for the endpoint
		RemoveGroup(topic, group string) []*message.Message
	}
	if g, ok := b.transport.(queueRemover); ok {
		for _, topic := range []string{Topic, r.retryTopic} {
			for _, msg := range g.RemoveGroup(topic, r.group) {
				r.toPoison(msg, topic, ErrEndpointRemoved)
			}
		}
	}
	if rt, ok := b.transport.(*transports.RedisTransport); ok {
		// Its group goes, so that the stream trims; its waiting retries
		// stay in Redis and resume if it comes back.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.RemoveGroup(ctx, r.group); err != nil {
			b.log.Warn("memhook: removed endpoint's consumer group left in Redis", "endpoint", r.displayName(), "error", err.Error())
		}
	}
}

// PauseEndpoint pauses endpoint name as an operator would: its events
// wait (none is poisoned, no attempt is spent), no probe goes out, until
// ResumeEndpoint. On Redis every router follows within a second or so
// (the state is kept in Redis). It returns an error wrapping
// ErrUnknownEndpoint for a name this process does not deliver to.
func (b *Bus) PauseEndpoint(ctx context.Context, name string) error {
	return b.setPaused(ctx, name, true)
}

// ResumeEndpoint ends a pause (an operator's, the breaker's, or a 410
// Gone's): attempts go out again, and the events that waited go out at
// once — those unread in the endpoint's queue or stream, and those held
// in the delay store (taken before the pause; they would otherwise wait
// out their 30 s hold). Retries waiting out their schedule keep it.
func (b *Bus) ResumeEndpoint(ctx context.Context, name string) error {
	return b.setPaused(ctx, name, false)
}

// ErrUnknownEndpoint is returned by PauseEndpoint and ResumeEndpoint for
// a name this process does not deliver to.
var ErrUnknownEndpoint = errors.New("bus: no such endpoint")

func (b *Bus) setPaused(ctx context.Context, name string, pause bool) error {
	r := b.route(name)
	if r == nil {
		return fmt.Errorf("%w: %q", ErrUnknownEndpoint, name)
	}
	if s, ok := b.transport.(pauseStore); ok {
		if err := s.SetPaused(ctx, name, pause); err != nil {
			return fmt.Errorf("bus: endpoint %s: keeping its state: %w", name, err)
		}
	}
	if pause {
		r.breaker.Pause("paused by an operator")
	} else {
		r.breaker.Resume()
	}
	return nil
}

// route returns the route of endpoint name, nil if none.
func (b *Bus) route(name string) *route {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	for _, r := range b.routes {
		if r.displayName() == name {
			return r
		}
	}
	return nil
}

// pauseStore is a transport that keeps operators' pauses for every
// process on it (Redis).
type pauseStore interface {
	SetPaused(ctx context.Context, endpoint string, paused bool) error
	Paused(ctx context.Context) (map[string]bool, error)
}

// followPauses applies the pauses the transport keeps, every interval,
// until ctx ends: an operator's pause given to another router reaches
// this one.
func (b *Bus) followPauses(ctx context.Context, s pauseStore, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		paused, err := s.Paused(ctx)
		if err != nil {
			continue // Redis down: the transport logs it; keep the states as they are
		}
		b.routesMu.RLock()
		routes := append([]*route(nil), b.routes...)
		b.routesMu.RUnlock()
		for _, r := range routes {
			snap := r.breaker.Snapshot()
			switch want := paused[r.displayName()]; {
			case want && !(snap.State == middleware.StatePaused && snap.Manual):
				r.breaker.Pause("paused by an operator")
			case !want && snap.Manual:
				r.breaker.Resume()
			}
		}
	}
}
