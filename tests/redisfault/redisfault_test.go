// Package redisfault runs real `memhook serve` processes on the Redis
// transport against a private redis-server and breaks things: a router
// killed with SIGKILL mid-delivery, Redis restarted under running routers,
// the poison stream worked with `memhook dlq`.
package redisfault_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memhook-redisfault")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "memhook")
	build := exec.Command("go", "build", "-o", binary, "github.com/memhook/memhook/cmd/memhook")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building memhook:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `memhook serve`.
type proc struct {
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serve starts a router process with env on top of the test's environment
// and waits until /healthz answers. Its port is found by listening and
// closing, so another process may take it first: a router that cannot
// listen on it is started again on another, three times at most.
func serve(t *testing.T, env ...string) *proc {
	t.Helper()
	for try := 1; ; try++ {
		addr := freeAddr(t)
		if p := serveOn(t, addr, try < 3, env...); p != nil {
			return p
		}
		t.Logf("serve: %s was taken before it could listen; trying another port", addr)
	}
}

// serveOn is serve on addr; with retry it returns nil when the router
// cannot listen there.
func serveOn(t *testing.T, addr string, retry bool, env ...string) *proc {
	t.Helper()
	p := &proc{addr: addr, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, "serve")
	p.cmd.Env = append(os.Environ(), append([]string{"MEMHOOK_ADDR=" + p.addr}, env...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			t.Logf("logs of serve on %s:\n%s", p.addr, p.log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + p.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if retry && strings.Contains(p.log(), "memhook serve: cannot listen on") {
			return nil
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on %s not healthy:\n%s", p.addr, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on %s not ready:\n%s", p.addr, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counter records, per event sequence number, how many times the receiver
// got it.
type counter struct {
	mu      sync.Mutex
	seen    map[int]int
	ids     map[string]int
	first   time.Time
	last    time.Time
	lastNew time.Time // when an event last arrived for the first time
}

func newCounter() *counter { return &counter{seen: map[int]int{}, ids: map[string]int{}} }

func (c *counter) respond(delay time.Duration, fail func() bool) receiver.Respond {
	return func(_ http.ResponseWriter, r *http.Request, _ int) int {
		if fail != nil && fail() {
			return http.StatusServiceUnavailable
		}
		var env struct {
			Data struct {
				N int `json:"n"`
			} `json:"data"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &env)
		time.Sleep(delay)
		c.mu.Lock()
		if c.first.IsZero() {
			c.first = time.Now()
		}
		c.last = time.Now()
		if c.seen[env.Data.N] == 0 {
			c.lastNew = c.last
		}
		c.seen[env.Data.N]++
		c.ids[r.Header.Get("webhook-id")]++
		c.mu.Unlock()
		return http.StatusOK
	}
}

// startCounting starts a receiver on loopback that answers after delay
// (503 while fail says so) and counts what arrives; it stops with t.
func startCounting(t *testing.T, delay time.Duration, fail func() bool) (*counter, *receiver.Receiver) {
	t.Helper()
	c := newCounter()
	rcv, err := receiver.Start(c.respond(delay, fail), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	return c, rcv
}

func (c *counter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *counter) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := 0
	for _, n := range c.ids {
		d += n - 1
	}
	return d
}

func (c *counter) waitDistinct(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for c.distinct() < n {
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d of %d events after %s", c.distinct(), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// emit appends n events numbered 0..n-1 to the stream, as an application
// on the Redis transport does.
func emit(t *testing.T, redisURL string, n int) {
	t.Helper()
	app, err := bus.New(bus.Config{Transport: bus.TransportRedis, RedisURL: redisURL}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	for i := range n {
		e := event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]int{"n": i}}
		if err := app.Emit(context.Background(), e); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
}

// routerEnv is the configuration both router processes share: short
// timeouts and retries, so that failing deliveries reach the poison stream
// quickly (crash recovery does not depend on them: see liveness_test.go).
func routerEnv(redisURL, webhookURL, consumer string) []string {
	return []string{
		"MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL=" + redisURL, "MEMHOOK_REDIS_CONSUMER=" + consumer,
		"MEM0_WEBHOOK_URL=" + webhookURL, "MEM0_WEBHOOK_TIMEOUT=0.5", "MEM0_WEBHOOK_RETRY_COUNT=1",
		"MEM0_WEBHOOK_RETRY_DELAY=0.05", "MEMHOOK_MAX_RETRY_AFTER=0.1", "MEMHOOK_LOG_LEVEL=warn",
		"MEMHOOK_CONCURRENCY=8",
	}
}

// Two routers share 5 000 events; one is killed with SIGKILL midway. Every
// event arrives; the duplicates (entries the dead router had delivered but
// not acked) are counted and reported.
func TestSIGKILLedRouterLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	c, rcv := startCounting(t, time.Millisecond, nil)
	// The events wait in the stream before the routers start, so that the
	// kill comes in the middle of the deliveries.
	const n = 5000
	emit(t, srv.URL(), n)
	start := time.Now()
	a := serve(t, routerEnv(srv.URL(), rcv.URL, "router-a")...)
	b := serve(t, routerEnv(srv.URL(), rcv.URL, "router-b")...)
	c.waitDistinct(t, n/3, time.Minute)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := c.distinct()
	c.waitDistinct(t, n, 2*time.Minute)
	took := time.Since(start)
	dups := c.duplicates()
	t.Logf("router a SIGKILLed after %d events; all %d arrived in %s, %d duplicate deliveries (same webhook-id)",
		killedAt, n, took.Round(time.Millisecond), dups)
	if dups > 64 {
		t.Errorf("%d duplicates: more than the entries one router can hold in flight", dups)
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("router b after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("router b did not stop on SIGTERM")
	}
}

// Throughput of two routers: 5 000 events appended first (one
// application, one XADD each), then two routers started; the figures are
// logged (go test -v -run Throughput ./tests/redisfault/).
func TestTwoRoutersThroughput(t *testing.T) {
	srv := redistest.Start(t)
	c, rcv := startCounting(t, 0, nil)
	const n = 5000
	start := time.Now()
	emit(t, srv.URL(), n)
	emitted := time.Since(start)
	start = time.Now()
	for _, name := range []string{"a", "b"} {
		serve(t, routerEnv(srv.URL(), rcv.URL, "tp-"+name)...)
	}
	c.waitDistinct(t, n, 2*time.Minute)
	took := time.Since(start)
	t.Logf("appending %d events took %s (%.0f/s); 2 routers delivered them in %s = %.0f events/s, start-up included (duplicates %d)",
		n, emitted.Round(time.Millisecond), float64(n)/emitted.Seconds(), took.Round(time.Millisecond), float64(n)/took.Seconds(), c.duplicates())
	if c.duplicates() != 0 {
		t.Errorf("%d duplicates without any failure", c.duplicates())
	}
	// Every entry acknowledged: the routers trim the stream to nothing.
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := rc.XLen(context.Background(), bus.Topic).Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events stream still holds %d entries (%v) after all were delivered", n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Redis restarted under a running router: deliveries pause and resume;
// what was appended before the restart is delivered after it.
func TestRedisRestartedUnderTheRouter(t *testing.T) {
	srv := redistest.Start(t)
	c, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "restart-a")...)
	r.waitReady(t, 15*time.Second)
	emit(t, srv.URL(), 100)
	c.waitDistinct(t, 100, 30*time.Second)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + r.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready with Redis down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, 30*time.Second)
	emit(t, srv.URL(), 200) // numbers 0..199: 100..199 are new
	c.waitDistinct(t, 200, time.Minute)
}

// Redis down when the router starts: it keeps trying, says so at WARN and
// on /readyz, and delivers once Redis is up.
func TestRouterStartsBeforeRedis(t *testing.T) {
	srv := redistest.Start(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	c, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "early-a")...)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(r.log(), "Redis not reachable, retrying") {
		if time.Now().After(deadline) {
			t.Fatalf("no retry log line:\n%s", r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.wantNotReady(t)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, 30*time.Second)
	emit(t, srv.URL(), 10)
	c.waitDistinct(t, 10, 30*time.Second)
}

// A receiver failing for a while: events end in the poison stream, `memhook
// dlq list` shows them, `dlq replay --all` sends them again with the same
// webhook-id once the receiver is back, `dlq purge` empties the stream.
func TestPoisonStreamWithDLQCommands(t *testing.T) {
	srv := redistest.Start(t)
	var down sync.Mutex
	failing := true
	c, rcv := startCounting(t, 0, func() bool { down.Lock(); defer down.Unlock(); return failing })
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "dlq-a")...)
	r.waitReady(t, 15*time.Second)
	emit(t, srv.URL(), 3)

	dlq := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"dlq"}, args...)...)
		cmd.Env = append(os.Environ(), "MEMHOOK_REDIS_URL="+srv.URL())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("memhook dlq %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	var entries []map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for len(entries) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("poison stream has %d entries, want 3\n%s", len(entries), r.log())
		}
		time.Sleep(100 * time.Millisecond)
		entries = nil
		for _, line := range strings.Split(strings.TrimSpace(dlq("list", "--json")), "\n") {
			if line == "" {
				continue
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("dlq list --json line %q: %v", line, err)
			}
			entries = append(entries, e)
		}
	}
	ids := map[string]bool{}
	for _, e := range entries {
		if e["status"] != float64(503) || e["attempts"] != float64(2) || e["event"] != "memory_added" {
			t.Errorf("poison entry %v: want status 503, 2 attempts, memory_added", e)
		}
		ids[e["id"].(string)] = true
	}
	if table := dlq("list"); !strings.Contains(table, "ENTRY") || strings.Count(table, "memory_added") != 3 {
		t.Errorf("dlq list table:\n%s", table)
	}
	down.Lock()
	failing = false
	down.Unlock()
	if out := dlq("replay", "--all"); !strings.Contains(out, "replayed 3") {
		t.Fatalf("dlq replay --all: %s", out)
	}
	c.waitDistinct(t, 3, 30*time.Second)
	c.mu.Lock()
	for id := range c.ids {
		if !ids[id] {
			t.Errorf("replayed event arrived with webhook-id %s, not its original id", id)
		}
	}
	c.mu.Unlock()
	if out := dlq("list", "--json"); strings.TrimSpace(out) != "" {
		t.Errorf("poison stream not empty after replay: %s", out)
	}
	// Purge: poison two more, purge, nothing left.
	down.Lock()
	failing = true
	down.Unlock()
	emit(t, srv.URL(), 2)
	deadline = time.Now().Add(30 * time.Second)
	for strings.Count(dlq("list", "--json"), "\n") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("second batch never reached the poison stream")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := dlq("purge"); !strings.Contains(out, "purged 2") {
		t.Errorf("dlq purge: %s", out)
	}
	if out := dlq("list", "--json"); strings.TrimSpace(out) != "" {
		t.Errorf("poison stream not empty after purge: %s", out)
	}
}
