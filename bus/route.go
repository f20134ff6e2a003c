package bus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// route is one endpoint at run time: its two subscriptions (the events
// topic, as its own consumer group, and its own retry topic), its
// counters, and the chain of its current settings. SetEndpoints swaps the
// settings whole (a changed URL or secret applies to the next attempt);
// the subscriptions stay.
type route struct {
	*sink
	group, retryTopic string
	breaker           *middleware.Breaker // the endpoint's health, kept across changes of its settings

	mu  sync.RWMutex // guards cur; a handling holds it shared while it takes cur
	cur *routeVersion

	handlers []*message.Handler   // the router's, for a removal
	subs     []message.Subscriber // theirs: the router does not close a stopped handler's

	// ordered: the endpoint's events of one user go one at a time
	// (OrderingUser), through orderer; fixed for the route's life.
	ordered bool // or ordering was on before, turns are left in Redis: they pass on (DrainTurns)
	orderer transports.Orderer
	held    sync.Map // UUIDs of messages handed to the delay store during their handling (ordered only)
}

// routeVersion is one version of a route's settings and the chains built
// from them.
type routeVersion struct {
	ep      Endpoint // resolved: Timeout and RetrySchedule set
	events  event.Set
	deliver *handlers.Deliver
	// first handles an event from the events topic, retry one from the
	// retry topic, send one given to Send.
	first, retry, send message.HandlerFunc
	inflight           sync.WaitGroup
}

// sink is where what becomes of an event is counted and logged: one per
// endpoint, and one for the forwarder of transport http.
type sink struct {
	b     *Bus
	name  string // "" for the default endpoint: its log lines stay the seed's
	url   atomic.Pointer[string]
	stats *stats

	lastSuccess, lastFailure atomic.Int64 // Unix nanoseconds, 0 when never
	lastError                atomic.Pointer[string]
	lastLimiterLog           atomic.Int64
	shed                     atomic.Uint64 // of those poisoned: moved out of a backlog past its bound
	lastShedLog              atomic.Int64
}

func newSink(b *Bus, name, url string) *sink {
	s := &sink{b: b, stats: newStats()}
	if name != DefaultEndpoint {
		s.name = name
	}
	s.url.Store(&url)
	return s
}

// resolve fills e's defaults from cfg.
func (cfg Config) resolve(e Endpoint) Endpoint {
	if e.Timeout == 0 {
		e.Timeout = cfg.Timeout
	}
	if len(e.RetrySchedule) == 0 {
		e.RetrySchedule = cfg.RetryDelays()
	}
	if e.Events == "" {
		e.Events = "all"
	}
	return e
}

// defaultEndpoint is the endpoint the seed's variables define; ok false
// when WebhookURL is empty.
func (cfg Config) defaultEndpoint() (Endpoint, bool) {
	if cfg.WebhookURL == "" {
		return Endpoint{}, false
	}
	return Endpoint{
		Name:               DefaultEndpoint,
		URL:                cfg.WebhookURL,
		Events:             cfg.Events,
		Token:              cfg.Token,
		Secret:             cfg.Secret,
		LegacySecretHeader: !cfg.DisableLegacySecretHeader,
		Timeout:            cfg.Timeout,
		RetrySchedule:      cfg.RetryDelays(),
		Ordering:           cfg.Ordering,
	}, true
}

// endpoints returns every endpoint cfg defines, the default one first.
func (cfg Config) endpoints() []Endpoint {
	var out []Endpoint
	if d, ok := cfg.defaultEndpoint(); ok {
		out = append(out, d)
	}
	for _, e := range cfg.Endpoints {
		out = append(out, cfg.resolve(e))
	}
	return out
}

