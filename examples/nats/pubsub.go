package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/middleware"
)

// Defaults of natsConfig.
const (
	// DefaultNATSURL is where the example finds NATS unless NATS_URL says
	// otherwise.
	DefaultNATSURL = "nats://127.0.0.1:4222"
	// DefaultStreamMaxAge is how long a stream keeps a message, delivered
	// or not (NATS_STREAM_MAX_AGE).
	DefaultStreamMaxAge = 7 * 24 * time.Hour
	// AckWaitMargin is added to the derived AckWait (see ackWait).
	AckWaitMargin = 5 * time.Second
	// NakDelay is how long JetStream waits before it hands out again a
	// message the bus nacked (shutdown, or the poison topic unreachable),
	// so that a failing publish cannot spin.
	NakDelay = time.Second
)

// topics are the Watermill topics memhook uses, each on its own JetStream
// stream (see streamName).
var topics = []string{bus.Topic, bus.RetryTopic, bus.PoisonTopic, bus.IncomingTopic}

// natsConfig is how the example runs memhook on NATS JetStream.
type natsConfig struct {
	// URL locates NATS (NATS_URL); empty means DefaultNATSURL. It may hold
	// credentials (nats://user:password@host:4222): they are never logged.
	URL string
	// Concurrency is how many messages of one group this process handles
	// at once: the subscriptions each subscriber opens
	// (SubscribersCount). It is bus.Config.Concurrency.
	Concurrency int
	// MaxAckPending bounds the messages a consumer group has out, unacked,
	// across all its processes (NATS_MAX_ACK_PENDING); 0 means
	// Concurrency. JetStream sends no more until some are acked.
	MaxAckPending int
	// AckWait is how long JetStream waits for a message's ack before it
	// hands the message to another subscriber of the group; 0 means
	// ackWait(worst case of one handling, MaxAckPending).
	AckWait time.Duration
	// StreamMaxAge is how long the streams keep messages
	// (NATS_STREAM_MAX_AGE); 0 means DefaultStreamMaxAge. Messages older
	// than that are dropped by the broker even if no group handled them.
	StreamMaxAge time.Duration
}

// natsConfigFromEnv reads natsConfig from lookup (NATS_URL,
// NATS_MAX_ACK_PENDING, NATS_STREAM_MAX_AGE) for the bus configured by bc:
// its Concurrency, and the worst case of one handling for AckWait. Every
// bad value is reported, naming the variable.
func natsConfigFromEnv(lookup func(string) (string, bool), bc bus.Config) (natsConfig, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	c := natsConfig{URL: get("NATS_URL"), Concurrency: bc.Concurrency}
	var errs []error
	if v := get("NATS_MAX_ACK_PENDING"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("NATS_MAX_ACK_PENDING=%q: must be a whole number, 0 for MEMHOOK_CONCURRENCY", v))
		}
		c.MaxAckPending = n
	}
	if v := get("NATS_STREAM_MAX_AGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("NATS_STREAM_MAX_AGE=%q: must be a duration such as 168h", v))
		}
		c.StreamMaxAge = d
	}
	if err := errors.Join(errs...); err != nil {
		return natsConfig{}, err
	}
	c.setDefaults(handlingWorstCase(bc))
	return c, c.Validate()
}

func (c *natsConfig) setDefaults(worstCase time.Duration) {
	if c.URL == "" {
		c.URL = DefaultNATSURL
	}
	if c.Concurrency == 0 {
		c.Concurrency = bus.DefaultConcurrency
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = c.Concurrency
	}
	if c.AckWait == 0 {
		c.AckWait = ackWait(worstCase, c.MaxAckPending)
	}
	if c.StreamMaxAge == 0 {
		c.StreamMaxAge = DefaultStreamMaxAge
	}
}

