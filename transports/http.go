package transports

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redact"
	"github.com/memhook/memhook/internal/wmlog"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/verify"
)

// Limits of HTTPConfig; its defaults are middleware's.
const (
	// HTTPMaxRetryInterval caps the wait between two tries to reach the
	// router.
	HTTPMaxRetryInterval = 10 * time.Second
)

// HTTPConfig configures NewHTTP, the application side of transport "http".
type HTTPConfig struct {
	// RouterURL is the base URL of the `memhook serve` router; required.
	// Events go to RouterURL + event.IngestBatchPath, one alone to
	// RouterURL + event.IngestPath.
	RouterURL string
	// Token, when set, is sent as the router's ingest bearer token.
	Token string
	// Secrets, when set, sign each request the Standard Webhooks way.
	Secrets []verify.Secret
	// UserAgent of the requests; empty means "memhook".
	UserAgent string
	// Timeout bounds one request; 0 means middleware.DefaultAttemptTimeout.
	Timeout time.Duration
	// RetryDelay is the first wait before an event is sent again, doubled
	// after each failure up to HTTPMaxRetryInterval; 0 means
	// middleware.DefaultInitialInterval. Events are tried again for as
	// long as the transport runs.
	RetryDelay time.Duration
	// MaxRetryAfter caps the router's Retry-After; 0 means
	// middleware.DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Memory configures the in-process queue events wait in.
	Memory MemoryConfig
	// EventsTopic is the topic whose messages go to the router; empty
	// means DefaultEventsTopic. PoisonTopic is where an event the router
	// refused for good goes, in this process; empty means
	// DefaultPoisonTopic.
	EventsTopic, PoisonTopic string
	// Transport is the base RoundTripper; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// OnDelivered, OnRetry and OnPoisoned, if set, are called when the
	// router took an event, when sending it failed and is tried again,
	// and when the router refused it for good (it is then published to
	// PoisonTopic).
	OnDelivered func(msg *message.Message, status, attempt int, took time.Duration)
	OnRetry     func(msg *message.Message, attempt int, delay time.Duration, err error)
	OnPoisoned  func(msg *message.Message, err error)
	// Logger; nil means none.
	Logger *slog.Logger
}

func (c *HTTPConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = middleware.DefaultAttemptTimeout
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = middleware.DefaultInitialInterval
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = middleware.DefaultMaxRetryAfter
	}
	if c.EventsTopic == "" {
		c.EventsTopic = DefaultEventsTopic
	}
	if c.PoisonTopic == "" {
		c.PoisonTopic = DefaultPoisonTopic
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem at once; the URL is shown redacted.
func (c HTTPConfig) Validate() error {
	var errs []error
	if err := redact.ValidateHTTPURL(c.RouterURL); err != nil {
		errs = append(errs, fmt.Errorf("http transport: RouterURL: %w", err))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Timeout", c.Timeout}, {"RetryDelay", c.RetryDelay}, {"MaxRetryAfter", c.MaxRetryAfter}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("http transport: %s must not be negative, got %s", f.name, f.d))
		}
	}
	if c.EventsTopic != "" && c.EventsTopic == c.PoisonTopic {
		errs = append(errs, fmt.Errorf("http transport: EventsTopic and PoisonTopic must differ, both are %q", c.EventsTopic))
	}
	return errors.Join(errs...)
}

// HTTP is the Transport of an application that hands its events to a
// `memhook serve` router over HTTP (transport "http"): Publish puts them
// in an in-process queue (a Memory) and a forwarder sends them to the
// router in batches (see BatchForwarder), trying again with backoff while
// the router is down or busy, for as long as the transport runs. An event
// the router refuses for good (401, 413, 422 …) is published to
// PoisonTopic in the same queue, for the bus's poison handler. This process
// delivers no webhook: Delivers is false; Subscriber serves the local
// poison topic.
type HTTP struct {
	cfg     HTTPConfig
	mem     *Memory
	batch   *BatchForwarder
	client  *http.Client
	fwd     Forward
	router  *message.Router
	runErr  chan error
	stopRun context.CancelFunc

	closeOnce sync.Once
	left      Left
	closeErr  error
}

var (
	_ Transport = (*HTTP)(nil)
	_ Depth     = (*HTTP)(nil)
)

