package redisfault_test

// The endpoint tests of issue 12, with real processes: `memhook serve`
// routers on a private redis-server, an endpoints file beside the seed's
// MEM0_WEBHOOK_URL, receivers on loopback. One keeps an endpoint down for
// two minutes (paused, probed, resumed); the other rewrites the endpoints
// file and SIGHUPs every router while 10 000 events flow. They are
// skipped by go test -short and run in parallel with the outage tests.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// endpointEnv is the configuration of a router with an endpoints file:
// memhook's defaults for every time (retries, timeouts, the breaker), JSON
// log lines at WARN (the state changes), so that the test reads their
// times.
func endpointEnv(redisURL, webhookURL, file, consumer string) []string {
	return []string{
		"MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL=" + redisURL, "MEMHOOK_REDIS_CONSUMER=" + consumer,
		"MEM0_WEBHOOK_URL=" + webhookURL, "MEMHOOK_ENDPOINTS_FILE=" + file,
		"MEMHOOK_LOG_LEVEL=warn", "MEMHOOK_LOG_FORMAT=json",
	}
}

// writeEndpoints writes an endpoints file with one endpoint per name,
// each at its URL, replacing the file at once (a rename), so that a
// router reading it on SIGHUP never sees half of it.
func writeEndpoints(t *testing.T, path string, names []string, urls map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    url: %s\n", n, urls[n])
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// endpointsOf reads a router's endpoints, with their states and counters:
// from GET /api/endpoints, or with status from GET /webhooks/memory/status.
func endpointsOf(t *testing.T, p *proc, status bool) []bus.EndpointStats {
	t.Helper()
	path := "/api/endpoints"
	if status {
		path = "/webhooks/memory/status"
	}
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		t.Fatalf("GET %s of %s: %v", path, p.addr, err)
	}
	defer resp.Body.Close()
	var body struct {
		Endpoints []bus.EndpointStats `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s of %s: %d %v", path, p.addr, resp.StatusCode, err)
	}
	return body.Endpoints
}

// endpointOf returns endpoint name of list; ok false when it is not there.
func endpointOf(list []bus.EndpointStats, name string) (bus.EndpointStats, bool) {
	for _, e := range list {
		if e.Name == name {
			return e, true
		}
	}
	return bus.EndpointStats{}, false
}

func names(list []bus.EndpointStats) []string {
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = e.Name
	}
	return out
}

// logLine is one JSON log line of a router.
type logLine struct {
	Time     time.Time `json:"time"`
	Level    string    `json:"level"`
	Msg      string    `json:"msg"`
	Endpoint string    `json:"endpoint"`
	From     string    `json:"from"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
}

// lines returns the router's JSON log lines whose message is msg (all of
// them for "").
func (p *proc) lines(msg string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(p.log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && (msg == "" || l.Msg == msg) {
			out = append(out, l)
		}
	}
	return out
}

// pacedEmitter is an application on the Redis transport emitting events
// numbered 0..n-1, per of them every tick, from one goroutine: the stream
// holds them in the order of their numbers.
type pacedEmitter struct {
	// started is the highest number whose Emit has begun (-1 before the
	// first): every event numbered above it is appended after the load.
	started atomic.Int64
	// done counts the events whose Emit returned: every event numbered
	// below it was appended before the load.
	done       atomic.Int64
	finished   chan struct{}
	finishedAt time.Time // set before finished is closed
	err        error     // set before finished is closed
}

func startEmitter(t *testing.T, redisURL string, n, per int, tick time.Duration) *pacedEmitter {
	t.Helper()
	app, err := bus.New(bus.Config{Transport: bus.TransportRedis, RedisURL: redisURL}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &pacedEmitter{finished: make(chan struct{})}
	e.started.Store(-1)
	go func() {
		defer close(e.finished)
		defer func() { e.finishedAt = time.Now() }()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for i := 0; i < n; {
			select {
			case <-ctx.Done():
				e.err = ctx.Err()
				return
			case <-tk.C:
			}
			for j := 0; j < per && i < n; j, i = j+1, i+1 {
				e.started.Store(int64(i))
				if err := app.Emit(ctx, event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]int{"n": i}}); err != nil {
					e.err = fmt.Errorf("emit %d: %w", i, err)
					return
				}
				e.done.Store(int64(i + 1))
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-e.finished
		_ = app.Close(context.Background())
	})
	return e
}

// wait waits until every event is emitted, and fails t if one was not.
func (e *pacedEmitter) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-e.finished:
	case <-time.After(timeout):
		t.Fatalf("the application emitted %d events in %s, not all", e.done.Load(), timeout)
	}
	if e.err != nil {
		t.Fatal(e.err)
	}
}