// Validate reports every problem of c at once, naming the field; the URL's
// password is never echoed.
func (c natsConfig) Validate() error {
	var errs []error
	for _, one := range strings.Split(c.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			errs = append(errs, fmt.Errorf("NATS_URL (URL): %q is not a list of nats://host:port (or tls://, ws://, wss://)", redactURL(c.URL)))
			break
		}
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("MEMHOOK_CONCURRENCY (Concurrency): must not be negative, got %d", c.Concurrency))
	}
	if c.MaxAckPending < 0 {
		errs = append(errs, fmt.Errorf("NATS_MAX_ACK_PENDING (MaxAckPending): must not be negative, got %d", c.MaxAckPending))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("AckWait: must not be negative, got %s", c.AckWait))
	}
	if c.StreamMaxAge < 0 {
		errs = append(errs, fmt.Errorf("NATS_STREAM_MAX_AGE (StreamMaxAge): must not be negative, got %s", c.StreamMaxAge))
	}
	return errors.Join(errs...)
}

// handlingWorstCase is the longest one handling of an event by the bus
// configured by bc may take: one attempt, bounded by its Timeout (a retry
// waits in the bus's delay store, not in the handling).
func handlingWorstCase(bc bus.Config) time.Duration {
	if bc.Timeout == 0 {
		return bus.DefaultTimeout
	}
	return bc.Timeout
}

// ackWait derives JetStream's AckWait from the worst case of one handling
// and the consumer's MaxAckPending: AckWait starts when the server sends a
// message, and a subscription handles its messages one at a time, so a
// message may wait in a subscription's buffer behind up to
// maxAckPending-1 others before its own handling. Anything shorter can
// hand a slow but live handling to another process (a duplicate webhook);
// this much longer only delays the takeover of a crashed process's
// messages. The result saturates instead of overflowing.
func ackWait(worstCase time.Duration, maxAckPending int) time.Duration {
	worstCase = max(worstCase, 0)
	n := time.Duration(max(maxAckPending, 1))
	const maxDuration = time.Duration(1<<63 - 1)
	if worstCase > (maxDuration-AckWaitMargin)/n {
		return maxDuration
	}
	return n*worstCase + AckWaitMargin
}

// streamName is the JetStream stream that holds topic. Stream names cannot
// contain dots, and each topic has its own stream: JetStream drops a
// message whose Nats-Msg-Id the stream saw in its duplicate window, and a
// poisoned event keeps its event's id.
func streamName(topic string) string {
	return strings.ToUpper(strings.ReplaceAll(topic, ".", "_"))
}

// consumerName is the durable consumer of group on topic. Consumer names
// cannot contain dots (groups such as "memhook.poison" do).
func consumerName(group, topic string) string {
	return strings.ReplaceAll(group, ".", "_") + "__" + strings.ReplaceAll(topic, ".", "_")
}

// validGroup reports a group that cannot name a consumer or queue group.
func validGroup(group string) error {
	if group == "" || strings.ContainsAny(group, " \t\r\n*>/\\") {
		return fmt.Errorf("consumer group %q: must be non-empty, without whitespace, '*', '>', '/' or '\\'", group)
	}
	return nil
}

// redactURL hides the credentials of a NATS URL (user and password, or a
// token in the user's place): everything between the scheme and the last
// '@' becomes "xxxxx". In a list of servers with credentials only what
// follows the last '@' stays; never any part of a secret, however oddly
// written.
func redactURL(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	scheme := ""
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		scheme = s[:i+3]
	}
	return scheme + "xxxxx@" + s[at+1:]
}

// connOptions are the options of every connection the example opens: a
// name for the server's monitoring and reconnecting for as long as the
// process runs.
func connOptions(name string) []nats.Option {
	return []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second)}
}

