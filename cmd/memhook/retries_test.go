package main_test

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// failFirst answers 503 (no Retry-After) to the first attempt of each
// webhook-id and 200 to the next ones.
func failFirst() receiver.Respond {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(w http.ResponseWriter, r *http.Request, n int) int {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("Webhook-Id")
		if !seen[id] {
			seen[id] = true
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
}

// counters returns the counters of GET /webhooks/memory/status as they
// are printed.
func (s *server) counters(t *testing.T) map[string]any {
	t.Helper()
	code, _, b := s.request(t, http.MethodGet, "/webhooks/memory/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, b)
	}
	var st struct {
		Counters map[string]any `json:"counters"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status body: %v: %s", err, b)
	}
	return st.Counters
}

// waitMetric polls /metrics until series has the value want.
func (s *server) waitMetric(t *testing.T, series string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := metric(t, s, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %s, want %v\n%s", series, got, timeout, want, s.Stderr())
		}
		time.Sleep(20 * time.Millisecond) // polling a gauge: nothing to wait on
	}
}

// ingest POSTs n events for user to /ingest and returns their ids.
func (s *server) ingest(t *testing.T, n int, user string) []string {
	t.Helper()
	var ids []string
	for range n {
		id := uuid.NewString()
		if code, b := s.postJSON(t, "/ingest", envelope(id, user)); code != http.StatusOK {
			t.Fatalf("POST /ingest: %d %s", code, b)
		}
		ids = append(ids, id)
	}
	return ids
}

// While retries wait, /metrics and /webhooks/memory/status count them and
// show when the first is due; once delivered, both are back to 0.
func TestServeShowsRetriesWaiting(t *testing.T) {
	const schedule = 3 * time.Second
	tests := []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{name: "memory", env: func(*testing.T) []string { return nil }},
		{name: "redis", env: func(t *testing.T) []string {
			return []string{"MEMHOOK_TRANSPORT", "redis", "MEMHOOK_REDIS_URL", redistest.Start(t).URL()}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := startReceiver(t, failFirst())
			s := startServe(t, serveEnv(rcv, append(tt.env(t), "MEMHOOK_RETRY_SCHEDULE", schedule.String())...))
			s.waitReadyz(t, 15*time.Second)

			before := time.Now()
			ids := s.ingest(t, 3, "u-waiting")
			// On Redis the count is what the mover last saw, every 200 ms.
			s.waitMetric(t, "memhook_retries_waiting", 3, 10*time.Second)
			after := time.Now()

			oldest := metric(t, s, "memhook_oldest_retry_due_timestamp_seconds")
			due := time.UnixMilli(int64(math.Round(oldest * 1e3)))
			if lo, hi := before.Add(schedule), after.Add(schedule+schedule/10); due.Before(lo.Truncate(time.Millisecond)) || due.After(hi) {
				t.Errorf("memhook_oldest_retry_due_timestamp_seconds = %v (%s), want between %s and %s",
					oldest, due.Format(time.RFC3339Nano), lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))
			}
			c := s.counters(t)
			if c["retries_waiting"] != 3.0 {
				t.Errorf("status counters.retries_waiting = %v, want 3: %v", c["retries_waiting"], c)
			}
			st, _ := c["oldest_retry_due"].(string)
			if got, err := time.Parse(time.RFC3339Nano, st); err != nil {
				t.Errorf("status counters.oldest_retry_due = %v, want a time: %v", c["oldest_retry_due"], c)
			} else if d := got.Sub(due); d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("status says the oldest retry is due %s, /metrics %s", st, due.Format(time.RFC3339Nano))
			}

			for _, id := range ids {
				waitDelivery(t, rcv, 15*time.Second, func(r receiver.Request) bool { return withID(id)(r) && r.Status == http.StatusOK })
			}
			s.waitMetric(t, "memhook_retries_waiting", 0, 10*time.Second)
			s.waitMetric(t, "memhook_oldest_retry_due_timestamp_seconds", 0, 10*time.Second)
			c = s.counters(t)
			if c["retries_waiting"] != 0.0 {
				t.Errorf("status counters.retries_waiting = %v after delivery, want 0", c["retries_waiting"])
			}
			if v, ok := c["oldest_retry_due"]; ok {
				t.Errorf("status counters.oldest_retry_due = %v with none waiting, want it left out", v)
			}
			if code := s.stop(30 * time.Second); code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
		})
	}
}

// retriesList runs `memhook retries list args…` on the Redis at url and
// returns its exit code and output.
func retriesList(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	return run(t, env{"MEMHOOK_TRANSPORT": "redis", "MEMHOOK_REDIS_URL": url}, 30*time.Second, append([]string{"retries", "list"}, args...)...)
}

// retryLine is one line of `memhook retries list --json`.
type retryLine struct {
	ID           string    `json:"id"`
	Event        string    `json:"event"`
	UserID       string    `json:"user_id"`
	Attempt      int       `json:"attempt"`
	Due          time.Time `json:"due"`
	DueInSeconds float64   `json:"due_in_seconds"`
}

func decodeRetries(t *testing.T, out string) []retryLine {
	t.Helper()
	var lines []retryLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var r retryLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("retries list --json line %q: %v", l, err)
		}
		lines = append(lines, r)
	}
	return lines
}

// `memhook retries list` shows the retries a router left waiting in Redis:
// id, event, user, the attempt they wait to make and when, soonest first.
func TestRetriesList(t *testing.T) {
	srv := redistest.Start(t)
	rcv := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusServiceUnavailable })
	s := startServe(t, serveEnv(rcv, "MEMHOOK_TRANSPORT", "redis", "MEMHOOK_REDIS_URL", srv.URL(), "MEMHOOK_RETRY_SCHEDULE", "1h,2h"))
	s.waitReadyz(t, 15*time.Second)

	if code, stdout, stderr := retriesList(t, srv.URL(), "--json"); code != 0 || stdout != "" {
		t.Fatalf("with nothing waiting: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	before := time.Now()
	users := map[string]string{}
	for _, u := range []string{"u-a", "u-b", "u-c"} {
		users[s.ingest(t, 1, u)[0]] = u
	}
	s.waitMetric(t, "memhook_retries_waiting", 3, 15*time.Second)
	after := time.Now()

	code, stdout, stderr := retriesList(t, srv.URL(), "--json")
	if code != 0 {
		t.Fatalf("retries list --json: exit %d: %s", code, stderr)
	}
	lines := decodeRetries(t, stdout)
	if len(lines) != 3 {
		t.Fatalf("retries list --json printed %d lines, want 3:\n%s", len(lines), stdout)
	}
	for i, l := range lines {
		if u, ok := users[l.ID]; !ok || l.UserID != u || l.Event != "memory_added" || l.Attempt != 2 {
			t.Errorf("line %d = %+v; want one of the events sent (%v), memory_added, attempt 2", i, l, users)
		}
		if lo, hi := before.Add(time.Hour).Truncate(time.Millisecond), after.Add(time.Hour+6*time.Minute); l.Due.Before(lo) || l.Due.After(hi) {
			t.Errorf("line %d due %s, want between %s and %s (1h plus at most 10%%)", i, l.Due, lo, hi)
		}
		if in := time.Duration(l.DueInSeconds * float64(time.Second)); in < 59*time.Minute || in > 67*time.Minute {
			t.Errorf("line %d due in %s, want about 1h", i, in)
		}
		if i > 0 && l.Due.Before(lines[i-1].Due) {
			t.Errorf("line %d is due before line %d: not soonest first", i, i-1)
		}
	}

	code, table, stderr := retriesList(t, srv.URL())
	if code != 0 {
		t.Fatalf("retries list: exit %d: %s", code, stderr)
	}
	rows := strings.Split(strings.TrimSpace(table), "\n")
	if len(rows) != 4 || !strings.HasPrefix(rows[0], "EVENT ID") {
		t.Fatalf("retries list table: want a header and 3 rows:\n%s", table)
	}
	for i, l := range lines {
		row := rows[i+1]
		for _, want := range []string{l.ID, "memory_added", l.UserID, " 2 ", "in 1h", l.Due.Format(time.RFC3339)} {
			if !strings.Contains(row, want) {
				t.Errorf("table row %d %q lacks %q", i+1, row, want)
			}
		}
	}

	code, stdout, stderr = retriesList(t, srv.URL(), "--json", "--limit", "2")
	if got := decodeRetries(t, stdout); code != 0 || len(got) != 2 || got[0].ID != lines[0].ID || got[1].ID != lines[1].ID {
		t.Errorf("retries list --limit 2: exit %d, %d lines, want the first 2:\n%s", code, len(got), stdout)
	}
	if !strings.Contains(stderr, "more than 2 retries wait") {
		t.Errorf("retries list --limit 2 does not say more wait: %q", stderr)
	}
	if code, stdout, stderr := retriesList(t, srv.URL(), "--json", "--limit", "0"); code != 0 || len(decodeRetries(t, stdout)) != 3 || stderr != "" {
		t.Errorf("retries list --limit 0: exit %d, stderr %q, want all 3:\n%s", code, stderr, stdout)
	}
	if code := s.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	// The retries outlive the router: they are in Redis.
	if _, stdout, _ := retriesList(t, srv.URL(), "--json"); len(decodeRetries(t, stdout)) != 3 {
		t.Errorf("after the router stopped, retries list shows:\n%s", stdout)
	}
}

// Where retries are not in Redis, or the command is used wrong, it says so
// and exits 2; with Redis unreachable, 1, never showing its password.
func TestRetriesListRefuses(t *testing.T) {
	dead := deadAddr(t)
	const password = "redis-pw-5e1b77"
	tests := []struct {
		name string
		env  env
		args []string
		code int
		want []string
	}{
		{name: "transport memory", env: env{}, code: 2,
			want: []string{"transport memory", "inside the process", "/metrics", "memhook_retries_waiting", "/webhooks/memory/status", "MEMHOOK_TRANSPORT=redis"}},
		{name: "transport http", env: env{"MEMHOOK_TRANSPORT": "http"}, code: 2,
			want: []string{"transport http", "MEMHOOK_ROUTER_URL", "/metrics", "/webhooks/memory/status"}},
		{name: "transport memory by flag", env: env{"MEMHOOK_TRANSPORT": "redis"}, args: []string{"--transport=memory"}, code: 2,
			want: []string{"transport memory", "/metrics"}},
		{name: "no subcommand", env: env{}, args: nil, code: 2, want: []string{"Usage: memhook retries list"}},
		{name: "negative limit", env: env{"MEMHOOK_TRANSPORT": "redis"}, args: []string{"--limit=-1"}, code: 2, want: []string{"--limit=-1"}},
		{name: "an argument", env: env{"MEMHOOK_TRANSPORT": "redis"}, args: []string{"all"}, code: 2, want: []string{`unexpected argument "all"`}},
		{name: "bad variable", env: env{"MEMHOOK_TRANSPORT": "redis", "MEMHOOK_REDIS_MAXLEN": "lots"}, code: 2, want: []string{"MEMHOOK_REDIS_MAXLEN"}},
		{name: "Redis unreachable", env: env{"MEMHOOK_TRANSPORT": "redis", "MEMHOOK_REDIS_URL": "redis://:" + password + "@" + dead + "/0"}, code: 1,
			want: []string{"listing retries", dead}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"retries", "list"}
			if tt.name == "no subcommand" {
				args = []string{"retries"}
			}
			m := startMemhook(t, tt.env, append(args, tt.args...)...)
			m.neverShow(password)
			code := m.wait(30 * time.Second)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, m.Stderr())
			}
			if m.Stdout() != "" {
				t.Errorf("stdout %q, want nothing", m.Stdout())
			}
			for _, w := range tt.want {
				if !strings.Contains(m.Stderr(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, m.Stderr())
				}
			}
			if n := strings.Count(strings.TrimSpace(m.Stderr()), "\n"); tt.code == 1 && n != 0 {
				t.Errorf("stderr has %d lines, want the error once:\n%s", n+1, m.Stderr())
			}
		})
	}
}

// `memhook retries list --endpoint NAME` lists that endpoint's retries,
// and without it the default endpoint's.
func TestRetriesListPerEndpoint(t *testing.T) {
	url := redistest.Start(t).URL()
	tr, err := transports.NewRedisTransport(transports.RedisConfig{URL: url}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	due := time.Now().Add(time.Hour)
	ids := map[string]string{}
	for _, endpoint := range []string{transports.DefaultEndpointName, "crm"} {
		msg := message.NewMessage(uuid.NewString(), []byte("{}"))
		msg.Metadata.Set(middleware.AttemptKey, "2")
		if err := tr.PublishAt(transports.EndpointRetryTopic(endpoint), due, msg); err != nil {
			t.Fatal(err)
		}
		ids[endpoint] = msg.UUID
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, ids[transports.DefaultEndpointName]},
		{"crm", []string{"--endpoint", "crm"}, ids["crm"]},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := retriesList(t, url, append([]string{"--json"}, c.args...)...)
			if got := decodeRetries(t, stdout); code != 0 || len(got) != 1 || got[0].ID != c.want {
				t.Errorf("exit %d, %+v (%s); want only %s", code, got, stderr, c.want)
			}
		})
	}
	if code, _, _ := retriesList(t, url, "--endpoint", "nobody"); code != 0 {
		t.Errorf("an endpoint without retries: exit %d, want 0", code)
	}
}
