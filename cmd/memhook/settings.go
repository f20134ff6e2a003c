package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/transports"

	"github.com/memhook/memhook/logbuf"
)

// seconds writes d as the seed writes durations: a number of seconds.
func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// setting is one configuration variable; flag is its flag's name, empty
// when it has none (the seed's MEM0_* variables and secrets stay
// environment-only: a flag would show a secret in the process list).
type setting struct {
	env, flag, def, help string
}

// settings lists every variable memhook reads, in help order. A function,
// not a package variable: no package-level state.
func settings() []setting {
	return []setting{
		{"MEM0_WEBHOOK_URL", "", "(unset: webhooks off)", "where webhooks are POSTed (http or https)"},
		{"MEM0_WEBHOOK_TOKEN", "", "", "bearer token sent in Authorization"},
		{"MEM0_WEBHOOK_SECRET", "", "", "signing secret (also sent in X-Webhook-Secret unless turned off)"},
		{"MEM0_WEBHOOK_TIMEOUT", "", seconds(bus.DefaultTimeout), "seconds per delivery attempt"},
		{"MEM0_WEBHOOK_RETRY_COUNT", "", strconv.Itoa(bus.DefaultRetryCount), "retries after the first attempt; 0 = none"},
		{"MEM0_WEBHOOK_RETRY_DELAY", "", fmt.Sprintf("%.1f", bus.DefaultRetryDelay.Seconds()), "first retry delay in seconds, doubled each time"},
		{"MEMHOOK_RETRY_SCHEDULE", "retry-schedule", "(unset: the seed's)", "comma list of Go durations, one retry each (e.g. 5s,5m,30m,2h,5h,10h,10h); replaces RETRY_COUNT/RETRY_DELAY"},
		{"MEM0_WEBHOOK_EVENTS", "", "all", "all, none, or a comma list of event names"},
		{"MEMHOOK_ENDPOINTS_FILE", "endpoints", "(unset: MEM0_WEBHOOK_URL only)", "YAML file of more endpoints, each with its own URL, filter, secret, schedule; serve reloads it on SIGHUP"},
		{"MEMHOOK_ORDERING", "ordering", bus.OrderingNone, "user: the default endpoint's events of one user_id go one at a time, in the order accepted (transports memory, redis); none: side by side"},
		{"MEMHOOK_PAUSE_AFTER", "pause-after", strconv.Itoa(bus.DefaultPauseAfter), "failed attempts in a row, a second or more after the last success, that pause an endpoint (its events wait, probes go out); 0 = never"},
		{"MEMHOOK_ATTEMPT_LOG_MAX", "attempt-log-max", fmt.Sprintf("(unset: %d, on redis %d)", bus.DefaultAttemptLogMax, bus.DefaultRedisAttemptLogMax), "delivery attempts kept for operators (transport redis: the stream " + attemptlog.DefaultStream + ", shared by every router; else in memory); 0 = none"},
		{"MEMHOOK_DLQ_MAX", "dlq-max", strconv.Itoa(bus.DefaultDeadLetterMax), "transports memory, http, pub/sub: poisoned events kept for listing and replay, the oldest leaving first; 0 = none (redis: its poison stream)"},
		{"BOT_VERSION", "", bus.DefaultBotVersion, "the envelope's bot_version"},
		{"MEMHOOK_TRANSPORT", "transport", bus.TransportMemory, "memory | http | redis"},
		{"MEMHOOK_REDIS_URL", "", transports.DefaultRedisURL, "transport redis: Redis to use (may hold a password: env only)"},
		{"MEMHOOK_REDIS_GROUP", "redis-group", bus.DefaultGroup, "transport redis: consumer group of the router processes"},
		{"MEMHOOK_REDIS_CONSUMER", "redis-consumer", "hostname-pid", "transport redis: this process's consumer name"},
		{"MEMHOOK_REDIS_MAXLEN", "redis-maxlen", strconv.Itoa(transports.DefaultMaxLen), "transport redis: refuse appends while the stream holds this many unacknowledged entries; 0 = unbounded"},
		{"MEMHOOK_ADDR", "addr", defaultAddr, "serve: listen address"},
		{"MEMHOOK_ROUTER_URL", "router-url", bus.DefaultRouterURL, "transport http: the serve process to hand events to; endpoints, attempts, events, dlq: the serve whose admin API to ask"},
		{"MEMHOOK_QUEUE_CAPACITY", "queue-capacity", strconv.Itoa(bus.DefaultQueueCapacity), "events queued in memory before Emit refuses"},
		{"MEMHOOK_CONCURRENCY", "concurrency", strconv.Itoa(bus.DefaultConcurrency), "deliveries in flight at once"},
		{"MEMHOOK_MAX_RETRY_AFTER", "max-retry-after", seconds(bus.DefaultMaxRetryAfter), "cap on a receiver's Retry-After, seconds"},
		{"MEMHOOK_SOURCE", "source", event.DefaultSource, "the envelope's source"},
		{"MEMHOOK_LEGACY_SECRET_HEADER", "legacy-secret-header", "true", "false stops sending X-Webhook-Secret"},
		{"MEMHOOK_SHUTDOWN_TIMEOUT", "shutdown-timeout", seconds(defaultShutdownTimeout), "serve: seconds to drain deliveries on SIGTERM"},
		{"MEMHOOK_LOG_FORMAT", "log-format", "text", "text | json; lines go to stderr in batches, each within " + logbuf.DefaultFlushInterval.String() + ", all of them before exit"},
		{"MEMHOOK_LOG_LEVEL", "log-level", "info", "debug | info | warn | error"},
		{"MEMHOOK_CPU_PROFILE", "cpu-profile", "(unset: none)", "serve: write a CPU profile (go tool pprof) of the whole run to this file"},
		{"MEMHOOK_TLS_CERT", "tls-cert", "(unset: plain http)", "serve: PEM certificate file (chain, leaf first); with MEMHOOK_TLS_KEY serves https only"},
		{"MEMHOOK_TLS_KEY", "tls-key", "(unset: plain http)", "serve: PEM private key file of MEMHOOK_TLS_CERT"},
		{"MEMHOOK_ADMIN_TOKEN", "", "", "serve: bearer token for status, test and the admin API under /api/ (required off loopback); the commands that ask a serve send it"},
		{"MEMHOOK_INCOMING_TOKEN", "", "", "serve: bearer token POST /webhooks/memory requires"},
		{"MEMHOOK_INGEST_TOKEN", "", "", "bearer token of /ingest (serve requires it, transport http sends it)"},
		{"MEMHOOK_INCOMING_SECRET", "", "", "serve: Standard Webhooks secret(s) POST /webhooks/memory accepts signatures from"},
		{"MEMHOOK_INGEST_SECRET", "", "", "Standard Webhooks secret(s) of /ingest (serve checks, transport http signs)"},
	}
}

