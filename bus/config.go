package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/wmlog"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// Transport names, the values of MEMHOOK_TRANSPORT.
const (
	TransportMemory = "memory"
	TransportRedis  = "redis"
	TransportHTTP   = "http"
	// TransportPubSub is what Config.Transport says on a bus New built
	// WithPubSub; it is not a value of MEMHOOK_TRANSPORT.
	TransportPubSub = "pubsub"
)

// Disabled as an int or duration field of Config turns that feature off
// where the field's comment says so.
const Disabled = -1

// Config is everything the bus needs. Zero values mean the documented
// default; ConfigFromEnv fills it from the seed's MEM0_* variables and
// memhook's MEMHOOK_* ones. New calls setDefaults and Validate.
type Config struct {
	// WebhookURL receives the webhooks (MEM0_WEBHOOK_URL). Empty turns
	// webhooks off: events are accepted and counted as filtered.
	WebhookURL string
	// Token is sent as "Authorization: Bearer <Token>" (MEM0_WEBHOOK_TOKEN);
	// empty sends no Authorization header.
	Token string
	// Secret is the signing secret (MEM0_WEBHOOK_SECRET); empty signs
	// nothing. Several secrets separated by spaces or commas all sign
	// (rotation). "whsec_<base64>" is decoded as Standard Webhooks says;
	// any other string is used as raw key bytes. The first secret is also
	// sent as-is in the seed's X-Webhook-Secret header unless
	// DisableLegacySecretHeader is set.
	Secret string
	// DisableLegacySecretHeader stops sending the raw secret in
	// X-Webhook-Secret (MEMHOOK_LEGACY_SECRET_HEADER=false). Default false:
	// the header is sent, as the seed does.
	DisableLegacySecretHeader bool
	// Timeout bounds one delivery attempt (MEM0_WEBHOOK_TIMEOUT, seconds);
	// 0 means 30s.
	Timeout time.Duration
	// RetryCount is how many times a failed delivery is retried
	// (MEM0_WEBHOOK_RETRY_COUNT); 0 means 3, Disabled means no retry.
	RetryCount int
	// RetryDelay is the first retry's delay, doubled for each next one
	// (MEM0_WEBHOOK_RETRY_DELAY, seconds); 0 means 1s.
	RetryDelay time.Duration
	// RetrySchedule, when set, replaces RetryCount and RetryDelay: the wait
	// before each retry, one retry per entry (MEMHOOK_RETRY_SCHEDULE, a
	// comma list of Go durations such as "5s,5m,30m,2h,5h,10h,10h"). Jitter
	// (up to a tenth) is added to each. Empty means the seed's schedule.
	RetrySchedule []time.Duration
	// MaxRetryAfter caps a receiver's Retry-After (MEMHOOK_MAX_RETRY_AFTER);
	// 0 means 60s.
	MaxRetryAfter time.Duration
	// Events selects the events sent (MEM0_WEBHOOK_EVENTS: "all", "none" or
	// a comma list); empty means "all".
	Events string
	// BotVersion is the envelope's bot_version (BOT_VERSION); empty means
	// "1.0.0".
	BotVersion string
	// Source is the envelope's source (MEMHOOK_SOURCE); empty means
	// "markdown-brain-bot".
	Source string
	// Transport is "memory", "redis" or "http" (MEMHOOK_TRANSPORT); empty
	// means "memory".
	Transport string
	// QueueCapacity bounds the in-memory queue (MEMHOOK_QUEUE_CAPACITY);
	// 0 means 10 000. Emit returns ErrQueueFull when it is full.
	QueueCapacity int
	// Concurrency is how many deliveries run at once
	// (MEMHOOK_CONCURRENCY); 0 means 16.
	Concurrency int
	// RouterURL is the base URL of the `memhook serve` process an
	// application with Transport "http" hands its events to
	// (MEMHOOK_ROUTER_URL); empty means http://127.0.0.1:8000. Events are
	// POSTed to RouterURL + IngestPath.
	RouterURL string
	// IngestToken is the bearer token of the router's ingest endpoint
	// (MEMHOOK_INGEST_TOKEN): sent by an application with Transport "http",
	// required by `memhook serve` when set.
	IngestToken string
	// IngestSecret, when set, signs what an application with Transport
	// "http" sends to the router (MEMHOOK_INGEST_SECRET), Standard
	// Webhooks style; `memhook serve` checks it. Same syntax as Secret.
	IngestSecret string
	// RedisURL locates Redis for Transport "redis" (MEMHOOK_REDIS_URL):
	// redis://[user:password@]host[:port][/db], rediss:// for TLS. Empty
	// means redis://127.0.0.1:6379/0.
	RedisURL string
	// RedisGroup is the consumer group the router processes share
	// (MEMHOOK_REDIS_GROUP); empty means "memhook".
	RedisGroup string
	// RedisConsumer names this process in the group
	// (MEMHOOK_REDIS_CONSUMER); empty means hostname-pid. It must be unique
	// among running processes and stable while one runs.
	RedisConsumer string
	// RedisMaxLen bounds the events stream (MEMHOOK_REDIS_MAXLEN): Emit
	// refuses to append while it holds this many entries; delivering
	// processes remove only acknowledged ones. 0 means 1 000 000, Disabled
	// unbounded.
	RedisMaxLen int64
	// PauseAfter is how many failed attempts in a row pause an endpoint
	// (MEMHOOK_PAUSE_AFTER), at least middleware.DefaultBreakerGrace (1 s)
	// after its last success: its events then wait, none poisoned, while a
	// probe goes out now and then (5 s, doubling up to 5 min); the first
	// success resumes it. 0 means 10, Disabled never pauses.
	PauseAfter int
	// Ordering is the default endpoint's Endpoint.Ordering
	// (MEMHOOK_ORDERING): OrderingNone (empty means it) or OrderingUser.
	Ordering string
	// AttemptLogMax is how many delivery attempts the attempt log keeps
	// (MEMHOOK_ATTEMPT_LOG_MAX; Bus.Attempts lists them): on transport
	// redis in the stream memory.events:attempts every router shares,
	// trimmed to about this many, elsewhere in a ring in this process.
	// 0 means DefaultAttemptLogMax (10 000), on redis
	// DefaultRedisAttemptLogMax (100 000); Disabled keeps none.
	AttemptLogMax int
	// DeadLetterMax bounds the dead-letter queue this process keeps on
	// the memory transports (memory, http, a brought pub/sub): the events
	// its poison consumer took, for DeadLetters, Replay and
	// RecoverEndpoint (MEMHOOK_DLQ_MAX). Past it the oldest leaves,
	// counted and logged at WARN. 0 means 10 000, Disabled keeps none. On
	// Redis the poison stream is the queue, and this does not apply.
	DeadLetterMax int
	// Endpoints are the receivers beside the default one (WebhookURL and
	// the fields above it define the endpoint DefaultEndpoint): every
	// event goes to each endpoint whose Events select it, each on its own
	// subscription. `memhook serve` reads them from MEMHOOK_ENDPOINTS_FILE
	// (LoadEndpoints). Empty: only the default endpoint.
	Endpoints []Endpoint
}

