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
	"net/http"
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
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// Version is memhook's version, sent in the User-Agent header.
const Version = "0.1.0"

// Topic is the Watermill topic memory events travel on.
const Topic = "memory.events"

// PoisonTopic is where events that failed for good are published.
const PoisonTopic = middleware.PoisonTopic

// Errors returned by Emit and Close.
var (
	// ErrQueueFull is returned by Emit when the in-memory queue holds
	// QueueCapacity events: the event was not accepted (and is counted as
	// dropped). Emit returns it at once.
	ErrQueueFull = errors.New("bus: queue is full, event dropped")
	// ErrClosed is returned by Emit after Close has begun.
	ErrClosed = errors.New("bus: closed")
	// ErrUnsupportedTransport is returned by New for a transport this build
	// cannot run embedded.
	ErrUnsupportedTransport = errors.New("bus: transport not supported")
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

// Option changes how New builds a Bus.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	middleware []message.HandlerMiddleware
	poison     message.NoPublishHandlerFunc
	transport  http.RoundTripper
}

// WithLogger sends the bus's logs (and watermill's) to l; the default is
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithMiddleware inserts integrators' middleware into the delivery chain,
// after the filter and before retry: it sees only events that will be
// delivered, runs once per event (not per attempt), and may change the
// message (its payload, its metadata) or fail it (the error goes to the
// poison queue, without retry). Several calls append in order.
func WithMiddleware(m ...message.HandlerMiddleware) Option {
	return func(o *options) { o.middleware = append(o.middleware, m...) }
}

// WithPoisonHandler consumes the poison topic: h gets every event that
// failed for good, with the reason (middleware.PoisonReasonKey), the last
// status and the attempts in metadata. An error from h nacks the message,
// which comes back after a delay. Without it, poisoned events are logged and
// counted, then dropped.
func WithPoisonHandler(h message.NoPublishHandlerFunc) Option {
	return func(o *options) { o.poison = h }
}

// WithHTTPTransport sets the RoundTripper under the delivery client (TLS
// settings, a proxy); the default is a clone of http.DefaultTransport.
func WithHTTPTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.transport = rt }
}

// Bus accepts memory events and delivers them as webhooks. It is safe for
// concurrent use.
type Bus struct {
	cfg    Config
	events event.Set
	log    *slog.Logger
	stats  *stats

	mem     *transports.Memory
	router  *message.Router
	deliver *handlers.Deliver
	runErr  chan error
	webhook bool // webhooks on: URL set and some event selected

	mu     sync.RWMutex // Emit holds it shared; Close exclusively, to set closed
	closed bool

	closeOnce sync.Once
	closeErr  error

	lastDropLog atomic.Int64
}

// New validates cfg, applies its defaults and starts the in-process router
// on the in-memory transport. With WebhookURL empty, or Events "none",
// webhooks are off: Emit accepts and counts events and sends nothing.
func New(cfg Config, opts ...Option) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Transport != TransportMemory {
		return nil, fmt.Errorf("%w: %q (only %q runs embedded in this version)", ErrUnsupportedTransport, cfg.Transport, TransportMemory)
	}
	events, _ := event.ParseSet(cfg.Events) // validated above
	b := &Bus{
		cfg:    cfg,
		events: events,
		log:    o.logger,
		stats:  newStats(),
		runErr: make(chan error, 1),
	}
	b.webhook = cfg.WebhookURL != "" && events != event.NoTypes
	if !b.webhook {
		b.log.Info("memhook: webhooks are off; events are counted, not sent",
			"url_set", cfg.WebhookURL != "", "events", events.String())
		return b, nil
	}
	if err := b.start(o); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bus) start(o options) error {
	wlog := watermill.NewSlogLoggerWithLevelMapping(b.log, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug, // the router's own chatter
	})
	mem, err := transports.NewMemory(transports.MemoryConfig{
		Capacity: b.cfg.QueueCapacity,
		Workers:  b.cfg.Concurrency,
		Logger:   wlog,
	})
	if err != nil {
		return err
	}
	deliver, err := handlers.NewDeliver(handlers.DeliverConfig{
		URL:          b.cfg.WebhookURL,
		Timeout:      b.cfg.Timeout,
		MaxIdleConns: b.cfg.Concurrency,
		Transport:    o.transport,
		OnDelivered:  b.onDelivered,
		Logger:       wlog,
	})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	h := router.AddConsumerHandler("memhook.deliver", Topic, mem, deliver.Handle)
	h.AddMiddleware(b.Chain(mem, o.middleware...)...)

	poison := o.poison
	if poison == nil {
		poison = func(*message.Message) error { return nil }
	}
	router.AddConsumerHandler("memhook.poison", PoisonTopic, mem, poison)

	b.mem, b.router, b.deliver = mem, router, deliver
	go func() { b.runErr <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
		return nil
	case err := <-b.runErr:
		mem.Shutdown()
		return fmt.Errorf("bus: router did not start: %w", err)
	}
}

