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
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/wmlog"
	"github.com/memhook/memhook/middleware"
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
const Topic = "memory.events"

// PoisonTopic is where events that failed for good are published.
const PoisonTopic = middleware.PoisonTopic

// IncomingTopic carries the events other systems POST to the router's
// /webhooks/memory. They are never sent out again as webhooks.
const IncomingTopic = "memory.incoming"

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
	cfg    Config
	events event.Set
	log    *slog.Logger
	url    string // WebhookURL redacted, for logs and status

	secrets []verify.Secret // parsed from Config.Secret
	stats   *stats
	opts    options

	mem     *transports.Memory       // the in-process queue; nil when Emit writes to Redis
	redis   *redisState              // the Redis transport; nil otherwise
	pub     message.Publisher        // where Emit publishes
	router  *message.Router          // nil when this process runs no handler
	deliver *handlers.Deliver        // delivers webhooks, or forwards one event to the router
	batch   *handlers.BatchForwarder // transport http: forwards batches to the router
	handle  message.HandlerFunc
	runErr  chan error
	stopRun context.CancelFunc
	webhook bool // this process delivers webhooks: URL set and some event selected
	forward bool // transport http: events go to the router process

	mu     sync.RWMutex // Emit holds it shared; Close exclusively, to set closed
	closed bool

	closeOnce sync.Once
	closeErr  error

	lastDropLog atomic.Int64
}

// New validates cfg, applies its defaults and starts what the transport
// needs in this process:
//
//   - "memory": the in-process queue and the router that delivers from it.
//     With WebhookURL empty, or Events "none", webhooks are off: Emit
//     accepts and counts events and sends nothing.
//   - "http": the in-process queue and a router that forwards every event to
//     the `memhook serve` process at RouterURL, retrying with backoff while
//     it is down; the router process delivers.
//   - "redis": a publisher: Emit appends to the stream. With WithDelivery
//     (and a WebhookURL) also the router that joins the consumer group and
//     delivers, started once Redis answers (Ready reports until then).
func New(cfg Config, opts ...Option) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	events, _ := event.ParseSet(cfg.Events) // validated above
	var secrets []verify.Secret
	if cfg.Secret != "" {
		secrets, _ = verify.ParseSecrets(cfg.Secret) // validated above
	}
	b := &Bus{
		cfg:     cfg,
		events:  events,
		log:     o.logger,
		stats:   newStats(),
		opts:    o,
		runErr:  make(chan error, 1),
		url:     handlers.RedactURL(cfg.WebhookURL),
		secrets: secrets,
	}
	wlog := wmlog.New(b.log, slog.LevelDebug) // the router's own chatter below INFO
	switch cfg.Transport {
	case TransportMemory:
		b.webhook = cfg.WebhookURL != "" && events != event.NoTypes
		if !b.webhook {
			b.log.Info("memhook: webhooks are off; events are counted, not sent",
				"url_set", cfg.WebhookURL != "", "events", events.String())
		}
	case TransportHTTP:
		b.forward = true
		b.url = handlers.RedactURL(cfg.routerURL(IngestPath)) // where this bus sends
	case TransportRedis:
		// Even with every event filtered out (MEM0_WEBHOOK_EVENTS=none) a
		// delivering process consumes the stream, acknowledging each entry
		// as filtered: otherwise it would grow until MEMHOOK_REDIS_MAXLEN
		// refuses applications' events.
		b.webhook = o.deliver && cfg.WebhookURL != ""
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedTransport, cfg.Transport)
	}
	if cfg.Transport == TransportRedis {
		if err := b.startRedis(wlog); err != nil {
			return nil, err
		}
		return b, nil
	}
	mem, err := transports.NewMemory(transports.MemoryConfig{
		Capacity: cfg.QueueCapacity,
		Workers:  cfg.Concurrency,
		Logger:   wlog,
	})
	if err != nil {
		return nil, err
	}
	b.mem, b.pub = mem, mem
	if err := b.start(wlog, mem); err != nil {
		mem.Shutdown()
		return nil, err
	}
	return b, nil
}

