package transports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redact"
	"github.com/memhook/memhook/middleware"
)

// BatchForwarderConfig configures a BatchForwarder.
type BatchForwarderConfig struct {
	// URL is the router's batch endpoint (…/ingest/batch); required.
	URL string
	// Headers returns the headers of one request from its id and body
	// (middleware.Forward.Headers: token, signature); required.
	Headers func(id string, body []byte) http.Header
	// Single sends one message in a request of its own (POST /ingest);
	// required. It is used for every message when the router has no batch
	// endpoint (404, 405: an older memhook), and for the messages of a
	// batch the router refuses as a whole (400, 413, 415, 422), so that
	// only a bad event fails.
	Single func(*message.Message) error
	// Timeout bounds one batch request; 0 means
	// middleware.DefaultAttemptTimeout.
	Timeout time.Duration
	// MaxEvents caps the events of one batch; 0 means 256, and at most
	// event.MaxBatchEvents.
	MaxEvents int
	// MaxBytes caps the body of one batch; 0 means 512 KiB (the router
	// reads at most 1 MiB). A message larger than that goes alone.
	MaxBytes int
	// InFlight is how many batch requests run at once; 0 means 2.
	InFlight int
	// Transport is the base RoundTripper; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// OnDelivered, if set, is called for each message of a batch the router
	// took, with the status, the message's attempt and the request's
	// duration.
	OnDelivered func(msg *message.Message, status, attempt int, took time.Duration)
	// Logger; nil means none.
	Logger watermill.LoggerAdapter
}

func (c *BatchForwarderConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = middleware.DefaultAttemptTimeout
	}
	if c.MaxEvents <= 0 || c.MaxEvents > event.MaxBatchEvents {
		c.MaxEvents = min(256, event.MaxBatchEvents)
	}
	if c.MaxBytes <= 0 || c.MaxBytes > maxBatchBytes {
		c.MaxBytes = 512 << 10
	}
	if c.InFlight <= 0 {
		c.InFlight = 2
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
}

// maxBatchBytes is the most a batch body may hold: the router reads at
// most 1 MiB of a request.
const maxBatchBytes = 1 << 20

// errSendAlone tells a waiting Handle to send its message alone.
var errSendAlone = errors.New("send alone")

// BatchForwarder hands events to a `memhook serve` router (transport
// "http") several per request. Handle, the router handler, queues its
// message and waits for the answer of the batch that carried it: while
// InFlight batches are out, messages gather into the next one, so a busy
// application sends few requests and an idle one sends each event at once.
// Each message gets its own outcome (the router says how many of a batch
// it took), so Retry and PoisonQueue work per event, as with one request
// per event. Safe for concurrent use.
type BatchForwarder struct {
	cfg      BatchForwarderConfig
	redacted string
	client   *http.Client
	ctx      context.Context
	cancel   context.CancelFunc

	alone atomic.Bool // the router has no batch endpoint

	mu       sync.Mutex
	queue    []*batchItem
	inflight int
	wg       sync.WaitGroup
}

type batchItem struct {
	msg     *message.Message
	attempt int
	done    chan error // buffered: a sender never blocks on it
}

