package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

const dlqUsage = `Usage: memhook dlq list [--endpoint NAME] [--since TIME] [--limit N] [--json]
       memhook dlq replay (--id ENTRY_ID [--id …] | --all) [--endpoint NAME] [--since TIME]
       memhook dlq purge [--endpoint NAME]

The dead letters: the events that failed for good, and those shed from an
endpoint's backlog past its bound ("backlog over N", 0 attempts). Each
entry belongs to one endpoint; one poisoned before there were endpoints is
the default endpoint's. --endpoint keeps to that endpoint's entries.

Where: with MEMHOOK_ROUTER_URL (--router-url) set, the dead-letter queue of
that running memhook serve, whatever its transport, through its admin API
(/api/dlq, with MEMHOOK_ADMIN_TOKEN when it requires one); --since (RFC 3339
or a duration ago, 2h) is known there only, and replay --all without
--endpoint replays every configured endpoint's. Without it, the Redis
poison stream memory.events.poison directly (MEMHOOK_REDIS_URL), no serve
needed.

A replayed event goes to the endpoint it failed for and to no other, its
attempts counted afresh and its id unchanged, so the receiver sees the same
webhook-id; on Redis it is due now on that endpoint's retry stream
(memory.events.retry, or memory.events.retry.NAME), which any router
delivering to it takes.`