// numbers returns the event numbers the receiver got, ascending.
func (c *counter) numbers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.seen))
	for n := range c.seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// lastNewAt is when an event last arrived for the first time.
func (c *counter) lastNewAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastNew
}

// runs describes sorted numbers as runs ("0-2999 3005-3010"), at most a
// few of them.
func runs(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if len(parts) == 8 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		i = j + 1
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// prefix is how many of sorted numbers ns run 0, 1, 2, … without a gap.
func prefix(ns []int) int {
	n := 0
	for n < len(ns) && ns[n] == n {
		n++
	}
	return n
}

// probeIntervalAt is the wait between probes a breaker that paused at
// pausedAt is in at instant at, all its probes failing: MinProbe, doubled
// after each probe, up to MaxProbe (middleware.Breaker). Each probe goes
// out with the first event handled after it is due, so the real probes
// are a little later than these: the interval at a given instant is this
// one, or (near its end) the one before.
func probeIntervalAt(pausedAt, at time.Time) (interval time.Duration, next time.Time) {
	interval, next = middleware.DefaultMinProbe, pausedAt.Add(middleware.DefaultMinProbe)
	for !next.After(at) {
		interval = min(2*interval, middleware.DefaultMaxProbe)
		next = next.Add(interval)
	}
	return interval, next
}

// waitAll waits until the receiver has n distinct events, at most
// timeout; false if it has not.
func (c *counter) waitAll(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for c.distinct() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// waiting logs where the events of endpoint that c has not got are: in
// the delay store (with their due times, from since), in its retry
// stream, pending.
func waiting(t *testing.T, rc *redis.Client, endpoint string, c *counter, n int, since time.Time) {
	t.Helper()
	ctx := context.Background()
	got := c.numbers()
	var missing []int
	for i, j := 0, 0; i < n; i++ {
		if j < len(got) && got[j] == i {
			j++
			continue
		}
		missing = append(missing, i)
	}
	t.Logf("missing at %s: %d events (%s)", time.Since(since).Round(time.Millisecond), len(missing), runs(missing))
	topic := transports.EndpointRetryTopic(endpoint)
	zs, err := rc.ZRangeWithScores(ctx, topic+":delayed", 0, -1).Result()
	if err != nil {
		t.Logf("ZRANGE %s:delayed: %v", topic, err)
	}
	for _, z := range zs {
		id := fmt.Sprint(z.Member)
		fields, _ := rc.HGetAll(ctx, topic+":delayed:"+id).Result()
		t.Logf("waits in %s:delayed: %s due %s after the return; hash %d fields, payload %.120s", topic, id,
			time.UnixMilli(int64(z.Score)).Sub(since).Round(time.Millisecond), len(fields), fields["payload"])
	}
	xl, _ := rc.XLen(ctx, topic).Result()
	groups, _ := rc.XInfoGroups(ctx, topic).Result()
	t.Logf("stream %s: %d entries, groups %+v", topic, xl, groups)
	for _, stream := range []string{bus.Topic, topic} {
		for _, g := range groups {
			p, err := rc.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: g.Name, Start: "-", End: "+", Count: 50}).Result()
			if err == nil && len(p) > 0 {
				t.Logf("pending on %s for %s: %+v", stream, g.Name, p)
			}
		}
	}
}