// newRoute builds the route of e, subscribed on router; it starts with
// the router (or, added to a running one, with RunHandlers). An endpoint
// added to a running bus gets the events published from then on.
func (b *Bus) newRoute(router *message.Router, e Endpoint, added bool) (*route, error) {
	r := &route{
		sink:       newSink(b, e.Name, handlers.RedactURL(e.URL)),
		group:      transports.EndpointGroup(b.cfg.RedisGroup, e.Name),
		retryTopic: transports.EndpointRetryTopic(e.Name),
	}
	breaker, err := middleware.NewBreaker(middleware.BreakerConfig{
		Threshold: b.cfg.PauseAfter,
		OnChange:  r.onStateChange,
	})
	if err != nil {
		return nil, err
	}
	r.breaker = breaker
	v, err := r.build(e)
	if err != nil {
		return nil, err
	}
	r.cur = v
	if e.ordered() {
		o, ok := b.transport.(transports.Orderer)
		if !ok {
			_ = v.deliver.Close()
			return nil, fmt.Errorf("bus: endpoint %s: ordering %s needs transport memory or redis, not %s", e.Name, e.Ordering, b.cfg.Transport)
		}
		if err := o.Order(Topic, r.group, event.MetaUserID, r.retryTopic); err != nil {
			_ = v.deliver.Close()
			return nil, fmt.Errorf("bus: endpoint %s: %w", e.Name, err)
		}
		r.ordered, r.orderer = true, o
	} else if rt, ok := b.transport.(*transports.RedisTransport); ok && rt.Delivers() {
		// Ordering was on for this endpoint before (a router restarted
		// with it off): pass the turns on until what they parked is out.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		left, err := rt.HasTurns(ctx, Topic, r.group)
		cancel()
		if err != nil {
			b.log.Warn("memhook: could not look for events parked by ordering; if ordering was on for this endpoint before, some may wait",
				"endpoint", e.Name, "error", err.Error())
		}
		if left {
			b.log.Warn("memhook: ordering is off but events parked while it was on remain; they are sent as the turns pass", "endpoint", e.Name)
			rt.DrainTurns(Topic, r.group, r.retryTopic)
			r.ordered, r.orderer = true, rt
		}
	}
	for _, h := range []struct {
		name, topic string
		handle      func(v *routeVersion) message.HandlerFunc
	}{
		{"memhook.deliver", Topic, func(v *routeVersion) message.HandlerFunc { return v.first }},
		{"memhook.retry", r.retryTopic, func(v *routeVersion) message.HandlerFunc { return v.retry }},
	} {
		sub, err := b.subscriber(r.group, added && h.topic == Topic)
		if err != nil {
			_ = v.deliver.Close()
			r.closeSubs()
			return nil, fmt.Errorf("bus: endpoint %s: subscribing to %s: %w", e.Name, h.topic, err)
		}
		if g, ok := sub.(transports.Gated); ok {
			// A paused endpoint's events stay unread in the transport
			// until a probe is due, instead of being taken and held
			// one by one (Health still holds what was taken).
			g.SetGate(r.breaker.Wait)
		}
		r.subs = append(r.subs, sub)
		name := h.name
		if e.Name != DefaultEndpoint {
			name += "." + e.Name
		}
		handle := h.handle
		r.handlers = append(r.handlers, router.AddConsumerHandler(name, h.topic, sub, func(msg *message.Message) error {
			v := r.acquire()
			defer v.inflight.Done()
			if r.ordered {
				return r.handleInTurn(msg, handle(v))
			}
			_, err := handle(v)(msg)
			return err
		}))
	}
	return r, nil
}

// rebound sets the backlog bound of every endpoint on Redis: with several
// endpoints each sheds its oldest events past half of
// MEMHOOK_REDIS_MAXLEN, so that one stuck endpoint cannot make the stream
// refuse the others' events; with one, the stream refuses appends at
// MEMHOOK_REDIS_MAXLEN as before endpoints existed (back-pressure to the
// application, nothing moved to the poison stream).
func (b *Bus) rebound() {
	rt, ok := b.transport.(*transports.RedisTransport)
	if !ok {
		return
	}
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	for _, r := range b.routes {
		if len(b.routes) > 1 {
			rt.Bound(r.group, r.displayName(), 0) // 0: half of MEMHOOK_REDIS_MAXLEN
		} else {
			rt.Unbound(r.group)
		}
	}
}

