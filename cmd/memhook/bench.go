package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/internal/proc"
	"github.com/memhook/memhook/internal/syncbuf"
)

// benchResult is one row of the bench table.
type benchResult struct {
	Name         string  `json:"name"`
	Events       int     `json:"events"`
	Received     int     `json:"received"`
	Duplicates   int     `json:"duplicates"`
	Missing      int     `json:"missing"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	RatioToFloor float64 `json:"ratio_to_floor"` // median of the rounds' events/s ÷ the same round's floor
	RatioMin     float64 `json:"ratio_to_floor_min"`
	RatioMax     float64 `json:"ratio_to_floor_max"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	CPUPer1000   float64 `json:"cpu_seconds_per_1000"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	Connections  int64   `json:"receiver_connections"`
	// HealthyRatio, for the half-failing run: the healthy half's
	// events/s over the same events' events/s in a run at the same pace
	// where none fails (median of the rounds, and the range).
	HealthyRatio    float64 `json:"healthy_ratio,omitempty"`
	HealthyRatioMin float64 `json:"healthy_ratio_min,omitempty"`
	HealthyRatioMax float64 `json:"healthy_ratio_max,omitempty"`
	PacedAt         int     `json:"paced_at,omitempty"`
	// Fanout, for the fan-out runs: each endpoint's outcome (bench_fanout.go).
	Fanout        *fanoutDetail `json:"fanout,omitempty"`
	Error         string        `json:"error,omitempty"`
	Configuration string        `json:"configuration"`

	// Ordering, for the ordering runs: the ratio to ordering off (bench_ordering.go).
	Ordering *orderingDetail `json:"ordering,omitempty"`
}

// benchReceiver answers 200 at once and records, per webhook id, how many
// times it arrived and the latency from the envelope's timestamp (the time
// of Emit) to receipt.
type benchReceiver struct {
	url   string
	srv   *http.Server
	conns atomic.Int64 // connections opened to the receiver since reset: keep-alive at work when small

	mu      sync.Mutex
	seen    map[string]int
	latency []time.Duration
	done    chan struct{}
	want    int

	// For the half-failing run: ids whose FNV hash is odd are answered
	// 503 for their first failFirst attempts; the healthy (even) ones'
	// arrivals are timed from start.
	failFirst   int
	attempts    map[string]int
	start       time.Time
	healthy     int
	lastHealthy time.Time

	lastNew time.Time // when the last id not seen before arrived
}

// failing reports whether the half-failing run fails id.
func failing(id string) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32()%2 == 1
}

func startBenchReceiver() (*benchReceiver, error) {
	return startBenchReceiverAt("main", "127.0.0.1:0", 0)
}

// startBenchReceiverAt starts a receiver listening on addr that waits
// delay before it answers each request (0: answers at once). Its
// goroutines carry the CPU profile label receiver=role (pprof -tagfocus).
func startBenchReceiverAt(role, addr string, delay time.Duration) (*benchReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return startBenchReceiverOn(role, ln, delay), nil
}

// startBenchReceiverOn is startBenchReceiverAt on a listener of the
// caller's.
func startBenchReceiverOn(role string, ln net.Listener, delay time.Duration) *benchReceiver {
	r := &benchReceiver{url: "http://" + ln.Addr().String() + "/hook"}
	var h http.Handler = r
	if delay > 0 {
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			time.Sleep(delay)
			r.ServeHTTP(w, req)
		})
	}
	r.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}}
	go pprof.Do(context.Background(), pprof.Labels("receiver", role), func(context.Context) { _ = r.srv.Serve(ln) })
	return r
}

func (r *benchReceiver) reset(want int) { r.resetFailing(want, 0) }

// resetFailing readies the receiver for a run of want events, answering
// 503 to the first failFirst attempts of the failing half.
func (r *benchReceiver) resetFailing(want, failFirst int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failFirst, r.attempts, r.start, r.healthy, r.lastHealthy, r.lastNew = failFirst, map[string]int{}, time.Now(), 0, time.Time{}, time.Time{}
	r.seen = make(map[string]int, want)
	r.latency = make([]time.Duration, 0, want)
	r.done = make(chan struct{})
	r.want = want
	r.conns.Store(0)
}

var tsKey = []byte(`"timestamp":"`)

func (r *benchReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	now := time.Now()
	var lat time.Duration = -1
	if i := bytes.Index(body, tsKey); i >= 0 {
		rest := body[i+len(tsKey):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(event.TimeLayout, string(rest[:j])); err == nil {
				lat = now.Sub(t)
			}
		}
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	bad := failing(id)
	if r.failFirst > 0 && bad {
		r.attempts[id]++
		if r.attempts[id] <= r.failFirst {
			r.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	if !bad && r.seen[id] == 0 {
		r.healthy++
		r.lastHealthy = now
	}
	if r.seen[id] == 0 {
		r.lastNew = now
	}
	r.seen[id]++
	if r.seen[id] == 1 && lat >= 0 {
		r.latency = append(r.latency, lat)
	}
	if len(r.seen) == r.want {
		select {
		case <-r.done:
		default:
			close(r.done)
		}
	}
	r.mu.Unlock()
}

// cpuAndRSS returns this process's CPU seconds and peak RSS in MiB (since
// the last resetPeakRSS), plus those of the given child processes (read
// from /proc before they exit).
func cpuAndRSS(pids ...int) (float64, float64) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := tv(ru.Utime) + tv(ru.Stime)
	rss := float64(ru.Maxrss) / 1024 // since the start: where /proc has no VmHWM
	if _, hwm := procStat(os.Getpid()); hwm > 0 {
		rss = hwm
	}
	for _, pid := range pids {
		c, r := procStat(pid)
		cpu += c
		rss += r
	}
	return cpu, rss
}

// resetPeakRSS starts this process's peak RSS (VmHWM) afresh from its
// current RSS, so that a run's peak is its own, not an earlier run's (Linux
// only; elsewhere the peak stays the process's).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// procStat reads a process's CPU seconds (utime+stime, at 100 ticks/s) and
// peak RSS (VmHWM) from /proc.
func procStat(pid int) (float64, float64) {
	var cpu, rss float64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpu = (u + st) / 100
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "VmHWM:"), "kB")), 64)
				rss = kb / 1024
			}
		}
	}
	return cpu, rss
}

