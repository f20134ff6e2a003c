package redisfault_test

// The outage tests of issue 11: a receiver refusing connections for a
// minute, then answering 200, with a retry schedule spanning the outage.
// One runs `memhook serve` on the memory transport (an application handing
// it events over transport http), the other two `memhook serve` routers on
// Redis, one of them SIGKILLed while the retries wait. They take a minute
// each, run in parallel with each other, and are skipped by go test -short.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
)

const (
	// outageDuration is how long the receiver refuses connections.
	outageDuration = 60 * time.Second
	// outageSchedule spans the outage: attempts at about 0, 1, 3, 7, 15
	// and 31 s fail, the seventh (63 to 69 s, jitter included) succeeds.
	outageSchedule = "1s,2s,4s,8s,16s,32s,64s"
	// outageFailedAttempts is how many attempts of an event emitted at
	// the start of the outage fall inside it.
	outageFailedAttempts = 6
	// outageEvents are emitted at the start of the outage.
	outageEvents = 1000
	// outageCPUPerAttempt and outageCPUBase bound a router's CPU time over
	// the whole outage: base plus this much per failed attempt it made. A
	// failed attempt costs about 0.3 ms on the 2-core development VM (a
	// refused dial: socket, connect, close; the WARN line; scheduling the
	// retry); a router that spun while the receiver is down would use
	// tens of seconds.
	outageCPUPerAttempt = time.Millisecond
	outageCPUBase       = time.Second
	// outageQuietMaxCPU bounds a router's CPU time while every retry waits
	// and none is due (from the sixth attempts to the end of the outage,
	// about 25 s): what waiting costs, no spinning.
	outageQuietMaxCPU = 500 * time.Millisecond
)

// skipShort skips the minute-long outage tests under go test -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a 60 s receiver outage: run without -short")
	}
}

// outageReceiver is a counting webhook receiver on a fixed loopback port
// that can be down — nothing listens, so a connection is refused — and up
// again on the same port.
type outageReceiver struct {
	*counter
	addr string

	mu  sync.Mutex
	srv *http.Server
}

// newOutageReceiver returns a receiver that is down. Its port lies below
// the ephemeral range, so that neither an outgoing connection nor another
// test's listener on port 0 takes it while it is down.
func newOutageReceiver(t *testing.T) *outageReceiver {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low <= 11000 {
		t.Fatalf("ephemeral ports start at %d: no room below them for the receiver's port", low)
	}
	r := &outageReceiver{counter: newCounter()}
	for try := 0; r.addr == ""; try++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(low-10000)))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			_ = ln.Close()
			r.addr = addr
		} else if try == 50 {
			t.Fatalf("no free port for the receiver: %v", err)
		}
	}
	t.Cleanup(r.down)
	return r
}

// URL is the webhook URL.
func (r *outageReceiver) URL() string { return "http://" + r.addr + "/memory-notifications" }

// up listens on the receiver's port and answers 200, counting.
func (r *outageReceiver) up() error {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("receiver back on %s: %w", r.addr, err)
	}
	respond := r.respond(0, nil)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(respond(w, req, 0))
	})}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// down closes the listener and every connection: connections are refused.
func (r *outageReceiver) down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// cpuTime returns the CPU time (user and system, all threads) process pid
// has used, from /proc/<pid>/stat, whose times are in USER_HZ (100 per
// second on Linux); false where there is no /proc.
func cpuTime(t *testing.T, pid int) (time.Duration, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / 100), true
}

// cpuOf measures a router's CPU time between two points of a test; on a
// system without /proc it measures nothing and says so.
type cpuOf struct {
	t     *testing.T
	name  string
	pid   int
	start time.Duration
	ok    bool
}

func startCPU(t *testing.T, name string, p *proc) *cpuOf {
	c := &cpuOf{t: t, name: name, pid: p.cmd.Process.Pid}
	c.start, c.ok = cpuTime(t, c.pid)
	return c
}

// since returns the CPU time used since startCPU; false without /proc.
func (c *cpuOf) since() (time.Duration, bool) {
	now, ok := cpuTime(c.t, c.pid)
	return now - c.start, ok && c.ok
}

