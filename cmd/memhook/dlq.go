package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/transports"
)

const dlqUsage = `Usage: memhook dlq list [--endpoint NAME] [--limit N] [--json]
       memhook dlq replay (--id ENTRY_ID [--id …] | --all) [--endpoint NAME]
       memhook dlq purge [--endpoint NAME]

Works on the Redis poison stream memory.events.poison (MEMHOOK_REDIS_URL):
the events that failed for good, and those shed from an endpoint's backlog
past its bound ("backlog over N", 0 attempts). Each entry belongs to one
endpoint; one poisoned before there were endpoints is the default
endpoint's. --endpoint keeps to that endpoint's entries.

A replayed event goes to the endpoint it failed for and to no other: due
now on that endpoint's retry stream (memory.events.retry, or
memory.events.retry.NAME), its attempts counted afresh and its id
unchanged, so the receiver sees the same webhook-id.`

// dlq works on the Redis poison stream: list, replay, purge.
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
				_ = enc.Encode(map[string]any{
					"entry_id": e.ID, "time": e.Time, "endpoint": e.Endpoint, "id": e.UUID, "event": e.EventType, "status": e.Status,
					"attempts": e.Attempts, "reason": e.Reason, "undecodable": e.Undecodable, "payload": string(e.Payload),
				})
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
		if *all == (len(ids) > 0) {
			fmt.Fprintln(stderr, "memhook dlq replay: give --all or at least one --id, not both")
			return exitUsage
		}
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