// config holds one command's flags over the environment.
type config struct {
	fs      *flag.FlagSet
	values  map[string]*string // env name → flag value
	envOf   map[string]string  // flag name → env name
	lookup  func(string) (string, bool)
	fromSet map[string]bool // env names whose value came from a flag
}

// newConfig registers a flag for every setting that has one; the flag's
// help shows the variable and the documented default.
func newConfig(fs *flag.FlagSet, lookup func(string) (string, bool)) *config {
	c := &config{fs: fs, values: map[string]*string{}, envOf: map[string]string{}, lookup: lookup}
	for _, s := range settings() {
		if s.flag == "" {
			continue
		}
		c.values[s.env] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %s)", s.help, s.env, s.def))
		c.envOf[s.flag] = s.env
	}
	return c
}

// parse parses args and notes which settings came from flags.
func (c *config) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	c.fromSet = map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) {
		if env, ok := c.envOf[f.Name]; ok {
			c.fromSet[env] = true
		}
	})
	return nil
}

// Lookup returns a flag's value when the flag was given (flags win), else
// the environment's.
func (c *config) Lookup(name string) (string, bool) {
	if c.fromSet[name] {
		return *c.values[name], true
	}
	return c.lookup(name)
}

// explain rewrites an error that names a variable whose value came from a
// flag so that it names the flag.
func (c *config) explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range settings() {
		if s.flag != "" && c.fromSet[s.env] && strings.Contains(msg, s.env) {
			msg = strings.ReplaceAll(msg, s.env, "--"+s.flag)
			changed = true
		}
	}
	if !changed {
		return err
	}
	return fmt.Errorf("%s", msg)
}

// printSettings writes the variable table of --help.
func printSettings(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tFLAG\tDEFAULT\tMEANING")
	for _, s := range settings() {
		f := "-"
		if s.flag != "" {
			f = "--" + s.flag
		}
		def := s.def
		if def == "" {
			def = "(unset)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.env, f, def, s.help)
	}
	_ = tw.Flush()
}