// NewBatchForwarder returns a forwarder for cfg.
func NewBatchForwarder(cfg BatchForwarderConfig) (*BatchForwarder, error) {
	cfg.setDefaults()
	var errs []error
	if err := redact.ValidateHTTPURL(cfg.URL); err != nil {
		errs = append(errs, err)
	}
	if cfg.Headers == nil {
		errs = append(errs, errors.New("batch forwarder: Headers is required"))
	}
	if cfg.Single == nil {
		errs = append(errs, errors.New("batch forwarder: Single is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	base := cfg.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = cfg.InFlight
		base = t
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &BatchForwarder{
		cfg:      cfg,
		redacted: redact.URL(cfg.URL),
		client: &http.Client{Transport: base, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		ctx:    ctx,
		cancel: cancel,
	}, nil
}

// Handle is a message.NoPublishHandlerFunc: it returns nil once the router
// took msg, or the error for msg alone (a *middleware.StatusError, the
// transport error, or what Single returned).
func (f *BatchForwarder) Handle(msg *message.Message) error {
	if f.alone.Load() {
		return f.cfg.Single(msg)
	}
	it := &batchItem{msg: msg, attempt: middleware.AttemptFromContext(msg.Context()), done: make(chan error, 1)}
	f.mu.Lock()
	f.queue = append(f.queue, it)
	f.startLocked()
	f.mu.Unlock()
	select {
	case err := <-it.done:
		if errors.Is(err, errSendAlone) {
			return f.cfg.Single(msg)
		}
		return err
	case <-msg.Context().Done():
		// The batch may still carry it: sent again, the router counts it
		// as a duplicate by its id.
		return msg.Context().Err()
	}
}

// startLocked sends queued messages while fewer than InFlight batches are
// out. The caller holds f.mu.
func (f *BatchForwarder) startLocked() {
	for f.inflight < f.cfg.InFlight && len(f.queue) > 0 {
		n, size := 0, 2 // "[" and "]"
		for n < len(f.queue) && n < f.cfg.MaxEvents {
			add := len(f.queue[n].msg.Payload) + 1
			if n > 0 && size+add > f.cfg.MaxBytes {
				break
			}
			size += add
			n++
		}
		batch := f.queue[:n:n]
		f.queue = f.queue[n:]
		if len(f.queue) == 0 {
			f.queue = nil // let the backing array go
		}
		f.inflight++
		f.wg.Add(1)
		go f.send(batch, size)
	}
}

// traceparents is the HeaderBatchTraceparents of batch: "" when no
// message has a trace context.
func traceparents(batch []*batchItem) string {
	var b strings.Builder
	some := false
	for i, it := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		tp := it.msg.Metadata.Get(event.HeaderTraceparent)
		if tp != "" && !strings.Contains(tp, ",") {
			b.WriteString(tp)
			some = true
		}
	}
	if !some {
		return ""
	}
	return b.String()
}

// send POSTs one batch and gives each message its outcome.
func (f *BatchForwarder) send(batch []*batchItem, size int) {
	defer f.wg.Done()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.startLocked()
		f.mu.Unlock()
	}()
	if len(batch) == 1 && size > f.cfg.MaxBytes {
		batch[0].done <- errSendAlone // too large for a batch; the router says 413 itself
		return
	}
	body := make([]byte, 0, size)
	body = append(body, '[')
	for i, it := range batch {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, it.msg.Payload...)
	}
	body = append(body, ']')

	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.cfg.URL, bytes.NewReader(body))
	if err != nil {
		f.answer(batch, 0, err)
		return
	}
	req.Header = f.cfg.Headers(uuid.NewString(), body)
	if tps := traceparents(batch); tps != "" {
		req.Header.Set(event.HeaderBatchTraceparents, tps)
	}
	start := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = f.redacted
		}
		f.answer(batch, 0, fmt.Errorf("forwarding a batch of %d: %w", len(batch), err))
		return
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	took := time.Since(start)
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		f.delivered(batch, code, took)
		f.answer(batch, len(batch), nil)
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		if !f.alone.Swap(true) {
			f.cfg.Logger.Info("memhook: the router has no batch endpoint (an older memhook?); sending one event per request",
				watermill.LogFields{"url": f.redacted, "status": code})
		}
		f.answer(batch, 0, errSendAlone)
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge ||
		code == http.StatusUnsupportedMediaType || code == http.StatusUnprocessableEntity:
		f.cfg.Logger.Info("memhook: router refused a batch; sending its events one by one",
			watermill.LogFields{"status": code, "events": len(batch), "answer": string(raw)})
		f.answer(batch, 0, errSendAlone)
	default:
		var ans event.BatchAnswer
		_ = json.Unmarshal(raw, &ans) // absent or foreign: nothing was taken
		n := min(max(ans.Accepted, 0), len(batch))
		f.delivered(batch[:n], code, took)
		f.answer(batch, n, &middleware.StatusError{
			Code:       code,
			RetryAfter: middleware.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		})
	}
}

// answer tells the first accepted messages of batch nil and the others
// err.
func (f *BatchForwarder) answer(batch []*batchItem, accepted int, err error) {
	for i, it := range batch {
		if i < accepted {
			it.done <- nil
		} else {
			it.done <- err
		}
	}
}

func (f *BatchForwarder) delivered(batch []*batchItem, status int, took time.Duration) {
	if f.cfg.OnDelivered == nil {
		return
	}
	for _, it := range batch {
		f.cfg.OnDelivered(it.msg, status, it.attempt, took)
	}
}

// Close cancels the batches in flight (their messages fail with the
// context's error) and waits for them to end.
func (f *BatchForwarder) Close() error {
	f.cancel()
	f.wg.Wait()
	f.client.CloseIdleConnections()
	return nil
}