// IngestPath is the path of the router's ingest endpoint.
const IngestPath = "/ingest"

// routerURL is path on the router at RouterURL (transport http).
func (c Config) routerURL(path string) string {
	return strings.TrimSuffix(c.RouterURL, "/") + path
}

// IngestBatchPath is the path of the router's endpoint for several events
// per request, where transport "http" sends when events queue up.
const IngestBatchPath = "/ingest/batch"

// DefaultRouterURL is where an application with Transport "http" finds the
// router unless RouterURL says otherwise.
const DefaultRouterURL = "http://127.0.0.1:8000"

// Defaults of Config, applied by setDefaults.
const (
	DefaultTimeout       = middleware.DefaultAttemptTimeout
	DefaultRetryCount    = middleware.DefaultMaxRetries
	DefaultRetryDelay    = middleware.DefaultInitialInterval
	DefaultMaxRetryAfter = middleware.DefaultMaxRetryAfter
	DefaultBotVersion    = "1.0.0"
	DefaultQueueCapacity = transports.DefaultCapacity
	DefaultConcurrency   = transports.DefaultWorkers
	DefaultGroup         = transports.DefaultConsumerGroup
	DefaultPauseAfter    = middleware.DefaultBreakerThreshold
	// DefaultAttemptLogMax is AttemptLogMax's default but on redis.
	DefaultAttemptLogMax = attemptlog.DefaultRingSize
	// DefaultRedisAttemptLogMax is AttemptLogMax's default on redis.
	DefaultRedisAttemptLogMax = attemptlog.DefaultRedisMaxLen
	DefaultDeadLetterMax      = 10_000
)

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetryCount == 0 {
		c.RetryCount = DefaultRetryCount
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.Events == "" {
		c.Events = "all"
	}
	if c.BotVersion == "" {
		c.BotVersion = DefaultBotVersion
	}
	if c.Source == "" {
		c.Source = event.DefaultSource
	}
	if c.Transport == "" {
		c.Transport = TransportMemory
	}
	if c.QueueCapacity == 0 {
		c.QueueCapacity = DefaultQueueCapacity
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.RouterURL == "" {
		c.RouterURL = DefaultRouterURL
	}
	if c.RedisGroup == "" {
		c.RedisGroup = DefaultGroup
	}
	if c.RedisConsumer == "" {
		c.RedisConsumer = transports.DefaultConsumer()
	}
	if c.PauseAfter == 0 {
		c.PauseAfter = DefaultPauseAfter
	}
	if c.AttemptLogMax == 0 {
		c.AttemptLogMax = DefaultAttemptLogMax
		if c.Transport == TransportRedis {
			c.AttemptLogMax = DefaultRedisAttemptLogMax
		}
	}
	if c.DeadLetterMax == 0 {
		c.DeadLetterMax = DefaultDeadLetterMax
	}
}

// Validate reports every problem of c at once (errors.Join), each naming the
// field, its variable and the bad value — never a secret's value.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s (%s): %s", env, field, fmt.Sprintf(format, args...)))
	}
	if c.WebhookURL != "" {
		if err := handlers.ValidateURL(c.WebhookURL); err != nil {
			bad("WebhookURL", "MEM0_WEBHOOK_URL", "%v", err)
		}
	}
	if c.Secret != "" {
		if _, err := verify.ParseSecrets(c.Secret); err != nil {
			bad("Secret", "MEM0_WEBHOOK_SECRET", "%v", err) // never echoes the secret
		}
	}
	if c.IngestSecret != "" {
		if _, err := verify.ParseSecrets(c.IngestSecret); err != nil {
			bad("IngestSecret", "MEMHOOK_INGEST_SECRET", "%v", err)
		}
	}
	if c.Timeout < 0 {
		bad("Timeout", "MEM0_WEBHOOK_TIMEOUT", "must be positive, got %s", c.Timeout)
	}
	if c.RetryCount < 0 && c.RetryCount != Disabled {
		bad("RetryCount", "MEM0_WEBHOOK_RETRY_COUNT", "must not be negative, got %d", c.RetryCount)
	}
	if c.RetryDelay < 0 {
		bad("RetryDelay", "MEM0_WEBHOOK_RETRY_DELAY", "must not be negative, got %s", c.RetryDelay)
	}
	if c.MaxRetryAfter < 0 {
		bad("MaxRetryAfter", "MEMHOOK_MAX_RETRY_AFTER", "must not be negative, got %s", c.MaxRetryAfter)
	}
	for i, d := range c.RetrySchedule {
		if d <= 0 {
			bad("RetrySchedule", "MEMHOOK_RETRY_SCHEDULE", "entry %d must be more than 0, got %s", i+1, d)
		}
	}
	if _, err := event.ParseSet(c.Events); err != nil {
		bad("Events", "MEM0_WEBHOOK_EVENTS", "%v", err)
	}
	switch c.Transport {
	case "", TransportMemory, TransportRedis, TransportHTTP, TransportPubSub:
	default:
		bad("Transport", "MEMHOOK_TRANSPORT", "%q is not one of memory, redis, http", c.Transport)
	}
	if c.QueueCapacity < 0 {
		bad("QueueCapacity", "MEMHOOK_QUEUE_CAPACITY", "must not be negative, got %d", c.QueueCapacity)
	}
	switch c.Ordering {
	case "", OrderingNone, OrderingUser:
	default:
		bad("Ordering", "MEMHOOK_ORDERING", "want none or user, got %q", c.Ordering)
	}
	if c.PauseAfter < 0 && c.PauseAfter != Disabled {
		bad("PauseAfter", "MEMHOOK_PAUSE_AFTER", "must not be negative, got %d", c.PauseAfter)
	}
	if c.AttemptLogMax < 0 && c.AttemptLogMax != Disabled {
		bad("AttemptLogMax", "MEMHOOK_ATTEMPT_LOG_MAX", "must not be negative, got %d", c.AttemptLogMax)
	}
	if c.DeadLetterMax < 0 && c.DeadLetterMax != Disabled {
		bad("DeadLetterMax", "MEMHOOK_DLQ_MAX", "must not be negative, got %d", c.DeadLetterMax)
	}
	if c.Concurrency < 0 {
		bad("Concurrency", "MEMHOOK_CONCURRENCY", "must not be negative, got %d", c.Concurrency)
	}
	if c.RouterURL != "" {
		if err := handlers.ValidateURL(c.RouterURL); err != nil {
			bad("RouterURL", "MEMHOOK_ROUTER_URL", "%v", err)
		}
	}
	if c.RedisURL != "" {
		if err := transports.ValidateRedisURL(c.RedisURL); err != nil {
			bad("RedisURL", "MEMHOOK_REDIS_URL", "%v", err) // redacts the URL's password
		}
	}
	if err := validateEndpoints(c.Endpoints); err != nil {
		errs = append(errs, err)
	}
	if c.Transport == TransportRedis {
		rc := c.RedisConfig()
		rc.URL = "" // checked above, naming its variable
		if err := rc.Validate(); err != nil {
			bad("Redis…", "MEMHOOK_REDIS_*", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// ConfigFromEnv reads Config from the process environment; see
// ConfigFromLookup.
func ConfigFromEnv() (Config, error) {
	return ConfigFromLookup(os.LookupEnv)
}

// ConfigFromLookup reads Config from the variables lookup returns: the
// seed's MEM0_WEBHOOK_URL, _TOKEN, _SECRET, _TIMEOUT (seconds, may be
// fractional, or a Go duration such as "500ms"), _RETRY_COUNT, _RETRY_DELAY
// (like _TIMEOUT), _EVENTS and BOT_VERSION, and memhook's MEMHOOK_TRANSPORT,
// MEMHOOK_QUEUE_CAPACITY, MEMHOOK_CONCURRENCY, MEMHOOK_MAX_RETRY_AFTER,
// MEMHOOK_SOURCE, MEMHOOK_LEGACY_SECRET_HEADER, MEMHOOK_ROUTER_URL,
// MEMHOOK_INGEST_TOKEN, MEMHOOK_PAUSE_AFTER, MEMHOOK_ATTEMPT_LOG_MAX (0:
// none kept), MEMHOOK_DLQ_MAX, the MEMHOOK_REDIS_* ones, and
// MEMHOOK_ENDPOINTS_FILE (read with LoadEndpoints, ${VAR}s through
// lookup). Unset or empty variables
// keep the default. Every bad value is reported at once, naming the
// variable and the value (secrets are never echoed). The result is
// validated.
func ConfigFromLookup(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	var errs []error
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	bad := func(name, val, problem string) {
		errs = append(errs, fmt.Errorf("%s=%q: %s", name, val, problem))
	}
	duration := func(name string, dst *time.Duration) (set bool) {
		v := get(name)
		if v == "" {
			return false
		}
		d, err := ParseSeconds(v)
		if err != nil {
			bad(name, v, err.Error())
			return false
		}
		*dst = d
		return true
	}
	integer := func(name string, dst *int, zero int) {
		v := get(name)
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			bad(name, v, "not a whole number")
		case n < 0:
			bad(name, v, "must not be negative")
		case n == 0:
			*dst = zero
		default:
			*dst = n
		}
	}

	c.WebhookURL = get("MEM0_WEBHOOK_URL")
	if c.WebhookURL != "" {
		if err := handlers.ValidateURL(c.WebhookURL); err != nil {
			errs = append(errs, fmt.Errorf("MEM0_WEBHOOK_URL: %w", err))
		}
	}
	c.Token = get("MEM0_WEBHOOK_TOKEN")
	c.Secret = get("MEM0_WEBHOOK_SECRET")
	if c.Secret != "" {
		if _, err := verify.ParseSecrets(c.Secret); err != nil {
			errs = append(errs, fmt.Errorf("MEM0_WEBHOOK_SECRET: %w", err)) // the value is never echoed
		}
	}
	if duration("MEM0_WEBHOOK_TIMEOUT", &c.Timeout) && c.Timeout <= 0 {
		bad("MEM0_WEBHOOK_TIMEOUT", get("MEM0_WEBHOOK_TIMEOUT"), "must be more than 0")
		c.Timeout = 0
	}
	integer("MEM0_WEBHOOK_RETRY_COUNT", &c.RetryCount, Disabled)
	if v := get("MEMHOOK_RETRY_SCHEDULE"); v != "" {
		for i, part := range strings.Split(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(part))
			switch {
			case err != nil:
				bad("MEMHOOK_RETRY_SCHEDULE", v, fmt.Sprintf("entry %d (%q) is not a Go duration such as 5s or 2h", i+1, strings.TrimSpace(part)))
			case d <= 0:
				bad("MEMHOOK_RETRY_SCHEDULE", v, fmt.Sprintf("entry %d (%q) must be more than 0", i+1, strings.TrimSpace(part)))
			default:
				c.RetrySchedule = append(c.RetrySchedule, d)
			}
		}
	}
	duration("MEM0_WEBHOOK_RETRY_DELAY", &c.RetryDelay)
	if c.RetryDelay < 0 {
		bad("MEM0_WEBHOOK_RETRY_DELAY", get("MEM0_WEBHOOK_RETRY_DELAY"), "must not be negative")
		c.RetryDelay = 0
	}
	if v := get("MEM0_WEBHOOK_EVENTS"); v != "" {
		if _, err := event.ParseSet(v); err != nil {
			bad("MEM0_WEBHOOK_EVENTS", v, err.Error())
		}
		c.Events = v
	}
	c.BotVersion = get("BOT_VERSION")
	c.Source = get("MEMHOOK_SOURCE")
	if v := get("MEMHOOK_LEGACY_SECRET_HEADER"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			bad("MEMHOOK_LEGACY_SECRET_HEADER", v, "must be true or false")
		}
		c.DisableLegacySecretHeader = err == nil && !on
	}
	if v := get("MEMHOOK_TRANSPORT"); v != "" {
		c.Transport = strings.ToLower(v)
		switch c.Transport {
		case TransportMemory, TransportRedis, TransportHTTP:
		default:
			bad("MEMHOOK_TRANSPORT", v, "must be memory, redis or http")
		}
	}
	integer("MEMHOOK_QUEUE_CAPACITY", &c.QueueCapacity, 0)
	integer("MEMHOOK_CONCURRENCY", &c.Concurrency, 0)
	integer("MEMHOOK_PAUSE_AFTER", &c.PauseAfter, Disabled)
	if v := get("MEMHOOK_ORDERING"); v != "" {
		c.Ordering = strings.ToLower(v)
		switch c.Ordering {
		case OrderingNone, OrderingUser:
		default:
			bad("MEMHOOK_ORDERING", v, "must be none or user")
		}
	}
	integer("MEMHOOK_ATTEMPT_LOG_MAX", &c.AttemptLogMax, Disabled)
	integer("MEMHOOK_DLQ_MAX", &c.DeadLetterMax, Disabled)
	duration("MEMHOOK_MAX_RETRY_AFTER", &c.MaxRetryAfter)
	c.RouterURL = get("MEMHOOK_ROUTER_URL")
	if c.RouterURL != "" {
		if err := handlers.ValidateURL(c.RouterURL); err != nil {
			errs = append(errs, fmt.Errorf("MEMHOOK_ROUTER_URL: %w", err))
		}
	}
	c.IngestToken = get("MEMHOOK_INGEST_TOKEN")
	c.RedisURL = get("MEMHOOK_REDIS_URL")
	if c.RedisURL != "" {
		if err := transports.ValidateRedisURL(c.RedisURL); err != nil {
			errs = append(errs, fmt.Errorf("MEMHOOK_REDIS_URL: %w", err))
		}
	}
	c.RedisGroup = get("MEMHOOK_REDIS_GROUP")
	c.RedisConsumer = get("MEMHOOK_REDIS_CONSUMER")
	if v := get("MEMHOOK_REDIS_MAXLEN"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil || n < 0:
			bad("MEMHOOK_REDIS_MAXLEN", v, "must be a whole number, 0 for never trimming")
		case n == 0:
			c.RedisMaxLen = Disabled
		default:
			c.RedisMaxLen = n
		}
	}
	if v := get("MEMHOOK_ENDPOINTS_FILE"); v != "" {
		eps, err := LoadEndpoints(v, lookup)
		if err != nil {
			errs = append(errs, fmt.Errorf("MEMHOOK_ENDPOINTS_FILE: %w", err))
		}
		c.Endpoints = eps
	}
	c.IngestSecret = get("MEMHOOK_INGEST_SECRET")
	if c.IngestSecret != "" {
		if _, err := verify.ParseSecrets(c.IngestSecret); err != nil {
			errs = append(errs, fmt.Errorf("MEMHOOK_INGEST_SECRET: %w", err))
		}
	}
	if c.MaxRetryAfter < 0 {
		bad("MEMHOOK_MAX_RETRY_AFTER", get("MEMHOOK_MAX_RETRY_AFTER"), "must not be negative")
		c.MaxRetryAfter = 0
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	c.setDefaults()
	return c, c.Validate()
}

