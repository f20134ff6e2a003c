package transports

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redact"
	"github.com/memhook/memhook/middleware"
)

// Defaults of RedisConfig, applied by the constructors.
const (
	DefaultRedisURL      = "redis://127.0.0.1:6379/0"
	DefaultConsumerGroup = "memhook"
	DefaultEventsTopic   = "memory.events"
	DefaultPoisonTopic   = middleware.PoisonTopic
	DefaultIncomingTopic = "memory.incoming"
	DefaultRetryTopic    = "memory.events.retry"
	DefaultMaxLen        = 1_000_000
	DefaultConsumers     = DefaultWorkers
	DefaultNackDelay     = time.Second
	DefaultCloseTimeout  = 5 * time.Second
	DefaultRedisTimeout  = 2 * time.Second
)

// DefaultConsumer names this process in a consumer group: the hostname,
// "-" and the process id.
func DefaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "memhook"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// NoMaxLen as RedisConfig.MaxLen: streams are never trimmed.
const NoMaxLen = -1

// GroupStart is where a new consumer group starts reading its stream
// (RedisConfig.GroupStart).
type GroupStart int

const (
	// GroupStartOldest creates a group with the entries the stream holds
	// (XGROUP CREATE … 0): nothing appended before the first router
	// started is missed. The default.
	GroupStartOldest GroupStart = iota
	// GroupStartNewest creates a group with the entries appended after it
	// was created (XGROUP CREATE … $): an endpoint added at runtime gets
	// the events emitted from then on.
	GroupStartNewest
)

// id is the XGROUP CREATE position of g.
func (g GroupStart) id() string {
	if g == GroupStartNewest {
		return "$"
	}
	return "0"
}

// ClaimMargin is what ClaimTimeout adds to its multiple of the worst case.
const ClaimMargin = 10 * time.Second

// heldPerSubscription bounds, in handlings, how long an entry Redis
// counts as delivered to a subscription can wait for its ack (see
// ClaimTimeout).
const heldPerSubscription = 4

