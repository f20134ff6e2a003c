// Package bus is memhook's embeddable facade. An application builds a Bus
// once, calls Emit after each memory operation — Emit never waits for a
// webhook — and Close when it stops. Under the Bus a Watermill router runs
// the delivery chain:
//
//	recoverer → poison queue → filter → your middleware → retry → signer → deliver
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/wmlog"
	"github.com/memhook/memhook/logbuf"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// firstSecret is the first of the space- or comma-separated secrets, as
// written: what the seed's X-Webhook-Secret header carries during a
// rotation.
func firstSecret(s string) string {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// Version is memhook's version, sent in the User-Agent header.
const Version = "0.1.0"

// Topic is the Watermill topic memory events travel on.
const Topic = transports.DefaultEventsTopic

// PoisonTopic is where events that failed for good are published.
const PoisonTopic = transports.DefaultPoisonTopic

// IncomingTopic carries the events other systems POST to the router's
// /webhooks/memory. They are never sent out again as webhooks.
const IncomingTopic = transports.DefaultIncomingTopic

// RetryTopic carries the events whose retry is due: the transport's delay
// store publishes them there, and the delivery handler of RetryTopic makes
// the next attempt.
const RetryTopic = transports.DefaultRetryTopic

// Errors returned by Emit and Close.
var (
	// ErrQueueFull is returned by Emit when the in-memory queue holds
	// QueueCapacity events: the event was not accepted (and is counted as
	// dropped). Emit returns it at once.
	ErrQueueFull = errors.New("bus: queue is full, event dropped")
	// ErrClosed is returned by Emit after Close has begun.
	ErrClosed = errors.New("bus: closed")
	// ErrUnsupportedTransport is returned by New for a transport this build
	// cannot run.
	ErrUnsupportedTransport = errors.New("bus: transport not supported")
	// ErrNotDelivering is returned by Send on a bus that hands its events to
	// another process (transport http or redis without a router here).
	ErrNotDelivering = errors.New("bus: this process does not deliver webhooks")
)

// Undelivered is one event that Close could not finish.
type Undelivered struct {
	ID      string
	Type    event.Type
	Topic   string
	Payload []byte
}

// UndeliveredError is returned by Close when its context ended before every
// accepted event was delivered, filtered or poisoned. It lists each event
// left, payload included, so that the caller can keep them.
type UndeliveredError struct {
	Events []Undelivered
	Cause  error
}

// Error implements error.
func (e *UndeliveredError) Error() string {
	ids := make([]string, 0, min(len(e.Events), 5))
	for i, u := range e.Events {
		if i == 5 {
			ids = append(ids, "…")
			break
		}
		ids = append(ids, u.ID)
	}
	return fmt.Sprintf("bus: %d event(s) undelivered at close (%v): %s", len(e.Events), e.Cause, strings.Join(ids, ", "))
}

// Unwrap returns the cause, usually context.DeadlineExceeded.
func (e *UndeliveredError) Unwrap() error { return e.Cause }

// Bus accepts memory events and delivers them as webhooks, or hands them
// to the process that does. It is safe for concurrent use.
type Bus struct {
	cfg  Config
	log  *slog.Logger
	wlog watermill.LoggerAdapter // log for watermill, its chatter below INFO
	url  string                  // on transport http: the router's ingest URL, redacted

	stats *stats // what Emit saw: accepted, dropped, invalid
	// forward counts what becomes of events where no endpoint delivers
	// here: the forwarder of transport http, a bus whose webhooks are off.
	forward *sink
	opts    options

	transport transports.Transport
	pub       message.Publisher // the transport's, where Emit publishes
	router    *message.Router   // runs this process's consumers
	runCtx    context.Context   // the router's Run; handlers added later run under it
	runErr    chan error
	stopRun   context.CancelFunc // ends the router's Run: a close, not "all handlers stopped"

	reload   sync.Mutex // one SetEndpoints at a time
	routesMu sync.RWMutex
	routes   []*route // the endpoints delivered here, the default one first
	retired  []*sink  // endpoints removed by SetEndpoints: their counters stay in Stats

	// delivers: this process runs the delivery chain (the transport
	// delivers here and an endpoint is set). publishes: Emit hands
	// events to the transport; false only where nothing would ever
	// consume them (the memory transport without a webhook URL), and
	// events are then only counted.
	delivers, publishes bool

	mu     sync.RWMutex // Emit holds it shared; Close exclusively, to set closed
	closed bool

	closeOnce sync.Once
	closeErr  error
	logOut    *logbuf.Writer // nil unless the bus buffers the default logger

	lastDropLog atomic.Int64
}

// New validates cfg, applies its defaults and starts what the transport
// needs in this process:
//
//   - "memory": the in-process queue and the router that delivers from it.
//     With WebhookURL empty webhooks are off: Emit accepts and counts
//     events and sends nothing.
//   - "http": the in-process queue and a forwarder that hands every event
//     to the `memhook serve` process at RouterURL, retrying with backoff
//     while it is down; the router process delivers.
//   - "redis": a publisher: Emit appends to the stream. With WithDelivery
//     (and a WebhookURL) also the router that joins the consumer group and
//     delivers; it joins in the background, retrying while Redis is down
//     (Ready reports until it has joined).
//   - any Watermill pub/sub, with WithPubSub (Transport is then ignored).
//
// On every transport where this process consumes, the poison topic is
// consumed (WithPoisonHandler) and, where it delivers, the incoming topic
// (WithIncomingHandler).
func New(cfg Config, opts ...Option) (*Bus, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var logOut *logbuf.Writer // the default logger's buffer, flushed by Close
	if o.logger == nil {
		o.logger, logOut = defaultLogger()
	}
	started := false
	defer func() {
		if !started && logOut != nil {
			_ = logOut.Close() // a New that failed: its lines out too
		}
	}()
	if o.pubsub != nil {
		cfg.Transport = TransportPubSub
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:    cfg,
		log:    o.logger,
		wlog:   wmlog.New(o.logger, slog.LevelDebug),
		stats:  newStats(),
		opts:   o,
		runErr: make(chan error, 1),
		url:    handlers.RedactURL(cfg.WebhookURL),
		logOut: logOut,
	}
	b.forward = newSink(b, DefaultEndpoint, b.url)
	b.forward.stats = b.stats
	t, err := b.openTransport()
	if err != nil {
		return nil, err
	}
	b.transport, b.pub = t, t.Publisher()
	b.delivers = t.Delivers() && len(cfg.endpoints()) > 0
	b.publishes = b.delivers || !t.Delivers()
	if b.delivers {
		warnLegacySecret(b.log, cfg)
	}
	if !b.publishes {
		events, _ := event.ParseSet(cfg.Events) // validated above
		b.log.Info("memhook: webhooks are off; events are counted, not sent", "url_set", false, "events", events.String())
	}
	if err := b.start(); err != nil {
		b.abandon()
		return nil, err
	}
	started = true
	return b, nil
}

// openTransport makes the transport cfg (or WithPubSub) names: the one
// place where the kind of transport matters.
func (b *Bus) openTransport() (transports.Transport, error) {
	cfg := b.cfg
	switch cfg.Transport {
	case TransportPubSub:
		return transports.NewPubSub(b.opts.pubsub.pub, b.opts.pubsub.subscribe)
	case TransportMemory:
		return transports.NewMemoryTransport(cfg.memoryConfig(b.log, b.onShed))
	case TransportHTTP:
		b.url = handlers.RedactURL(cfg.routerURL(IngestPath)) // where this bus sends
		b.forward.url.Store(&b.url)
		var ingestSecrets []verify.Secret
		if cfg.IngestSecret != "" {
			ingestSecrets, _ = verify.ParseSecrets(cfg.IngestSecret) // validated in New
		}
		return transports.NewHTTP(transports.HTTPConfig{
			RouterURL:     cfg.RouterURL,
			Token:         cfg.IngestToken,
			Secrets:       ingestSecrets,
			UserAgent:     userAgent,
			Timeout:       cfg.Timeout,
			RetryDelay:    cfg.RetryDelay,
			MaxRetryAfter: cfg.MaxRetryAfter,
			Memory:        cfg.memoryConfig(b.log, nil),
			EventsTopic:   Topic,
			PoisonTopic:   PoisonTopic,
			Transport:     b.opts.transport,
			OnDelivered:   b.forward.onDelivered,
			OnRetry:       b.forward.onRetry,
			OnPoisoned:    b.forward.onPoisoned,
			Logger:        b.log,
		})
	case TransportRedis:
		// Even with every event filtered out (MEM0_WEBHOOK_EVENTS=none) a
		// delivering process consumes the stream, acknowledging each entry
		// as filtered: otherwise it would grow until MEMHOOK_REDIS_MAXLEN
		// refuses applications' events. Without a URL it does not consume:
		// it would take other routers' events and send none.
		rc := cfg.RedisConfig()
		rc.OnShed = b.onRedisShed
		return transports.NewRedisTransport(rc, b.opts.deliver && len(cfg.endpoints()) > 0, b.log)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedTransport, cfg.Transport)
}

// userAgent is the User-Agent of every request memhook sends.
const userAgent = "memhook/" + Version

// start builds and runs the router: a route per endpoint where this
// process delivers, and consumers of the poison topic and, where it
// delivers, of the incoming topic.
func (b *Bus) start() error {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, b.wlog)
	if err != nil {
		return err
	}
	group := b.cfg.RedisGroup
	if b.delivers {
		for _, e := range b.cfg.endpoints() {
			r, err := b.newRoute(router, e, false)
			if err != nil {
				b.closeRoutes()
				return err
			}
			b.routes = append(b.routes, r)
		}
	}
	consumers := []struct {
		name, topic string
		h           message.NoPublishHandlerFunc
	}{{"memhook.poison", PoisonTopic, b.poisonHandler()}}
	if b.transport.Delivers() {
		consumers = append(consumers, struct {
			name, topic string
			h           message.NoPublishHandlerFunc
		}{"memhook.incoming", IncomingTopic, b.incomingHandler()})
	}
	for _, c := range consumers {
		sub, err := b.transport.Subscriber(group + "." + strings.TrimPrefix(c.name, "memhook."))
		if errors.Is(err, transports.ErrNoSubscriber) {
			continue
		}
		if err != nil {
			b.closeRoutes()
			return fmt.Errorf("bus: subscribing to %s: %w", c.topic, err)
		}
		router.AddConsumerHandler(c.name, c.topic, sub, c.h)
	}
	for _, f := range b.opts.routerSetup {
		if err := f(router); err != nil {
			b.closeRoutes()
			return err
		}
	}
	if len(router.Handlers()) == 0 {
		return nil // nothing consumed here: a publisher only
	}
	b.router = router
	ctx, stop := context.WithCancel(context.Background())
	b.runCtx, b.stopRun = ctx, stop
	go func() { b.runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
		if s, ok := b.transport.(pauseStore); ok && b.delivers {
			go b.followPauses(ctx, s, time.Second)
		}
		return nil
	case err := <-b.runErr:
		b.router = nil
		b.closeRoutes()
		return fmt.Errorf("bus: router did not start: %w", err)
	}
}