// ensureStreams creates the stream of each topic memhook uses unless it
// exists: file storage, messages kept for StreamMaxAge whether any group
// handled them or not (limits retention: a group created later still
// reads everything kept, and groups do not remove each other's messages).
func ensureStreams(c natsConfig) error {
	nc, err := nats.Connect(c.URL, connOptions("memhook-provision")...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redactURL(c.URL), err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	for _, topic := range topics {
		name := streamName(topic)
		info, err := js.StreamInfo(name)
		switch {
		case errors.Is(err, nats.ErrStreamNotFound):
			_, err = js.AddStream(&nats.StreamConfig{
				Name:      name,
				Subjects:  []string{topic},
				Storage:   nats.FileStorage,
				Retention: nats.LimitsPolicy,
				MaxAge:    c.StreamMaxAge,
			})
			if err != nil {
				return fmt.Errorf("creating stream %s for %s: %w", name, topic, err)
			}
		case err != nil:
			return fmt.Errorf("stream %s: %w", name, err)
		case !contains(info.Config.Subjects, topic):
			return fmt.Errorf("stream %s exists without subject %s (it has %v)", name, topic, info.Config.Subjects)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// newPublisher connects the publisher the bus publishes with. Each message
// carries a Nats-Msg-Id (see msgIDMarshaler), so a publish retried within
// the stream's duplicate window (2 min) is stored once. The streams must
// exist (ensureStreams): watermill-nats would name a stream after the
// topic, and "memory.events" cannot name one.
func newPublisher(c natsConfig, logger watermill.LoggerAdapter) (*wmnats.Publisher, error) {
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{
		URL:         c.URL,
		NatsOptions: connOptions("memhook-publisher"),
		Marshaler:   msgIDMarshaler{},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("NATS publisher at %s: %w", redactURL(c.URL), err)
	}
	return pub, nil
}

// msgIDMarshaler is watermill-nats' NATSMarshaler (metadata in headers)
// that also sets Nats-Msg-Id: the message's UUID (the event id), and for a
// retry its attempt number too. watermill-nats' TrackMsgId would use the
// UUID alone, and a retry keeps the event's id: JetStream would take the
// third attempt for a duplicate of the second (published within the
// duplicate window) and drop it, saying only "duplicate" in the PubAck.
type msgIDMarshaler struct{}

// Marshal implements wmnats.Marshaler.
func (msgIDMarshaler) Marshal(topic string, msg *message.Message) (*nats.Msg, error) {
	m, err := (&wmnats.NATSMarshaler{}).Marshal(topic, msg)
	if err != nil {
		return nil, err
	}
	id := msg.UUID
	if attempt := msg.Metadata.Get(middleware.AttemptKey); attempt != "" {
		id += "/" + attempt
	}
	m.Header.Set(nats.MsgIdHdr, id)
	return m, nil
}

// groupSubscribers makes the subscribers bus.WithPubSub asks for, one
// per consumer group; the bus closes them.
type groupSubscribers struct {
	cfg    natsConfig
	logger watermill.LoggerAdapter
}

// Subscribe returns a subscriber of the Watermill consumer group group,
// with its own connection: every process subscribing with the same group
// shares one durable JetStream consumer per topic (named by consumerName)
// through a queue group, so each message goes to one of them; another
// group has its own consumer and gets every message.
//
// Acks are manual: watermill-nats leaves a message it gave up on (its
// AckWaitTimeout passed, the subscriber closing) unacked, and nats.go
// would otherwise ack it when the callback returns, losing it. AckWait on
// the server and on the client is cfg.AckWait.
func (s groupSubscribers) Subscribe(group string) (message.Subscriber, error) {
	if err := validGroup(group); err != nil {
		return nil, err
	}
	queue := strings.ReplaceAll(group, ".", "_")
	redacted := redactURL(s.cfg.URL)
	nc, err := nats.Connect(s.cfg.URL, connOptions("memhook-"+queue)...)
	if err != nil {
		return nil, fmt.Errorf("NATS subscriber of group %s at %s: %w", group, redacted, err)
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	wcfg := wmnats.SubscriberConfig{
		QueueGroupPrefix: queue,
		SubscribersCount: s.cfg.Concurrency,
		AckWaitTimeout:   s.cfg.AckWait,
		CloseTimeout:     10 * time.Second,
		Unmarshaler:      &wmnats.NATSMarshaler{},
		NakDelay:         wmnats.NewStaticDelay(NakDelay),
		JetStream: wmnats.JetStreamConfig{
			DurablePrefix:     group,
			DurableCalculator: consumerName,
			SubscribeOptions: []nats.SubOpt{
				nats.ManualAck(),
				nats.AckExplicit(),
				nats.AckWait(s.cfg.AckWait),
				nats.MaxAckPending(s.cfg.MaxAckPending),
				nats.DeliverAll(),
			},
		},
	}
	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wcfg.GetSubscriberSubscriptionConfig(), s.logger)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS subscriber of group %s at %s: %w", group, redacted, err)
	}
	return &groupSubscriber{sub: sub, nc: nc, js: js, cfg: s.cfg, group: group, queue: queue}, nil
}

// groupSubscriber is a watermill-nats subscriber that makes its group's
// durable consumer itself before subscribing. nats.go deletes a consumer
// on Unsubscribe when it created it: had the first process of a group to
// subscribe created it, stopping that process would delete the group's
// consumer under the other processes and its position with it (a new one
// would read the stream again from the start).
type groupSubscriber struct {
	sub          *wmnats.Subscriber
	nc           *nats.Conn
	js           nats.JetStreamManager
	cfg          natsConfig
	group, queue string
}

var _ message.Subscriber = (*groupSubscriber)(nil)

// Subscribe makes sure the group's consumer of topic exists with this
// process's AckWait and MaxAckPending, then subscribes.
func (g *groupSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := g.ensureConsumer(topic); err != nil {
		return nil, err
	}
	return g.sub.Subscribe(ctx, topic)
}

// ensureConsumer creates the durable push consumer of the group on
// topic's stream, or updates its AckWait and MaxAckPending to this
// process's (they derive from MEM0_WEBHOOK_* and NATS_MAX_ACK_PENDING;
// nats.go refuses to bind when they differ). Creating it is idempotent:
// its deliver subject is derived from its name, so two processes creating
// it at once ask for the same consumer.
func (g *groupSubscriber) ensureConsumer(topic string) error {
	stream, name := streamName(topic), consumerName(g.group, topic)
	want := nats.ConsumerConfig{
		Durable:        name,
		DeliverSubject: "memhook.deliver." + name,
		DeliverGroup:   g.queue,
		DeliverPolicy:  nats.DeliverAllPolicy,
		AckPolicy:      nats.AckExplicitPolicy,
		AckWait:        g.cfg.AckWait,
		MaxAckPending:  g.cfg.MaxAckPending,
		FilterSubject:  topic,
	}
	info, err := g.js.ConsumerInfo(stream, name)
	if errors.Is(err, nats.ErrConsumerNotFound) {
		if _, err = g.js.AddConsumer(stream, &want); err == nil {
			return nil
		}
		info, err = g.js.ConsumerInfo(stream, name) // another process made it meanwhile?
	}
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", name, stream, err)
	}
	have := info.Config
	if have.DeliverGroup != g.queue || have.DeliverSubject == "" {
		return fmt.Errorf("consumer %s on stream %s exists with deliver group %q, not a push consumer of queue %q: delete it or choose another group",
			name, stream, have.DeliverGroup, g.queue)
	}
	if have.AckWait == want.AckWait && have.MaxAckPending == want.MaxAckPending {
		return nil
	}
	have.AckWait, have.MaxAckPending = want.AckWait, want.MaxAckPending
	if _, err := g.js.UpdateConsumer(stream, &have); err != nil {
		return fmt.Errorf("updating consumer %s on stream %s to ack wait %s, max ack pending %d: %w",
			name, stream, want.AckWait, want.MaxAckPending, err)
	}
	return nil
}

// Close closes the watermill-nats subscriber, which drains its
// connection; the group's consumers stay.
func (g *groupSubscriber) Close() error {
	err := g.sub.Close()
	g.nc.Close() // a no-op once drained; closes it if draining failed
	return err
}
