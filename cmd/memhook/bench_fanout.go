package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/deadport"
)

// The fan-out runs (issue #12): every event goes to several endpoints,
// each on its own subscription.
//
//   - fanout: three healthy endpoints, three receivers; events/s is the
//     deliveries of all three per second.
//   - fanout-isolation (memory) and fanout-isolation-redis (two routers):
//     one healthy endpoint, one refusing connections (a closed port), one
//     answering after 100 ms. Each round runs the healthy endpoint alone,
//     then the three; events/s is the healthy one's among the three, and
//     its ratio to its events/s alone in the same round must be at least
//     isolationWant. In the last round the slow one must then get every
//     event, and the dead one, once a receiver listens on its port, too
//     (at the default concurrency of 16 the slow one takes 160 events/s
//     per router: two minutes for 20 000 events, so once).

// fanoutEndpoints is how many healthy endpoints the fanout run has.
const fanoutEndpoints = 3

// isolationSlowDelay is how long the slow endpoint takes to answer.
const isolationSlowDelay = 100 * time.Millisecond

// isolationWant is the healthy endpoint's least ratio to its events/s
// alone that issue #12 asks.
const isolationWant = 0.9

// fanoutDetail is what a fan-out run reports beside its row.
type fanoutDetail struct {
	Transport   string `json:"transport"`
	Routers     int    `json:"routers,omitempty"`
	Concurrency int    `json:"concurrency"`
	// AlonePerSec: the healthy endpoint's events/s when it is the only
	// endpoint, in the same round.
	AlonePerSec float64 `json:"healthy_alone_events_per_sec,omitempty"`
	// AloneCPU and CPU are the share of the machine's cores this process
	// and its children (not redis-server) used while the healthy
	// endpoint's events went through, alone and among the three: well
	// below 1 on a CPU-bound run means other processes had the cores, and
	// the ratio says little.
	AloneCPU float64 `json:"alone_cpu_share,omitempty"`
	CPU      float64 `json:"cpu_share,omitempty"`
	// AloneCPUPer1000 is the CPU seconds per 1000 events of the healthy
	// endpoint alone (the row's CPU s/1000 is among the three): their
	// quotient is what the ratio would be on cores of its own, where
	// both phases are bound by CPU.
	AloneCPUPer1000 float64           `json:"alone_cpu_seconds_per_1000,omitempty"`
	Endpoints       []endpointOutcome `json:"endpoints"`
}

// endpointOutcome is what one endpoint's receiver got in a fan-out run.
type endpointOutcome struct {
	Name       string `json:"name"`
	Role       string `json:"role"` // healthy, slow (answers after 100 ms) or dead (refusing connections until the healthy one is through)
	Received   int    `json:"received"`
	Duplicates int    `json:"duplicates"`
	Missing    int    `json:"missing"`
	// Seconds: healthy and slow, from the first Emit to the endpoint's
	// last event; dead, from its comeback (once the healthy one has every
	// event) to its last event.
	Seconds float64 `json:"seconds"`
	// Retried and Poisoned are the endpoint's counters (EndpointStats,
	// summed over the routers).
	Retried  uint64 `json:"retried"`
	Poisoned uint64 `json:"poisoned"`
}

// fanoutRig holds the receivers the fan-out runs need beside the bench's
// own, started on first use.
type fanoutRig struct {
	healthy []*benchReceiver // the other healthy endpoints of the fanout run
	slow    *benchReceiver
}

func (f *fanoutRig) close() {
	for _, r := range append(slices.Clone(f.healthy), f.slow) {
		if r != nil {
			_ = r.srv.Close()
		}
	}
}

// receivers returns k healthy receivers: rcv and k-1 more.
func (f *fanoutRig) receivers(rcv *benchReceiver, k int) ([]*benchReceiver, error) {
	for len(f.healthy) < k-1 {
		r, err := startBenchReceiverAt("fanout-"+strconv.Itoa(len(f.healthy)+2), "127.0.0.1:0", 0)
		if err != nil {
			return nil, err
		}
		f.healthy = append(f.healthy, r)
	}
	return append([]*benchReceiver{rcv}, f.healthy[:k-1]...), nil
}

