package bus

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
)

// Option changes how New builds a Bus.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	middleware  []message.HandlerMiddleware
	poison      message.NoPublishHandlerFunc
	incoming    message.NoPublishHandlerFunc
	transport   http.RoundTripper
	routerSetup []func(*message.Router) error
	observe     func(t event.Type, status int, took time.Duration)
	deliver     bool
}

// WithDelivery makes a bus on the Redis transport also deliver: it joins
// the stream's consumer group and runs the delivery chain, as `memhook
// serve` does. Without it a Redis bus only appends to the stream. The
// memory transport always delivers in-process.
func WithDelivery() Option {
	return func(o *options) { o.deliver = true }
}

// WithLogger sends the bus's logs (and watermill's) to l; the default is
// slog.Default(). At INFO that is a line per delivery, a write system call
// each unless l's handler writes to a logbuf.Writer (closed after the bus).
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
// counted, then dropped. In-memory transport only.
func WithPoisonHandler(h message.NoPublishHandlerFunc) Option {
	return func(o *options) { o.poison = h }
}

// WithIncomingHandler consumes IncomingTopic, the events other systems sent
// to the router's POST /webhooks/memory. Without it they are logged and
// dropped. In-memory transport only; with Redis they stay on the stream.
func WithIncomingHandler(h message.NoPublishHandlerFunc) Option {
	return func(o *options) { o.incoming = h }
}

// WithHTTPTransport sets the RoundTripper under the delivery client (TLS
// settings, a proxy); the default is a clone of http.DefaultTransport.
func WithHTTPTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.transport = rt }
}

// WithRouterSetup runs f on the Watermill router before it starts, e.g. to
// add watermill's Prometheus metrics (components/metrics). An error from f
// fails New.
func WithRouterSetup(f func(*message.Router) error) Option {
	return func(o *options) { o.routerSetup = append(o.routerSetup, f) }
}

// WithDeliveryObserver calls f after every successful delivery with the
// event type, the receiver's status and the attempt's duration (for a
// latency histogram). f runs on the delivery path: keep it fast.
func WithDeliveryObserver(f func(t event.Type, status int, took time.Duration)) Option {
	return func(o *options) { o.observe = f }
}