// check logs the CPU time used since startCPU over wall and fails the
// test above limit. With attempts > 0 it also logs the CPU time per
// attempt.
func (c *cpuOf) check(what string, wall time.Duration, attempts uint64, limit time.Duration) {
	c.t.Helper()
	used, ok := c.since()
	if !ok {
		c.t.Logf("%s: CPU time not measured (no /proc)", c.name)
		return
	}
	perAttempt := ""
	if attempts > 0 {
		perAttempt = fmt.Sprintf(", %d failed attempts: %.2f ms each", attempts, used.Seconds()*1000/float64(attempts))
	}
	c.t.Logf("%s: %.2f CPU seconds %s (%s%s)", c.name, used.Seconds(), what, wall.Round(100*time.Millisecond), perAttempt)
	if used > limit {
		c.t.Errorf("%s used %.2f CPU seconds %s, want under %s", c.name, used.Seconds(), what, limit)
	}
}

// routerStats reads a router's counters from its status endpoint.
func routerStats(t *testing.T, p *proc) bus.Stats {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/webhooks/memory/status")
	if err != nil {
		t.Fatalf("status of %s: %v", p.addr, err)
	}
	defer resp.Body.Close()
	var st struct {
		Counters bus.Stats `json:"counters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status of %s: %d %v", p.addr, resp.StatusCode, err)
	}
	return st.Counters
}

// waitStats polls cond, which reads routers' counters, until it holds or
// deadline passes; then it fails t with what and the counters cond saw
// last.
func waitStats(t *testing.T, what string, deadline time.Time, cond func() (bool, []bus.Stats)) {
	t.Helper()
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not before %s: %s; counters %+v", deadline.Format("15:04:05.000"), what, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRetryLines checks that every retry the router logged failed
// because the connection was refused (the outage is the one meant), and
// returns how many it logged.
func checkRetryLines(t *testing.T, name string, p *proc) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(p.log(), "\n") {
		if !strings.Contains(line, "webhook failed, retrying") {
			continue
		}
		n++
		if !strings.Contains(line, "connection refused") {
			t.Errorf("%s: a retry for another reason than a refused connection: %s", name, line)
			return n
		}
	}
	return n
}

// An outage on the memory transport: `memhook serve` (transport memory)
// gets 1 000 events from an application on transport http just as the
// receiver stops accepting connections; it refuses them for 60 s, then
// answers 200. With MEMHOOK_RETRY_SCHEDULE=1s,…,64s every event is
// delivered on its seventh attempt, exactly once, none poisoned; while the
// retries wait the router holds nothing in its queue or its workers and
// uses almost no CPU. Endpoint health is off (MEMHOOK_PAUSE_AFTER=0)
// here and in the Redis outage below: they measure the retry schedule and
// its delay store; with it on, the endpoint pauses instead (endpoints_test.go).
func TestOutageMemoryTransport(t *testing.T) {
	skipShort(t)
	t.Parallel()
	rcv := newOutageReceiver(t)
	r := serve(t, "MEMHOOK_TRANSPORT=memory", "MEM0_WEBHOOK_URL="+rcv.URL(),
		"MEMHOOK_RETRY_SCHEDULE="+outageSchedule, "MEMHOOK_PAUSE_AFTER=0", "MEMHOOK_LOG_LEVEL=warn")
	app, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + r.addr},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}

	cpu := startCPU(t, "router (memory)", r)
	start := time.Now()
	end := start.Add(outageDuration)
	for i := range outageEvents {
		e := event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]int{"n": i}}
		if err := app.Emit(context.Background(), e); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil { // returns once the router took every event
		t.Fatalf("the router did not take every event: %v", err)
	}
	t.Logf("%d events handed to the router in %s", outageEvents, time.Since(start).Round(time.Millisecond))

	var st bus.Stats
	waitStats(t, "every event's sixth attempt failed and its retry waits", end, func() (bool, []bus.Stats) {
		st = routerStats(t, r)
		return st.Retried >= outageFailedAttempts*outageEvents && st.RetriesWaiting == outageEvents, []bus.Stats{st}
	})
	if st.Queued != 0 || st.InFlight != 0 || st.Poisoned != 0 {
		t.Errorf("while the retries wait: %d queued, %d in flight, %d poisoned; want none", st.Queued, st.InFlight, st.Poisoned)
	}
	quiet, quietStart := startCPU(t, "router (memory)", r), time.Now()
	time.Sleep(time.Until(end)) // the outage itself: the receiver refuses connections until end
	quiet.check("while 1 000 retries waited, none due", time.Since(quietStart), 0, outageQuietMaxCPU)
	cpu.check("over the outage", time.Since(start), st.Retried, outageCPUBase+time.Duration(st.Retried)*outageCPUPerAttempt)
	if err := rcv.up(); err != nil {
		t.Fatal(err)
	}

	rcv.waitDistinct(t, outageEvents, 30*time.Second)
	waitStats(t, "every delivery counted", time.Now().Add(10*time.Second), func() (bool, []bus.Stats) {
		st = routerStats(t, r)
		return st.Delivered >= outageEvents, []bus.Stats{st}
	})
	t.Logf("all %d delivered %s after the outage began; %d duplicate deliveries (same webhook-id); stats %+v",
		outageEvents, rcv.lastAt().Sub(start).Round(time.Millisecond), rcv.duplicates(), st)
	if d := rcv.duplicates(); d != 0 {
		t.Errorf("%d duplicate deliveries without any crash", d)
	}
	if st.Poisoned != 0 || st.Delivered != outageEvents || st.RetriesWaiting != 0 {
		t.Errorf("stats %+v: want %d delivered, none poisoned, none waiting", st, outageEvents)
	}
	if st.Retried != outageFailedAttempts*outageEvents {
		t.Errorf("%d retries scheduled, want %d: %d failed attempts per event in a %s outage with schedule %s",
			st.Retried, outageFailedAttempts*outageEvents, outageFailedAttempts, outageDuration, outageSchedule)
	}
	if n := checkRetryLines(t, "router (memory)", r); n != int(st.Retried) {
		t.Errorf("%d retries logged, %d counted", n, st.Retried)
	}
}

// An outage on Redis with two routers: 1 000 events appended to the
// stream as the receiver stops accepting connections for 60 s; once the
// retries after the fourth attempts wait in the shared sorted set, router
// a is killed with SIGKILL; router b alone moves and attempts the rest.
// Every event is delivered once the receiver is back, none poisoned (the
// poison stream stays empty), the duplicates are counted; the routers'
// and Redis's CPU time over the outage, and Redis's memory per waiting
// retry, are reported.
func TestOutageRedisRouterKilledWhileRetriesWait(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := redistest.Start(t)
	rcv := newOutageReceiver(t)
	env := append(routerEnv(srv.URL(), rcv.URL(), ""), "MEMHOOK_RETRY_SCHEDULE="+outageSchedule, "MEMHOOK_PAUSE_AFTER=0")
	a := serve(t, append(env, "MEMHOOK_REDIS_CONSUMER=outage-a")...)
	b := serve(t, append(env, "MEMHOOK_REDIS_CONSUMER=outage-b")...)
	a.waitReady(t, 15*time.Second)
	b.waitReady(t, 15*time.Second)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	memBefore, redisCPUBefore := redisInfo(t, rc)

	cpuA, cpuB := startCPU(t, "router a", a), startCPU(t, "router b", b)
	start := time.Now()
	end := start.Add(outageDuration)
	emitConcurrently(t, srv.URL(), outageEvents)
	t.Logf("%d events appended in %s", outageEvents, time.Since(start).Round(time.Millisecond))

	// Kill a while every retry waits in Redis, none due: after the fourth
	// attempts (about 7 s in), before the fifth (15 s).
	const beforeKill = 4
	var sa, sb bus.Stats
	waitStats(t, "every event's fourth attempt failed and its retry waits", end, func() (bool, []bus.Stats) {
		sa, sb = routerStats(t, a), routerStats(t, b)
		return sa.Retried+sb.Retried >= beforeKill*outageEvents && sb.RetriesWaiting == outageEvents, []bus.Stats{sa, sb}
	})
	pending := pendingBy(t, rc, "outage-a")
	cpuA.check("until it was killed", time.Since(start), sa.Retried, outageCPUBase+time.Duration(sa.Retried)*outageCPUPerAttempt)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Since(start)
	t.Logf("router a SIGKILLed %s into the outage, holding %d pending entries; it had scheduled %d retries, router b %d",
		killedAt.Round(time.Millisecond), pending, sa.Retried, sb.Retried)

	waitStats(t, "every event's sixth attempt failed and its retry waits", end, func() (bool, []bus.Stats) {
		sb = routerStats(t, b)
		return sa.Retried+sb.Retried >= outageFailedAttempts*outageEvents && sb.RetriesWaiting >= outageEvents, []bus.Stats{sb}
	})
	memWaiting, _ := redisInfo(t, rc)
	quiet, quietStart := startCPU(t, "router b", b), time.Now()
	time.Sleep(time.Until(end)) // the outage itself: the receiver refuses connections until end
	quiet.check("while 1 000 retries waited in Redis, none due", time.Since(quietStart), 0, outageQuietMaxCPU)
	cpuB.check("over the outage", time.Since(start), sb.Retried, outageCPUBase+time.Duration(sb.Retried)*outageCPUPerAttempt)
	_, redisCPU := redisInfo(t, rc)
	t.Logf("redis-server: %.2f CPU seconds over the outage; used_memory grew by %d bytes with %d retries waiting (%d bytes each, stream entries not yet trimmed included)",
		redisCPU-redisCPUBefore, memWaiting-memBefore, sb.RetriesWaiting, (memWaiting-memBefore)/int64(max(sb.RetriesWaiting, 1)))
	if err := rcv.up(); err != nil {
		t.Fatal(err)
	}

	rcv.waitDistinct(t, outageEvents, 30*time.Second)
	t.Logf("all %d delivered %s after the outage began; %d duplicate deliveries (same webhook-id)",
		outageEvents, rcv.lastAt().Sub(start).Round(time.Millisecond), rcv.duplicates())
	if d := rcv.duplicates(); d > 64 {
		t.Errorf("%d duplicates: more than the entries one router can hold", d)
	}
	waitStats(t, "no retry left waiting", time.Now().Add(10*time.Second), func() (bool, []bus.Stats) {
		sb = routerStats(t, b)
		return sb.RetriesWaiting == 0, []bus.Stats{sb}
	})
	if sb.Poisoned != 0 {
		t.Errorf("router b poisoned %d events", sb.Poisoned)
	}
	if n, err := rc.XLen(context.Background(), bus.PoisonTopic).Result(); err != nil || n != 0 {
		t.Errorf("poison stream holds %d entries (%v), want none", n, err)
	}
	if n, err := rc.ZCard(context.Background(), bus.RetryTopic+":delayed").Result(); err != nil || n != 0 {
		t.Errorf("%d retries still wait in Redis (%v)", n, err)
	}
	if sa.Retried+sb.Retried < outageFailedAttempts*outageEvents {
		t.Errorf("%d retries scheduled, want at least %d", sa.Retried+sb.Retried, outageFailedAttempts*outageEvents)
	}
	t.Logf("retries scheduled: %d by router a before the kill, %d by router b in all; router b stats %+v", sa.Retried, sb.Retried, sb)
	checkRetryLines(t, "router a", a)
	checkRetryLines(t, "router b", b)
}

// pendingBy counts the entries consumer holds pending on the events and
// retry streams.
func pendingBy(t *testing.T, rc *redis.Client, consumer string) int64 {
	t.Helper()
	var n int64
	for _, stream := range []string{bus.Topic, bus.RetryTopic} {
		p, err := rc.XPending(context.Background(), stream, "memhook").Result()
		if err != nil {
			t.Fatalf("XPENDING %s: %v", stream, err)
		}
		n += p.Consumers[consumer]
	}
	return n
}

// redisInfo returns Redis's used_memory (bytes) and its CPU time (user
// and system, seconds).
func redisInfo(t *testing.T, rc *redis.Client) (int64, float64) {
	t.Helper()
	info, err := rc.Info(context.Background(), "memory", "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var mem int64
	var cpu float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "used_memory":
			mem, _ = strconv.ParseInt(v, 10, 64)
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	return mem, cpu
}

// lastAt is when the receiver last counted a delivery.
func (c *counter) lastAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// emitConcurrently appends n events numbered 0..n-1 to the stream from 16
// goroutines sharing one bus, as a busy application does: concurrent
// Emits share XADD pipelines, so that all are appended within a second or
// two even on a Redis that syncs every write to disk.
func emitConcurrently(t *testing.T, redisURL string, n int) {
	t.Helper()
	app, err := bus.New(bus.Config{Transport: bus.TransportRedis, RedisURL: redisURL}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	const workers = 16
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				e := event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]int{"n": i}}
				if err := app.Emit(context.Background(), e); err != nil {
					errs <- fmt.Errorf("emit %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