// RedisConfig configures the Redis Streams transport: NewRedisPublisher,
// NewRedisSubscriber, NewDLQ and RedisPing. Zero values mean the default
// each field states, except MaxIdleTime, which NewRedisSubscriber requires.
// The constructors apply the defaults and call Validate.
type RedisConfig struct {
	// URL locates Redis, as redis.ParseURL reads it:
	// redis://[user:password@]host[:port][/db], rediss:// for TLS,
	// unix:///path/to/socket. go-redis options in the query (pool_size,
	// max_retries, …) apply, except the three timeouts below, which these
	// fields set. Empty means DefaultRedisURL, redis://127.0.0.1:6379/0.
	// Errors never echo its password.
	URL string
	// ConsumerGroup is the Redis consumer group every router process
	// delivering the same webhooks joins: each stream entry goes to one of
	// them. Empty means DefaultConsumerGroup, "memhook".
	ConsumerGroup string
	// Consumer names this process in the group. It must differ between
	// processes running at the same time and stay the same while the
	// process runs. Empty means the hostname, "-" and the process id.
	Consumer string
	// MaxIdleTime is how long an entry may stay delivered and unacked
	// before any consumer of the group — this one included — takes it over
	// and delivers it again. NewRedisSubscriber requires it (there is no
	// default): set it to ClaimTimeout(worst case of one message), for
	// memhook's chain ClaimTimeout(middleware.Retry{…}.WorstCase(attempt
	// timeout)). Too short and a slow webhook fires twice; too long and the
	// entries of a crashed consumer without a heartbeat wait that long
	// (those of a memhook subscriber, which has one, are taken over within
	// seconds of its heartbeat stopping).
	MaxIdleTime time.Duration
	// MaxLen bounds each events stream: Publish refuses (ErrStreamFull)
	// to append to a stream holding this many entries, checked at most
	// once a second, so the bound may be passed by a second's appends.
	// Entries leave the stream only through TrimAcked, once every consumer
	// group acknowledged them: an unread or pending entry is never
	// trimmed. A full stream means the routers are down or behind; the
	// application gets the error and keeps the event. One consumer group
	// left behind (an endpoint paused or without routers) does not fill
	// it for all when bound (RedisTransport.Bound): its backlog past the
	// bound is shed to the poison stream. Size it above the
	// backlog you must survive (outage × event rate). 0 means
	// DefaultMaxLen, 1 000 000; NoMaxLen never refuses. The poison stream
	// is not bounded: DLQ.Purge and DLQ.Replay empty it.
	MaxLen int64
	// Consumers is how many messages one Subscribe call handles at once
	// (that many worker goroutines). Its reader fetches up to Consumers
	// entries ahead, for the next free worker, and its claimer up to
	// Consumers more. A subscription uses a Redis connection blocked
	// reading and, briefly, others (claims, acks, poison copies): the
	// subscriber's pool allows 10 × GOMAXPROCS + 16 × Consumers
	// connections unless the URL sets pool_size. 0 means
	// DefaultConsumers, 16.
	Consumers int
	// EventsTopic is the events stream every endpoint's consumer group
	// reads: RedisTransport.Bound sheds backlogs there and RemoveGroup
	// removes groups from it. Empty means DefaultEventsTopic,
	// "memory.events".
	EventsTopic string
	// RetryTopic is the stream the default endpoint's due retries are
	// appended to (another endpoint's: RetryTopic + "." + its name); the
	// retries waiting for a topic are kept in the sorted set topic +
	// ":delayed". DLQ replays to these topics. Empty means
	// DefaultRetryTopic, "memory.events.retry".
	RetryTopic string
	// PoisonTopic is the poison stream: undecodable entries are copied
	// there, and DLQ reads it. It must be the topic the PoisonQueue
	// middleware publishes to. Empty means DefaultPoisonTopic,
	// "memory.events.poison".
	PoisonTopic string
	// GroupStart is where a consumer group a subscriber creates starts
	// reading a stream: GroupStartOldest (the zero value) with the entries
	// the stream holds, GroupStartNewest with those appended after the
	// group was created. A group that exists keeps its position, and a
	// group lost and created again (a Redis restarted without persistence)
	// always starts with the entries the stream holds.
	// RedisTransport.SubscriberFrom sets it for one subscriber.
	GroupStart GroupStart
	// TrimInterval is how often a consuming RedisTransport sheds the
	// backlogs past their bound (RedisTransport.Bound), then trims the
	// streams it reads. 0 means DefaultTrimInterval, 5s.
	TrimInterval time.Duration
	// OnShed, if set, is called by a consuming RedisTransport after it
	// moved shed entries of a bound consumer group's backlog to the poison
	// stream (see RedisTransport.Bound), with the endpoint Bound named and
	// how many; for counting and logging (unset, the transport logs them at
	// WARN). It must not block.
	OnShed func(endpoint string, shed int)
	// OnParkedFull, if set, is called, at most once a minute per
	// subscription, while an ordered group (RedisTransport.Order) stops
	// reading because as many entries as its bound (DefaultBacklogBound
	// of MaxLen) are parked behind their users' turns.
	OnParkedFull func(group string, bound int64)
	// NackDelay is how long a nacked message waits before it is handed out
	// again. 0 means DefaultNackDelay, 1s.
	NackDelay time.Duration
	// CloseTimeout is how long RedisSubscriber.Close lets handlers finish
	// the messages they hold (ack or nack) before it cancels their
	// contexts. 0 means DefaultCloseTimeout, 5s: below the router's own
	// close timeout (10s in memhook), so that Close is over first.
	CloseTimeout time.Duration
	// DialTimeout bounds connecting to Redis, ReadTimeout waiting for an
	// answer, WriteTimeout sending a command. Each 0 means
	// DefaultRedisTimeout, 2s. A publish gives up after their sum.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// OnUndecodable, if set, is called by the subscriber after it moved an
	// entry it could not decode to the poison stream (or, for an entry of
	// the poison stream itself, acked it), with the entry's topic and the
	// reason; for counting. It must not block.
	OnUndecodable func(topic, reason string)
	// OnJoinRetry, if set, is called each time a subscription failed to
	// join its consumer group (Redis unreachable, full, or the key not a
	// stream), with the error and the wait before the next try; for
	// logging. Unset, the subscriber logs the failure at error level.
	OnJoinRetry func(topic string, err error, retryIn time.Duration)
	// OnJoined, if set, is called once a subscription has joined its
	// consumer group; for logging.
	OnJoined func(topic string)
	// OnTakeOver, if set, is called each time a subscription took over
	// entries of a consumer whose heartbeat is gone (or, consumer being
	// its own name, those an earlier process of that name left pending),
	// with how many; for logging. Unset, the subscriber logs at info
	// level.
	OnTakeOver func(topic, consumer string, entries int)
}

