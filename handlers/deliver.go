// Package handlers holds memhook's Watermill handlers: the delivery handler
// that POSTs a webhook, and the HTTP endpoints of the router process.
package handlers

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
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

	"github.com/memhook/memhook/middleware"
)

// DeliverConfig configures the delivery handler.
type DeliverConfig struct {
	// URL receives the webhooks; required, http or https.
	URL string
	// Timeout bounds one attempt, from dialling to the end of the
	// response; 0 means 30s (the seed's MEM0_WEBHOOK_TIMEOUT).
	Timeout time.Duration
	// MaxIdleConns is how many keep-alive connections to the receiver are
	// kept; 0 means 64. Set it to at least the deliveries in flight.
	MaxIdleConns int
	// MaxResponseBytes caps how much of a response body is read (and
	// discarded, to reuse the connection); 0 means 64 KiB.
	MaxResponseBytes int64
	// Transport is the base RoundTripper; nil means a clone of
	// http.DefaultTransport sized by MaxIdleConns. Tests and integrators
	// may set their own (TLS settings, a proxy).
	Transport http.RoundTripper
	// OnDelivered, if set, is called after a 2xx answer with the status,
	// the attempt number and the attempt's duration.
	OnDelivered func(msg *message.Message, status, attempt int, took time.Duration)
	// OnAttempt, if set, is called after every attempt, success or
	// failure, on the attempt's goroutine before Handle returns: the
	// attempt log. It must not block. Unset, response bodies are not
	// kept at all.
	OnAttempt func(msg *message.Message, r AttemptResult)
	// Deprecated: Logger is not used: Deliver sends each attempt with its
	// RoundTripper itself, without watermill-http's publisher (whose
	// only lines were at TRACE). Kept so that configurations still
	// compile.
	Logger watermill.LoggerAdapter
}

func (c *DeliverConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MaxIdleConns == 0 {
		c.MaxIdleConns = 64
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 64 << 10
	}
}

// Validate reports every problem at once. The URL is never echoed whole: it
// may carry credentials.
func (c DeliverConfig) Validate() error {
	var errs []error
	if err := ValidateURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("deliver: Timeout must not be negative, got %s", c.Timeout))
	}
	if c.MaxIdleConns < 0 {
		errs = append(errs, fmt.Errorf("deliver: MaxIdleConns must not be negative, got %d", c.MaxIdleConns))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("deliver: MaxResponseBytes must not be negative, got %d", c.MaxResponseBytes))
	}
	return errors.Join(errs...)
}

// Deliver POSTs each message's payload to the webhook URL, inside the
// handler so that Retry and PoisonQueue wrap the real HTTP call. Headers
// come from the context (middleware.Signer). Each attempt goes straight to
// its RoundTripper, as http.Client would send it with no redirect
// followed (a URL's user:password becomes Basic authorization unless an
// Authorization header is set; errors are *url.Error "Post"), without a
// client's or a publisher's per-request bookkeeping. The RoundTripper
// turns every non-2xx answer into a *middleware.StatusError and drains
// (up to MaxResponseBytes) and closes every response body so connections
// are reused.
//
// Handle returns nil on 2xx (ack), the *middleware.StatusError of another
// answer, or the transport error (timeout, connection refused) with the URL
// redacted. A valid traceparent in the message's metadata (TraceparentKey)
// is sent in the traceparent header.
type Deliver struct {
	cfg      DeliverConfig
	redacted string
	target   *url.URL          // cfg.URL, parsed once; requests share it (read only)
	host     string            // its Host as http.NewRequest sets it
	basic    []string          // the Authorization of the URL's user:password, nil without
	rt       http.RoundTripper // statusTransport over the base

	// Attempts run on long-lived goroutines: the router runs each message
	// on a new goroutine, whose stack would grow into net/http's depth for
	// every message.
	jobs     chan *deliverJob
	stop     chan struct{}
	stopOnce sync.Once
	workers  sync.WaitGroup
}

// deliverJob is one attempt handed to a worker, and its answer. Jobs are
// pooled: Handle puts one back once it has the answer (or never sent it).
type deliverJob struct {
	msg  *message.Message
	ctx  *attemptCtx
	done chan error // buffered 1
}

var jobPool = sync.Pool{New: func() any { return &deliverJob{done: make(chan error, 1)} }}

