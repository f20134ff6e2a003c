package main_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/internal/redistest"
)

// benchTimeout bounds one small bench run of these tests (its serve
// children run the race-detector build).
const benchTimeout = 90 * time.Second

// needRedisServer skips t without redis-server on PATH (fails it under
// CI=true, where it must be installed).
func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found on PATH; CI must install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found on PATH: install redis-server (apt-get install redis-server) to run")
	}
}

// benchRow returns the line of the bench table whose run name starts with
// name, or "".
func benchRow(stdout, name string) string {
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), name) {
			return l
		}
	}
	return ""
}

// TestBenchRedisSkippedWithoutRedisServer: without --redis-url and
// without redis-server on PATH, the redis runs are skipped with a message
// saying what to install; the other runs run and the bench succeeds.
func TestBenchRedisSkippedWithoutRedisServer(t *testing.T) {
	code, stdout, stderr := run(t, env{"PATH": t.TempDir()}, benchTimeout, "bench", "-n", "20", "--transports", "floor,redis1,redis2")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "redis runs skipped: no redis-server on PATH") || !strings.Contains(stderr, "--redis-url") {
		t.Errorf("stderr does not say why the redis runs were skipped:\n%s", stderr)
	}
	if benchRow(stdout, "floor") == "" {
		t.Errorf("no floor row:\n%s", stdout)
	}
	if benchRow(stdout, "redis") != "" {
		t.Errorf("a redis row without a Redis:\n%s", stdout)
	}
}

// TestBenchPrivateRedis: without --redis-url the redis runs use a
// redis-server the bench starts on a free port (never 6379), and that
// server is gone once the bench has exited.
func TestBenchPrivateRedis(t *testing.T) {
	needRedisServer(t)
	code, stdout, stderr := run(t, env{}, benchTimeout, "bench", "-n", "50", "--transports", "redis1")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	m := regexp.MustCompile(`private redis-server at (127\.0\.0\.1:(\d+))`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("stderr does not name the private redis-server:\n%s", stderr)
	}
	if m[2] == "6379" {
		t.Errorf("the private redis-server is on 6379, Redis's default port")
	}
	if row := benchRow(stdout, "redis (1 router)"); !strings.Contains(row, " 50 ") {
		t.Errorf("no redis row with 50 received:\n%s", stdout)
	}
	if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
		_ = c.Close()
		t.Errorf("the private redis-server at %s still accepts connections after the bench exited", m[1])
	}
}

// TestBenchRedisURL: a --redis-url is used only if its database is empty,
// and is left empty; a database holding keys is refused before any run,
// its keys untouched; an unreachable one skips the redis runs, and a
// password in the URL is never shown.
func TestBenchRedisURL(t *testing.T) {
	srv := redistest.Start(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	dead := deadAddr(t)
	const password = "bench-redis-pw-5e1a"

	cases := []struct {
		name     string
		url      string
		setup    func(t *testing.T)
		wantCode int
		wantErr  string // in stderr
		wantRow  bool
		keysLeft []string
	}{
		{
			name: "empty database left empty", url: srv.URL(), wantRow: true,
		},
		{
			name: "database with keys refused",
			url:  srv.URL(),
			setup: func(t *testing.T) {
				if err := c.Set(ctx, "someone.elses", "1", 0).Err(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Del(ctx, "someone.elses") })
			},
			wantCode: 2, wantErr: "--redis-url " + srv.URL() + ": the database is not empty (1 keys)",
			keysLeft: []string{"someone.elses"},
		},
		{
			name: "unreachable skipped", url: "redis://:" + password + "@" + dead + "/0",
			wantErr: "redis runs skipped: Redis at redis://REDACTED@" + dead + "/0 (--redis-url) does not answer",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			m := startMemhook(t, env{}, "bench", "-n", "30", "--transports", "redis1", "--redis-url", tc.url)
			m.neverShow(password)
			code := m.wait(benchTimeout)
			stdout, stderr := m.Stdout(), m.Stderr()
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			if tc.wantErr != "" && !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr does not say %q:\n%s", tc.wantErr, stderr)
			}
			if got := benchRow(stdout, "redis (1 router)") != ""; got != tc.wantRow {
				t.Errorf("redis row shown: %v, want %v\n%s", got, tc.wantRow, stdout)
			}
			keys, err := c.Keys(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(keys, ",") != strings.Join(tc.keysLeft, ",") {
				t.Errorf("keys after the bench: %q, want %q", keys, tc.keysLeft)
			}
		})
	}
}

// TestBenchMemoryWithLogs: the logs-on memory runs log a line per delivery
// to a real file, and the bench checks the file holds every one (else the
// run fails and the bench exits 1). Nothing logs at ERROR meanwhile, the
// serve child of the http run included (its stderr is the bench's).
func TestBenchMemoryWithLogs(t *testing.T) {
	code, stdout, stderr := run(t, env{}, benchTimeout, "bench", "-n", "300", "--runs", "2", "--transports", "memory,memory-logs,memory-slog,http")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "ERROR") {
		t.Errorf("a normal bench logged at ERROR:\n%s", stderr)
	}
	for _, name := range []string{"memory (embedded, signed)", "memory (logs on, buffered)", "memory (logs on, slog.Default)", "http (app -> serve)"} {
		if row := benchRow(stdout, name); !strings.Contains(row, " 300 ") {
			t.Errorf("no %q row with 300 received:\n%s", name, stdout)
		}
	}
}

