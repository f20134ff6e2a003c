package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/middleware"
)

func emit(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("memhook emit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	typ := fs.String("event", "", "event type, e.g. memory_added (required)")
	user := fs.String("user", "", "user id (required)")
	data := fs.String("data", "{}", "event data as JSON")
	requestID := fs.String("request-id", "", "request id")
	wait := fs.Duration("wait", 2*time.Minute, "how long to wait for the outcome (memory) or the router (http)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: memhook emit --event TYPE --user ID [--data JSON] [--request-id ID]

Publishes one event on the configured transport. With the in-memory
transport it delivers in-process and waits for the outcome: exit 0 when
delivered, 1 with the reason when not. With transport http it exits 0 once
the router at MEMHOOK_ROUTER_URL accepted the event; with redis, once the
event is appended to the stream.

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nVariables:")
		printSettings(fs.Output())
	}
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	var problems []error
	t, err := event.ParseType(*typ)
	if err != nil {
		problems = append(problems, fmt.Errorf("--event=%q: not one of the 12 event types", *typ))
	}
	if *user == "" {
		problems = append(problems, errors.New("--user is required"))
	}
	var payload any
	if err := json.Unmarshal([]byte(*data), &payload); err != nil {
		problems = append(problems, fmt.Errorf("--data is not JSON: %v", err))
	}
	cfg, err := bus.ConfigFromLookup(c.Lookup)
	if err != nil {
		problems = append(problems, c.explain(err))
	}
	if err := errors.Join(problems...); err != nil {
		fmt.Fprintf(stderr, "memhook emit: %s\n", oneLine(err))
		return exitUsage
	}
	get := func(name string) string { v, _ := c.Lookup(name); return v }
	logger, logOut, err := newLogger(stderr, get("MEMHOOK_LOG_FORMAT"), firstNonEmpty(get("MEMHOOK_LOG_LEVEL"), "warn"))
	if err != nil {
		fmt.Fprintf(stderr, "memhook emit: %v\n", err)
		return exitUsage
	}
	defer logOut.Close() // every line is out before the exit code goes to os.Exit
	stderr = logOut      // emit's own messages keep their place among the log lines
	e := event.Event{Type: t, UserID: *user, Data: payload, RequestID: *requestID}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	switch cfg.Transport {
	case bus.TransportMemory:
		return emitMemory(ctx, cfg, e, logger, stdout, stderr)
	case bus.TransportHTTP:
		return emitForward(ctx, cfg, e, logger, stdout, stderr)
	case bus.TransportRedis:
		return emitRedis(ctx, cfg, e, logger, stdout, stderr)
	}
	fmt.Fprintf(stderr, "memhook emit: transport %q is not supported by this build\n", cfg.Transport)
	return exitUsage
}

func emitMemory(ctx context.Context, cfg bus.Config, e event.Event, logger *slog.Logger, stdout, stderr io.Writer) int {
	b, err := bus.New(cfg, bus.WithLogger(logger))
	if err != nil {
		fmt.Fprintf(stderr, "memhook emit: %s\n", oneLine(err))
		return exitUsage
	}
	defer b.Close(context.Background())
	if !b.Enabled() {
		fmt.Fprintln(stderr, "memhook emit: not delivered: webhooks are off (MEM0_WEBHOOK_URL unset or MEM0_WEBHOOK_EVENTS=none)")
		return exitFailed
	}
	out, err := b.Send(ctx, e)
	line, _ := json.Marshal(out)
	fmt.Fprintln(stdout, string(line))
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "memhook emit: not delivered: %v\n", err)
	case out.Filtered:
		fmt.Fprintf(stderr, "memhook emit: not delivered: %s is filtered out by MEM0_WEBHOOK_EVENTS\n", e.Type)
	case !out.Delivered:
		fmt.Fprintf(stderr, "memhook emit: not delivered after %d attempt(s): %s\n", out.Attempts, out.Error)
	default:
		return exitOK
	}
	return exitFailed
}

func emitForward(ctx context.Context, cfg bus.Config, e event.Event, logger *slog.Logger, stdout, stderr io.Writer) int {
	refused := make(chan string, 1)
	b, err := bus.New(cfg, bus.WithLogger(logger), bus.WithPoisonHandler(func(m *message.Message) error {
		select {
		case refused <- m.Metadata.Get(middleware.PoisonReasonKey):
		default:
		}
		return nil
	}))
	if err != nil {
		fmt.Fprintf(stderr, "memhook emit: %s\n", oneLine(err))
		return exitUsage
	}
	if err := b.Emit(ctx, e); err != nil {
		fmt.Fprintf(stderr, "memhook emit: %v\n", err)
		_ = b.Close(context.Background())
		return exitFailed
	}
	err = b.Close(ctx) // waits until the router accepted it, or ctx ends
	select {
	case reason := <-refused:
		fmt.Fprintf(stderr, "memhook emit: the router refused the event: %s\n", reason)
		return exitFailed
	default:
	}
	if err != nil {
		fmt.Fprintf(stderr, "memhook emit: the router at %s did not accept the event in time: %v\n", handlers.RedactURL(cfg.RouterURL), err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "{\"accepted_by\":%q}\n", handlers.RedactURL(cfg.RouterURL))
	return exitOK
}

// emitRedis appends the event to the stream; a router process delivers it.
func emitRedis(ctx context.Context, cfg bus.Config, e event.Event, logger *slog.Logger, stdout, stderr io.Writer) int {
	b, err := bus.New(cfg, bus.WithLogger(logger))
	if err != nil {
		fmt.Fprintf(stderr, "memhook emit: %s\n", oneLine(err))
		return exitUsage
	}
	defer b.Close(context.Background())
	if err := b.Emit(ctx, e); err != nil {
		fmt.Fprintf(stderr, "memhook emit: not appended to Redis: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "{\"appended_to\":%q}\n", bus.Topic)
	return exitOK
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
