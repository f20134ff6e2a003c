package attemptlog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// t0 is the start of the first attempt of the tests' logs.
var t0 = time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)

// attempt i: endpoints a, b, c in turn; events ev0…; every third failed.
func attempt(i int) attemptlog.Attempt {
	a := attemptlog.Attempt{
		Endpoint: []string{"a", "b", "c"}[i%3], EventID: fmt.Sprintf("ev%d", i/2), EventType: "memory_added",
		UserID: "u1", Number: 1 + i%2, Start: t0.Add(time.Duration(i) * time.Second), Duration: 3 * time.Millisecond,
		Succeeded: i%3 != 0, Status: 200, Response: "ok",
	}
	if !a.Succeeded {
		a.Status, a.ErrorClass, a.Error, a.Response = 503, "status", "status 503", strings.Repeat("x", 1024)
		a.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	}
	return a
}

// logs returns each Log implementation under test, fresh, with its
// records written out: flush makes what was recorded visible to Query.
type testLog struct {
	log   attemptlog.Log
	flush func()
}

func eachLog(t *testing.T, size int) map[string]func(t *testing.T) testLog {
	return map[string]func(t *testing.T) testLog{
		"ring": func(t *testing.T) testLog {
			r := attemptlog.NewRing(size)
			return testLog{log: r, flush: func() {}}
		},
		"redis": func(t *testing.T) testLog {
			srv := redistest.StartWithoutPersistence(t)
			l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, MaxLen: int64(size)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			return testLog{log: l, flush: func() {
				t.Helper()
				want := int64(0)
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) { // until the stream stops growing past what was recorded
					n, _ := c.XLen(context.Background(), attemptlog.DefaultStream).Result()
					if n == want && n > 0 {
						return
					}
					want = n
					time.Sleep(3 * attemptlog.DefaultFlushInterval)
				}
				t.Fatal("the attempts were not written within 5s")
			}}
		},
	}
}

// ids lists the pages' attempts as "endpoint/event#number".
func ids(as []attemptlog.Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = fmt.Sprintf("%s/%s#%d", a.Endpoint, a.EventID, a.Number)
	}
	return out
}

// Newest first; filters by endpoint, event, status and since; a cursor
// walks every page once, the pages together being the filtered whole.
func TestQueryFiltersAndPages(t *testing.T) {
	const n = 300
	var all []attemptlog.Attempt
	for i := range n {
		all = append(all, attempt(i))
	}
	for name, open := range eachLog(t, 1000) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			for _, a := range all {
				l.log.Record(a)
			}
			l.flush()
			for _, tt := range []struct {
				name string
				f    attemptlog.Filter
			}{
				{"all", attemptlog.Filter{}},
				{"endpoint", attemptlog.Filter{Endpoint: "b"}},
				{"event", attemptlog.Filter{EventID: "ev7"}},
				{"failed", attemptlog.Filter{Status: attemptlog.StatusFailed}},
				{"succeeded on c", attemptlog.Filter{Status: attemptlog.StatusSucceeded, Endpoint: "c"}},
				{"since", attemptlog.Filter{Since: t0.Add(250 * time.Second)}},
				{"nothing", attemptlog.Filter{Endpoint: "nobody"}},
			} {
				t.Run(tt.name, func(t *testing.T) {
					var want []attemptlog.Attempt
					for i := n - 1; i >= 0; i-- {
						a := all[i]
						f := tt.f
						if (f.Endpoint == "" || a.Endpoint == f.Endpoint) && (f.EventID == "" || a.EventID == f.EventID) &&
							(f.Status == "" || (f.Status == attemptlog.StatusFailed) != a.Succeeded) && !a.Start.Before(f.Since) {
							want = append(want, a)
						}
					}
					for _, limit := range []int{0, 7, 1000} {
						f := tt.f
						f.Limit = limit
						var got []attemptlog.Attempt
						pages := 0
						for {
							p, err := l.log.Query(context.Background(), f)
							if err != nil {
								t.Fatal(err)
							}
							if p.Attempts == nil {
								t.Fatal("Attempts is nil")
							}
							if len(p.Attempts) > max(limit, 1) && len(p.Attempts) > attemptlog.DefaultLimit {
								t.Fatalf("a page of %d for limit %d", len(p.Attempts), limit)
							}
							got = append(got, p.Attempts...)
							pages++
							if p.Next == "" {
								break
							}
							if pages > n {
								t.Fatal("the cursor does not advance")
							}
							f.Cursor = p.Next
						}
						if fmt.Sprint(ids(got)) != fmt.Sprint(ids(want)) {
							t.Fatalf("limit %d: got %d attempts %v…, want %d %v…", limit, len(got), first(ids(got)), len(want), first(ids(want)))
						}
					}
					if len(want) > 0 {
						p, err := l.log.Query(context.Background(), attemptlog.Filter{EventID: want[0].EventID, Endpoint: want[0].Endpoint, Limit: 1})
						if err != nil {
							t.Fatal(err)
						}
						g, w := p.Attempts[0], want[0]
						if !g.Start.Equal(w.Start) || g.Duration != w.Duration || g.Status != w.Status || g.ErrorClass != w.ErrorClass ||
							g.Error != w.Error || g.Response != w.Response || g.TraceID != w.TraceID || g.UserID != w.UserID ||
							g.EventType != w.EventType || g.Succeeded != w.Succeeded {
							t.Errorf("kept %+v, recorded %+v", g, w)
						}
					}
				})
			}
		})
	}
}