// poisonLen is how many entries the poison stream holds.
func poisonLen(t *testing.T, rc *redis.Client) int64 {
	t.Helper()
	n, err := rc.XLen(context.Background(), bus.PoisonTopic).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", bus.PoisonTopic, err)
	}
	return n
}

// groupsOf returns the consumer groups of the events stream.
func groupsOf(t *testing.T, rc *redis.Client) []string {
	t.Helper()
	gs, err := rc.XInfoGroups(context.Background(), bus.Topic).Result()
	if err != nil {
		t.Fatalf("XINFO GROUPS %s: %v", bus.Topic, err)
	}
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.Name
	}
	return out
}

// checkNonePoisoned fails t when a router counted an event poisoned (or
// shed) for any endpoint, or the poison stream holds one.
func checkNonePoisoned(t *testing.T, when string, rc *redis.Client, routers ...*proc) {
	t.Helper()
	for i, p := range routers {
		if st := routerStats(t, p); st.Poisoned != 0 {
			t.Errorf("%s: router %d counted %d poisoned", when, i+1, st.Poisoned)
		}
		for _, e := range endpointsOf(t, p, false) {
			if e.Poisoned != 0 || e.Shed != 0 {
				t.Errorf("%s: router %d, endpoint %s: %d poisoned, %d shed", when, i+1, e.Name, e.Poisoned, e.Shed)
			}
		}
	}
	if n := poisonLen(t, rc); n != 0 {
		t.Errorf("%s: the poison stream holds %d entries, want none", when, n)
	}
}

const (
	// pauseDown is how long the endpoint refuses connections.
	pauseDown = 2 * time.Minute
	// pauseEvents are emitted over pauseEmitting from the start of the
	// outage.
	pauseEvents   = 1000
	pauseEmitting = time.Minute
	// pauseSlack is allowed on top of a probe interval and its spread for
	// the last event to arrive after the endpoint's return: what was held
	// while the successful probe was in flight (MinProbe, plus its
	// spread), the delay store's mover, the deliveries, a loaded machine.
	pauseSlack = 10 * time.Second
)

