package bus

import (
	"fmt"
	"log"
	"log/slog"

	"github.com/memhook/memhook/logbuf"
)

// defaultLogger is the bus's logger when New is given no WithLogger:
// slog.Default() as the application set it up. Only when the application
// never called slog.SetDefault — so that slog.Default() writes each line
// to the log package's output, one write system call per line — the bus
// writes its lines to that same output through a logbuf.Writer instead:
// out in batches within logbuf.DefaultFlushInterval, and all of them at
// Close. It returns that writer, or nil.
func defaultLogger() (*slog.Logger, *logbuf.Writer) {
	l := slog.Default()
	if fmt.Sprintf("%T", l.Handler()) != "*slog.defaultHandler" {
		return l, nil // the application's own handler: used as it is
	}
	w, err := logbuf.New(log.Writer(), logbuf.Config{})
	if err != nil {
		return l, nil
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})), w
}