// ParseSeconds reads a duration the seed's way, a number of seconds that
// may be fractional ("30", "1.0", "0.25"), or as a Go duration ("500ms").
func ParseSeconds(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f != f || f > float64(1<<62)/float64(time.Second) || f < -float64(1<<62)/float64(time.Second) {
			return 0, errors.New("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("not a number of seconds or a duration such as 500ms")
	}
	return d, nil
}

// memoryConfig is the in-process queue c configures; onShed, when set,
// takes the events an endpoint's full queue gives up (several endpoints).
func (c Config) memoryConfig(log *slog.Logger, onShed func(topic, group string, msg *message.Message)) transports.MemoryConfig {
	return transports.MemoryConfig{
		Capacity: c.QueueCapacity,
		Workers:  c.Concurrency,
		Logger:   wmlog.New(log, slog.LevelDebug),
		OnShed:   onShed,
	}
}

// RedisConfig returns the Redis transport's configuration derived from
// cfg: the stream's claim timeout (MaxIdleTime) is
// transports.ClaimTimeout(Timeout): a handling is one attempt, so a slow
// but live delivery is never taken over by another router process.
func (c Config) RedisConfig() transports.RedisConfig {
	maxLen := c.RedisMaxLen
	if maxLen == Disabled {
		maxLen = transports.NoMaxLen
	}
	return transports.RedisConfig{
		URL:           c.RedisURL,
		ConsumerGroup: c.RedisGroup,
		Consumer:      c.RedisConsumer,
		MaxIdleTime:   transports.ClaimTimeout(c.Timeout),
		MaxLen:        maxLen,
		Consumers:     c.Concurrency,
		EventsTopic:   Topic,
		PoisonTopic:   PoisonTopic,
		RetryTopic:    RetryTopic,
	}
}

// RetryDelays returns the retry schedule in effect, the wait before each
// retry without jitter: RetrySchedule when set, else the seed's RetryCount
// retries from RetryDelay, doubling; none with RetryCount Disabled. Call it
// on a Config with its defaults applied (ConfigFromLookup's, or
// Bus.Config); `memhook serve` logs and reports it.
func (c Config) RetryDelays() []time.Duration {
	if len(c.RetrySchedule) > 0 {
		return slices.Clone(c.RetrySchedule)
	}
	if c.RetryCount == Disabled {
		return []time.Duration{}
	}
	return middleware.SeedDelays(c.RetryCount, c.RetryDelay)
}
