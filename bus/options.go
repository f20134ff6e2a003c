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
	pubsub      *pubsubOption
}

type pubsubOption struct {
	pub       message.Publisher
	subscribe func(group string) (message.Subscriber, error)
}

// WithPubSub runs the bus on a Watermill pub/sub the caller brings (NATS
// JetStream, Kafka, AMQP, SQL …) instead of Config.Transport. The bus
// publishes events on Topic, poisoned events on PoisonTopic and incoming
// ones on IncomingTopic through pub. subscribe(group) must return a
// subscriber of consumer group group, as Watermill's Pub/Sub suite's
// consumer-group constructor does: each group gets every message, and
// within a group each message goes to one subscriber. The bus asks for
// Config.RedisGroup ("memhook") for delivery, and that name plus
// ".poison" and ".incoming" for the poison and incoming handlers.
// subscribe nil means this process only publishes (an application; Send
// returns ErrNotDelivering); with subscribe and a WebhookURL it delivers,
// as `memhook serve` does, and without a WebhookURL it only counts.
//
// Delivery is at least once: a message the bus has not acked (a process
// killed mid-delivery) must be redelivered by the pub/sub. A handling is
// one attempt (Timeout at most), so the redelivery timeout (NATS AckWait,
// SQS visibility …) must exceed one attempt plus the time a message may
// wait behind the others the subscription holds. Retries wait in this
// process and are published on RetryTopic when due: the bus has acked the
// event when it scheduled the retry, so a process that crashes loses the
// retries it held (Close returns them in *UndeliveredError). The bus
// closes the subscribers subscribe returned; the caller closes pub after
// Close.
func WithPubSub(pub message.Publisher, subscribe func(group string) (message.Subscriber, error)) Option {
	return func(o *options) { o.pubsub = &pubsubOption{pub: pub, subscribe: subscribe} }
}

// WithDelivery makes a bus on the Redis transport also deliver: it joins
// the stream's consumer group and runs the delivery chain, as `memhook
// serve` does. Without it a Redis bus only appends to the stream. The
// memory transport always delivers in-process.
func WithDelivery() Option {
	return func(o *options) { o.deliver = true }
}

// WithLogger sends the bus's logs (and watermill's) to l. Without it the
// bus logs through slog.Default() when the application set one
// (slog.SetDefault); otherwise — slog.Default() writing each line to the
// log package's output — it writes text lines to that output (log.Writer()
// at New) through a logbuf.Writer: in batches within 100 ms, and all of
// them by the time Close returns. At INFO that is a line per delivery: give
// l a handler over a logbuf.Writer (closed after the bus) to keep it to a
// write system call per batch.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithMiddleware inserts integrators' middleware into the delivery chain,
// after the filter and before retry: it sees only events that will be
// delivered, runs once per event at its first handling (a retry comes
// back on RetryTopic to a chain of recoverer, poison queue, retry and
// signer alone, with the message as the middleware left it), and may
// change the message (its payload, its metadata) or fail it (the error
// goes to the poison queue, without retry). Several calls append in order.
func WithMiddleware(m ...message.HandlerMiddleware) Option {
	return func(o *options) { o.middleware = append(o.middleware, m...) }
}

// WithPoisonHandler consumes the poison topic: h gets every event that
// failed for good, with the reason (middleware.PoisonReasonKey), the last
// status and the attempts in metadata. An error from h nacks the message,
// which comes back after a delay. It works on every transport where this
// process consumes (on transport http: the events the router refused for
// good). On Redis and brought pub/subs the poison topic is consumed by the
// group Config.RedisGroup + ".poison" shared by every process, and
// poisoned entries stay in the poison stream for `memhook dlq` whatever h
// does. Elsewhere each event h took (returned nil for) is then kept in
// this process's dead-letter queue, as it is without h (see DeadLetters);
// poisoned events are logged and counted in any case.
func WithPoisonHandler(h message.NoPublishHandlerFunc) Option {
	return func(o *options) { o.poison = h }
}

// WithIncomingHandler consumes IncomingTopic, the events other systems sent
// to the router's POST /webhooks/memory, in every process that delivers
// (on Redis and brought pub/subs as the group Config.RedisGroup +
// ".incoming", shared by every router). Without it they are logged and
// acknowledged.
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