// closeRoutes closes the delivery handlers of every route.
func (b *Bus) closeRoutes() []error {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	var errs []error
	for _, r := range b.routes {
		if err := r.closeDeliver(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// poisonHandler is WithPoisonHandler's, or one that only acknowledges
// (the chain has logged and counted the event).
func (b *Bus) poisonHandler() message.NoPublishHandlerFunc {
	if b.opts.poison != nil {
		return b.opts.poison
	}
	return func(*message.Message) error { return nil }
}

// incomingHandler is WithIncomingHandler's, or one that logs the event.
func (b *Bus) incomingHandler() message.NoPublishHandlerFunc {
	if b.opts.incoming != nil {
		return b.opts.incoming
	}
	return func(msg *message.Message) error {
		b.log.Info("memhook: incoming event", "event", msg.Metadata.Get(event.MetaType), "id", msg.UUID,
			"user_id", msg.Metadata.Get(event.MetaUserID))
		return nil
	}
}

// abandon releases what a New that failed had started.
func (b *Bus) abandon() {
	if b.stopRun != nil {
		b.stopRun()
	}
	_, _ = b.transport.Close()
	_ = b.stopRouter()
}

// compose wraps h in chain, outermost first, as the router does.
func compose(chain []message.HandlerMiddleware, h message.NoPublishHandlerFunc) message.HandlerFunc {
	out := func(msg *message.Message) ([]*message.Message, error) { return nil, h(msg) }
	for i := len(chain) - 1; i >= 0; i-- {
		out = chain[i](out)
	}
	return out
}

// Emit hands e to the delivery queue and returns at once: it never waits
// for a webhook. It returns a *event.FieldError (errors.Is ErrInvalid) for
// an invalid event, ErrQueueFull when the queue is full, ErrClosed after
// Close, or ctx's error if ctx is already done. A failed webhook is never
// reported here: it ends in the poison queue, logged and counted.
func (b *Bus) Emit(ctx context.Context, e event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msg, err := b.message(e)
	if err != nil {
		return err
	}
	c := b.stats.of(string(e.Type))
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if !b.publishes {
		c.accepted.Add(1)
		c.filtered.Add(1)
		return nil
	}
	return b.publish(Topic, msg, c)
}

// message encodes e into the Watermill message the chain carries.
func (b *Bus) message(e event.Event) (*message.Message, error) {
	id := uuid.NewString()
	payload, err := event.Encode(e, event.Meta{ID: id, Time: time.Now(), Source: b.cfg.Source, BotVersion: b.cfg.BotVersion})
	if err != nil {
		b.stats.invalid.Add(1)
		return nil, err
	}
	msg := message.NewMessage(id, payload)
	msg.Metadata[event.MetaType] = string(e.Type)
	msg.Metadata[event.MetaUserID] = e.UserID
	return msg, nil
}

// publish puts msg on topic, counting it accepted or dropped. A refused
// event is returned to the caller as an error, logged (at most once a
// second) and counted: never silently lost. The caller holds b.mu shared.
func (b *Bus) publish(topic string, msg *message.Message, c *counters) error {
	if err := b.pub.Publish(topic, msg); err != nil {
		c.dropped.Add(1)
		b.logDrop(event.Type(msg.Metadata.Get(event.MetaType)), msg.UUID, err)
		if errors.Is(err, transports.ErrQueueFull) {
			return ErrQueueFull
		}
		return fmt.Errorf("bus: event %s not accepted: %w", msg.UUID, err)
	}
	c.accepted.Add(1)
	return nil
}

// Ingest hands an event built by another process to the delivery queue:
// the router's ingest endpoint calls it with the message watermill-http
// rebuilt (UUID = event id, metadata event_type and user_id set from the
// validated envelope). Errors as for Emit.
func (b *Bus) Ingest(msg *message.Message) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	c := b.stats.of(msg.Metadata.Get(event.MetaType))
	if !b.publishes {
		c.accepted.Add(1)
		c.filtered.Add(1)
		return nil
	}
	return b.publish(Topic, msg, c)
}

// Incoming publishes an event another system sent to the router's POST
// /webhooks/memory on IncomingTopic, for integrators' handlers. It is never
// delivered as an outgoing webhook. Errors as for Emit.
func (b *Bus) Incoming(msg *message.Message) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if err := b.pub.Publish(IncomingTopic, msg); err != nil {
		if errors.Is(err, transports.ErrQueueFull) {
			return ErrQueueFull
		}
		return fmt.Errorf("bus: %w", err)
	}
	return nil
}

// Outcome is what became of one event sent with Send.
type Outcome struct {
	ID        string        `json:"id"`
	Delivered bool          `json:"delivered"`
	Filtered  bool          `json:"filtered"`
	Poisoned  bool          `json:"poisoned"`
	Status    int           `json:"status"` // the receiver's last answer; 0 if none
	Attempts  int           `json:"attempts"`
	Error     string        `json:"error,omitempty"`
	Took      time.Duration `json:"took_ns"`
}

type outcomeKey struct{}

func outcomeFrom(msg *message.Message) *Outcome {
	o, _ := msg.Context().Value(outcomeKey{}).(*Outcome)
	return o
}

// Send runs e through the delivery chain of the default endpoint (or,
// without one, the first of Config.Endpoints) now, in the calling goroutine,
// bypassing the queue, and returns what became of it: delivered, filtered or
// poisoned (then also published to the poison topic), with the receiver's
// status and the attempts. It waits for every retry; ctx bounds it. The
// router's /webhooks/memory/test and `memhook emit` use it. It returns
// ErrNotDelivering on a bus that hands events to other processes (transport
// http, redis without WithDelivery, a pub/sub without a subscribe func),
// and the errors of Emit. Without a webhook URL the event is filtered.
func (b *Bus) Send(ctx context.Context, e event.Event) (Outcome, error) {
	if !b.transport.Delivers() {
		return Outcome{}, ErrNotDelivering
	}
	msg, err := b.message(e)
	if err != nil {
		return Outcome{}, err
	}
	c := b.stats.of(string(e.Type))
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return Outcome{}, ErrClosed
	}
	out := &Outcome{ID: msg.UUID}
	c.accepted.Add(1)
	r := b.first()
	if r == nil {
		b.forward.stats.of(string(e.Type)).filtered.Add(1)
		out.Filtered = true
		return *out, nil
	}
	start := time.Now()
	msg.SetContext(context.WithValue(ctx, outcomeKey{}, out))
	v := r.acquire()
	_, err = v.send(msg)
	v.inflight.Done()
	out.Took = time.Since(start)
	if err != nil && out.Error == "" {
		out.Error = err.Error()
	}
	return *out, err
}