// start builds and runs the router over sub: delivery (or forwarding)
// from the events topic and, on the memory transport, consumers of the
// poison and incoming topics (on Redis those stay on their streams).
func (b *Bus) start(wlog watermill.LoggerAdapter, sub message.Subscriber) error {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	target := b.cfg.WebhookURL
	if b.forward {
		target = b.cfg.routerURL(IngestPath)
	}
	if b.webhook || b.forward {
		b.deliver, err = handlers.NewDeliver(handlers.DeliverConfig{
			URL:          target,
			Timeout:      b.cfg.Timeout,
			MaxIdleConns: b.cfg.Concurrency,
			Transport:    b.opts.transport,
			OnDelivered:  b.onDelivered,
			Logger:       wlog,
		})
		if err != nil {
			return err
		}
	}
	switch {
	case b.webhook:
		chain := b.Chain(b.pub, b.opts.middleware...)
		router.AddConsumerHandler("memhook.deliver", Topic, sub, b.deliver.Handle).AddMiddleware(chain...)
		b.handle = compose(chain, b.deliver.Handle)
	case b.forward:
		fwd := b.forwarder()
		single := compose([]message.HandlerMiddleware{fwd.Middleware}, b.deliver.Handle)
		b.batch, err = handlers.NewBatchForwarder(handlers.BatchForwarderConfig{
			URL:     b.cfg.routerURL(IngestBatchPath),
			Headers: fwd.Headers,
			Single: func(msg *message.Message) error {
				_, err := single(msg)
				return err
			},
			Timeout:     b.cfg.Timeout,
			Transport:   b.opts.transport,
			OnDelivered: b.onDelivered,
			Logger:      wlog,
		})
		if err != nil {
			return err
		}
		router.AddConsumerHandler("memhook.forward", Topic, sub, b.batch.Handle).AddMiddleware(b.forwardChain()...)
	}
	if b.mem != nil {
		poison := b.opts.poison
		if poison == nil {
			poison = func(*message.Message) error { return nil } // logged and counted by the chain
		}
		router.AddConsumerHandler("memhook.poison", PoisonTopic, b.mem, poison)
		incoming := b.opts.incoming
		if incoming == nil {
			incoming = func(msg *message.Message) error {
				b.log.Info("memhook: incoming event", "event", msg.Metadata.Get(event.MetaType), "id", msg.UUID,
					"user_id", msg.Metadata.Get(event.MetaUserID))
				return nil
			}
		}
		router.AddConsumerHandler("memhook.incoming", IncomingTopic, b.mem, incoming)
	}
	for _, f := range b.opts.routerSetup {
		if err := f(router); err != nil {
			return err
		}
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	b.router, b.stopRun = router, stopRun
	go func() { b.runErr <- router.Run(runCtx) }()
	select {
	case <-router.Running():
		return nil
	case err := <-b.runErr:
		stopRun()
		return fmt.Errorf("bus: router did not start: %w", err)
	}
}

// compose wraps h in chain, outermost first, as the router does.
func compose(chain []message.HandlerMiddleware, h message.NoPublishHandlerFunc) message.HandlerFunc {
	out := func(msg *message.Message) ([]*message.Message, error) { return nil, h(msg) }
	for i := len(chain) - 1; i >= 0; i-- {
		out = chain[i](out)
	}
	return out
}

// Chain returns the delivery chain as the bus builds it, outermost first:
// recoverer, poison queue (publishing to poison on PoisonTopic), filter,
// extra, retry, signer. Put it before a deliver handler; it is exported so
// that the router process and tests build exactly the same chain.
func (b *Bus) Chain(poison message.Publisher, extra ...message.HandlerMiddleware) []message.HandlerMiddleware {
	legacy := ""
	if !b.cfg.DisableLegacySecretHeader && len(b.secrets) > 0 {
		legacy = firstSecret(b.cfg.Secret)
	}
	retry := b.cfg.retry()
	retry.OnRetry = b.onRetry
	chain := []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: poison, Topic: PoisonTopic, OnPoisoned: b.onPoisoned}.Middleware,
		middleware.Filter{Events: b.events, OnFiltered: b.onFiltered}.Middleware,
	}
	chain = append(chain, extra...)
	return append(chain,
		retry.Middleware,
		middleware.Signer{
			Token:        b.cfg.Token,
			LegacySecret: legacy,
			Secrets:      b.secrets,
			UserAgent:    "memhook/" + Version,
		}.Middleware,
	)
}