// benchJSONRow is the part of a `memhook bench --json` row the fan-out
// tests read.
type benchJSONRow struct {
	Name         string  `json:"name"`
	Events       int     `json:"events"`
	Received     int     `json:"received"`
	Duplicates   int     `json:"duplicates"`
	Missing      int     `json:"missing"`
	EventsPerSec float64 `json:"events_per_sec"`
	HealthyRatio float64 `json:"healthy_ratio"`
	Error        string  `json:"error"`
	Fanout       *struct {
		Endpoints []struct {
			Name       string `json:"name"`
			Role       string `json:"role"`
			Received   int    `json:"received"`
			Duplicates int    `json:"duplicates"`
			Missing    int    `json:"missing"`
			Retried    uint64 `json:"retried"`
			Poisoned   uint64 `json:"poisoned"`
		} `json:"endpoints"`
	} `json:"fanout"`
}

// benchJSON runs `memhook bench --json` with args and returns its rows
// and exit code.
func benchJSON(t *testing.T, args ...string) ([]benchJSONRow, int) {
	t.Helper()
	code, stdout, stderr := run(t, env{}, benchTimeout, append([]string{"bench", "--json"}, args...)...)
	var rows []benchJSONRow
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("exit %d; stdout is not the JSON rows: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	if code != 0 {
		t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	return rows, code
}

func findRow(t *testing.T, rows []benchJSONRow, prefix string) benchJSONRow {
	t.Helper()
	for _, r := range rows {
		if strings.HasPrefix(r.Name, prefix) {
			return r
		}
	}
	t.Fatalf("no %q row in %+v", prefix, rows)
	return benchJSONRow{}
}

// TestBenchFanout: the fanout run delivers every event to each of its
// three endpoints once; the memory isolation run reports the healthy
// endpoint's ratio to its rate alone, and (in its last round) its slow
// endpoint gets every event, and its dead one, refused until the healthy
// one is through, every event once back (having failed while dead).
func TestBenchFanout(t *testing.T) {
	const n = 200
	rows, code := benchJSON(t, "-n", strconv.Itoa(n), "--runs", "2", "--transports", "fanout,fanout-isolation")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}

	fo := findRow(t, rows, "fanout (3 endpoints")
	if fo.Events != 3*n || fo.Received != 3*n || fo.Duplicates != 0 || fo.Missing != 0 || fo.Error != "" {
		t.Errorf("fanout row: %+v, want %d of %d received, none missing or twice", fo, 3*n, 3*n)
	}
	if fo.Fanout == nil || len(fo.Fanout.Endpoints) != 3 {
		t.Fatalf("fanout row has not its three endpoints: %+v", fo)
	}
	for _, ep := range fo.Fanout.Endpoints {
		if ep.Received != n || ep.Missing != 0 {
			t.Errorf("fanout endpoint %s got %d of %d", ep.Name, ep.Received, n)
		}
	}
	checkIsolation(t, findRow(t, rows, "fanout isolation (memory)"), n)
}

// TestBenchFanoutIsolationRedis is TestBenchFanout's isolation run on
// Redis with two routers.
func TestBenchFanoutIsolationRedis(t *testing.T) {
	needRedisServer(t)
	const n = 200
	rows, code := benchJSON(t, "-n", strconv.Itoa(n), "--transports", "fanout-isolation-redis")
	r := findRow(t, rows, "fanout isolation (redis")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	checkIsolation(t, r, n)
}

func checkIsolation(t *testing.T, r benchJSONRow, n int) {
	t.Helper()
	if r.Received != n || r.Missing != 0 || r.Duplicates != 0 || r.EventsPerSec <= 0 || r.HealthyRatio <= 0 {
		t.Errorf("healthy endpoint: %+v, want %d received once each, a rate and its ratio to its rate alone", r, n)
	}
	if r.Fanout == nil {
		t.Fatalf("no endpoints in %+v", r)
	}
	roles := map[string]bool{}
	for _, ep := range r.Fanout.Endpoints {
		roles[ep.Role] = true
		if ep.Received != n || ep.Missing != 0 || ep.Poisoned != 0 {
			t.Errorf("%s endpoint: %+v, want all %d received, none poisoned", ep.Role, ep, n)
		}
		if ep.Role == "dead" && ep.Retried == 0 {
			t.Errorf("dead endpoint: no retry scheduled: it was not refusing during the run")
		}
	}
	for _, role := range []string{"healthy", "slow", "dead"} {
		if !roles[role] {
			t.Errorf("no %s endpoint in %+v", role, r.Fanout.Endpoints)
		}
	}
	if r.Error != "" {
		t.Errorf("run error: %s", r.Error)
	}
}