// logDrop logs a refused event at WARN, at most once a second, with the
// total so far, so that a full queue or a Redis outage cannot flood the
// log.
func (b *Bus) logDrop(t event.Type, id string, cause error) {
	now := time.Now().UnixNano()
	last := b.lastDropLog.Load()
	if now-last < int64(time.Second) || !b.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn("memhook: event not accepted, returned to the caller",
		"event", t, "id", id, "error", cause.Error(), "dropped_total", b.Stats().Dropped)
}

// Close stops accepting events, waits until every accepted event is
// delivered, filtered or poisoned, then stops the router. If ctx ends first
// it cancels the deliveries in flight and returns an *UndeliveredError
// listing every event left. Close is idempotent and safe from several
// goroutines: later calls wait for the first and return its result.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		b.closeErr = b.close(ctx)
		if b.logOut != nil {
			_ = b.logOut.Close() // every line out before Close returns
		}
	})
	return b.closeErr
}

func (b *Bus) close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	drainErr := b.transport.Drain(ctx)
	if b.stopRun != nil {
		// Before the transport ends the subscriptions: Watermill then sees
		// a router closing, not handlers that stopped on their own (which
		// it logs at ERROR).
		b.stopRun()
	}
	left, err := b.transport.Close()
	errs := b.stopRouter()
	if err != nil {
		errs = append(errs, err)
	}
	if drainErr != nil || len(left) > 0 {
		ue := &UndeliveredError{Cause: drainErr}
		delivery := map[string]*sink{Topic: b.forward, RetryTopic: b.forward}
		if r := b.first(); r != nil {
			delivery[Topic] = r.sink // which endpoints an event was left for is not known
		}
		topics := []string{Topic, RetryTopic}
		for _, r := range b.routes {
			if r.retryTopic != RetryTopic {
				topics = append(topics, r.retryTopic)
			}
			delivery[r.retryTopic] = r.sink
		}
		for _, topic := range append(topics, PoisonTopic, IncomingTopic) {
			for _, msg := range left[topic] {
				ue.Events = append(ue.Events, Undelivered{
					ID: msg.UUID, Type: event.Type(msg.Metadata.Get(event.MetaType)), Topic: topic, Payload: msg.Payload,
				})
				if k := delivery[topic]; k != nil {
					k.stats.of(msg.Metadata.Get(event.MetaType)).undelivered.Add(1)
				}
			}
		}
		if len(ue.Events) > 0 {
			if ue.Cause == nil {
				ue.Cause = errors.New("shutdown")
			}
			b.log.Error("memhook: events undelivered at close", "count", len(ue.Events), "cause", ue.Cause)
			errs = append(errs, ue)
		}
	}
	return errors.Join(errs...)
}

