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

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/handlers"
)

// endpoints asks a running `memhook serve` (MEMHOOK_ROUTER_URL, with
// MEMHOOK_ADMIN_TOKEN) for its endpoints, or pauses or resumes one.
func endpoints(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if sub != "list" && sub != "pause" && sub != "resume" {
		fmt.Fprintln(stderr, `Usage: memhook endpoints [list] [--json]
       memhook endpoints pause NAME
       memhook endpoints resume NAME

Asks the memhook serve at MEMHOOK_ROUTER_URL (--router-url), with
MEMHOOK_ADMIN_TOKEN when it requires one. A paused endpoint's events wait
(none is poisoned) until it is resumed; on Redis every router follows.`)
		return exitUsage
	}
	fs := flag.NewFlagSet("memhook endpoints "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	asJSON := fs.Bool("json", false, "list: the router's JSON answer")
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	base, _ := c.Lookup("MEMHOOK_ROUTER_URL")
	if base == "" {
		base = bus.DefaultRouterURL
	}
	if err := handlers.ValidateURL(base); err != nil {
		fmt.Fprintf(stderr, "memhook endpoints: %s: %v\n", c.explain(errors.New("MEMHOOK_ROUTER_URL")), err)
		return exitUsage
	}
	token, _ := lookup("MEMHOOK_ADMIN_TOKEN")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 30 * time.Second}
	call := func(method, path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, nil)
		if err != nil {
			return nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				ue.URL = handlers.RedactURL(ue.URL)
			}
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			var e struct{ Error string }
			if json.Unmarshal(body, &e) == nil && e.Error != "" {
				return nil, fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, e.Error)
			}
			return nil, fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
		}
		return body, nil
	}
	if sub != "list" {
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "memhook endpoints %s: give one endpoint name\n", sub)
			return exitUsage
		}
		name := fs.Arg(0)
		if _, err := call(http.MethodPost, handlers.PathEndpoints+"/"+url.PathEscape(name)+"/"+sub); err != nil {
			fmt.Fprintf(stderr, "memhook endpoints %s: %v\n", sub, err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "endpoint %s %sd\n", name, sub)
		return exitOK
	}
	body, err := call(http.MethodGet, handlers.PathEndpoints)
	if err != nil {
		fmt.Fprintf(stderr, "memhook endpoints: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		return exitOK
	}
	var ans struct {
		Endpoints []bus.EndpointStats `json:"endpoints"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		fmt.Fprintf(stderr, "memhook endpoints: the router's answer is not a list of endpoints: %v\n", err)
		return exitFailed
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			e.Name, e.State, e.Delivered, e.Retrying, e.Poisoned, e.Shed, e.Backlog, last, e.URL)
	}
	_ = tw.Flush()
	return exitOK
}