func (f *fanoutRig) slowReceiver() (*benchReceiver, error) {
	if f.slow == nil {
		r, err := startBenchReceiverAt("slow", "127.0.0.1:0", isolationSlowDelay)
		if err != nil {
			return nil, err
		}
		f.slow = r
	}
	return f.slow, nil
}

// benchEndpoint is an endpoint of a fan-out run, signed as the other runs
// sign.
func benchEndpoint(name, url string) bus.Endpoint {
	return bus.Endpoint{Name: name, URL: url, Token: "bench-token-" + name, Secret: "bench-secret-" + name}
}

// benchFanout emits n events on the memory transport to three healthy
// endpoints and waits until each of the three receivers has all of them.
// Events/s is the deliveries of all three per second.
func benchFanout(rig *fanoutRig, rcv *benchReceiver, e event.Event, n, w, rate int) benchResult {
	name := fmt.Sprintf("fanout (%d endpoints, memory)", fanoutEndpoints)
	rcvs, err := rig.receivers(rcv, fanoutEndpoints)
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	var eps []bus.Endpoint
	for i, r := range rcvs {
		r.reset(n)
		eps = append(eps, benchEndpoint("fanout-"+strconv.Itoa(i+1), r.url))
	}
	b, err := bus.New(bus.Config{Concurrency: w, QueueCapacity: n, Endpoints: eps}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	ctx := context.Background()
	cpu0, _ := cpuAndRSS()
	start := time.Now()
	if err := emitAll(b, e, n, w, rate); err != nil {
		_ = b.Close(ctx)
		return benchResult{Name: name, Error: err.Error()}
	}
	detail := &fanoutDetail{Transport: "memory", Concurrency: w}
	parts := make([]benchResult, len(rcvs))
	for i, r := range rcvs {
		parts[i] = r.finish(eps[i].Name, n, 0, 5*time.Minute)
		r.mu.Lock()
		parts[i].Seconds = since(start, r.lastNew) // to its last event
		r.mu.Unlock()
	}
	took := time.Since(start)
	cpu1, rss := cpuAndRSS()
	res := mergeReceivers(name, rcvs, parts, took)
	res.CPUPer1000 = (cpu1 - cpu0) / float64(n) * 1000 // per 1000 events, each delivered three times
	res.PeakRSSMiB = rss
	for i, p := range parts {
		detail.Endpoints = append(detail.Endpoints, endpointOutcome{Name: eps[i].Name, Role: "healthy",
			Received: p.Received, Duplicates: p.Duplicates, Missing: p.Missing, Seconds: p.Seconds})
	}
	res.Fanout = detail
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Close(cctx); err != nil {
		res.Error = err.Error()
	}
	return res
}

// mergeReceivers sums the receivers' results of one run (each from
// finish) into one row: events, received, duplicates and missing over all
// endpoints, deliveries/s over took, latency percentiles over every
// delivery.
func mergeReceivers(name string, rcvs []*benchReceiver, parts []benchResult, took time.Duration) benchResult {
	res := benchResult{Name: name, Seconds: took.Seconds()}
	var lat []time.Duration
	for i, p := range parts {
		res.Events += p.Events
		res.Received += p.Received
		res.Duplicates += p.Duplicates
		res.Missing += p.Missing
		res.Connections += p.Connections
		r := rcvs[i]
		r.mu.Lock()
		lat = append(lat, r.latency...)
		r.mu.Unlock()
	}
	if took > 0 {
		res.EventsPerSec = float64(res.Received) / took.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.P50Ms, res.P99Ms, res.MaxMs = ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), ms(lat[len(lat)-1])
	}
	return res
}

// isolationSetup says on which transport an isolation run runs.
type isolationSetup struct {
	name    string       // the row's name
	redis   *redisTarget // nil: memory, in this process
	routers int          // redis: `memhook serve` children
	w       int          // concurrency of the delivering buses
	profile string       // --cpuprofile, for the children's
}