// stopRouter closes the router (waiting for the handlers running, up to its
// close timeout) and the delivery handler.
func (b *Bus) stopRouter() []error {
	var errs []error
	if b.router != nil {
		if err := b.router.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bus: closing router: %w", err))
		}
		if err := <-b.runErr; err != nil {
			errs = append(errs, fmt.Errorf("bus: router: %w", err))
		}
		b.router = nil
	}
	return append(errs, b.closeRoutes()...)
}

// Config returns the effective configuration, defaults applied. It holds
// the token and secret: never print it.
func (b *Bus) Config() Config { return b.cfg }

// WebhookURL returns the URL of the default endpoint (or, without one,
// of the first endpoint) with credentials and query redacted (on
// transport http: the router's ingest URL, where this bus sends).
func (b *Bus) WebhookURL() string {
	if r := b.first(); r != nil {
		return *r.url.Load()
	}
	return b.url
}

// Enabled reports whether this bus sends webhooks itself: the transport
// delivers here and some endpoint selects some event.
func (b *Bus) Enabled() bool {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	for _, r := range b.routes {
		if r.version().events != event.NoTypes {
			return true
		}
	}
	return false
}

// Events returns the events selected for delivery by the default
// endpoint (MEM0_WEBHOOK_EVENTS), or by the first endpoint without one.
func (b *Bus) Events() event.Set {
	if r := b.first(); r != nil {
		return r.version().events
	}
	events, _ := event.ParseSet(b.cfg.Events) // validated in New
	return events
}

// first is the default endpoint's route, or the first route; nil when
// this process delivers to none.
func (b *Bus) first() *route {
	b.routesMu.RLock()
	defer b.routesMu.RUnlock()
	if len(b.routes) == 0 {
		return nil
	}
	return b.routes[0]
}

// ErrNotReady is returned by Ready while the transport is not connected.
var ErrNotReady = errors.New("bus: not ready")

// Ready reports whether the transport is connected and every subscription
// of this process has joined: always on the memory and http transports
// (the queue is in-process); on Redis, whether Redis answers and, with
// WithDelivery, whether the delivery subscription has joined its group.
func (b *Bus) Ready(ctx context.Context) error {
	if err := b.transport.Ready(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}