func (c *RedisConfig) setDefaults() {
	if c.URL == "" {
		c.URL = DefaultRedisURL
	}
	if c.ConsumerGroup == "" {
		c.ConsumerGroup = DefaultConsumerGroup
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer()
	}
	if c.MaxLen == 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.Consumers == 0 {
		c.Consumers = DefaultConsumers
	}
	if c.EventsTopic == "" {
		c.EventsTopic = DefaultEventsTopic
	}
	if c.PoisonTopic == "" {
		c.PoisonTopic = DefaultPoisonTopic
	}
	if c.RetryTopic == "" {
		c.RetryTopic = DefaultRetryTopic
	}
	if c.NackDelay == 0 {
		c.NackDelay = DefaultNackDelay
	}
	if c.TrimInterval == 0 {
		c.TrimInterval = DefaultTrimInterval
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	for _, d := range []*time.Duration{&c.DialTimeout, &c.ReadTimeout, &c.WriteTimeout} {
		if *d == 0 {
			*d = DefaultRedisTimeout
		}
	}
}

// Validate reports every problem of c at once (errors.Join), naming the
// field. It accepts the zero values the constructors replace by defaults,
// and a zero MaxIdleTime, which only NewRedisSubscriber refuses. A URL is
// quoted with its password redacted.
func (c RedisConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("redis transport: "+format, args...))
	}
	if c.URL != "" {
		if _, err := parseRedisURL(c.URL); err != nil {
			bad("URL: %v", err)
		}
	}
	if c.MaxIdleTime < 0 {
		bad("MaxIdleTime must not be negative, got %s", c.MaxIdleTime)
	}
	if c.MaxLen < 0 && c.MaxLen != NoMaxLen {
		bad("MaxLen must be positive or NoMaxLen, got %d", c.MaxLen)
	}
	if c.Consumers < 0 {
		bad("Consumers must not be negative, got %d", c.Consumers)
	}
	if cmp.Or(c.PoisonTopic, DefaultPoisonTopic) == cmp.Or(c.EventsTopic, DefaultEventsTopic) {
		bad("PoisonTopic and EventsTopic must differ, both are %q", cmp.Or(c.PoisonTopic, DefaultPoisonTopic))
	}
	if c.NackDelay < 0 {
		bad("NackDelay must not be negative, got %s", c.NackDelay)
	}
	if c.TrimInterval < 0 {
		bad("TrimInterval must not be negative, got %s", c.TrimInterval)
	}
	if c.GroupStart != GroupStartOldest && c.GroupStart != GroupStartNewest {
		bad("GroupStart must be GroupStartOldest or GroupStartNewest, got %d", c.GroupStart)
	}
	if c.CloseTimeout < 0 {
		bad("CloseTimeout must not be negative, got %s", c.CloseTimeout)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"DialTimeout", c.DialTimeout}, {"ReadTimeout", c.ReadTimeout}, {"WriteTimeout", c.WriteTimeout}} {
		if f.d < 0 {
			bad("%s must not be negative, got %s", f.name, f.d)
		}
	}
	return errors.Join(errs...)
}

// prepare applies the defaults and validates.
func (c *RedisConfig) prepare() error {
	c.setDefaults()
	return c.Validate()
}

// ClaimTimeout returns the RedisConfig.MaxIdleTime to use when handling one
// message takes at most worstCase (for memhook's chain, what
// middleware.Retry.WorstCase returns for the attempt timeout):
//
//	ClaimTimeout(worstCase) = 4 × worstCase + ClaimMargin (10s)
//
// Four, not one: Redis counts an entry as delivered when the reader
// fetches it, and a subscription keeps up to 3 × Consumers entries out
// for its Consumers workers — one being handled, up to one read ahead and
// up to one claimed per worker — so an entry can wait for up to two
// handlings before its own, and four keeps a margin. An entry unacked
// for MaxIdleTime is taken over and delivered again even from a live
// process, so anything shorter can fire a webhook twice under backlog. A
// nacked message (shutdown, or a failed publish to the poison stream) is
// handed out again and may exceed the bound. The result saturates instead
// of overflowing; a negative worstCase counts as zero.
func ClaimTimeout(worstCase time.Duration) time.Duration {
	worstCase = max(worstCase, 0)
	const maxDuration = time.Duration(1<<63 - 1)
	if worstCase > (maxDuration-ClaimMargin)/heldPerSubscription {
		return maxDuration
	}
	return heldPerSubscription*worstCase + ClaimMargin
}

