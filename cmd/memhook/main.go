// Command memhook runs memhook as a process: `memhook serve` is the router
// (the seed's HTTP endpoints, ingest for applications on transport http,
// webhook delivery), `memhook emit` publishes one event, `memhook demo` runs
// the whole flow on one machine with nothing set up, `memhook dlq` and
// `memhook retries` show what waits in Redis.
//
// Configuration comes from the seed's MEM0_* variables, BOT_VERSION and
// memhook's MEMHOOK_* variables; every MEMHOOK_* setting that is not a
// secret also has a flag, and flags win. `memhook --help` lists them all.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/logbuf"
)

// main exits with run's code. Every command that logs closes its log
// writer (a logbuf.Writer) before run returns, so no line is lost at exit;
// nothing else in memhook calls os.Exit or log.Fatal.
func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1 // the command ran and failed (not delivered, cannot listen)
	exitUsage       = 2 // bad flag, bad variable
	exitUndelivered = 3 // serve: events left undelivered at shutdown (logged)
)

func run(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr, lookup)
	case "emit":
		return emit(args[1:], stdout, stderr, lookup)
	case "demo":
		return demo(args[1:], stdout, stderr)
	case "bench":
		return bench(args[1:], stdout, stderr)
	case "dlq":
		return dlq(args[1:], stdout, stderr, lookup)
	case "retries":
		return retries(args[1:], stdout, stderr, lookup)
	case "endpoints":
		return endpoints(args[1:], stdout, stderr, lookup)
	case "version", "--version":
		fmt.Fprintf(stdout, "memhook %s (%s %s/%s)\n", bus.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "memhook: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `memhook — memory events as signed webhooks

Usage:
  memhook serve  [flags]   run the router: endpoints, ingest, delivery
  memhook emit   --event TYPE --user ID [--data JSON] [--request-id ID]
  memhook demo             the whole flow on loopback, nothing to set up
  memhook bench  [flags]   measure throughput and latency against bare net/http
  memhook dlq    list | replay (--id ID | --all) | purge    the Redis poison stream
  memhook retries list [--json] [--limit N]    the retries waiting in Redis
  memhook endpoints [list [--json] | pause NAME | resume NAME]    a running serve's endpoints
  memhook version

'memhook <command> --help' lists the command's flags.

Configuration (flags win over variables):
`)
	printSettings(w)
}

// oneLine joins a multi-problem error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// redisLog routes go-redis's own messages (pool dial failures) into the
// process logger at DEBUG: memhook logs Redis trouble itself, once per
// retry, with the URL redacted.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// newLogger builds the process logger from MEMHOOK_LOG_FORMAT and
// MEMHOOK_LOG_LEVEL, and makes it go-redis's logger too (a process-wide
// setting of go-redis: only main sets it). The logger writes to w through
// the returned buffered writer (a write system call per batch of lines, not
// per line: at a line per delivery that is a fifth of the throughput),
// which writes each line out at the latest logbuf.DefaultFlushInterval
// after it was logged. The caller closes it before it returns its exit
// code, and writes its own messages for w through it too, so that they
// keep their order among the log lines.
func newLogger(w io.Writer, format, level string) (*slog.Logger, *logbuf.Writer, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, nil, fmt.Errorf("MEMHOOK_LOG_LEVEL=%q: must be debug, info, warn or error", level)
	}
	buf, err := logbuf.New(w, logbuf.Config{}) // the defaults: cannot fail
	if err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	var l *slog.Logger
	switch strings.ToLower(format) {
	case "", "text":
		l = slog.New(slog.NewTextHandler(buf, opts))
	case "json":
		l = slog.New(slog.NewJSONHandler(buf, opts))
	default:
		return nil, nil, fmt.Errorf("MEMHOOK_LOG_FORMAT=%q: must be text or json", format)
	}
	redis.SetLogger(redisLog{l})
	return l, buf, nil
}
