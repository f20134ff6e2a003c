package main_test

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// ingestAll POSTs one event per id to /ingest from workers goroutines and
// returns a problem per request not answered 200.
func ingestAll(s *server, ids []string, workers int) []string {
	next := make(chan string)
	var (
		mu       sync.Mutex
		problems []string
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				code, _, b, err := do(s.client, http.MethodPost, s.URL+"/ingest", strings.NewReader(string(envelope(id, "u-drain"))),
					"Content-Type", "application/json")
				if err != nil || code != http.StatusOK {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s: %d %v %s", id, code, err, b))
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait() // every request is bounded by the client's timeout
	return problems
}

func newIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	return ids
}

// TestServeShutdownDrains: SIGTERM right after 1 000 events were accepted,
// none of them delivered yet; the process delivers every one and exits 0
// within MEMHOOK_SHUTDOWN_TIMEOUT.
func TestServeShutdownDrains(t *testing.T) {
	const events = 1000
	const shutdownTimeout = 30 * time.Second
	// The receiver holds every request until SIGTERM is sent, so that all
	// 1 000 events are in flight or queued at that moment, then takes 5 ms
	// for each.
	gate := make(chan struct{})
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	rcv := startReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) int {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		time.Sleep(5 * time.Millisecond)
		return http.StatusOK
	})
	s := startServe(t, serveEnv(rcv,
		"MEMHOOK_CONCURRENCY", "16",
		"MEMHOOK_SHUTDOWN_TIMEOUT", strconv.Itoa(int(shutdownTimeout.Seconds())),
		"MEM0_WEBHOOK_TIMEOUT", "60",
	))
	ids := newIDs(events)
	start := time.Now()
	if problems := ingestAll(s, ids, 32); len(problems) > 0 {
		t.Fatalf("%d of %d events not accepted, e.g. %s", len(problems), events, problems[0])
	}
	t.Logf("1 000 events accepted in %s", time.Since(start).Round(time.Millisecond))
	if n := rcv.Count(); n != 0 {
		t.Fatalf("the receiver answered %d before SIGTERM; the gate does not hold", n)
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	openGate.Do(func() { close(gate) })
	code, err := s.Wait(shutdownTimeout + 5*time.Second)
	if err != nil {
		t.Fatalf("no exit after SIGTERM: %v", err)
	}
	took := time.Since(sent)
	s.finish()
	t.Logf("exited %d, %s after SIGTERM", code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("exit %d, want 0\n%s", code, tail(s.Stderr(), 20))
	}
	if took > shutdownTimeout {
		t.Errorf("took %s to exit, more than MEMHOOK_SHUTDOWN_TIMEOUT %s", took, shutdownTimeout)
	}
	got := map[string]int{}
	for _, r := range rcv.Requests() {
		got[r.Header.Get("Webhook-Id")]++
	}
	missing, twice := 0, 0
	for _, id := range ids {
		switch {
		case got[id] == 0:
			missing++
		case got[id] > 1:
			twice++ // at least once allows it; worth seeing
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d events never reached the receiver", missing, events)
	}
	if twice > 0 {
		t.Logf("%d events reached the receiver more than once", twice)
	}
	if line, err := s.WaitLine(func(l string) bool { return strings.Contains(l, `msg="memhook: stopped"`) }, 0); err != nil {
		t.Errorf("no stopped line: %v", err)
	} else if d, _ := logAttr(line, "delivered"); d != strconv.Itoa(events) {
		t.Errorf("stopped line says delivered=%s, want %d: %s", d, events, line)
	}
}

// TestServeShutdownTimeoutReportsUndelivered: with a receiver that never
// answers, shutdown gives up after MEMHOOK_SHUTDOWN_TIMEOUT, exits 3, and
// logs every accepted event in an ERROR "undelivered at shutdown" line.
func TestServeShutdownTimeoutReportsUndelivered(t *testing.T) {
	const events = 40
	release := make(chan struct{})
	rcv := startReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	t.Cleanup(func() { close(release) }) // runs before the receiver closes
	s := startServe(t, serveEnv(rcv, "MEMHOOK_CONCURRENCY", "16", "MEMHOOK_SHUTDOWN_TIMEOUT", "1"))
	ids := newIDs(events)
	if problems := ingestAll(s, ids, 8); len(problems) > 0 {
		t.Fatalf("%d of %d events not accepted, e.g. %s", len(problems), events, problems[0])
	}
	code, took := terminate(t, s, 15*time.Second)
	t.Logf("exited %d, %s after SIGTERM", code, took.Round(time.Millisecond))
	if code != 3 {
		t.Errorf("exit %d, want 3\n%s", code, tail(s.Stderr(), 20))
	}
	if took > 5*time.Second {
		t.Errorf("took %s to exit with MEMHOOK_SHUTDOWN_TIMEOUT=1", took)
	}
	reported := map[string]bool{}
	for _, l := range linesAt(s.Lines(), "ERROR") {
		if strings.Contains(l, `msg="memhook: undelivered at shutdown"`) {
			id, _ := logAttr(l, "id")
			reported[id] = true
		}
	}
	missing := 0
	for _, id := range ids {
		if !reported[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d accepted events are not in an ERROR \"undelivered at shutdown\" line\n%s", missing, events, tail(s.Stderr(), 30))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestServeShutdownDoesNotWaitForUnusedConnections: a client connection
// that never sent a request (a keep-alive pool's spare) does not hold
// serve's exit for net/http's 5 s, and is not reported as a request cut.
func TestServeShutdownDoesNotWaitForUnusedConnections(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := startServe(t, serveEnv(rcv))
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond) // let the server accept it
	code, took := terminate(t, s, 15*time.Second)
	if code != 0 {
		t.Errorf("exit %d, want 0\n%s", code, tail(s.Stderr(), 20))
	}
	if took > 3*time.Second {
		t.Errorf("took %s to exit with an unused connection open; net/http alone waits 5 s", took.Round(time.Millisecond))
	}
	if strings.Contains(s.Stderr(), "open requests cut") {
		t.Errorf("an unused connection was reported as a request cut:\n%s", tail(s.Stderr(), 20))
	}
}

// terminate sends SIGTERM to s and waits up to timeout for its exit; it
// returns the exit code and how long the exit took.
func terminate(t *testing.T, s *server, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	code, err := s.Wait(timeout)
	if err != nil {
		t.Fatalf("no exit after SIGTERM: %v", err)
	}
	took := time.Since(sent)
	s.finish()
	return code, took
}