// NewDeliver returns the delivery handler for cfg.
func NewDeliver(cfg DeliverConfig) (*Deliver, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := cfg.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = cfg.MaxIdleConns
		t.MaxIdleConnsPerHost = cfg.MaxIdleConns
		// No Accept-Encoding: gzip on every webhook: an answer is read
		// for its status and the attempt log's first KiB only, and one
		// header less is one less for every receiver to parse.
		t.DisableCompression = true
		base = t
	}
	// The attempt timeout is the attempt context's deadline (attemptCtx,
	// ended by its worker's timer), not Client.Timeout's timer goroutine.
	target, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err // Validate parsed it: not reached
	}
	d := &Deliver{cfg: cfg, redacted: RedactURL(cfg.URL), target: target, host: strings.TrimSuffix(target.Host, ":"),
		rt:   statusTransport{base: base, limit: cfg.MaxResponseBytes},
		jobs: make(chan *deliverJob), stop: make(chan struct{})}
	if u := target.User; u != nil {
		password, _ := u.Password()
		d.basic = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+password))}
	}
	for range cfg.MaxIdleConns {
		d.workers.Add(1)
		go d.work()
	}
	return d, nil
}

// work runs attempts until Close. Its timer ends the attempt running at
// its deadline: one timer per worker, not one per attempt.
func (d *Deliver) work() {
	defer d.workers.Done()
	var running atomic.Pointer[attemptCtx]
	timer := time.AfterFunc(time.Hour, func() {
		if c := running.Load(); c != nil {
			c.expire()
		}
	})
	timer.Stop()
	defer timer.Stop()
	// A plain receive, not a select with d.stop: every worker's select
	// would lock that one channel at each wake-up. Close sends each
	// worker a nil job instead.
	for j := <-d.jobs; j != nil; j = <-d.jobs {
		j.ctx.begin(time.Now().Add(d.cfg.Timeout))
		running.Store(j.ctx)
		timer.Reset(d.cfg.Timeout)
		err := d.attempt(j.msg, j.ctx)
		timer.Stop()
		running.Store(nil)
		j.ctx.cancel(context.Canceled) // as a context.WithTimeout's cancel at the end
		j.done <- err
	}
}

// URL returns the webhook URL redacted for display.
func (d *Deliver) URL() string { return d.redacted }

// Handle is a message.NoPublishHandlerFunc: one delivery attempt. It
// returns msg's context error if that ends before the attempt starts, and
// ErrDeliverClosed after Close. When msg's context ends during the
// attempt, Handle ends the attempt's context with it.
func (d *Deliver) Handle(msg *message.Message) error {
	ctx := msg.Context()
	j := jobPool.Get().(*deliverJob)
	j.msg, j.ctx = msg, newAttemptCtx(ctx)
	defer func() {
		j.msg, j.ctx = nil, nil
		jobPool.Put(j)
	}()
	select {
	case d.jobs <- j: // a worker was free: one channel locked, not three
	default:
		select {
		case d.jobs <- j:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stop:
			return ErrDeliverClosed
		}
	}
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		j.ctx.cancel(ctx.Err())
		return <-j.done
	}
}

// ErrDeliverClosed is what Handle returns after Close.
var ErrDeliverClosed = errors.New("deliver: closed")

// attempt is one delivery attempt, on a worker goroutine, in actx.
func (d *Deliver) attempt(msg *message.Message, actx *attemptCtx) error {
	ctx := msg.Context()
	rec := &actx.rec
	if d.cfg.OnAttempt != nil {
		buf := responsePool.Get().(*[MaxAttemptResponse]byte)
		rec.body = buf[:0]
		defer responsePool.Put(buf)
	}
	msg.SetContext(actx)
	defer msg.SetContext(ctx)
	start := time.Now()
	err := d.result(msg, d.send(msg, actx))
	took := time.Since(start)
	if err == nil && d.cfg.OnDelivered != nil {
		d.cfg.OnDelivered(msg, rec.status, middleware.AttemptFromContext(ctx), took)
	}
	if d.cfg.OnAttempt != nil {
		d.cfg.OnAttempt(msg, AttemptResult{
			Attempt:  middleware.AttemptFromContext(ctx),
			Start:    start,
			Duration: took,
			Status:   rec.status,
			Err:      err,
			Class:    ClassifyError(err),
			Response: rec.body,
		})
	}
	return err
}

// responsePool holds the buffers of the response excerpts OnAttempt sees.
var responsePool = sync.Pool{New: func() any { return new([MaxAttemptResponse]byte) }}