// An endpoint (from the endpoints file, beside a healthy default one)
// refuses connections for two minutes while 1 000 events flow over the
// first minute, on Redis with two routers and memhook's defaults: each
// router pauses it (its state "paused" in /api/endpoints and the status,
// a WARN line), none of its events is poisoned, the default endpoint gets
// every event meanwhile; once it is back, every event reaches it within
// one probe interval (the one in effect at its return, plus the spread of
// the held events' due times) — the time from the return to the last
// delivery, the interval, the duplicates are logged
// (go test -v -run TestEndpointPaused ./tests/redisfault/).
func TestEndpointPausedWhileDownAndResumedWithinAProbeInterval(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	healthy, healthyRcv := startCounting(t, 0, nil)
	flaky := newOutageReceiver(t) // down: nothing listens on its port
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeEndpoints(t, file, []string{"flaky"}, map[string]string{"flaky": flaky.URL()})
	var routers []*proc
	for _, name := range []string{"pause-a", "pause-b"} {
		routers = append(routers, serve(t, endpointEnv(srv.URL(), healthyRcv.URL, file, name)...))
	}
	for _, r := range routers {
		r.waitReady(t, 15*time.Second)
	}

	start := time.Now()
	back := start.Add(pauseDown)
	em := startEmitter(t, srv.URL(), pauseEvents, 1, pauseEmitting/pauseEvents)

	// Each router pauses it after its first failures, and says so.
	deadline := time.Now().Add(30 * time.Second)
	pausedAt := make([]time.Time, len(routers))
	for i, r := range routers {
		for {
			if ls := r.lines("memhook: endpoint paused"); len(ls) > 0 {
				pausedAt[i] = ls[0].Time
				if ls[0].Endpoint != "flaky" || ls[0].Level != "WARN" {
					t.Errorf("router %d: %+v, want a WARN line for endpoint flaky", i+1, ls[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("router %d: no \"memhook: endpoint paused\" line 30 s into the outage", i+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, status := range []bool{false, true} {
			if e, ok := endpointOf(endpointsOf(t, r, status), "flaky"); !ok || e.State != "paused" {
				t.Errorf("router %d (status %v): endpoint flaky %+v, want paused", i+1, status, e)
			}
		}
		t.Logf("router %d paused endpoint flaky %s into the outage: %s", i+1, pausedAt[i].Sub(start).Round(time.Millisecond), r.lines("memhook: endpoint paused")[0].Reason)
	}
	list := exec.Command(binary, "endpoints", "list")
	list.Env = append(os.Environ(), "MEMHOOK_ROUTER_URL=http://"+routers[0].addr)
	if out, err := list.CombinedOutput(); err != nil || !strings.Contains(string(out), "paused") {
		t.Errorf("memhook endpoints list: %v\n%s", err, out)
	} else {
		t.Logf("memhook endpoints list, while it is down:\n%s", out)
	}

	// The default endpoint gets every event meanwhile, as they come.
	em.wait(t, pauseEmitting+30*time.Second)
	healthy.waitDistinct(t, pauseEvents, 30*time.Second)
	if lag := healthy.lastNewAt().Sub(em.finishedAt); lag > 5*time.Second {
		t.Errorf("the default endpoint got the last event %s after it was emitted", lag.Round(time.Millisecond))
	}
	t.Logf("%d events emitted in %s; the default endpoint had them all within %s of the last being emitted",
		pauseEvents, em.finishedAt.Sub(start).Round(time.Millisecond), max(0, healthy.lastNewAt().Sub(em.finishedAt)).Round(time.Millisecond))

	// Until its return it stays paused, and nothing is poisoned: looked at
	// every few seconds.
	for time.Until(back) > 0 {
		checkNonePoisoned(t, "while it is down", rc, routers...)
		if t.Failed() {
			t.FailNow()
		}
		time.Sleep(min(5*time.Second, time.Until(back)))
	}
	var interval time.Duration
	for i, r := range routers {
		e, _ := endpointOf(endpointsOf(t, r, false), "flaky")
		if e.State != "paused" {
			t.Errorf("router %d: endpoint flaky %s at its return, want paused", i+1, e.State)
		}
		iv, next := probeIntervalAt(pausedAt[i], back)
		interval = max(interval, iv)
		t.Logf("router %d at the return: endpoint flaky %s, %d retrying; probe interval in effect %s, next probe due about %s after the return",
			i+1, e.State, e.Retrying, iv, next.Sub(back).Round(time.Second))
	}

	if err := flaky.up(); err != nil {
		t.Fatal(err)
	}
	back = time.Now()
	limit := interval + time.Duration(middleware.DefaultHealthJitter*float64(interval)) + pauseSlack
	if !flaky.waitAll(pauseEvents, limit+5*time.Second) {
		waiting(t, rc, "flaky", flaky.counter, pauseEvents, back)
		t.Fatalf("endpoint flaky got %d of %d events in %s after its return", flaky.distinct(), pauseEvents, limit+5*time.Second)
	}
	took := flaky.lastNewAt().Sub(back)
	t.Logf("endpoint flaky back %s after the outage began: all %d events reached it %s after its return (probe interval %s, limit %s); %d duplicate deliveries (same webhook-id); the default endpoint %d",
		back.Sub(start).Round(time.Millisecond), pauseEvents, took.Round(time.Millisecond), interval, limit, flaky.duplicates(), healthy.duplicates())
	if took > limit {
		t.Errorf("the last event reached the endpoint %s after its return, want within %s (probe interval %s, its spread, %s slack)",
			took.Round(time.Millisecond), limit, interval, pauseSlack)
	}
	for i, r := range routers {
		for _, l := range r.lines("memhook: endpoint active") {
			t.Logf("router %d: endpoint %s active %s after the return (%s)", i+1, l.Endpoint, l.Time.Sub(back).Round(time.Millisecond), l.Reason)
		}
	}
	delayed := transports.EndpointRetryTopic("flaky") + ":delayed"
	deadline = time.Now().Add(10 * time.Second)
	for {
		n, err := rc.ZCard(context.Background(), delayed).Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d events still wait in %s (%v) after all were delivered", n, delayed, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing waits any more: the duplicates are all counted.
	if d := flaky.duplicates() + healthy.duplicates(); d != 0 {
		t.Errorf("%d duplicate deliveries without any crash", d)
	}
	if got := healthy.distinct(); got != pauseEvents {
		t.Errorf("the default endpoint got %d distinct events, want %d", got, pauseEvents)
	}
	checkNonePoisoned(t, "after its return", rc, routers...)
	for i, r := range routers {
		e, _ := endpointOf(endpointsOf(t, r, false), "flaky")
		t.Logf("router %d, endpoint flaky at the end: %s, %d delivered, %d retried, %d retrying, %d poisoned", i+1, e.State, e.Delivered, e.Retried, e.Retrying, e.Poisoned)
	}
}

const (
	// hupEvents are emitted, hupPer every hupTick (at most 1 000 a
	// second).
	hupEvents = 10_000
	hupPer    = 10
	hupTick   = 10 * time.Millisecond
	// hupAt is how many have been emitted when the file is rewritten.
	hupAt = 4000
	// hupStagger is how long, reloading one router at a time, the next
	// router waits after the one before has reloaded.
	hupStagger = time.Second
)

// SIGHUP while 10 000 events flow: two routers on Redis deliver to the
// default endpoint and to A (from the endpoints file); once 4 000 events
// are emitted, the file is rewritten to name B instead of A and every
// router gets SIGHUP — at once, or one at a time as a rolling reload
// does. The default endpoint gets all 10 000, once each; B, which starts
// at the stream's end when it is added, gets none emitted before the
// signal and every one emitted once a router has reloaded, a contiguous
// tail up to the last; A gets a prefix and nothing emitted once every
// router has reloaded, and its consumer group goes; none is poisoned, the
// stream is trimmed to nothing. The numbers and duplicates are logged
// (go test -v -run TestEndpointsReloaded ./tests/redisfault/). In a
// rolling reload the first router to reload removes A's consumer group
// while the other still delivers to A: that one finds the group missing
// and marked removed, and stops reading it rather than make it again at
// the stream's start (transports.RedisTransport.RemoveGroup), so A gets
// no duplicate either.
func TestEndpointsReloadedOnSIGHUPWhileEventsFlow(t *testing.T) {
	skipShort(t)
	t.Parallel()
	t.Run("every router at once", func(t *testing.T) {
		t.Parallel()
		reloadWhileEventsFlow(t, 0)
	})
	t.Run("one router at a time", func(t *testing.T) {
		t.Parallel()
		reloadWhileEventsFlow(t, hupStagger)
	})
}

// reloadWatch follows a reload of the routers: when B's consumer group
// appears on the events stream, when each router logs that it reloaded
// its endpoints, as the number of the event being emitted then.
type reloadWatch struct {
	t       *testing.T
	rc      *redis.Client
	em      *pacedEmitter
	routers []*proc
	groupB  string

	offs      []int
	reloaded  []int64         // started when router i's reload line was seen; -1 before
	took      []time.Duration // from its SIGHUP to then
	signalled []time.Time
	// groupSeen is started when B's group was first seen (-1 before);
	// groupAtReload whether it was there when the first reload line was.
	groupSeen     int64
	groupAtReload bool
}

// hup sends SIGHUP to router i.
func (w *reloadWatch) hup(i int) {
	w.t.Helper()
	w.signalled[i] = time.Now()
	if err := w.routers[i].cmd.Process.Signal(syscall.SIGHUP); err != nil {
		w.t.Fatal(err)
	}
}

// until polls until cond holds, for at most 30 s.
func (w *reloadWatch) until(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.poll()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("30 s after SIGHUP: not %s (B's group seen at event %d, routers reloaded at %v)", what, w.groupSeen, w.reloaded)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (w *reloadWatch) poll() {
	w.t.Helper()
	if w.groupSeen < 0 && slices.Contains(groupsOf(w.t, w.rc), w.groupB) {
		w.groupSeen = w.em.started.Load() // every event above it is appended after B's group exists
	}
	for i, r := range w.routers {
		if w.reloaded[i] >= 0 {
			continue
		}
		var chunk string
		chunk, w.offs[i] = r.logSince(w.offs[i])
		if strings.Contains(chunk, `"msg":"memhook: SIGHUP: endpoints reloaded"`) {
			// The line is written once SetEndpoints has returned: every
			// event above this one is emitted after this router reloaded.
			w.reloaded[i] = w.em.started.Load()
			w.took[i] = time.Since(w.signalled[i])
			if w.first() == w.reloaded[i] {
				w.groupAtReload = slices.Contains(groupsOf(w.t, w.rc), w.groupB)
			}
		}
	}
}

// first and last are started when the first and the last router had
// reloaded (-1 while none or not all have).
func (w *reloadWatch) first() int64 {
	f := int64(-1)
	for _, n := range w.reloaded {
		if n >= 0 && (f < 0 || n < f) {
			f = n
		}
	}
	return f
}

func (w *reloadWatch) last() int64 {
	l := int64(-1)
	for _, n := range w.reloaded {
		if n < 0 {
			return -1
		}
		l = max(l, n)
	}
	return l
}

// logSince returns the router's log lines from byte off on, and the
// offset after them (lines are written whole).
func (p *proc) logSince(off int) (string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.logs.Bytes()
	return string(b[off:]), len(b)
}

// reloadWhileEventsFlow is the SIGHUP test, the routers reloaded at once
// (stagger 0) or one at a time, each stagger after the one before.
func reloadWhileEventsFlow(t *testing.T, stagger time.Duration) {
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	def, defRcv := startCounting(t, 0, nil)
	a, aRcv := startCounting(t, 0, nil)
	b, bRcv := startCounting(t, 0, nil)
	urls := map[string]string{"a": aRcv.URL + "/a", "b": bRcv.URL + "/b"}
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeEndpoints(t, file, []string{"a"}, urls)
	var routers []*proc
	for _, name := range []string{"hup-1", "hup-2"} {
		// INFO: the reload's own line says when it is done.
		env := append(endpointEnv(srv.URL(), defRcv.URL, file, name), "MEMHOOK_LOG_LEVEL=info")
		routers = append(routers, serve(t, env...))
	}
	for _, r := range routers {
		r.waitReady(t, 15*time.Second)
	}
	groupA, groupB := transports.EndpointGroup("memhook", "a"), transports.EndpointGroup("memhook", "b")
	w := &reloadWatch{t: t, rc: rc, routers: routers, groupB: groupB, groupSeen: -1,
		offs: make([]int, len(routers)), reloaded: []int64{-1, -1}, took: make([]time.Duration, len(routers)),
		signalled: make([]time.Time, len(routers))}
	for i, r := range routers {
		_, w.offs[i] = r.logSince(0)
	}

	start := time.Now()
	w.em = startEmitter(t, srv.URL(), hupEvents, hupPer, hupTick)
	deadline := time.Now().Add(30 * time.Second)
	for w.em.started.Load() < hupAt {
		if time.Now().After(deadline) {
			t.Fatalf("%d events emitted in 30 s", w.em.done.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	writeEndpoints(t, file, []string{"b"}, urls)
	beforeHUP := w.em.done.Load() // every event below it is in the stream before any router reads the file
	hupTime := time.Now()
	if stagger == 0 {
		for i := range routers {
			w.hup(i)
		}
		w.until("every router reloaded", func() bool { return w.last() >= 0 })
	} else {
		for i := range routers {
			if i > 0 {
				next := time.Now().Add(stagger)
				w.until("a while after the one before", func() bool { return !time.Now().Before(next) })
			}
			w.hup(i)
			w.until(fmt.Sprintf("router %d reloaded", i+1), func() bool { return w.reloaded[i] >= 0 })
		}
	}
	w.until("B's group there", func() bool { return w.groupSeen >= 0 })
	t.Logf("SIGHUP after %d events (%s in), stagger %s; routers reloaded %v after their signal, when events %v were being emitted; B's group seen at event %d, there at the first reload line: %v",
		beforeHUP, hupTime.Sub(start).Round(time.Millisecond), stagger, w.took, w.reloaded, w.groupSeen, w.groupAtReload)

	w.em.wait(t, time.Minute)
	def.waitDistinct(t, hupEvents, time.Minute)
	deadline = time.Now().Add(time.Minute)
	for {
		ns := b.numbers()
		if len(ns) > 0 && ns[len(ns)-1] == hupEvents-1 && len(ns) == hupEvents-ns[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint B got %s, not a contiguous tail up to %d", runs(ns), hupEvents-1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("all %d emitted in %s; the default endpoint had them all within %s of the last being emitted",
		hupEvents, w.em.finishedAt.Sub(start).Round(time.Millisecond), max(0, def.lastNewAt().Sub(w.em.finishedAt)).Round(time.Millisecond))

	dn, an, bn := def.numbers(), a.numbers(), b.numbers()
	t.Logf("default: %d distinct (%s), %d duplicate deliveries", len(dn), runs(dn), def.duplicates())
	t.Logf("A: %d distinct (%s), a prefix of %d, %d duplicate deliveries", len(an), runs(an), prefix(an), a.duplicates())
	t.Logf("B: %d distinct (%s), %d duplicate deliveries", len(bn), runs(bn), b.duplicates())
	if len(dn) != hupEvents || dn[len(dn)-1] != hupEvents-1 {
		t.Errorf("the default endpoint got %s, want 0-%d", runs(dn), hupEvents-1)
	}
	if d := def.duplicates(); d != 0 {
		t.Errorf("the default endpoint got %d duplicates: a reload touched it", d)
	}
	if bn[0] < int(beforeHUP) {
		t.Errorf("endpoint B got event %d, emitted before the SIGHUP (after %d): an added endpoint gets the events from then on", bn[0], beforeHUP)
	}
	if first := w.first(); bn[0] > int(first)+1 {
		t.Errorf("endpoint B's first event is %d, but a router had reloaded when event %d was being emitted: events emitted after the reload lost for it", bn[0], first)
	}
	if bn[0] > int(w.groupSeen)+1 {
		t.Errorf("endpoint B's first event is %d, but its group existed when event %d was being emitted: events lost for it", bn[0], w.groupSeen)
	}
	if d := b.duplicates(); d != 0 {
		t.Errorf("endpoint B got %d duplicates", d)
	}
	if prefix(an) == 0 {
		t.Errorf("endpoint A got %s, want a prefix", runs(an))
	}
	if d := a.duplicates(); d != 0 {
		t.Errorf("endpoint A got %d duplicates: its group, removed by one router, was made again by another", d)
	}
	if last := an[len(an)-1]; last > int(w.last()) {
		t.Errorf("endpoint A got event %d, emitted once every router had reloaded (event %d): a removed endpoint stops", last, w.last())
	}
	checkNonePoisoned(t, "after the reload", rc, routers...)

	// A's group is gone, B's stays, and every entry is trimmed away: no
	// group holds the stream back.
	if gs := groupsOf(t, rc); slices.Contains(gs, groupA) || !slices.Contains(gs, groupB) {
		t.Errorf("consumer groups of the events stream: %v; want %s gone, %s there", gs, groupA, groupB)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		n, err := rc.XLen(context.Background(), bus.Topic).Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the events stream still holds %d entries (%v) after all were delivered", n, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, r := range routers {
		for _, l := range r.lines("") {
			if l.Level == "ERROR" || strings.Contains(l.Msg, "consumer group lost") || strings.Contains(l.Msg, "endpoint removed") || strings.Contains(l.Msg, "endpoint added") {
				t.Logf("router %d %s %s: %s %s", i+1, l.Time.Sub(hupTime).Round(time.Millisecond), l.Level, l.Msg, l.Error)
			}
		}
		if ls := r.lines("memhook: SIGHUP: endpoints reloaded with problems"); len(ls) > 0 {
			t.Errorf("router %d: %s: %s", i+1, ls[0].Msg, ls[0].Error)
		}
	}
}