// subscriber returns a subscriber of group; newest: (on Redis) a group
// made now starts at the stream's end, not its start.
func (b *Bus) subscriber(group string, newest bool) (message.Subscriber, error) {
	if rt, ok := b.transport.(*transports.RedisTransport); ok && newest {
		return rt.SubscriberFrom(group, transports.GroupStartNewest)
	}
	return b.transport.Subscriber(group)
}

// joinPoll is how often joined asks a subscriber whether it has joined.
const joinPoll = 5 * time.Millisecond

// joined waits until the route's events subscription has joined its
// transport — on Redis, until its consumer group exists, so that every
// event appended from then on is the endpoint's — or ctx ends. A
// subscriber that cannot tell (no Ready method) has joined.
func (r *route) joined(ctx context.Context) error {
	type readier interface{ Ready(context.Context) error }
	rd, ok := r.subs[0].(readier) // the events topic's; see newRoute
	if !ok {
		return nil
	}
	for {
		err := rd.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not subscribed yet, events emitted until it is are not its: %w", err)
		case <-time.After(joinPoll):
		}
	}
}

// closeSubs closes the route's subscribers.
func (r *route) closeSubs() {
	for _, s := range r.subs {
		_ = s.Close()
	}
}

// acquire returns the current version, counted in flight until Done.
func (r *route) acquire() *routeVersion {
	r.mu.RLock()
	v := r.cur
	v.inflight.Add(1)
	r.mu.RUnlock()
	return v
}

// update makes e the route's settings for every handling from now on;
// the handlings running finish on the old ones, whose delivery handler
// is closed after them.
func (r *route) update(e Endpoint) error {
	v, err := r.build(e)
	if err != nil {
		return err
	}
	url := handlers.RedactURL(e.URL)
	r.mu.Lock()
	old := r.cur
	r.cur = v
	r.url.Store(&url)
	r.mu.Unlock()
	go func() {
		old.inflight.Wait()
		_ = old.deliver.Close()
	}()
	return nil
}

// build makes the chains of e.
func (r *route) build(e Endpoint) (*routeVersion, error) {
	b := r.b
	events, _ := event.ParseSet(e.Events) // validated
	var secrets []verify.Secret
	if e.Secret != "" {
		secrets, _ = verify.ParseSecrets(e.Secret) // validated
	}
	var onAttempt func(*message.Message, handlers.AttemptResult)
	if b.attempts != nil {
		scrub := credentialScrubber(e.Token, e.Secret)
		onAttempt = func(msg *message.Message, res handlers.AttemptResult) { // every attempt, in the attempt log
			r.onAttempt(msg, res, scrub)
		}
	}
	deliver, err := handlers.NewDeliver(handlers.DeliverConfig{
		URL:          e.URL,
		Timeout:      e.Timeout,
		MaxIdleConns: b.cfg.Concurrency,
		Transport:    b.opts.transport,
		OnDelivered:  r.onDelivered,
		OnAttempt:    onAttempt,
	})
	if err != nil {
		return nil, err
	}
	v := &routeVersion{ep: e, events: events, deliver: deliver}
	legacy := ""
	if e.LegacySecretHeader && len(secrets) > 0 {
		legacy = firstSecret(e.Secret)
	}
	var extra http.Header
	if len(e.Headers) > 0 {
		extra = make(http.Header, len(e.Headers))
		for k, val := range e.Headers {
			extra[http.CanonicalHeaderKey(k)] = []string{val}
		}
	}
	signer := middleware.Signer{
		Token:        e.Token,
		LegacySecret: legacy,
		Secrets:      secrets,
		UserAgent:    userAgent,
		Headers:      extra,
	}.Middleware
	hold := middleware.DelayFunc(r.delay)
	schedule := middleware.Schedule{
		Delays:        e.RetrySchedule,
		MaxRetryAfter: b.cfg.MaxRetryAfter,
		Store:         hold,
		OnRetry:       r.onRetry,
	}.Middleware
	wait := middleware.Retry{Delays: e.RetrySchedule, MaxRetryAfter: b.cfg.MaxRetryAfter, OnRetry: r.onRetry}.Middleware
	// One attempt: the endpoint's health (while it is paused its events
	// wait in the delay store, and no attempt is spent), its rate limit
	// (the same), the signer.
	attempt := []message.HandlerMiddleware{middleware.Health{Breaker: r.breaker, Store: hold}.Middleware, signer}
	if !e.RateLimit.IsZero() {
		limiter, err := b.limiter(e.RateLimit)
		if err != nil {
			_ = deliver.Close()
			return nil, fmt.Errorf("rate_limit: %w", err)
		}
		attempt = []message.HandlerMiddleware{attempt[0], middleware.RateLimit{
			Limiter:        limiter,
			Key:            e.Name,
			Store:          hold,
			OnLimiterError: r.onLimiterError,
		}.Middleware, signer}
	}
	head := []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		r.tag,
		middleware.PoisonQueue{Publisher: b.pub, Topic: PoisonTopic, SourceTopic: Topic,
			OnPoisoned: r.onPoisoned, OnPublishFailed: r.onPoisonPublishFailed}.Middleware,
	}
	once := append([]message.HandlerMiddleware{middleware.Filter{Events: events, OnFiltered: r.onFiltered}.Middleware},
		b.opts.middleware...)
	chain := func(parts ...[]message.HandlerMiddleware) message.HandlerFunc {
		var all []message.HandlerMiddleware
		for _, p := range parts {
			all = append(all, p...)
		}
		return compose(all, deliver.Handle)
	}
	v.first = chain(head, once, []message.HandlerMiddleware{schedule}, attempt)
	// The filter again on the retry topic: a replayed dead letter (one
	// shed from the backlog was never filtered) or a filter changed since.
	v.retry = chain(head, once[:1], []message.HandlerMiddleware{schedule}, attempt)
	v.send = chain(head, once, []message.HandlerMiddleware{wait, signer}) // Send: now, no rate limit
	return v, nil
}