// send makes the attempt's request and round trip, as http.Client.Do
// would: the body of a 2xx answer is closed (drained) before it returns;
// a failure is a *url.Error.
func (d *Deliver) send(msg *message.Message, actx *attemptCtx) error {
	req := d.request(msg, actx)
	resp, err := d.rt.RoundTrip(req)
	if err != nil {
		if tlsErr, ok := err.(tls.RecordHeaderError); ok && string(tlsErr.RecordHeader[:]) == "HTTP/" {
			err = http.ErrSchemeMismatch // what http.Client makes of it
		}
		return &url.Error{Op: "Post", URL: d.redacted, Err: err}
	}
	if resp == nil {
		return &url.Error{Op: "Post", URL: d.redacted, Err: fmt.Errorf("http: RoundTripper implementation (%T) returned a nil *Response with a nil error", d.cfg.Transport)}
	}
	return resp.Body.Close()
}

// result is what Handle returns for send's err: nil, the
// *middleware.StatusError, or the transport error with the URL redacted.
func (d *Deliver) result(msg *message.Message, err error) error {
	if err == nil {
		return nil
	}
	var se *middleware.StatusError
	if errors.As(err, &se) {
		return se // the wrapping adds nothing but the URL
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = d.redacted
	}
	return fmt.Errorf("delivering %s: %w", msg.UUID, err)
}

// Close waits for the attempts running. Deliveries after Close fail with
// ErrDeliverClosed. It is idempotent.
func (d *Deliver) Close() error {
	d.stopOnce.Do(func() {
		close(d.stop)
		for range d.cfg.MaxIdleConns {
			d.jobs <- nil // each worker takes one once its attempt is done, and stops
		}
	})
	d.workers.Wait()
	return nil
}

type recordKey struct{}

// attemptCtx is the context of one attempt: the message's, with the
// attempt's deadline, and the record the RoundTripper fills in
// (Value(recordKey{})), in one allocation. Unlike a context.WithTimeout it
// registers with nothing: its worker's timer ends it at the deadline
// (expire), Handle, which waits for the attempt anyway, ends it when the
// message's context ends, and the contexts net/http derives from it
// register through AfterFunc.
type attemptCtx struct {
	parent context.Context
	done   chan struct{}
	rec    record
	body   bytes.Reader // the request's

	mu       sync.Mutex
	deadline time.Time // set as the attempt starts
	err      error
	after    []afterFunc // registered by AfterFunc, not stopped
	afterBuf [2]afterFunc
	seq      uint64
}

type afterFunc struct {
	seq uint64
	f   func()
}

var _ context.Context = (*attemptCtx)(nil)

func newAttemptCtx(parent context.Context) *attemptCtx {
	c := &attemptCtx{parent: parent, done: make(chan struct{})}
	c.after = c.afterBuf[:0]
	return c
}

// begin sets the deadline, before the context is used.
func (c *attemptCtx) begin(deadline time.Time) {
	c.mu.Lock()
	c.deadline = deadline
	c.mu.Unlock()
}

// expire ends c with context.DeadlineExceeded if its deadline has passed
// (a worker's timer may fire late, for the attempt before).
func (c *attemptCtx) expire() {
	c.mu.Lock()
	due := !c.deadline.IsZero() && !time.Now().Before(c.deadline)
	c.mu.Unlock()
	if due {
		c.cancel(context.DeadlineExceeded)
	}
}

// cancel ends c with err (the first call only) and runs what AfterFunc
// registered: the context package's cancellation of a child, which, like
// a cancelCtx's children, it runs at once.
func (c *attemptCtx) cancel(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	after := c.after
	c.after = nil
	c.mu.Unlock()
	for _, a := range after {
		a.f()
	}
}

// Deadline is the attempt's, or the parent's when that is earlier.
func (c *attemptCtx) Deadline() (time.Time, bool) {
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	if pd, ok := c.parent.Deadline(); ok && (d.IsZero() || pd.Before(d)) {
		return pd, true
	}
	return d, !d.IsZero()
}

func (c *attemptCtx) Done() <-chan struct{} { return c.done }

func (c *attemptCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *attemptCtx) Value(key any) any {
	if key == (recordKey{}) {
		return &c.rec
	}
	return c.parent.Value(key)
}

