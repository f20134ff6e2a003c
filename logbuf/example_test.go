package logbuf_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/logbuf"
)

// An embedded bus logs a line per delivery at INFO. Through a Writer that
// costs a write system call per batch of lines instead of one per line.
// Close the Writer after the bus, so that the bus's last lines are out
// before the process exits.
func Example() {
	out, err := logbuf.New(os.Stdout, logbuf.Config{}) // os.Stderr in a real program
	if err != nil {
		panic(err)
	}
	defer out.Close()
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // only to make the output below stable
			}
			return a
		},
	}))

	b, err := bus.New(bus.Config{}, bus.WithLogger(logger)) // no WebhookURL: webhooks off, said at INFO
	if err != nil {
		panic(err)
	}
	_ = b.Close(context.Background())
	if err := out.Flush(); err != nil { // or Close; both write out what is buffered
		panic(err)
	}
	// Output:
	// level=INFO msg="memhook: webhooks are off; events are counted, not sent" url_set=false events=all
}
