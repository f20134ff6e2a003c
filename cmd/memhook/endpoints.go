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
	"strings"
	"text/tabwriter"
	"time"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
)

const endpointsUsage = `Usage: memhook endpoints [list] [--json]
       memhook endpoints pause NAME
       memhook endpoints resume NAME
       memhook endpoints recover NAME --since TIME [--json]

Asks the memhook serve at MEMHOOK_ROUTER_URL (--router-url), with
MEMHOOK_ADMIN_TOKEN when it requires one. A paused endpoint's events wait
(none is poisoned) until it is resumed; on Redis every router follows.
recover sends again every event that ended poisoned for NAME since TIME
(RFC 3339, or a duration ago such as 2h): to NAME only, each once, with its
webhook-id unchanged.`

// endpoints asks a running `memhook serve` (MEMHOOK_ROUTER_URL, with
// MEMHOOK_ADMIN_TOKEN) for its endpoints, or pauses, resumes or recovers
// one.
func endpoints(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if sub != "list" && sub != "pause" && sub != "resume" && sub != "recover" {
		fmt.Fprintln(stderr, endpointsUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("memhook endpoints "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	asJSON := fs.Bool("json", false, "list, recover: the router's JSON answer")
	since := fs.String("since", "", "recover: RFC 3339 time, or a duration ago (2h); required")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), endpointsUsage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	// NAME may come before the flags (memhook endpoints recover crm --since 2h).
	var name string
	if sub != "list" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if sub != "list" {
		if name == "" && fs.NArg() == 1 {
			name = fs.Arg(0)
		} else if fs.NArg() > 0 || name == "" {
			fmt.Fprintf(stderr, "memhook endpoints %s: give one endpoint name\n", sub)
			return exitUsage
		}
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "memhook endpoints: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	api, err := newAdminClient(c, lookup)
	if err != nil {
		fmt.Fprintf(stderr, "memhook endpoints: %v\n", err)
		return exitUsage
	}
	ctx := context.Background()
	path := admin.PathEndpoints + "/" + url.PathEscape(name) + "/" + sub
	switch sub {
	case "pause", "resume":
		if _, err := api.call(ctx, http.MethodPost, path, nil); err != nil {
			fmt.Fprintf(stderr, "memhook endpoints %s: %v\n", sub, err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "endpoint %s %sd\n", name, sub)
		return exitOK
	case "recover":
		if *since == "" {
			fmt.Fprintln(stderr, "memhook endpoints recover: --since: required (RFC 3339 time, or a duration ago such as 2h)")
			return exitUsage
		}
		t, err := parseSince(*since, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "memhook endpoints recover: %v\n", err)
			return exitUsage
		}
		var ans struct {
			Recovered int `json:"recovered"`
		}
		body, err := api.callJSON(ctx, http.MethodPost, path, admin.RecoverRequest{Since: t}, &ans)
		if err != nil {
			fmt.Fprintf(stderr, "memhook endpoints recover: %v\n", err)
			return exitFailed
		}
		if *asJSON {
			fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		} else {
			fmt.Fprintf(stdout, "recovered %d\n", ans.Recovered)
		}
		return exitOK
	}
	var ans struct {
		Endpoints []bus.EndpointStats `json:"endpoints"`
	}
	body, err := api.callJSON(ctx, http.MethodGet, admin.PathEndpoints, nil, &ans)
	if err != nil {
		fmt.Fprintf(stderr, "memhook endpoints: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tDELIVERED\tRETRYING\tPOISONED\tSHED\tBACKLOG\tLAST ERROR\tURL")
	for _, e := range ans.Endpoints {
		last := e.LastError
		if len(last) > 60 {
			last = last[:57] + "..."
		}
		if last == "" {
			last = "-"
		}
		state := e.State
		switch {
		case e.Probing:
			state += " (probing)"
		case !e.NextProbe.IsZero():
			state += " (probe " + e.NextProbe.Local().Format(time.TimeOnly) + ")"
		}
		if e.Ordering != "" {
			state += ", ordered by " + e.Ordering
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			e.Name, state, e.Delivered, e.Retrying, e.Poisoned, e.Shed, e.Backlog, last, e.URL)
	}
	_ = tw.Flush()
	return exitOK
}

// jsonLine writes v as one line of JSON.
func jsonLine(w io.Writer, v any) { _ = json.NewEncoder(w).Encode(v) }