// publishTimeout bounds one XADD, retries included.
func (c RedisConfig) publishTimeout() time.Duration {
	return c.DialTimeout + c.WriteTimeout + c.ReadTimeout
}

// newClient returns a go-redis client for c, which prepare has run on,
// with at most poolSize connections unless the URL says pool_size (0: the
// go-redis default, 10 × GOMAXPROCS).
func (c RedisConfig) newClient(poolSize int) (*redis.Client, error) {
	opts, err := parseRedisURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis transport: URL: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = c.DialTimeout, c.ReadTimeout, c.WriteTimeout
	// Deadlines of the contexts passed in bound the socket reads and writes
	// too, not only the waits between retries.
	opts.ContextTimeoutEnabled = true
	if opts.PoolSize == 0 {
		opts.PoolSize = poolSize
	}
	if opts.ClientName == "" {
		opts.ClientName = "memhook"
	}
	return redis.NewClient(opts), nil
}

// ValidateRedisURL checks raw as a RedisConfig.URL: redis:// or rediss://
// with a host, or unix:// with a socket path, in go-redis's syntax
// (redis://[user:password@]host[:port][/db][?option=value…]). It refuses
// an opaque URL ("redis:password@host", missing "//"), which go-redis
// would take for redis://127.0.0.1:6379. Its error shows the URL redacted
// as RedactedURL does, never a password; the caller names the variable.
func ValidateRedisURL(raw string) error {
	_, err := parseRedisURL(raw)
	return err
}

// parseRedisURL parses raw with redis.ParseURL after the checks of
// ValidateRedisURL; its errors never hold the URL's password.
func parseRedisURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// *url.Error quotes the URL, and its reason may quote a piece of a
		// password that was not escaped (":pa" of "redis://:pa/ss@host").
		return nil, errors.New("not a URL (a / ? # @ or space in a password must be percent-encoded)")
	}
	shown := redact.URL(raw)
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return nil, fmt.Errorf("%s: scheme must be redis, rediss or unix", shown)
	}
	if u.Opaque != "" {
		return nil, fmt.Errorf(`%s: "//" is missing after %q: write %s://[user:password@]host[:port][/db]`, shown, u.Scheme+":", u.Scheme)
	}
	if u.Scheme != "unix" && u.Hostname() == "" {
		return nil, fmt.Errorf("%s: host is missing", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return nil, fmt.Errorf("%s: port out of range (a # or / in a password must be percent-encoded)", shown)
		}
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", shown, redisProblem(err, u))
	}
	return opts, nil
}

// redisProblem returns go-redis's complaint about u without the values it
// quotes ("redis: invalid database number: \"<path>\"" may show a password
// written as the path): the text up to its second colon. The names of
// unexpected options are kept when written with "=" in the query, where
// RedactedURL shows them too.
func redisProblem(err error, u *url.URL) string {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "redis: ")
	if !ok {
		return "go-redis refuses it"
	}
	problem, detail, _ := strings.Cut(rest, ": ")
	if problem != "unexpected option" {
		return "redis: " + problem
	}
	named := map[string]bool{}
	for _, p := range strings.Split(u.RawQuery, "&") {
		if k, _, ok := strings.Cut(p, "="); ok {
			if k, err := url.QueryUnescape(k); err == nil {
				named[k] = true
			}
		}
	}
	names := strings.Split(detail, ", ")
	for i, n := range names {
		if !named[n] {
			names[i] = redact.Placeholder
		}
	}
	return "redis: unexpected option: " + strings.Join(names, ", ")
}

// RedactedURL returns c.URL (or the default) fit for logs and status
// pages: user information, query values, the fragment and path segments
// that look like tokens replaced by REDACTED (internal/redact.URL, as for
// webhook URLs).
func (c RedisConfig) RedactedURL() string {
	return redact.URL(cmp.Or(c.URL, DefaultRedisURL))
}