// tag names the endpoint on the message, so that the copies leaving its
// subscription (a retry, a poisoned event) say whose they are. The
// default endpoint's copies carry no name, as before endpoints existed.
func (r *route) tag(h message.HandlerFunc) message.HandlerFunc {
	if r.name == "" {
		return h
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		msg.Metadata[middleware.EndpointKey] = r.name
		return h(msg)
	}
}

// stop stops the route's handlers, waits for the handlings running, and
// closes its delivery handler.
func (r *route) stop(ctx context.Context) error {
	for _, h := range r.handlers {
		h.Stop()
	}
	for _, h := range r.handlers {
		select {
		case <-h.Stopped():
		case <-ctx.Done():
			return fmt.Errorf("bus: endpoint %s: stopping: %w", r.displayName(), ctx.Err())
		}
	}
	r.closeSubs()
	r.mu.RLock()
	v := r.cur
	r.mu.RUnlock()
	v.inflight.Wait()
	return v.deliver.Close()
}

func (s *sink) displayName() string {
	if s.name == "" {
		return DefaultEndpoint
	}
	return s.name
}

// closeDeliver closes the current delivery handler (the router has
// stopped).
func (r *route) closeDeliver() error {
	r.mu.RLock()
	v := r.cur
	r.mu.RUnlock()
	v.inflight.Wait()
	if err := v.deliver.Close(); err != nil && !errors.Is(err, handlers.ErrDeliverClosed) {
		return err
	}
	return nil
}

