package main_test

import (
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServeLogsEveryLineBeforeExit: serve buffers its log lines (a write
// per batch, not per line), and a normal exit after SIGTERM writes them
// all out first. The receiver holds the deliveries until SIGTERM, so that
// they, and the final "stopped" line, are all logged in the last
// milliseconds before the exit: within one flush interval, lost if the
// buffer were not written out at exit.
func TestServeLogsEveryLineBeforeExit(t *testing.T) {
	const events = 200
	gate := make(chan struct{})
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	rcv := startReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) int {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	// The race runtime sleeps atexit_sleep_ms at exit, long enough for the
	// flush timer to fire: not here.
	s := startServe(t, serveEnv(rcv, "MEMHOOK_CONCURRENCY", "16", "GORACE", "atexit_sleep_ms=0"))
	ids := newIDs(events)
	if problems := ingestAll(s, ids, 16); len(problems) > 0 {
		t.Fatalf("%d of %d events not accepted, e.g. %s", len(problems), events, problems[0])
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	openGate.Do(func() { close(gate) })
	code := s.wait(30 * time.Second)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, tail(s.Stderr(), 20))
	}
	if err := rcv.WaitFor(events, 0); err != nil {
		t.Fatalf("the receiver got %d of %d events", rcv.Count(), events)
	}

	lines := s.Lines()
	if !strings.HasSuffix(s.Stderr(), "\n") {
		t.Errorf("stderr ends in a partial line: %q", tail(s.Stderr(), 1))
	}
	logged := map[string]int{}
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("not a whole log line: %q", l)
		}
		if strings.Contains(l, `msg="memhook: webhook delivered"`) {
			id, _ := logAttr(l, "id")
			logged[id]++
		}
	}
	missing := 0
	for _, id := range ids {
		if logged[id] != 1 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d deliveries have no (or more than one) \"webhook delivered\" line on stderr\n%s", missing, events, tail(s.Stderr(), 5))
	}
	if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `msg="memhook: stopped"`) {
		t.Errorf("the last line is not serve's \"stopped\" line:\n%s", tail(s.Stderr(), 5))
	}
}
