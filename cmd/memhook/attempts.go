package main

import (
	"bytes"
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
)

const attemptsUsage = `Usage: memhook attempts [--endpoint NAME] [--event ID] [--failed | --succeeded]
                        [--since TIME] [--limit N] [--cursor C] [--json]

Lists the attempt log of the memhook serve at MEMHOOK_ROUTER_URL
(--router-url), with MEMHOOK_ADMIN_TOKEN when it requires one: newest
first, each with its endpoint, event, attempt number, the receiver's status
(or why there was none) and the start of its answer. TIME is RFC 3339 or a
duration ago (2h). When more attempts match than --limit, the last line
(on stderr) gives the --cursor of the next page.`

// attempts lists a running serve's attempt log (GET /api/attempts).
func attempts(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("memhook attempts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	endpoint := fs.String("endpoint", "", "only this endpoint's attempts")
	eventID := fs.String("event", "", "only this event's attempts")
	failed := fs.Bool("failed", false, "only failed attempts")
	succeeded := fs.Bool("succeeded", false, "only succeeded attempts")
	since := fs.String("since", "", "only attempts started at or after: RFC 3339, or a duration ago (2h)")
	limit := fs.Int("limit", 100, fmt.Sprintf("at most this many (1 to %d)", admin.MaxLimit))
	cursor := fs.String("cursor", "", "continue where a previous listing stopped")
	asJSON := fs.Bool("json", false, "the router's JSON answer")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), attemptsUsage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "memhook attempts: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *failed && *succeeded {
		fmt.Fprintln(stderr, "memhook attempts: give --failed or --succeeded, not both")
		return exitUsage
	}
	if *limit < 1 || *limit > admin.MaxLimit {
		fmt.Fprintf(stderr, "memhook attempts: --limit %d: must be from 1 to %d\n", *limit, admin.MaxLimit)
		return exitUsage
	}
	t, err := parseSince(*since, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "memhook attempts: %v\n", err)
		return exitUsage
	}
	api, err := newAdminClient(c, lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook attempts: %v\n", err)
		return exitUsage
	}
	q := url.Values{}
	for k, v := range map[string]string{"endpoint": *endpoint, "event": *eventID, "since": t, "cursor": *cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	switch {
	case *failed:
		q.Set("status", "failed")
	case *succeeded:
		q.Set("status", "succeeded")
	}
	q.Set("limit", strconv.Itoa(*limit))
	var page bus.AttemptPage
	body, err := api.callJSON(context.Background(), http.MethodGet, admin.PathAttempts+"?"+q.Encode(), nil, &page)
	if err != nil {
		fmt.Fprintf(stderr, "memhook attempts: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		return exitOK
	}
	printAttempts(stdout, page.Attempts)
	if page.Next != "" {
		fmt.Fprintf(stderr, "more: add --cursor %s\n", page.Next)
	}
	return exitOK
}

// printAttempts writes attempts as a table.
func printAttempts(w io.Writer, as []bus.Attempt) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tENDPOINT\tEVENT ID\tEVENT\t#\tRESULT\tDURATION\tANSWER")
	for _, a := range as {
		result := "ok"
		if !a.Succeeded {
			result = a.ErrorClass
			if result == "" {
				result = "failed"
			}
		}
		if a.Status != 0 {
			result = strconv.Itoa(a.Status)
		}
		answer := a.Response
		if answer == "" {
			answer = a.Error
		}
		answer = firstLine(strings.Join(strings.Fields(answer), " "), 60)
		if answer == "" {
			answer = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.Start.Format(time.RFC3339Nano), a.Endpoint, a.EventID, a.EventType,
			a.Number, result, a.Duration.Round(time.Microsecond), answer)
	}
	_ = tw.Flush()
}

const eventsUsage = `Usage: memhook events show ID [--json]

Shows one event of the memhook serve at MEMHOOK_ROUTER_URL (--router-url),
with MEMHOOK_ADMIN_TOKEN when it requires one: its envelope while a store
still holds it, and its attempts on every endpoint, newest first.`

// events shows one event of a running serve (GET /api/events/{id}).
func events(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if len(args) == 0 || args[0] != "show" {
		fmt.Fprintln(stderr, eventsUsage)
		return exitUsage
	}
	args = args[1:]
	fs := flag.NewFlagSet("memhook events show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	asJSON := fs.Bool("json", false, "the router's JSON answer")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), eventsUsage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if id == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "memhook events show: give one event id")
		return exitUsage
	}
	api, err := newAdminClient(c, lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook events: %v\n", err)
		return exitUsage
	}
	var rec bus.EventRecord
	body, err := api.callJSON(context.Background(), http.MethodGet, admin.PathEvents+"/"+url.PathEscape(id), nil, &rec)
	if err != nil {
		fmt.Fprintf(stderr, "memhook events show: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		return exitOK
	}
	fmt.Fprintf(stdout, "event %s\n", rec.ID)
	var env bytes.Buffer
	if len(rec.Envelope) == 0 || string(rec.Envelope) == "null" || json.Indent(&env, rec.Envelope, "", "  ") != nil {
		fmt.Fprintln(stdout, "envelope: no longer stored")
	} else {
		fmt.Fprintf(stdout, "envelope:\n%s\n", env.String())
	}
	fmt.Fprintf(stdout, "attempts: %d\n", len(rec.Attempts))
	printAttempts(stdout, rec.Attempts)
	return exitOK
}