// version returns the current settings.
func (r *route) version() *routeVersion {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

// limiter returns the budget of a rate limit: shared by every router on
// Redis, this process's elsewhere.
func (b *Bus) limiter(rl RateLimit) (middleware.Limiter, error) {
	if rt, ok := b.transport.(*transports.RedisTransport); ok {
		return rt.Limiter(rl.Events, rl.Per)
	}
	return middleware.NewLocalLimiter(rl.Events, rl.Per)
}

// onLimiterError logs, at most once a second, a rate limit whose budget
// could not be read (Redis unreachable): the attempt went without it.
func (s *sink) onLimiterError(msg *message.Message, err error) {
	now := time.Now().UnixNano()
	last := s.lastLimiterLog.Load()
	if now-last < int64(time.Second) || !s.lastLimiterLog.CompareAndSwap(last, now) {
		return
	}
	s.b.log.Warn("memhook: rate limit unavailable, attempting without it",
		"endpoint", s.displayName(), "id", msg.UUID, "error", err.Error())
}

// onStateChange logs a change of the endpoint's health at WARN.
func (r *route) onStateChange(from, to middleware.State, reason string) {
	r.b.log.Warn("memhook: endpoint "+string(to), "endpoint", r.displayName(), "from", string(from), "to", string(to),
		"reason", reason, "url", *r.url.Load())
	if to == middleware.StateActive && from != middleware.StateActive {
		r.expedite()
	}
}

// expediteTimeout bounds bringing an endpoint's held events forward.
const expediteTimeout = 5 * time.Second

// expedite makes the events Health held for the endpoint — taken before it
// was paused or disabled, or while its probe was out — due now, once it is
// active again: they would otherwise wait out their hold (30 s after an
// operator's resume). Retries waiting out their schedule keep it. On
// Redis every router that sees the endpoint active does it; once is
// enough, and the others change nothing.
func (r *route) expedite() {
	ex, ok := r.b.transport.(transports.Expediter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), expediteTimeout)
	defer cancel()
	n, err := ex.Expedite(ctx, r.retryTopic)
	if err != nil {
		r.b.log.Warn("memhook: held events of the endpoint wait out their hold", "endpoint", r.displayName(), "error", err.Error())
		return
	}
	if n > 0 {
		r.b.log.Info("memhook: held events of the endpoint sent now", "endpoint", r.displayName(), "events", n)
	}
}

// delay hands msg to the transport's delay store, due on the endpoint's
// retry topic. When the store is full for this endpoint and other
// endpoints share the transport, the endpoint's backlog has passed its
// bound: msg goes to the poison queue (onShed) instead of coming back
// again and again. With one endpoint the refusal stands: the message is
// nacked and comes back, as before endpoints existed.
func (r *route) delay(msg *message.Message, due time.Time) error {
	err := r.b.transport.(transports.Delayer).PublishAt(r.retryTopic, due, msg) // every transport that delivers has one
	if errors.Is(err, transports.ErrQueueFull) && r.b.fannedOut() {
		r.b.onShed(r.retryTopic, r.group, msg)
		return nil // given up: its turn ends (handleInTurn)
	}
	if err == nil && r.ordered {
		r.held.Store(msg.UUID, struct{}{})
	}
	return err
}

// handleInTurn handles msg of an ordered endpoint: it has its user's turn
// (the transport hands out one event per user at a time). Once it ends
// delivered, filtered out or poisoned, the turn passes to the user's next
// event — on Redis with msg's ack, in the script that acknowledges it
// (transports.TurnOnAck), elsewhere at once (Next); held for later (a
// retry, a pause, the rate limit) it keeps the turn; nacked (an error) it
// keeps it too, and comes back. An event
// poisoned carries OrderBrokenKey: the user's later events went on
// without it.
func (r *route) handleInTurn(msg *message.Message, h message.HandlerFunc) error {
	user := msg.Metadata.Get(event.MetaUserID)
	if user == "" {
		_, err := h(msg)
		return err
	}
	msg.Metadata[middleware.OrderBrokenKey] = "user " + user + ": the user's later events were sent after this one was given up"
	_, err := h(msg)
	_, held := r.held.LoadAndDelete(msg.UUID)
	if err != nil || held {
		return err
	}
	if _, onAck := r.orderer.(transports.TurnOnAck); onAck {
		msg.Metadata[transports.PassTurnKey] = user // passed on with the ack, in one step
		return nil
	}
	if err := r.orderer.Next(msg.Context(), Topic, r.group, user, msg.UUID); err != nil {
		r.b.log.Warn("memhook: passing on a user's turn failed; the event comes back and the turn passes then",
			"endpoint", r.displayName(), "id", msg.UUID, "error", err.Error())
		return err
	}
	return nil
}