// NewHTTP validates cfg and starts the queue and the forwarder.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wlog := wmlog.New(cfg.Logger, slog.LevelDebug)
	if cfg.Memory.Logger == nil {
		cfg.Memory.Logger = wlog
	}
	mem, err := NewMemory(cfg.Memory)
	if err != nil {
		return nil, err
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	t := &HTTP{
		cfg: cfg,
		mem: mem,
		client: &http.Client{Transport: base, Timeout: cfg.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		fwd:    Forward{Token: cfg.Token, Secrets: cfg.Secrets, UserAgent: cfg.UserAgent},
		runErr: make(chan error, 1),
	}
	root := strings.TrimSuffix(cfg.RouterURL, "/")
	t.batch, err = NewBatchForwarder(BatchForwarderConfig{
		URL:         root + event.IngestBatchPath,
		Headers:     t.fwd.Headers,
		Single:      func(msg *message.Message) error { return t.sendAlone(root+event.IngestPath, msg) },
		Timeout:     cfg.Timeout,
		Transport:   cfg.Transport,
		OnDelivered: cfg.OnDelivered,
		Logger:      wlog,
	})
	if err != nil {
		mem.Shutdown()
		return nil, err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		mem.Shutdown()
		_ = t.batch.Close()
		return nil, err
	}
	router.AddConsumerHandler("memhook.forward", cfg.EventsTopic, mem.Subscriber("memhook.forward"), t.batch.Handle).AddMiddleware(
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: mem, Topic: cfg.PoisonTopic, OnPoisoned: cfg.OnPoisoned}.Middleware,
		middleware.Retry{
			MaxRetries:      math.MaxInt32,
			InitialInterval: cfg.RetryDelay,
			MaxInterval:     HTTPMaxRetryInterval,
			MaxRetryAfter:   cfg.MaxRetryAfter,
			OnRetry:         cfg.OnRetry,
		}.Middleware,
	)
	t.router = router
	ctx, stop := context.WithCancel(context.Background())
	t.stopRun = stop
	go func() { t.runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
		return t, nil
	case err := <-t.runErr:
		stop()
		mem.Shutdown()
		_ = t.batch.Close()
		return nil, fmt.Errorf("http transport: forwarder did not start: %w", err)
	}
}

// sendAlone POSTs msg alone to url (the router's event.IngestPath).
func (t *HTTP) sendAlone(target string, msg *message.Message) error {
	hd, err := t.fwd.MessageHeaders(msg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(msg.Context(), http.MethodPost, target, bytes.NewReader(msg.Payload))
	if err != nil {
		return err
	}
	req.Header = hd
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redact.URL(target)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &middleware.StatusError{
			Code:       resp.StatusCode,
			RetryAfter: middleware.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	if t.cfg.OnDelivered != nil {
		t.cfg.OnDelivered(msg, resp.StatusCode, middleware.AttemptFromContext(msg.Context()), time.Since(start))
	}
	return nil
}

// Publisher returns the in-process queue.
func (t *HTTP) Publisher() message.Publisher { return t.mem }

// Subscriber returns a subscriber of group on the in-process queue: for
// the local poison topic (the events topic is the forwarder's).
func (t *HTTP) Subscriber(group string) (message.Subscriber, error) {
	return t.mem.Subscriber(group), nil
}

// Delivers is false: the router process delivers.
func (t *HTTP) Delivers() bool { return false }

// Ready is nil: events wait in the queue while the router is down.
func (t *HTTP) Ready(context.Context) error { return nil }

// Drain waits until every event was taken by the router, or poisoned and
// handled, or ctx ends.
func (t *HTTP) Drain(ctx context.Context) error { return t.mem.Drain(ctx) }

// Close cancels the requests in flight, stops the forwarder and returns
// the events never taken by the router. Later calls return the first
// call's result.
func (t *HTTP) Close() (Left, error) {
	t.closeOnce.Do(func() {
		t.stopRun() // a close, not "all handlers stopped" (logged at ERROR) when the queue ends
		t.left = t.mem.Shutdown()
		var errs []error
		if err := t.router.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := <-t.runErr; err != nil {
			errs = append(errs, err)
		}
		_ = t.batch.Close()
		t.client.CloseIdleConnections()
		t.closeErr = errors.Join(errs...)
	})
	return t.left, t.closeErr
}

// Queued implements Depth.
func (t *HTTP) Queued(topic string) int { return t.mem.Queued(topic) }

// Outstanding implements Depth.
func (t *HTTP) Outstanding(topic string) int { return t.mem.Outstanding(topic) }