func first(s []string) []string { return s[:min(len(s), 4)] }

// Bad filters and foreign cursors are *ParamError naming the parameter.
func TestQueryRefusesBadInput(t *testing.T) {
	for name, open := range eachLog(t, 10) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			for _, tt := range []struct {
				f     attemptlog.Filter
				param string
			}{
				{attemptlog.Filter{Status: "broken"}, "status"},
				{attemptlog.Filter{Limit: -1}, "limit"},
				{attemptlog.Filter{Limit: attemptlog.MaxLimit + 1}, "limit"},
				{attemptlog.Filter{Cursor: "not-a-cursor"}, "cursor"},
				{attemptlog.Filter{Cursor: "1-2-3"}, "cursor"},
			} {
				_, err := l.log.Query(context.Background(), tt.f)
				var pe *attemptlog.ParamError
				if !errors.As(err, &pe) || pe.Param != tt.param {
					t.Errorf("%+v: %v, want a ParamError on %s", tt.f, err, tt.param)
				}
			}
			if _, err := l.log.Query(context.Background(), attemptlog.Filter{Limit: attemptlog.MaxLimit}); err != nil {
				t.Errorf("limit %d: %v", attemptlog.MaxLimit, err)
			}
		})
	}
}

// A ring keeps its size: the newest ones; the oldest leave first, also
// between the pages of a listing.
func TestRingKeepsTheNewest(t *testing.T) {
	r := attemptlog.NewRing(100)
	for i := range 250 {
		r.Record(attempt(i))
	}
	p, err := r.Query(context.Background(), attemptlog.Filter{Limit: attemptlog.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Attempts) != 100 || p.Next != "" || !p.Attempts[0].Start.Equal(attempt(249).Start) || !p.Attempts[99].Start.Equal(attempt(150).Start) {
		t.Fatalf("%d attempts, next %q: want the 100 newest", len(p.Attempts), p.Next)
	}
	p, err = r.Query(context.Background(), attemptlog.Filter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 85 { // 85 more: of the first listing's rest (239…150) 239…235 are left
		r.Record(attempt(250 + i))
	}
	p2, err := r.Query(context.Background(), attemptlog.Filter{Limit: 1000, Cursor: p.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Attempts) != 5 || !p2.Attempts[0].Start.Equal(attempt(239).Start) {
		t.Fatalf("after the ring moved on: %d attempts from %v, want 5 from %v", len(p2.Attempts), p2.Attempts, attempt(239).Start)
	}
	if got := attemptlog.NewRing(0); got == nil {
		t.Fatal("NewRing(0)")
	}
}

// Record from many goroutines while queries run: every attempt is kept
// (the race detector watches the rest).
func TestRingConcurrentRecordAndQuery(t *testing.T) {
	r := attemptlog.NewRing(attemptlog.DefaultRingSize)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.Record(attempt(g*1000 + i))
			}
		}()
	}
	stop := make(chan struct{})
	queried := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				queried <- nil
				return
			default:
			}
			if _, err := r.Query(context.Background(), attemptlog.Filter{Status: attemptlog.StatusFailed}); err != nil {
				queried <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-queried; err != nil {
		t.Fatal(err)
	}
	n := 0
	for f := (attemptlog.Filter{Limit: attemptlog.MaxLimit}); ; {
		p, err := r.Query(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		n += len(p.Attempts)
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	if n != 8000 {
		t.Errorf("%d attempts kept of 8000", n)
	}
}

// The stream stays within its bound: 120 000 attempts into a log of
// 100 000 (the default) leave about 100 000 (MAXLEN ~ trims whole
// nodes), none dropped, the newest kept. With -short: 6 000 into 5 000.
func TestRedisStaysWithinItsBound(t *testing.T) {
	maxLen, n := int64(attemptlog.DefaultRedisMaxLen), 120_000
	if testing.Short() {
		maxLen, n = 5_000, 6_000
	}
	srv := redistest.StartWithoutPersistence(t)
	l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, Buffer: n + 1,
		MaxLen: maxLen})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a := attempt(i)
		a.Response = ""
		l.Record(a)
	}
	if err := l.Close(); err != nil { // writes out everything buffered
		t.Fatal(err)
	}
	if d := l.Dropped(); d != 0 {
		t.Fatalf("%d dropped with room in the buffer", d)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	xlen, err := c.XLen(context.Background(), attemptlog.DefaultStream).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("XLEN %d after %d attempts into MAXLEN ~ %d", xlen, n, maxLen)
	const margin = 1000 // one macro node's worth, and then some
	if xlen < maxLen || xlen > maxLen+margin {
		t.Fatalf("XLEN %d after %d attempts, want %d to %d", xlen, n, maxLen, maxLen+margin)
	}
	last, err := c.XRevRangeN(context.Background(), attemptlog.DefaultStream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 || last[0].Values["start_ns"] != fmt.Sprint(attempt(n-1).Start.UnixNano()) {
		t.Fatalf("the newest entry is %v (%v), want attempt %d", last, err, n-1)
	}
}

// A query reads at most ScanLimit entries: when they hold fewer matches
// than the limit, Next continues where it stopped.
func TestRedisQueryScansABoundedNumber(t *testing.T) {
	srv := redistest.StartWithoutPersistence(t)
	l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, ScanLimit: 50})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		a := attempt(i)
		a.Endpoint = map[bool]string{true: "rare", false: "common"}[i%40 == 0] // 0, 40, 80, 120, 160
		l.Record(a)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, ScanLimit: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var sizes []int
	f := attemptlog.Filter{Endpoint: "rare"}
	for range 10 {
		p, err := l.Query(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Attempts))
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	// 200 entries newest first, 50 a call: 199…150 hold 160, 149…100
	// hold 120, then 80, then 40 and 0.
	if fmt.Sprint(sizes) != "[1 1 1 2]" {
		t.Errorf("pages of %v, want [1 1 1 2]", sizes)
	}
}