// RedisPublisher publishes Watermill messages to Redis streams, one stream
// per topic, in watermill-redisstream's format: any Watermill redisstream
// subscriber reads them. It owns its Redis client. Safe for concurrent use.
type RedisPublisher struct {
	cfg    RedisConfig
	client *redis.Client
	app    *appender

	mu      sync.RWMutex // Publish holds it shared, Close exclusively
	closed  bool
	lengths lengths // for the MaxLen check
}

var _ message.Publisher = (*RedisPublisher)(nil)

// NewRedisPublisher returns a publisher with its own Redis client: closing
// it closes that client only. It does not connect: a Redis that is down
// shows on the first Publish (or Ping). MaxIdleTime is not used. Publish
// refuses (ErrStreamFull) to append to a stream, the poison stream aside,
// that holds MaxLen entries; entries leave only through TrimAcked.
func NewRedisPublisher(cfg RedisConfig, logger watermill.LoggerAdapter) (*RedisPublisher, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	client, err := cfg.newClient(0)
	if err != nil {
		return nil, err
	}
	// No MAXLEN on XADD: only TrimAcked removes entries, never an
	// unacknowledged one.
	return &RedisPublisher{cfg: cfg, client: client, app: &appender{client: client, timeout: cfg.publishTimeout()}}, nil
}

// streamMaxLen turns MaxLen into XADD's MAXLEN, 0 meaning none.
func streamMaxLen(n int64) int64 {
	if n == NoMaxLen {
		return 0
	}
	return n
}

// Publish appends each message to the stream named topic (created if
// missing), in watermill-redisstream's format, in order, and returns once
// Redis has acknowledged them. The XADDs of concurrent Publish calls go to
// Redis together, in one pipeline: many goroutines publishing share round
// trips. Each call gets at most DialTimeout + WriteTimeout + ReadTimeout
// (6s by default), sooner if a message's context ends: with Redis
// unreachable Publish returns an error, it never hangs. An error says how
// many of the messages were not published; a message whose context ended
// while waiting may still have been appended. After Close it returns
// ErrClosed. The messages themselves are not modified.
func (p *RedisPublisher) Publish(topic string, messages ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	errs := make([]error, len(messages))
	dones := make([]<-chan error, len(messages))
	for i, msg := range messages {
		if max := streamMaxLen(p.cfg.MaxLen); max > 0 && topic != p.cfg.PoisonTopic {
			ctx, cancel := context.WithTimeout(msg.Context(), p.cfg.publishTimeout())
			full, err := p.lengths.full(ctx, p.client, topic, max)
			cancel()
			if err == nil && full {
				err = ErrStreamFull
			}
			if err != nil {
				errs[i] = err
				continue
			}
		}
		values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(topic, msg)
		if err != nil {
			errs[i] = err
			continue
		}
		dones[i] = p.app.add(topic, values)
	}
	failed := 0
	var first error
	for i, done := range dones {
		if done != nil {
			select {
			case errs[i] = <-done:
			case <-messages[i].Context().Done():
				errs[i] = messages[i].Context().Err()
			}
		}
		if errs[i] != nil {
			failed++
			if first == nil {
				first = errs[i]
			}
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(messages) == 1:
		return fmt.Errorf("redis transport: publishing to %s: %w", topic, first)
	}
	return fmt.Errorf("redis transport: publishing to %s: %d of %d messages not published: %w", topic, failed, len(messages), first)
}

// Ping checks that Redis answers on the publisher's client, within ctx and
// at most DialTimeout + ReadTimeout: a readiness probe.
func (p *RedisPublisher) Ping(ctx context.Context) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return ping(ctx, p.client, p.cfg)
}

// Close closes the publisher and its Redis client. It is idempotent and
// safe from several goroutines; it waits for Publish calls in progress.
func (p *RedisPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.client.Close()
}

// RedisPing checks, on a fresh connection, that the Redis cfg names answers
// PING, within ctx and at most DialTimeout + ReadTimeout. For /readyz and
// the CLI; a process holding a publisher or subscriber can call their Ping.
func RedisPing(ctx context.Context, cfg RedisConfig) error {
	if err := cfg.prepare(); err != nil {
		return err
	}
	client, err := cfg.newClient(1)
	if err != nil {
		return err
	}
	defer client.Close()
	return ping(ctx, client, cfg)
}

func ping(ctx context.Context, client *redis.Client, cfg RedisConfig) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout+cfg.ReadTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis transport: ping %s: %w", cfg.RedactedURL(), err)
	}
	return nil
}
