package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/transports"
)

// defaultRetriesLimit is how many retries `memhook retries list` shows
// unless --limit says otherwise.
const defaultRetriesLimit = 100

const retriesUsage = `Usage: memhook retries list [--endpoint NAME] [--json] [--limit N]

Lists the retries waiting in Redis (transport redis, MEMHOOK_REDIS_URL) for
one endpoint, soonest first: the event id, type and user, the attempt each
waits to make (2 for the first retry) and when it is due. --endpoint names
the endpoint (default: the seed's MEM0_WEBHOOK_URL one, "default").
--limit 0 lists them all.

On transport memory (and http, whose router delivers from memory) the
retries wait inside the running memhook serve process: see its /metrics
(memhook_retries_waiting, memhook_oldest_retry_due_timestamp_seconds) or
/webhooks/memory/status (counters.retries_waiting, oldest_retry_due).`

// retries lists the retries waiting in the Redis delay store.
func retries(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, retriesUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("memhook retries list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	limit := fs.Int("limit", defaultRetriesLimit, "at most this many retries, soonest first; 0 = all")
	asJSON := fs.Bool("json", false, "JSON lines instead of a table")
	endpoint := fs.String("endpoint", transports.DefaultEndpointName, "the endpoint whose retries to list")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), retriesUsage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := c.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "memhook retries list: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *endpoint == "" {
		fmt.Fprintln(stderr, "memhook retries list: --endpoint: give an endpoint name")
		return exitUsage
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "memhook retries list: --limit=%d: must be 0 (all) or more\n", *limit)
		return exitUsage
	}
	cfg, err := bus.ConfigFromLookup(c.Lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook retries list: %s\n", oneLine(c.explain(err)))
		return exitUsage
	}
	if cfg.Transport != bus.TransportRedis {
		where := "the process that delivers (`memhook serve`, or the program embedding the bus)"
		if cfg.Transport == bus.TransportHTTP {
			where = "the `memhook serve` process at MEMHOOK_ROUTER_URL, which delivers"
		}
		fmt.Fprintf(stderr, "memhook retries list: on transport %s the retries wait inside %s, not in Redis: "+
			"see its /metrics (memhook_retries_waiting, memhook_oldest_retry_due_timestamp_seconds) "+
			"or /webhooks/memory/status (counters.retries_waiting, oldest_retry_due). "+
			"This command lists the retries waiting in Redis (MEMHOOK_TRANSPORT=redis).\n", cfg.Transport, where)
		return exitUsage
	}
	// go-redis's own messages (a failed dial) go to DEBUG: the error below
	// says it once.
	_, logOut, err := newLogger(stderr, settingValue(c, "MEMHOOK_LOG_FORMAT"), settingValue(c, "MEMHOOK_LOG_LEVEL"))
	if err != nil {
		fmt.Fprintf(stderr, "memhook retries list: %v\n", oneLine(c.explain(err)))
		return exitUsage
	}
	defer logOut.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One more than asked for tells whether the list was cut.
	ask := *limit
	if ask > 0 {
		ask++
	}
	entries, err := transports.ListDelayed(ctx, cfg.RedisConfig(), transports.EndpointRetryTopic(*endpoint), ask)
	if err != nil {
		fmt.Fprintf(stderr, "memhook retries list: %v\n", err)
		return exitFailed
	}
	more := *limit > 0 && len(entries) > *limit
	if more {
		entries = entries[:*limit]
	}
	now := time.Now()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			_ = enc.Encode(map[string]any{
				"id": e.ID, "event": e.Type, "user_id": e.UserID, "attempt": e.Attempt,
				"due": e.Due, "due_in_seconds": e.Due.Sub(now).Seconds(),
			})
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EVENT ID\tEVENT\tUSER\tATTEMPT\tDUE\tAT")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Type, e.UserID, e.Attempt,
				dueIn(e.Due.Sub(now)), e.Due.Format(time.RFC3339))
		}
		_ = tw.Flush()
	}
	if more {
		fmt.Fprintf(stderr, "memhook retries list: more than %d retries wait for endpoint %s; --limit 0 lists them all\n", *limit, *endpoint)
	}
	return exitOK
}

// dueIn says when a retry is due, d from now: "in 3m12s", "now", or
// "overdue 5m0s" (no router is moving due retries back to delivery).
func dueIn(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d > -2*time.Second: // the routers' mover runs every 200 ms
		return "now"
	default:
		return "overdue " + (-d).String()
	}
}

// settingValue returns the value of the variable name, a flag's when it
// was given.
func settingValue(c *config, name string) string {
	v, _ := c.Lookup(name)
	return v
}