// isolationBus is what delivers in one phase of an isolation run: on
// memory one bus in this process, where the events are also emitted; on
// Redis `memhook serve` children reading the endpoints from a file
// (MEMHOOK_ENDPOINTS_FILE), and a bus here that only appends.
type isolationBus struct {
	pub      *bus.Bus
	children []*exec.Cmd
	addrs    []string // the children's listen addresses, for their status
	dir      string   // the endpoints file's
	closed   bool
}

// openIsolation starts what delivers to eps. On Redis it empties the
// database first and starts the routers (each waits until ready: joined
// its groups).
func openIsolation(s isolationSetup, phase string, n, w int, eps []bus.Endpoint) (ib *isolationBus, err error) {
	// The goroutines of the buses carry the CPU profile label phase.
	pprof.Do(context.Background(), pprof.Labels("phase", phase), func(context.Context) { ib, err = openIsolationBus(s, phase, n, w, eps) })
	return ib, err
}

func openIsolationBus(s isolationSetup, phase string, n, w int, eps []bus.Endpoint) (*isolationBus, error) {
	quiet := bus.WithLogger(slog.New(slog.DiscardHandler))
	if s.redis == nil {
		// Room for the slow endpoint's whole backlog beside the dead
		// one's held events: each endpoint's queue and its waiting
		// events together are bounded by the capacity (past it the
		// oldest are shed).
		b, err := bus.New(bus.Config{Concurrency: s.w, QueueCapacity: 3 * n, Endpoints: eps}, quiet)
		if err != nil {
			return nil, err
		}
		return &isolationBus{pub: b}, nil
	}
	ctx := context.Background()
	if err := s.redis.reset(ctx); err != nil {
		return nil, err
	}
	ib := &isolationBus{}
	dir, err := os.MkdirTemp("", "memhook-bench-endpoints-")
	if err != nil {
		return nil, err
	}
	ib.dir = dir
	file := filepath.Join(dir, "endpoints.yaml")
	if err := os.WriteFile(file, endpointsFile(eps), 0o600); err != nil {
		_ = ib.close(ctx)
		return nil, err
	}
	// The events stream keeps each entry until the slowest group acked
	// it; each endpoint's backlog bound is half of it.
	maxLen := strconv.Itoa(4*n + 1)
	for i := range s.routers {
		cmd, addr, err := startRouter(childProfile(s.profile, fmt.Sprintf("isolation-%s-%d", phase, i)),
			"MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL="+s.redis.url, "MEMHOOK_ENDPOINTS_FILE="+file,
			"MEMHOOK_CONCURRENCY="+strconv.Itoa(s.w), "MEMHOOK_REDIS_CONSUMER=bench-"+strconv.Itoa(i), "MEMHOOK_REDIS_MAXLEN="+maxLen)
		if err != nil {
			_ = ib.close(ctx)
			return nil, fmt.Errorf("router %d: %w", i, err)
		}
		ib.children, ib.addrs = append(ib.children, cmd), append(ib.addrs, addr)
	}
	pub, err := bus.New(bus.Config{Transport: bus.TransportRedis, RedisURL: s.redis.url, Concurrency: w, RedisMaxLen: int64(4*n + 1)}, quiet)
	if err != nil {
		_ = ib.close(ctx)
		return nil, err
	}
	ib.pub = pub
	return ib, nil
}

// endpointsFile writes eps as an endpoints file (MEMHOOK_ENDPOINTS_FILE).
func endpointsFile(eps []bus.Endpoint) []byte {
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for _, e := range eps {
		fmt.Fprintf(&b, "  - name: %s\n    url: %s\n    token: %s\n    secret: %s\n", e.Name, e.URL, e.Token, e.Secret)
	}
	return []byte(b.String())
}

// pids are the children's process ids, whose CPU and memory count too.
func (ib *isolationBus) pids() []int {
	var out []int
	for _, c := range ib.children {
		out = append(out, c.Process.Pid)
	}
	return out
}

// close closes the bus here, then the children (SIGTERM: each finishes
// its attempts in flight); an *bus.UndeliveredError is left out (what a
// run leaves is counted by the receivers). It is idempotent.
func (ib *isolationBus) close(ctx context.Context) error {
	if ib.closed {
		return nil
	}
	ib.closed = true
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	if ib.pub != nil {
		var ue *bus.UndeliveredError
		if err := ib.pub.Close(ctx); err != nil && !errors.As(err, &ue) {
			errs = append(errs, err)
		}
	}
	for _, c := range ib.children {
		_ = c.Process.Signal(syscall.SIGTERM)
		_ = c.Wait()
	}
	if ib.dir != "" {
		errs = append(errs, os.RemoveAll(ib.dir))
	}
	return errors.Join(errs...)
}