// forwardChain is the chain of transport "http": hand each event to the
// router process (batched, see handlers.BatchForwarder), retrying with
// backoff (at most RetryDelay × 2ⁿ capped at forwardMaxInterval) for as
// long as the bus runs; a permanent refusal (401, 413, 422 …) poisons the
// event locally, logged at ERROR.
func (b *Bus) forwardChain() []message.HandlerMiddleware {
	return []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: b.mem, Topic: PoisonTopic, OnPoisoned: b.onPoisoned}.Middleware,
		middleware.Retry{
			MaxRetries:      math.MaxInt32,
			InitialInterval: b.cfg.RetryDelay,
			MaxInterval:     forwardMaxInterval,
			MaxRetryAfter:   b.cfg.MaxRetryAfter,
			OnRetry:         b.onRetry,
		}.Middleware,
	}
}

// forwarder sets the headers of requests to the router: ingest token and
// signature.
func (b *Bus) forwarder() middleware.Forward {
	var ingestSecrets []verify.Secret
	if b.cfg.IngestSecret != "" {
		ingestSecrets, _ = verify.ParseSecrets(b.cfg.IngestSecret) // validated in New
	}
	return middleware.Forward{Token: b.cfg.IngestToken, Secrets: ingestSecrets, UserAgent: "memhook/" + Version}
}

// forwardMaxInterval caps the wait between two tries to reach the router.
const forwardMaxInterval = 10 * time.Second

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
	if !b.publishes() {
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

// publishes reports whether Emit hands events on: to the in-process
// delivery queue, to a router (http) or to the Redis stream. On the memory
// transport with webhooks off it does not: events are only counted.
func (b *Bus) publishes() bool { return b.webhook || b.forward || b.redis != nil }

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
	if !b.publishes() {
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

// Send runs e through the delivery chain now, in the calling goroutine,
// bypassing the queue, and returns what became of it: delivered, filtered or
// poisoned (then also published to the poison topic), with the receiver's
// status and the attempts. It waits for every retry; ctx bounds it. The
// router's /webhooks/memory/test and `memhook emit` use it. It returns
// ErrNotDelivering on a bus that hands events to other processes (transport
// http, or redis without WithDelivery), and the errors of Emit.
func (b *Bus) Send(ctx context.Context, e event.Event) (Outcome, error) {
	if b.forward || (b.redis != nil && !b.opts.deliver) {
		return Outcome{}, ErrNotDelivering
	}
	if b.redis != nil && b.webhook {
		// The chain is built once Redis answers (startRedis); reading
		// started under the lock orders that write before our read.
		b.redis.mu.Lock()
		started := b.redis.started
		b.redis.mu.Unlock()
		if !started {
			return Outcome{}, fmt.Errorf("%w: delivery router not started yet", ErrNotReady)
		}
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
	if !b.webhook {
		c.filtered.Add(1)
		out.Filtered = true
		return *out, nil
	}
	start := time.Now()
	msg.SetContext(context.WithValue(ctx, outcomeKey{}, out))
	_, err = b.handle(msg)
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
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	return b.closeErr
}

func (b *Bus) close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	if b.redis != nil {
		return b.closeRedis()
	}
	if b.router == nil {
		return nil
	}
	drainErr := b.mem.Drain(ctx, Topic, PoisonTopic, IncomingTopic)
	b.stopRun() // before Shutdown ends the subscriptions: else the router logs "All handlers stopped" at ERROR
	left := b.mem.Shutdown()
	errs := b.stopRouter()
	if drainErr != nil || len(left) > 0 {
		ue := &UndeliveredError{Cause: drainErr}
		for _, topic := range []string{Topic, PoisonTopic, IncomingTopic} {
			for _, msg := range left[topic] {
				ue.Events = append(ue.Events, Undelivered{
					ID: msg.UUID, Type: event.Type(msg.Metadata.Get(event.MetaType)), Topic: topic, Payload: msg.Payload,
				})
				if topic == Topic {
					b.stats.of(msg.Metadata.Get(event.MetaType)).undelivered.Add(1)
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
	}
	if b.batch != nil {
		_ = b.batch.Close() // never fails
	}
	if b.deliver != nil {
		if err := b.deliver.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Config returns the effective configuration, defaults applied. It holds
// the token and secret: never print it.
func (b *Bus) Config() Config { return b.cfg }

// WebhookURL returns the webhook URL with credentials and query redacted
// (on transport http: the router's ingest URL, where this bus sends).
func (b *Bus) WebhookURL() string { return b.url }

// Enabled reports whether this bus sends webhooks itself: the transport
// delivers here, the URL is set and some event is selected.
func (b *Bus) Enabled() bool { return b.webhook && b.events != event.NoTypes }

// Events returns the events selected for delivery (MEM0_WEBHOOK_EVENTS).
func (b *Bus) Events() event.Set { return b.events }