// dlq lists, replays and purges dead letters: a running serve's through
// its admin API when MEMHOOK_ROUTER_URL is given, else the Redis poison
// stream directly.
func dlq(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay" && args[0] != "purge") {
		fmt.Fprintln(stderr, dlqUsage)
		return exitUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("memhook dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	limit := fs.Int("limit", 100, "list: at most this many entries")
	asJSON := fs.Bool("json", false, "list: JSON lines instead of a table")
	var ids multiFlag
	fs.Var(&ids, "id", "replay: a poison entry id (repeatable)")
	all := fs.Bool("all", false, "replay: every entry")
	since := fs.String("since", "", "list, replay --all: only entries poisoned at or after: RFC 3339, or a duration ago (2h); with --router-url only")
	endpoint := fs.String("endpoint", "", "only this endpoint's entries (\"default\": the MEM0_WEBHOOK_URL one's, with those poisoned before there were endpoints); unset: every endpoint's")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), dlqUsage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := c.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "memhook dlq %s: unexpected argument %q\n", sub, fs.Arg(0))
		return exitUsage
	}
	if set(fs, "endpoint") && *endpoint == "" {
		fmt.Fprintf(stderr, "memhook dlq %s: --endpoint: give an endpoint name\n", sub)
		return exitUsage
	}
	if sub == "replay" && *all == (len(ids) > 0) {
		fmt.Fprintln(stderr, "memhook dlq replay: give --all or at least one --id, not both")
		return exitUsage
	}
	if set(fs, "since") && (sub == "purge" || (sub == "replay" && !*all)) {
		fmt.Fprintf(stderr, "memhook dlq %s: --since: only list and replay --all take it\n", sub)
		return exitUsage
	}
	if routerURL, _ := c.Lookup("MEMHOOK_ROUTER_URL"); routerURL != "" {
		return dlqAPI(c, lookup, sub, dlqArgs{endpoint: *endpoint, since: *since, limit: *limit, asJSON: *asJSON, ids: ids, all: *all}, stdout, stderr)
	}
	if *since != "" {
		fmt.Fprintln(stderr, "memhook dlq: --since: give --router-url (MEMHOOK_ROUTER_URL) too: only a serve's admin API filters by time")
		return exitUsage
	}
	cfg, err := bus.ConfigFromLookup(c.Lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook dlq: %s\n", oneLine(c.explain(err)))
		return exitUsage
	}
	q, err := transports.NewDLQ(cfg.RedisConfig())
	if err != nil {
		fmt.Fprintf(stderr, "memhook dlq: %s\n", oneLine(err))
		return exitUsage
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch sub {
	case "list":
		entries, err := q.ListFor(ctx, *endpoint, *limit)
		if err != nil {
			fmt.Fprintf(stderr, "memhook dlq list: %v\n", err)
			return exitFailed
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			for _, e := range entries {
				line := map[string]any{
					"entry_id": e.ID, "time": e.Time, "endpoint": e.Endpoint, "id": e.UUID, "event": e.EventType, "status": e.Status,
					"attempts": e.Attempts, "reason": e.Reason, "undecodable": e.Undecodable, "payload": string(e.Payload),
				}
				if ob := e.Metadata.Get(middleware.OrderBrokenKey); ob != "" {
					line["order_broken"] = ob
				}
				_ = enc.Encode(line)
			}
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENTRY\tENDPOINT\tEVENT ID\tEVENT\tSTATUS\tATTEMPTS\tREASON")
		for _, e := range entries {
			reason := e.Reason
			if e.Undecodable {
				reason = "(undecodable entry) " + reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.ID, e.Endpoint, e.UUID, e.EventType, e.Status, e.Attempts, firstLine(reason, 80))
		}
		_ = tw.Flush()
		return exitOK
	case "replay":
		var n int
		if *all {
			n, err = q.ReplayAllFor(ctx, *endpoint)
		} else {
			n, err = q.ReplayFor(ctx, *endpoint, ids...)
		}
		fmt.Fprintf(stdout, "replayed %d\n", n)
		if err != nil {
			fmt.Fprintf(stderr, "memhook dlq replay: %v\n", err)
			return exitFailed
		}
		return exitOK
	default: // purge
		n, err := q.PurgeFor(ctx, *endpoint)
		if err != nil {
			fmt.Fprintf(stderr, "memhook dlq purge: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "purged %d\n", n)
		return exitOK
	}
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func firstLine(s string, max int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// set reports whether the flag name was given.
func set(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// dlqArgs are the flags of `memhook dlq` the API mode uses.
type dlqArgs struct {
	endpoint, since string
	limit           int
	asJSON, all     bool
	ids             []string
}

// dlqAPI is `memhook dlq` against a running serve's admin API. Its output
// is the Redis mode's, line for line.
func dlqAPI(c *config, lookup func(string) (string, bool), sub string, a dlqArgs, stdout, stderr io.Writer) int {
	api, err := newAdminClient(c, lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook dlq: %v\n", err)
		return exitUsage
	}
	since, err := parseSince(a.since, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "memhook dlq %s: %v\n", sub, err)
		return exitUsage
	}
	ctx := context.Background()
	switch sub {
	case "list":
		if a.limit < 1 || a.limit > admin.MaxLimit {
			fmt.Fprintf(stderr, "memhook dlq list: --limit %d: must be from 1 to %d\n", a.limit, admin.MaxLimit)
			return exitUsage
		}
		q := url.Values{"limit": {strconv.Itoa(a.limit)}}
		if a.endpoint != "" {
			q.Set("endpoint", a.endpoint)
		}
		if since != "" {
			q.Set("since", since)
		}
		var ans struct {
			DeadLetters []bus.DeadLetter `json:"dead_letters"`
		}
		if _, err := api.callJSON(ctx, http.MethodGet, admin.PathDLQ+"?"+q.Encode(), nil, &ans); err != nil {
			fmt.Fprintf(stderr, "memhook dlq list: %v\n", err)
			return exitFailed
		}
		if a.asJSON {
			for _, e := range ans.DeadLetters {
				line := map[string]any{
					"entry_id": e.ID, "time": e.PoisonedAt, "endpoint": e.Endpoint, "id": e.EventID, "event": e.EventType, "status": e.Status,
					"attempts": e.Attempts, "reason": e.Reason, "payload": string(e.Payload),
				}
				if e.OrderBroken != "" {
					line["order_broken"] = e.OrderBroken
				}
				jsonLine(stdout, line)
			}
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENTRY\tENDPOINT\tEVENT ID\tEVENT\tSTATUS\tATTEMPTS\tREASON")
		for _, e := range ans.DeadLetters {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.ID, e.Endpoint, e.EventID, e.EventType, e.Status, e.Attempts, firstLine(e.Reason, 80))
		}
		_ = tw.Flush()
		return exitOK
	case "replay":
		var reqs []admin.ReplayRequest
		switch {
		case !a.all:
			reqs = append(reqs, admin.ReplayRequest{IDs: a.ids})
		case a.endpoint != "":
			reqs = append(reqs, admin.ReplayRequest{Endpoint: a.endpoint, Since: since})
		default: // --all: every configured endpoint's
			var ans struct {
				Endpoints []bus.EndpointStats `json:"endpoints"`
			}
			if _, err := api.callJSON(ctx, http.MethodGet, admin.PathEndpoints, nil, &ans); err != nil {
				fmt.Fprintf(stderr, "memhook dlq replay: %v\n", err)
				return exitFailed
			}
			for _, e := range ans.Endpoints {
				reqs = append(reqs, admin.ReplayRequest{Endpoint: e.Name, Since: since})
			}
		}
		n := 0
		for _, req := range reqs {
			var ans struct {
				Replayed int `json:"replayed"`
			}
			if _, err := api.callJSON(ctx, http.MethodPost, admin.PathDLQReplay, req, &ans); err != nil {
				fmt.Fprintf(stdout, "replayed %d\n", n)
				fmt.Fprintf(stderr, "memhook dlq replay: %v\n", err)
				return exitFailed
			}
			n += ans.Replayed
		}
		fmt.Fprintf(stdout, "replayed %d\n", n)
		return exitOK
	default: // purge
		path := admin.PathDLQ
		if a.endpoint != "" {
			path += "?" + url.Values{"endpoint": {a.endpoint}}.Encode()
		}
		var ans struct {
			Purged int `json:"purged"`
		}
		if _, err := api.callJSON(ctx, http.MethodDelete, path, nil, &ans); err != nil {
			fmt.Fprintf(stderr, "memhook dlq purge: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "purged %d\n", ans.Purged)
		return exitOK
	}
}