// AfterFunc arranges for f to run when c ends, the way the context
// package registers a derived context with a parent that is not its own
// kind (without it, it would start a goroutine per derived context).
func (c *attemptCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.seq++
	seq := c.seq
	c.after = append(c.after, afterFunc{seq: seq, f: f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.after {
			if a.seq == seq {
				c.after = append(c.after[:i], c.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

// record carries the status code of the answer and, when body has room
// (OnAttempt is set), the start of the response body out of the
// RoundTripper. It holds the 2xx body's wrapper, so that an attempt
// allocates none.
type record struct {
	status int
	body   []byte // len: kept so far; cap: at most MaxAttemptResponse
	drain  drainBody
}

// keep appends what fits of p to the body excerpt.
func (r *record) keep(p []byte) {
	if n := min(len(p), cap(r.body)-len(r.body)); n > 0 {
		r.body = append(r.body, p[:n]...)
	}
}

// request is the POST of msg's payload to the URL with the context's
// headers, the message's traceparent, and Content-Type application/json
// unless the headers have one. The context's header map becomes the
// request's when nothing is to be added to it (the signer's always has
// Content-Type); else a copy does: it is never written to.
//
// It is the request http.NewRequestWithContext makes, without parsing the
// URL again or allocating the body's reader (it lives in actx).
func (d *Deliver) request(msg *message.Message, actx *attemptCtx) *http.Request {
	payload := msg.Payload
	req := (&http.Request{
		Method:     http.MethodPost,
		URL:        d.target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       d.host,
	}).WithContext(actx)
	if len(payload) == 0 {
		req.Body, req.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
	} else {
		actx.body.Reset(payload)
		// Behind io.NopCloser net/http still sees a *bytes.Reader, in
		// memory: the headers and the body leave in one write.
		req.Body, req.ContentLength = io.NopCloser(&actx.body), int64(len(payload))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
	}
	hd := middleware.HeadersFromContext(msg.Context())
	tp := msg.Metadata.Get(TraceparentKey)
	if tp != "" && !ValidTraceparent(tp) {
		tp = ""
	}
	noType := hd.Get("Content-Type") == ""
	basic := d.basic != nil && hd.Get("Authorization") == ""
	if hd == nil || tp != "" || noType || basic {
		own := make(http.Header, len(hd)+3)
		for k, v := range hd {
			own[k] = v
		}
		if tp != "" {
			own[TraceparentKey] = []string{tp} // lower case, as W3C writes it; http.Header.Get finds it
		}
		if noType {
			own["Content-Type"] = []string{"application/json"}
		}
		if basic {
			own["Authorization"] = d.basic
		}
		hd = own
	}
	req.Header = hd
	return req
}

// statusTransport turns non-2xx answers into *middleware.StatusError and
// makes sure every body is drained (capped) and closed, keeping its start
// in the attempt's record when that has room for it.
type statusTransport struct {
	base  http.RoundTripper
	limit int64
}

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	rec, _ := req.Context().Value(recordKey{}).(*record)
	if rec != nil {
		rec.status = resp.StatusCode
	}
	if resp.Body == nil {
		resp.Body = http.NoBody // a RoundTripper of the caller's may leave it nil
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if rec == nil {
			resp.Body = &drainBody{rc: resp.Body, limit: t.limit}
			return resp, nil
		}
		rec.drain = drainBody{rc: resp.Body, limit: t.limit, rec: rec}
		resp.Body = &rec.drain
		return resp, nil
	}
	limit := t.limit
	if rec != nil && cap(rec.body) > 0 {
		n, _ := io.ReadFull(resp.Body, rec.body[:min(int64(cap(rec.body)), limit)])
		rec.body = rec.body[:n]
		limit -= int64(n)
	}
	_, _ = io.CopyN(io.Discard, resp.Body, limit)
	_ = resp.Body.Close()
	return nil, &middleware.StatusError{
		Code:       resp.StatusCode,
		RetryAfter: middleware.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// drainBody reads what is left (up to limit) before closing, so the
// connection goes back to the pool; what is read goes to rec's excerpt
// while it has room.
type drainBody struct {
	rc    io.ReadCloser
	limit int64
	rec   *record // nil, or without room, when nothing is kept
	rest  io.LimitedReader
}

func (b *drainBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.rec != nil {
		b.rec.keep(p[:n])
	}
	return n, err
}

func (b *drainBody) Close() error {
	limit := b.limit
	if r := b.rec; r != nil && len(r.body) < cap(r.body) {
		n, _ := io.ReadFull(b.rc, r.body[len(r.body):min(int64(cap(r.body)), int64(len(r.body))+limit)])
		r.body = r.body[:len(r.body)+n]
		limit -= int64(n)
	}
	b.rest = io.LimitedReader{R: b.rc, N: limit}
	_, _ = io.Copy(io.Discard, &b.rest)
	return b.rc.Close()
}