// benchEvent builds a realistic memory_added event whose envelope is about
// size bytes.
func benchEvent(size int) event.Event {
	content := "User prefers morning meetings before 10am and works from the North Austin facility."
	e := event.NewMemoryAdded("user_1234567890", event.Memory{ID: "mem_9f8e7d6c5b4a", Content: content,
		Metadata: map[string]any{"type": "preference", "category": "schedule"}})
	e.RequestID = "req_0123456789abcdef"
	probe, _ := event.Encode(e, event.Meta{ID: uuid.NewString(), Time: time.Now(), BotVersion: "1.0.0"})
	if pad := size - len(probe); pad > 0 {
		e.Data.(map[string]any)["result"] = event.Memory{ID: "mem_9f8e7d6c5b4a", Content: content + strings.Repeat(".", pad),
			Metadata: map[string]any{"type": "preference", "category": "schedule"}}
	}
	return e
}

func (r *benchReceiver) finish(name string, n int, took time.Duration, timeout time.Duration) benchResult {
	select {
	case <-r.done:
	case <-time.After(timeout):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := benchResult{Name: name, Events: n, Received: len(r.seen), Seconds: took.Seconds(), Connections: r.conns.Load()}
	for _, c := range r.seen {
		if c > 1 {
			res.Duplicates += c - 1
		}
	}
	res.Missing = n - len(r.seen)
	if took > 0 {
		res.EventsPerSec = float64(len(r.seen)) / took.Seconds()
	}
	if len(r.latency) > 0 {
		l := slices.Clone(r.latency)
		slices.Sort(l)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.P50Ms, res.P99Ms, res.MaxMs = ms(l[len(l)/2]), ms(l[len(l)*99/100]), ms(l[len(l)-1])
	}
	return res
}

func bench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("memhook bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 20000, "events per run")
	workers := fs.Int("w", 16, "concurrency: keep-alive workers of the floor; goroutines calling Emit and deliveries in flight of memhook")
	size := fs.Int("payload-size", 400, "approximate envelope size in bytes")
	which := fs.String("transports", "floor,memory,memory-logs,memory-slog,half-fail,fanout,http,redis1,redis2",
		"comma list of: floor, memory (logs discarded), memory-noattemptlog (memory without the attempt log), memory-logs (INFO logs through serve's buffered writer to a file), "+
			"memory-slog (INFO logs through an untouched slog.Default() to a file), half-fail (half of the events answered 503 three times: the other half's rate against a run where none fails), "+
			"fanout (three healthy endpoints: deliveries/s of all three), fanout-isolation, fanout-isolation-redis (a healthy, a dead and a slow endpoint, on memory or on Redis with 2 routers: the healthy one's rate against its rate alone; the slow and the dead one get every event), "+
			"http, redis1, redis2 (1 or 2 router processes), outage, "+
			"ordering, ordering-redis (events over 10 000 users, ordering per user against ordering off, on memory or on Redis with 2 routers)")
	isoW := fs.Int("isolation-w", 0, "concurrency of the delivering buses of the fanout-isolation runs (0: -w); the slow endpoint takes at most this ×10 events/s per router")
	redisURL := fs.String("redis-url", "", "Redis for the redis runs: an empty database, left empty (unset: a private redis-server the bench starts on a free port and stops; the redis runs are skipped without redis-server on PATH)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	rate := fs.Int("rate", 0, "events per second to send at (0: as fast as possible); use e.g. 1000 to measure latency without a backlog")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process to the file, and of each serve child to the file plus .serve-<run>-<n> (the last of --runs)")
	repeat := fs.Int("runs", 1, "run each transport this many times and report the median run (by events/s)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: memhook bench [flags]

Measures, on one receiver on loopback that answers 200 at once, with the same
payload and concurrency: the floor (bare net/http POSTs), memhook embedded on
the in-memory transport with the whole chain (filter, retry, poison queue,
signer with a token and secret) with logs discarded and with a log line per
delivery, memhook through the direct-HTTP transport into a 'memhook serve'
child process, and through Redis Streams (a private redis-server unless
--redis-url names one). Checks that every event arrived exactly once.
The fan-out runs deliver to several endpoints: fanout to three healthy
ones (deliveries/s of all three); fanout-isolation and
fanout-isolation-redis to a healthy, a dead and a slow one, reporting the
healthy one's events/s against its events/s alone in the same round, and
(in the last round) that the slow and, once back, the dead one get every
event.
Flags:`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *n <= 0 || *workers <= 0 || *size <= 0 || *repeat <= 0 || *isoW < 0 {
		fmt.Fprintln(stderr, "memhook bench: -n, -w, --payload-size and --runs must be positive, --isolation-w not negative")
		return exitUsage
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "memhook bench: --cpuprofile: %v\n", err)
			return exitFailed
		}
		defer stop()
	}
	rcv, err := startBenchReceiver()
	if err != nil {
		fmt.Fprintf(stderr, "memhook bench: %v\n", err)
		return exitFailed
	}
	defer rcv.srv.Close()
	e := benchEvent(*size)
	sample, _ := event.Encode(e, event.Meta{ID: uuid.NewString(), Time: time.Now(), BotVersion: "1.0.0"})
	config := fmt.Sprintf("n=%d w=%d rate=%d/s envelope=%dB GOMAXPROCS=%d runs=%d (median; x floor: median of each round's ratio, and its range)", *n, *workers, *rate, len(sample), runtimeProcs(), *repeat)

	names := strings.Split(*which, ",")
	for i := range names {
		names[i] = strings.TrimSpace(names[i])
	}
	var target *redisTarget
	redisRun := func(n string) bool {
		return n == "redis1" || n == "redis2" || n == "fanout-isolation-redis" || n == "ordering-redis"
	}
	if slices.ContainsFunc(names, redisRun) {
		var skip string
		target, skip, err = openRedisTarget(context.Background(), *redisURL)
		switch {
		case errors.Is(err, errRedisNotEmpty):
			fmt.Fprintf(stderr, "memhook bench: %v\n", err)
			return exitUsage
		case err != nil:
			fmt.Fprintf(stderr, "memhook bench: %v\n", err)
			return exitFailed
		case skip != "":
			fmt.Fprintf(stderr, "memhook bench: redis runs skipped: %s\n", skip)
			names = slices.DeleteFunc(names, redisRun)
		default:
			if target.private != nil {
				fmt.Fprintf(stderr, "memhook bench: redis runs on a private redis-server at %s\n", target.private.Addr())
			}
			defer func() {
				if err := target.close(); err != nil {
					fmt.Fprintf(stderr, "memhook bench: %v\n", err)
				}
			}()
		}
	}

	// Every round runs each transport once, in the given order: the load
	// of a shared machine drifts, and within a round it is about the same
	// for all, so "x floor" is the median of the rounds' own ratios.
	type planned struct {
		name string
		one  func() benchResult
		runs []benchResult
	}
	var plan []*planned
	rig := &fanoutRig{}
	defer rig.close()
	for _, name := range names {
		var one func() benchResult
		switch name {
		case "floor":
			one = func() benchResult { return benchFloor(rcv, e, *n, *workers, *rate) }
		case "memory":
			one = func() benchResult { return benchMemory(rcv, e, *n, *workers, *rate, logsOff) }
		case "memory-noattemptlog":
			one = func() benchResult { return benchMemoryWith(rcv, e, *n, *workers, *rate, logsOff, bus.Disabled) }
		case "memory-logs":
			one = func() benchResult { return benchMemory(rcv, e, *n, *workers, *rate, logsBuffered) }
		case "memory-slog":
			one = func() benchResult { return benchMemory(rcv, e, *n, *workers, *rate, logsDefault) }
		case "http":
			one = func() benchResult { return benchHTTP(rcv, e, *n, *workers, *rate, *cpuProfile) }
		case "redis1", "redis2":
			routers := 1
			if name == "redis2" {
				routers = 2
			}
			one = func() benchResult { return benchRedis(rcv, e, *n, *workers, *rate, routers, target, *cpuProfile) }
		case "outage":
			one = func() benchResult { return benchOutage(e, *workers) }
		case "fanout":
			one = func() benchResult { return benchFanout(rig, rcv, e, *n, *workers, *rate) }
		case "fanout-isolation", "fanout-isolation-redis":
			s := isolationSetup{name: "fanout isolation (memory)", w: cmp.Or(*isoW, *workers)}
			if name == "fanout-isolation-redis" {
				s = isolationSetup{name: "fanout isolation (redis, 2 routers)", redis: target, routers: 2, w: s.w, profile: *cpuProfile}
			}
			rounds := 0
			one = func() benchResult {
				rounds++
				return benchIsolation(rig, rcv, e, *n, *workers, *rate, s, rounds == *repeat) // the last round drains
			}
		case "ordering", "ordering-redis":
			s := orderingSetup{name: "ordering per user (memory)"}
			if name == "ordering-redis" {
				s = orderingSetup{name: "ordering per user (redis, 2 routers)", redis: target, routers: 2, profile: *cpuProfile}
			}
			round := 0
			one = func() benchResult { round++; return benchOrdering(rcv, e, *n, *workers, *rate, round-1, s) }
		case "half-fail":
			// Paced at --rate, or at half of the same round's memory
			// run: a load the chain sustains with the failing half's
			// extra attempts on top.
			one = func() benchResult {
				pace := *rate
				for _, q := range plan {
					if q.name == "memory" && len(q.runs) > 0 && pace == 0 {
						pace = int(q.runs[len(q.runs)-1].EventsPerSec / 2)
					}
				}
				if pace <= 0 {
					pace = 2000
				}
				return benchHalfFail(rcv, e, *n, *workers, pace)
			}
		default:
			fmt.Fprintf(stderr, "memhook bench: unknown transport %q\n", name)
			return exitUsage
		}
		plan = append(plan, &planned{name: name, one: one})
	}
	for round := range *repeat {
		for _, p := range plan {
			if p.name == "outage" && round > 0 {
				continue // ten seconds of outage each: once is enough
			}
			runtime.GC() // each run starts from a collected heap, not the last one's garbage
			resetPeakRSS()
			p.runs = append(p.runs, p.one())
		}
	}
	var floorRuns []benchResult
	for _, p := range plan {
		if p.name == "floor" {
			floorRuns = p.runs
		}
	}
	var results []benchResult
	for _, p := range plan {
		res := median(p.runs)
		var ratios []float64
		for i, r := range p.runs {
			if i < len(floorRuns) && floorRuns[i].EventsPerSec > 0 {
				ratios = append(ratios, r.EventsPerSec/floorRuns[i].EventsPerSec)
			}
		}
		if len(ratios) > 0 {
			slices.Sort(ratios)
			res.RatioToFloor, res.RatioMin, res.RatioMax = ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1]
		}
		{
			var hr []float64
			for _, r := range p.runs {
				if r.HealthyRatio > 0 {
					hr = append(hr, r.HealthyRatio)
				}
			}
			if len(hr) > 0 {
				slices.Sort(hr)
				res.HealthyRatio, res.HealthyRatioMin, res.HealthyRatioMax = hr[len(hr)/2], hr[0], hr[len(hr)-1]
			}
		}
		isolationSummary(&res, p.runs)
		orderingSummary(&res, p.runs)
		res.Configuration = config
		results = append(results, res)
	}
	failed := false
	for i := range results {
		if strings.HasPrefix(results[i].Name, "outage") {
			continue // nothing is meant to arrive
		}
		if results[i].Missing != 0 || results[i].Duplicates != 0 || results[i].Error != "" {
			failed = true
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
	} else {
		fmt.Fprintf(stdout, "memhook bench: %s\n\n", config)
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "run\tevents/s\tx floor\t(rounds)\tp50 ms\tp99 ms\tmax ms\tCPU s/1000\tpeak RSS MiB\treceived\tdup\tmissing\tconns\t")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f-%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t%.0f\t%d\t%d\t%d\t%d\t\n",
				r.Name, r.EventsPerSec, r.RatioToFloor, r.RatioMin, r.RatioMax, r.P50Ms, r.P99Ms, r.MaxMs, r.CPUPer1000, r.PeakRSSMiB, r.Received, r.Duplicates, r.Missing, r.Connections)
		}
		_ = tw.Flush()
		for _, r := range results {
			printFanout(stdout, r)
			printOrdering(stdout, r)
			if r.HealthyRatio > 0 && r.Fanout == nil {
				fmt.Fprintf(stdout, "%s: the healthy half at %.2f of its events/s when no event fails (rounds %.2f-%.2f), both paced at %d/s; the failing half answered 503 %d times each, then delivered\n",
					r.Name, r.HealthyRatio, r.HealthyRatioMin, r.HealthyRatioMax, r.PacedAt, halfFailFirst)
			}
			if r.Error != "" {
				fmt.Fprintf(stdout, "%s: %s\n", r.Name, r.Error)
			}
		}
	}
	if failed {
		return exitFailed
	}
	return exitOK
}

// benchFloor POSTs n pre-encoded envelopes with w keep-alive workers.
func benchFloor(rcv *benchReceiver, e event.Event, n, w, rate int) benchResult {
	rcv.reset(n)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = w
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	jobs := make(chan int, w)
	cpu0, _ := cpuAndRSS()
	start := time.Now()
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				id := uuid.NewString()
				body, _ := event.Encode(e, event.Meta{ID: id, Time: time.Now(), BotVersion: "1.0.0"})
				req, _ := http.NewRequest(http.MethodPost, rcv.url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("webhook-id", id)
				resp, err := client.Do(req)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}()
	}
	pace := newPacer(rate)
	for i := range n {
		pace.wait(i)
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	res := rcv.finish("floor (net/http)", n, took, 10*time.Second)
	cpu1, rss := cpuAndRSS()
	res.CPUPer1000 = (cpu1 - cpu0) / float64(n) * 1000
	res.PeakRSSMiB = rss
	if firstErr != nil {
		res.Error = firstErr.Error()
	}
	return res
}

// benchLogs says how a memory run logs.
type benchLogs int

const (
	logsOff      benchLogs = iota // discarded: what the other runs measure
	logsBuffered                  // INFO, a line per delivery, through newLogger's buffered writer: what `memhook serve` users get
	logsDefault                   // the bus's default, slog.Default() untouched: one write per line (log.Default's output)
)

// benchMemory emits n events on the in-memory transport with the whole
// chain and a secret, and waits until all arrived. With logs on, the lines
// go to a temporary file, removed after; the run fails unless the file
// holds a "webhook delivered" line for every event received.
func benchMemory(rcv *benchReceiver, e event.Event, n, w, rate int, logs benchLogs) benchResult {
	return benchMemoryWith(rcv, e, n, w, rate, logs, 0)
}

// benchMemoryWith is benchMemory with Config.AttemptLogMax attemptLog
// (0: the default ring; bus.Disabled: no attempt log).
func benchMemoryWith(rcv *benchReceiver, e event.Event, n, w, rate int, logs benchLogs, attemptLog int) benchResult {
	name := [...]string{logsOff: "memory (embedded, signed)", logsBuffered: "memory (logs on, buffered)", logsDefault: "memory (logs on, slog.Default)"}[logs]
	if attemptLog == bus.Disabled {
		name += " no attempt log"
	}
	rcv.reset(n)
	opts := []bus.Option{bus.WithLogger(slog.New(slog.DiscardHandler))}
	var logFile *os.File
	var logOut io.Closer // the buffered writer, closed once the bus is
	if logs != logsOff {
		f, err := os.CreateTemp("", "memhook-bench-log-")
		if err != nil {
			return benchResult{Name: name, Error: err.Error()}
		}
		defer os.Remove(f.Name())
		defer f.Close()
		logFile = f
		switch logs {
		case logsBuffered:
			l, out, err := newLogger(f, "text", "info")
			if err != nil {
				return benchResult{Name: name, Error: err.Error()}
			}
			opts, logOut = []bus.Option{bus.WithLogger(l)}, out
		case logsDefault:
			prev := log.Writer()
			log.SetOutput(f) // where slog.Default() writes while the slog default is untouched
			defer log.SetOutput(prev)
			opts = nil
		}
	}
	b, err := bus.New(bus.Config{
		WebhookURL: rcv.url, Token: "bench-token", Secret: "bench-secret",
		Concurrency: w, QueueCapacity: n, AttemptLogMax: attemptLog,
	}, opts...)
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	res := runBus(rcv, b, e, name, n, w, rate)
	if logFile == nil {
		return res
	}
	if logOut != nil {
		if err := logOut.Close(); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	if lines, err := countLines(logFile.Name(), "memhook: webhook delivered"); err != nil {
		res.Error = err.Error()
	} else if lines != res.Received && res.Error == "" {
		res.Error = fmt.Sprintf("%d \"webhook delivered\" lines in the log for %d events received", lines, res.Received)
	}
	return res
}

// healthyRate is the events/s of the healthy half of the last run: how
// many arrived over the time from the run's start to the last of them.
func (r *benchReceiver) healthyRate() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.healthy == 0 || !r.lastHealthy.After(r.start) {
		return 0
	}
	return float64(r.healthy) / r.lastHealthy.Sub(r.start).Seconds()
}

// halfFailFirst is how many attempts of the failing half the receiver
// refuses in the half-failing run: the seed's schedule retries three
// times (1 s, 2 s, 4 s), so the fourth attempt delivers.
const halfFailFirst = 3

// benchHalfFail measures whether a receiver failing half of the events
// slows the other half: the same n events, paced at rate, are sent twice
// on the memory transport (whole chain, the seed's retry schedule) — once
// with every answer 200, once with the failing half (by hash of the id)
// answered 503 for its first three attempts. Its events/s is the healthy
// half's in the second run, HealthyRatio that over the healthy half's in
// the first. Every event must arrive in both.
func benchHalfFail(rcv *benchReceiver, e event.Event, n, w, rate int) benchResult {
	const name = "memory (half failing)"
	run := func(failFirst int) (benchResult, float64) {
		b, err := bus.New(bus.Config{
			WebhookURL: rcv.url, Token: "bench-token", Secret: "bench-secret",
			Concurrency: w, QueueCapacity: n,
			// This run measures the retry path, not endpoint health: the
			// failing half's retries come back in waves once the healthy
			// half is through, every attempt of a wave fails, and the
			// endpoint would be paused (as for an outage) and probed
			// with events that fail their first three attempts. The
			// fanout-isolation runs measure health.
			PauseAfter: bus.Disabled,
		}, bus.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			return benchResult{Name: name, Error: err.Error()}, 0
		}
		rcv.resetFailing(n, failFirst)
		res := runBus(rcv, b, e, name, n, w, rate)
		return res, rcv.healthyRate()
	}
	base, baseRate := run(0)
	if base.Error != "" || base.Missing != 0 {
		base.Error = "the run without failures: " + cmp.Or(base.Error, fmt.Sprintf("%d missing", base.Missing))
		return base
	}
	res, rate2 := run(halfFailFirst)
	res.EventsPerSec, res.PacedAt = rate2, rate
	if baseRate > 0 {
		res.HealthyRatio = rate2 / baseRate
	}
	return res
}

// countLines counts the lines of the file at path that contain s.
func countLines(path, s string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(l, []byte(s)) {
			n++
		}
	}
	return n, nil
}

// startRouter starts `memhook serve` as a child process with env and waits
// until it is healthy.
// profile, when set, is where the child writes its CPU profile.
// Its port is found by listening and closing: another process may bind
// it before the child does, so a child that cannot listen on it is
// started again on another port, three times at most.
func startRouter(profile string, env ...string) (*exec.Cmd, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	for try := 1; ; try++ {
		addr, err := proc.FreeAddr()
		if err != nil {
			return nil, "", err
		}
		cmd, err := startRouterOn(exe, addr, profile, env...)
		if !errors.Is(err, errPortTaken) || try == 3 {
			return cmd, addr, err
		}
	}
}

// errPortTaken: the child could not listen on the port it was given.
var errPortTaken = errors.New("its port was taken before it could listen")

// startRouterOn starts exe serve on addr: one try of startRouter.
func startRouterOn(exe, addr, profile string, env ...string) (*exec.Cmd, error) {
	cmd := exec.Command(exe, "serve")
	cmd.Env = append(os.Environ(), append([]string{"MEMHOOK_ADDR=" + addr, "MEMHOOK_LOG_LEVEL=error", "MEMHOOK_CPU_PROFILE=" + profile}, env...)...)
	var out syncbuf.Buffer // what it says, to tell a taken port from other failures
	cmd.Stderr = io.MultiWriter(os.Stderr, &out)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cannotListen := func() bool { return strings.Contains(out.String(), "memhook serve: cannot listen on") }
	if err := waitHealthy("http://"+addr+"/readyz", 15*time.Second, cannotListen); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if cannotListen() {
			err = fmt.Errorf("memhook serve on %s: %w", addr, errPortTaken)
		}
		return nil, err
	}
	return cmd, nil
}

// benchRedis appends n events to Redis Streams from this process and has
// `routers` serve child processes deliver them.
func benchRedis(rcv *benchReceiver, e event.Event, n, w, rate, routers int, target *redisTarget, profile string) benchResult {
	name := fmt.Sprintf("redis (%d router%s)", routers, map[bool]string{true: "s"}[routers > 1])
	rcv.reset(n)
	redisURL := target.url
	rcfg := bus.Config{Transport: bus.TransportRedis, RedisURL: redisURL, Concurrency: w, RedisMaxLen: int64(n) + 1}
	if err := target.reset(context.Background()); err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	var pids []int
	for i := range routers {
		cmd, _, err := startRouter(childProfile(profile, fmt.Sprintf("redis%d-%d", routers, i)), "MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL="+redisURL, "MEM0_WEBHOOK_URL="+rcv.url,
			"MEM0_WEBHOOK_TOKEN=bench-token", "MEM0_WEBHOOK_SECRET=bench-secret", "MEMHOOK_CONCURRENCY="+strconv.Itoa(w),
			"MEMHOOK_REDIS_CONSUMER=bench-"+strconv.Itoa(i), "MEMHOOK_REDIS_MAXLEN="+strconv.Itoa(n+1))
		if err != nil {
			return benchResult{Name: name, Error: err.Error()}
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
		pids = append(pids, cmd.Process.Pid)
	}
	b, err := bus.New(rcfg, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	return runBus(rcv, b, e, name, n, w, rate, pids...)
}

// benchOutage emits 1 000 000 events at a receiver that is down (nothing
// listens), with the default queue capacity, and reports the peak RSS and
// the CPU seconds spent over 10 s of the outage after the emits: memory
// must stay bounded by the queue and the process must not spin.
func benchOutage(e event.Event, w int) benchResult {
	const name = "outage (1M emits, receiver down)"
	down, err := deadport.Reserve()
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	defer down.Close()
	dead := down.URL("/hook")
	b, err := bus.New(bus.Config{WebhookURL: dead, Concurrency: w}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	ctx := context.Background()
	const n = 1_000_000
	refused := 0
	start := time.Now()
	for range n {
		if err := b.Emit(ctx, e); err != nil {
			refused++
		}
	}
	emitTook := time.Since(start)
	cpu0, _ := cpuAndRSS()
	time.Sleep(10 * time.Second)
	cpu1, rss := cpuAndRSS()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = b.Close(cctx) // what is queued is reported undelivered: expected
	return benchResult{
		Name: name, Events: n, Received: 0, Seconds: emitTook.Seconds(),
		EventsPerSec: float64(n) / emitTook.Seconds(),
		CPUPer1000:   cpu1 - cpu0, // here: CPU seconds over the 10 s of outage
		PeakRSSMiB:   rss,
		Error: fmt.Sprintf("expected: %d of %d refused with ErrQueueFull (queue %d); CPU over 10 s of outage %.2f s; events/s column = Emit rate",
			refused, n, bus.DefaultQueueCapacity, cpu1-cpu0),
	}
}

// median returns the run with the median events/s; a failed run (missing
// events, duplicates, an error) wins over good ones, so that no failure
// hides behind a median.
func median(runs []benchResult) benchResult {
	for _, r := range runs {
		if r.Error != "" && !strings.HasPrefix(r.Name, "outage") || r.Missing != 0 || r.Duplicates != 0 {
			return r
		}
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b benchResult) int {
		switch {
		case a.EventsPerSec < b.EventsPerSec:
			return -1
		case a.EventsPerSec > b.EventsPerSec:
			return 1
		}
		return 0
	})
	return sorted[len(sorted)/2]
}

// runBus emits n events through b from w goroutines (paced at rate; an
// application emits from its many request handlers, as the floor sends
// from w workers) and measures until the receiver has them all, then
// closes b: the measuring part every memhook run shares. pids are child
// processes whose CPU and memory count too.
func runBus(rcv *benchReceiver, b *bus.Bus, e event.Event, name string, n, w, rate int, pids ...int) benchResult {
	return runEmitting(rcv, b, name, n, func() error { return emitAll(b, e, n, w, rate) }, pids...)
}

// runEmitting is runBus with emit sending the n events.
func runEmitting(rcv *benchReceiver, b *bus.Bus, name string, n int, emit func() error, pids ...int) benchResult {
	ctx := context.Background()
	cpu0, _ := cpuAndRSS(pids...)
	start := time.Now()
	if err := emit(); err != nil {
		_ = b.Close(ctx)
		return benchResult{Name: name, Error: err.Error()}
	}
	res := rcv.finish(name, n, 0, 5*time.Minute)
	took := time.Since(start)
	res.Seconds = took.Seconds()
	res.EventsPerSec = float64(res.Received) / took.Seconds()
	cpu1, rss := cpuAndRSS(pids...)
	res.CPUPer1000 = (cpu1 - cpu0) / float64(n) * 1000
	res.PeakRSSMiB = rss
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Close(cctx); err != nil {
		res.Error = err.Error()
	}
	return res
}

// emitAll emits n events through b from w goroutines, paced at rate, and
// returns the first error of Emit (the goroutine that met it stops). The
// goroutines carry the CPU profile label emit=1.
func emitAll(b *bus.Bus, e event.Event, n, w, rate int) error {
	return emitEach(b, n, w, rate, func(int) event.Event { return e })
}

// emitEach is emitAll with the i-th event eventAt(i).
func emitEach(b *bus.Bus, n, w, rate int, eventAt func(i int) event.Event) error {
	ctx := context.Background()
	pace := newPacer(rate)
	var next atomic.Int64
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("emit", "1"), func(ctx context.Context) {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				pace.wait(i)
				if err := b.Emit(ctx, eventAt(i)); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// benchHTTP starts `memhook serve` as a child process delivering to the
// receiver, and emits n events through the direct-HTTP transport.
func benchHTTP(rcv *benchReceiver, e event.Event, n, w, rate int, profile string) benchResult {
	const name = "http (app -> serve)"
	rcv.reset(n)
	cmd, addr, err := startRouter(childProfile(profile, "http"), "MEMHOOK_TRANSPORT=http", "MEM0_WEBHOOK_URL="+rcv.url, "MEM0_WEBHOOK_TOKEN=bench-token",
		"MEM0_WEBHOOK_SECRET=bench-secret", "MEMHOOK_CONCURRENCY="+strconv.Itoa(w), "MEMHOOK_QUEUE_CAPACITY="+strconv.Itoa(n))
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	b, err := bus.New(bus.Config{Transport: bus.TransportHTTP, RouterURL: "http://" + addr, Concurrency: w, QueueCapacity: n},
		bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return benchResult{Name: name, Error: err.Error()}
	}
	return runBus(rcv, b, e, name, n, w, rate, cmd.Process.Pid)
}

// pacer spaces n sends at rate per second; rate 0 sends as fast as
// possible.
type pacer struct {
	start time.Time
	every time.Duration
}

func newPacer(rate int) pacer {
	p := pacer{start: time.Now()}
	if rate > 0 {
		p.every = time.Second / time.Duration(rate)
	}
	return p
}

// wait blocks until send i is due.
func (p pacer) wait(i int) {
	if p.every == 0 {
		return
	}
	if d := time.Until(p.start.Add(time.Duration(i) * p.every)); d > 0 {
		time.Sleep(d)
	}
}

// waitHealthy polls url until it answers 200, for at most timeout; it
// gives up at once when failed reports true.
func waitHealthy(url string, timeout time.Duration, failed func() bool) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) && !failed() {
		if resp, err := client.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy within %s", url, timeout)
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// childProfile names the CPU profile of a serve child process next to the
// bench's own: "" when no profile is asked for.
func childProfile(benchProfile, child string) string {
	if benchProfile == "" {
		return ""
	}
	return benchProfile + ".serve-" + child
}

// startCPUProfile writes a CPU profile to path until the returned func is
// called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}
