package redisfault_test

import (
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/redistest"
)

// `serve` on a Redis that persists nothing warns at start, saying what to
// set; on a Redis with an append-only file it does not.
func TestServeWarnsOfARedisWithoutPersistence(t *testing.T) {
	tests := []struct {
		name  string
		start func(testing.TB) *redistest.Server
		want  string // a line of serve's log holds this
		warn  bool
	}{
		{name: `--save "" --appendonly no`, start: redistest.StartWithoutPersistence, want: "Redis may lose queued events", warn: true},
		{name: "--appendonly yes", start: redistest.Start, want: "Redis persists the queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.start(t)
			_, rcv := startCounting(t, 0, nil)
			r := serve(t, append(routerEnv(srv.URL(), rcv.URL, "persist"), "MEMHOOK_LOG_LEVEL=info")...)
			deadline := time.Now().Add(15 * time.Second)
			var line string
			for line == "" {
				for _, l := range strings.Split(r.log(), "\n") {
					if strings.Contains(l, tt.want) {
						line = l
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no log line saying %q:\n%s", tt.want, r.log())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tt.warn {
				for _, w := range []string{"level=WARN", "appendonly yes", "appendfsync everysec", "loses every queued event"} {
					if !strings.Contains(line, w) {
						t.Errorf("warning %q does not say %q", line, w)
					}
				}
			} else if strings.Contains(r.log(), "may lose queued events") {
				t.Errorf("warned although Redis writes an append-only file:\n%s", r.log())
			}
		})
	}
}