// Chain returns the delivery chain as the bus builds it, outermost first:
// recoverer, poison queue (publishing to poison on PoisonTopic), filter,
// extra, retry, signer. Put it before a deliver handler; it is exported so
// that the router process and tests build exactly the same chain.
func (b *Bus) Chain(poison message.Publisher, extra ...message.HandlerMiddleware) []message.HandlerMiddleware {
	legacy := ""
	if !b.cfg.DisableLegacySecretHeader {
		legacy = b.cfg.Secret
	}
	retries := b.cfg.RetryCount
	if retries == Disabled {
		retries = middleware.NoRetries
	}
	chain := []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: poison, Topic: PoisonTopic, OnPoisoned: b.onPoisoned}.Middleware,
		middleware.Filter{Events: b.events, OnFiltered: b.onFiltered}.Middleware,
	}
	chain = append(chain, extra...)
	return append(chain,
		middleware.Retry{
			MaxRetries:      retries,
			InitialInterval: b.cfg.RetryDelay,
			MaxRetryAfter:   b.cfg.MaxRetryAfter,
			OnRetry:         b.onRetry,
		}.Middleware,
		middleware.Signer{
			Token:        b.cfg.Token,
			LegacySecret: legacy,
			UserAgent:    "memhook/" + Version,
		}.Middleware,
	)
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
	id := uuid.NewString()
	payload, err := event.Encode(e, event.Meta{ID: id, Time: time.Now(), Source: b.cfg.Source, BotVersion: b.cfg.BotVersion})
	if err != nil {
		b.stats.invalid.Add(1)
		return err
	}
	c := b.stats.of(string(e.Type))
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if !b.webhook {
		c.accepted.Add(1)
		c.filtered.Add(1)
		return nil
	}
	msg := message.NewMessage(id, payload)
	msg.Metadata[event.MetaType] = string(e.Type)
	msg.Metadata[event.MetaUserID] = e.UserID
	if err := b.mem.Publish(Topic, msg); err != nil {
		if errors.Is(err, transports.ErrQueueFull) {
			c.dropped.Add(1)
			b.logDrop(e.Type, id)
			return ErrQueueFull
		}
		return fmt.Errorf("bus: %w", err)
	}
	c.accepted.Add(1)
	return nil
}

// logDrop logs a dropped event at WARN, at most once a second, with the
// total so far, so that a full queue cannot flood the log.
func (b *Bus) logDrop(t event.Type, id string) {
	now := time.Now().UnixNano()
	last := b.lastDropLog.Load()
	if now-last < int64(time.Second) || !b.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn("memhook: queue full, event dropped",
		"event", t, "id", id, "queue_capacity", b.cfg.QueueCapacity, "dropped_total", b.Stats().Dropped)
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
	if b.router == nil {
		return nil
	}
	drainErr := b.mem.Drain(ctx, Topic, PoisonTopic)
	left := b.mem.Shutdown()
	var errs []error
	if err := b.router.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bus: closing router: %w", err))
	}
	if err := <-b.runErr; err != nil {
		errs = append(errs, fmt.Errorf("bus: router: %w", err))
	}
	if err := b.deliver.Close(); err != nil {
		errs = append(errs, err)
	}
	if drainErr != nil || len(left) > 0 {
		ue := &UndeliveredError{Cause: drainErr}
		for _, topic := range []string{Topic, PoisonTopic} {
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

// Config returns the effective configuration, defaults applied. It holds
// the token and secret: never print it.
func (b *Bus) Config() Config { return b.cfg }

// WebhookURL returns the webhook URL with credentials and query redacted.
func (b *Bus) WebhookURL() string { return handlers.RedactURL(b.cfg.WebhookURL) }