// stats returns the counters of endpoint name, summed over the routers
// (read from each child's status endpoint); call it before close.
func (ib *isolationBus) stats(name string) (st bus.EndpointStats, err error) {
	all := func(list []bus.EndpointStats) {
		for _, s := range list {
			if s.Name == name {
				st.Delivered += s.Delivered
				st.Retried += s.Retried
				st.Poisoned += s.Poisoned
				st.Shed += s.Shed
			}
		}
	}
	if ib.children == nil {
		all(ib.pub.EndpointStats())
		return st, nil
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, addr := range ib.addrs {
		resp, err := client.Get("http://" + addr + "/webhooks/memory/status")
		if err != nil {
			return st, err
		}
		var body struct {
			Endpoints []bus.EndpointStats `json:"endpoints"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil {
			return st, fmt.Errorf("status of the router at %s: %w", addr, err)
		}
		all(body.Endpoints)
	}
	return st, nil
}

// waitArrivals waits until r has every event of its run, until deadline,
// or (stall above 0), once some arrived, until none arrived for stall; it
// returns when the last event not seen before arrived (zero if none did).
func (r *benchReceiver) waitArrivals(deadline time.Time, stall time.Duration) time.Time {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	lastNew := func() time.Time {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.lastNew
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, lastN := time.Now(), 0
	for {
		select {
		case <-done:
			return lastNew()
		case <-tick.C:
		}
		r.mu.Lock()
		k := len(r.seen)
		r.mu.Unlock()
		switch {
		case k != lastN:
			last, lastN = time.Now(), k
		case time.Now().After(deadline), stall > 0 && k > 0 && time.Since(last) > stall:
			return lastNew()
		}
	}
}

// benchIsolation is one round of an isolation run: the healthy endpoint
// alone, then with a dead and a slow one; see the comment at the top of
// this file. The endpoints have the defaults of `memhook serve`: the seed's
// retry schedule, and the dead one is paused after
// bus.DefaultPauseAfter failures in a row, its events held (none
// poisoned) while probes go out (5 s, doubling); the first probe after
// its receiver is back resumes it.
//
// With drain (the last round) it then waits until the slow endpoint has
// every event, and brings the dead one back and waits until it has every
// event too; without, it closes the buses once the healthy endpoint's
// events are through (what the others have left is dropped).
func benchIsolation(rig *fanoutRig, rcv *benchReceiver, e event.Event, n, w, rate int, s isolationSetup, drain bool) benchResult {
	fail := func(format string, args ...any) benchResult {
		return benchResult{Name: s.name, Error: fmt.Sprintf(format, args...)}
	}
	slow, err := rig.slowReceiver()
	if err != nil {
		return fail("%v", err)
	}
	healthy := benchEndpoint("healthy", rcv.url)
	ctx := context.Background()

	// The healthy endpoint alone.
	rcv.reset(n)
	ib, err := openIsolation(s, "alone", n, w, []bus.Endpoint{healthy})
	if err != nil {
		return fail("the healthy endpoint alone: %v", err)
	}
	cpuA0, _ := cpuAndRSS(ib.pids()...)
	start := time.Now()
	if err := emitAll(ib.pub, e, n, w, rate); err != nil {
		_ = ib.close(ctx)
		return fail("the healthy endpoint alone: %v", err)
	}
	alone := rcv.finish(s.name, n, 0, 5*time.Minute)
	aloneTook := time.Since(start)
	cpuA1, _ := cpuAndRSS(ib.pids()...)
	if err := ib.close(ctx); err != nil {
		return fail("the healthy endpoint alone: %v", err)
	}
	if alone.Missing != 0 || alone.Duplicates != 0 {
		return fail("the healthy endpoint alone: %d missing, %d duplicates", alone.Missing, alone.Duplicates)
	}
	alonePerSec := float64(alone.Received) / aloneTook.Seconds()

	// The three.
	deadPort, err := deadport.Reserve() // refuses connections; no other server can take it
	if err != nil {
		return fail("%v", err)
	}
	defer deadPort.Close()
	dead := benchEndpoint("dead", deadPort.URL("/hook"))
	slowEp := benchEndpoint("slow", slow.url)
	rcv.reset(n)
	slow.reset(n)
	runtime.GC() // as before every run: the alone phase's garbage is not this one's
	ib, err = openIsolation(s, "three", n, w, []bus.Endpoint{healthy, dead, slowEp})
	if err != nil {
		return fail("%v", err)
	}
	defer func() { _ = ib.close(ctx) }()
	pids := ib.pids()
	cpu0, _ := cpuAndRSS(pids...)
	start = time.Now()
	if err := emitAll(ib.pub, e, n, w, rate); err != nil {
		return fail("emitting: %v", err)
	}
	res := rcv.finish(s.name, n, 0, 5*time.Minute)
	took := time.Since(start)
	cpu1, rss := cpuAndRSS(pids...)
	res.Seconds = took.Seconds()
	res.EventsPerSec = float64(res.Received) / took.Seconds()
	res.CPUPer1000 = (cpu1 - cpu0) / float64(n) * 1000
	res.PeakRSSMiB = rss
	if alonePerSec > 0 {
		res.HealthyRatio = res.EventsPerSec / alonePerSec
	}
	share := func(cpu float64, took time.Duration) float64 { return cpu / took.Seconds() / float64(runtime.NumCPU()) }
	detail := &fanoutDetail{Transport: "memory", Concurrency: s.w, AlonePerSec: alonePerSec,
		AloneCPU: share(cpuA1-cpuA0, aloneTook), CPU: share(cpu1-cpu0, took), AloneCPUPer1000: (cpuA1 - cpuA0) / float64(n) * 1000}
	if s.redis != nil {
		detail.Transport, detail.Routers = "redis", s.routers
	}
	res.Fanout = detail
	detail.Endpoints = append(detail.Endpoints, endpointOutcome{Name: healthy.Name, Role: "healthy",
		Received: res.Received, Duplicates: res.Duplicates, Missing: res.Missing, Seconds: took.Seconds()})
	if !drain {
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond) // the slow and dead ones' events are left
		defer cancel()
		if err := ib.close(cctx); err != nil {
			res.Error = err.Error()
		}
		return res
	}

	// The dead one comes back now that the healthy one's events are
	// through: a probe finds it (the probe interval doubles from 5 s, so
	// the next is due within about the time it has been paused), and its
	// held events come back, spread over a fifth of the interval (the few
	// that came back while the probe was in flight wait one more). The
	// slow one drains meanwhile: at most concurrency×10 events/s per
	// router.
	var problems []string
	var deadOut *endpointOutcome
	var back *benchReceiver
	if ln, err := deadPort.Listen(); err != nil {
		problems = append(problems, fmt.Sprintf("the dead endpoint's receiver could not listen after the run: %v", err))
	} else {
		back = startBenchReceiverOn("dead", ln, 0)
		defer back.srv.Close()
		back.reset(n)
	}
	cameBack := time.Now()
	routers := max(s.routers, 1)
	slowTakes := time.Duration(float64(n) / float64(s.w*routers) * float64(isolationSlowDelay)) // at best
	slowLast := slow.waitArrivals(start.Add(2*slowTakes+time.Minute), 10*time.Second)
	if back != nil {
		deadLast := back.waitArrivals(cameBack.Add(cameBack.Sub(start)*5/2+15*time.Second), 0)
		p := back.finish(dead.Name, n, 0, 0)
		deadOut = &endpointOutcome{Name: dead.Name, Role: "dead", Received: p.Received, Duplicates: p.Duplicates, Missing: p.Missing,
			Seconds: since(cameBack, deadLast)}
	}
	sp := slow.finish(slowEp.Name, n, 0, 0)
	slowOut := endpointOutcome{Name: slowEp.Name, Role: "slow", Received: sp.Received, Duplicates: sp.Duplicates, Missing: sp.Missing,
		Seconds: since(start, slowLast)}
	for _, o := range []*endpointOutcome{deadOut, &slowOut} {
		if o == nil {
			continue
		}
		st, err := ib.stats(o.Name)
		if err != nil {
			problems = append(problems, err.Error())
		}
		o.Retried, o.Poisoned = st.Retried, st.Poisoned
		if o.Missing != 0 {
			problems = append(problems, fmt.Sprintf("the %s endpoint got %d of %d (%d poisoned)", o.Role, o.Received, n, o.Poisoned))
		}
		detail.Endpoints = append(detail.Endpoints, *o)
	}
	if err := ib.close(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	// Closed: every attempt in flight has ended, its duplicate counted.
	for i, o := range detail.Endpoints {
		r := map[string]*benchReceiver{"slow": slow, "dead": back}[o.Role]
		if r != nil {
			detail.Endpoints[i].Duplicates = r.finish(o.Name, n, 0, 0).Duplicates
		}
	}
	if len(problems) > 0 {
		res.Error = strings.Join(problems, "; ")
	}
	return res
}

// since returns the seconds from from to t, 0 when t is zero (nothing
// arrived).
func since(from, t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return t.Sub(from).Seconds()
}

// isolationSummary gives the row of an isolation run (median, the run
// median chose) the slow and dead endpoints' outcomes of the round that
// waited for them (the last).
func isolationSummary(res *benchResult, runs []benchResult) {
	if res.Fanout == nil || res.Fanout.AlonePerSec == 0 {
		return // not an isolation run
	}
	for i := len(runs) - 1; i >= 0; i-- {
		if d := runs[i].Fanout; d != nil && len(d.Endpoints) > 1 {
			c := *res.Fanout
			c.Endpoints = append([]endpointOutcome{res.Fanout.Endpoints[0]}, d.Endpoints[1:]...)
			res.Fanout = &c
			return
		}
	}
}

// printFanout writes the detail line of a fan-out run.
func printFanout(w io.Writer, r benchResult) {
	d := r.Fanout
	if d == nil {
		return
	}
	if d.AlonePerSec == 0 {
		var parts []string
		for _, o := range d.Endpoints {
			parts = append(parts, fmt.Sprintf("%s %d in %.2f s", o.Name, o.Received, o.Seconds))
		}
		fmt.Fprintf(w, "%s: events/s = deliveries/s of all %d endpoints (%s), concurrency %d\n", r.Name, len(d.Endpoints), strings.Join(parts, ", "), d.Concurrency)
		return
	}
	verdict := "at least"
	if r.HealthyRatio < isolationWant {
		verdict = "BELOW"
	}
	fmt.Fprintf(w, "%s: the healthy endpoint at %.2f of its events/s alone (rounds %.2f-%.2f; alone %.0f/s), %s the %.1f wanted; "+
		"cores used %.0f%% alone, %.0f%% among the three; CPU s/1000 events %.3f alone, %.3f among the three; concurrency %d",
		r.Name, r.HealthyRatio, r.HealthyRatioMin, r.HealthyRatioMax, d.AlonePerSec, verdict, isolationWant,
		100*d.AloneCPU, 100*d.CPU, d.AloneCPUPer1000, r.CPUPer1000, d.Concurrency)
	if d.Routers > 0 {
		fmt.Fprintf(w, " per router, %d routers", d.Routers)
	}
	fmt.Fprintln(w)
	for _, o := range d.Endpoints {
		switch o.Role {
		case "slow":
			fmt.Fprintf(w, "  slow (answers after %s): %d of %d, %d dup, the last %.1f s after the first emit\n",
				isolationSlowDelay, o.Received, o.Received+o.Missing, o.Duplicates, o.Seconds)
		case "dead":
			fmt.Fprintf(w, "  dead (refusing connections, paused after %d failures, back once the healthy one is through): %d of %d once back, %d lost, %d dup, the last %.1f s after it came back; %d retries scheduled, %d poisoned\n",
				bus.DefaultPauseAfter, o.Received, o.Received+o.Missing, o.Missing, o.Duplicates, o.Seconds, o.Retried, o.Poisoned)
		}
	}
}