// With Redis down Record never blocks: what the buffer cannot hold is
// dropped, counted and warned of once a second; Close returns within its
// write timeout.
func TestRedisRecordNeverBlocksWhenRedisIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: connection refused
	var logs strings.Builder
	var mu sync.Mutex
	l, err := attemptlog.NewRedis(attemptlog.RedisConfig{
		Redis:        transports.RedisConfig{URL: "redis://" + addr, DialTimeout: 50 * time.Millisecond},
		Buffer:       100,
		WriteTimeout: 200 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const n = 100_000
	for i := range n {
		l.Record(attempt(i))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d Records took %s with Redis down", n, took)
	}
	if d := l.Dropped(); d < n-1000 {
		t.Errorf("%d dropped of %d with a buffer of 100", d, n)
	}
	closeStart := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(closeStart); took > 3*time.Second {
		t.Errorf("Close took %s with Redis down", took)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if c := strings.Count(out, "attempts not recorded"); c < 1 || c > 1+int(time.Since(start)/time.Second)+1 {
		t.Errorf("%d warnings over %s:\n%s", c, time.Since(start), out)
	}
	l.Record(attempt(0)) // after Close: dropped, no panic
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Close writes out every attempt still buffered before it returns,
// although the flush interval is far.
func TestRedisCloseFlushes(t *testing.T) {
	srv := redistest.StartWithoutPersistence(t)
	l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, FlushInterval: time.Hour, BatchSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 700 { // below a batch: only Close sends them
		l.Record(attempt(i))
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n, err := c.XLen(context.Background(), attemptlog.DefaultStream).Result(); err != nil || n != 700 {
		t.Fatalf("XLEN %d (%v) after Close, want 700", n, err)
	}
}

// Every router's log writes the one stream: each reads the others'.
func TestRedisIsShared(t *testing.T) {
	srv := redistest.StartWithoutPersistence(t)
	var logs []*attemptlog.Redis
	for range 2 {
		l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}, FlushInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		logs = append(logs, l)
	}
	a, b := attempt(1), attempt(2)
	logs[0].Record(a)
	logs[1].Record(b)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := logs[0].Query(context.Background(), attemptlog.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Attempts) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts visible after 5s, want both routers' 2", len(p.Attempts))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
