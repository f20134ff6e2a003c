package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/internal/proc"
	"github.com/memhook/memhook/internal/receiver"
)

// memhookBin is the binary TestMain builds once, with -race so that a data
// race in the process fails the test that ran it.
var memhookBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memhook-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	memhookBin = filepath.Join(dir, "memhook")
	build := exec.Command("go", "build", "-race", "-o", memhookBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building memhook: %v\n", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	// For the tests of package main itself, which cannot see memhookBin.
	_ = os.Setenv("MEMHOOK_TEST_BINARY", memhookBin)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Secret values the tests configure: distinctive, so that finding one in
// a log means it leaked.
const (
	webhookToken  = "wh-token-7d2f9c1e"
	webhookSecret = "wh-secret-4b8a6e0d"
	adminToken    = "admin-token-91c3f5a7"
	incomingToken = "incoming-token-2e6d8b40"
	ingestToken   = "ingest-token-c05f7a19"
)

// secretVars are the variables whose values must never be printed.
var secretVars = []string{
	"MEM0_WEBHOOK_TOKEN", "MEM0_WEBHOOK_SECRET", "MEMHOOK_ADMIN_TOKEN", "MEMHOOK_INCOMING_TOKEN",
	"MEMHOOK_INGEST_TOKEN", "MEMHOOK_INCOMING_SECRET", "MEMHOOK_INGEST_SECRET",
}

// env is a process's whole environment: nothing is inherited from the
// test's own.
type env map[string]string

func (e env) list() []string {
	// The race runtime sleeps a second at exit by default so that
	// goroutines still running can report; ours are stopped by then.
	out := []string{"PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=100"}
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}

// with returns a copy of e with kv (name, value, name, value …) set.
func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// memhook is a running memhook process. Whichever way it ends (stop,
// wait, or the test's cleanup), finish checks its whole output once.
type memhook struct {
	*proc.Process
	t *testing.T

	mu       sync.Mutex
	secrets  []string
	finished bool
}

// startMemhook starts the binary with args and exactly e. The values of
// e's secret variables are never to appear in its output.
func startMemhook(t *testing.T, e env, args ...string) *memhook {
	t.Helper()
	p, err := proc.Start(memhookBin, args, e.list())
	if err != nil {
		t.Fatalf("starting memhook %s: %v", strings.Join(args, " "), err)
	}
	m := &memhook{Process: p, t: t}
	for _, name := range secretVars {
		if v := e[name]; v != "" {
			m.secrets = append(m.secrets, v)
		}
	}
	t.Cleanup(func() {
		if _, err := m.Stop(10 * time.Second); err != nil {
			t.Errorf("memhook %s: %v", strings.Join(args, " "), err)
		}
		m.finish()
	})
	return m
}

// neverShow adds values that must not appear in the process's output
// (a token a test presents, a password in a URL).
func (m *memhook) neverShow(s ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.secrets = append(m.secrets, s...)
}

// finish checks, once, the process's whole stdout and stderr: no secret
// value, no data race report.
func (m *memhook) finish() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finished {
		return
	}
	m.finished = true
	out := m.Stdout() + m.Stderr()
	for _, s := range m.secrets {
		if strings.Contains(out, s) {
			m.t.Errorf("the process printed the secret %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "DATA RACE") {
		m.t.Errorf("the race detector found a race in memhook:\n%s", out)
	}
}

// stop sends SIGTERM, waits up to grace for the exit and returns the exit
// code; it fails the test if the process had to be killed.
func (m *memhook) stop(grace time.Duration) int {
	m.t.Helper()
	code, err := m.Stop(grace)
	if err != nil {
		m.t.Errorf("stopping memhook: %v\nstderr:\n%s", err, m.Stderr())
	}
	m.finish()
	return code
}

// wait waits up to timeout for the process to exit on its own and returns
// the exit code; past the timeout it kills it and fails the test.
func (m *memhook) wait(timeout time.Duration) int {
	m.t.Helper()
	code, err := m.Wait(timeout)
	if err != nil {
		m.Kill()
		m.t.Fatalf("memhook did not exit: %v\nstdout:\n%s\nstderr:\n%s", err, m.Stdout(), m.Stderr())
	}
	m.finish()
	return code
}

// waitLog waits for a stderr line containing every one of parts.
func (m *memhook) waitLog(timeout time.Duration, parts ...string) string {
	m.t.Helper()
	line, err := m.WaitLine(func(l string) bool {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return false
			}
		}
		return true
	}, timeout)
	if err != nil {
		m.t.Fatalf("no log line with %q: %v\nstderr:\n%s", parts, err, m.Stderr())
	}
	return line
}

// run runs memhook to completion (bounded by timeout) and returns its exit
// code and output.
func run(t *testing.T, e env, timeout time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	m := startMemhook(t, e, args...)
	code = m.wait(timeout)
	return code, m.Stdout(), m.Stderr()
}

// logAttr returns the value of key in a text slog line, unquoted.
func logAttr(line, key string) (string, bool) {
	i := strings.Index(" "+line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key)+1:]
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", false
		}
		v, _ := strconv.Unquote(q)
		return v, true
	}
	v, _, _ := strings.Cut(rest, " ")
	return v, true
}

// startReceiver starts a webhook receiver on loopback, closed when the
// test ends.
func startReceiver(t *testing.T, respond receiver.Respond) *receiver.Receiver {
	t.Helper()
	r, err := receiver.Start(respond, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// delivered is what a receiver got, decoded.
type delivered struct {
	Event  string          `json:"event"`
	UserID string          `json:"user_id"`
	Data   json.RawMessage `json:"data"`
	ID     string          `json:"id"`
}

func decodeDelivery(t *testing.T, r receiver.Request) delivered {
	t.Helper()
	var d delivered
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatalf("receiver got a body that is not an envelope: %v: %s", err, r.Body)
	}
	return d
}

// waitDelivery waits until the receiver answered a request that match
// accepts, and returns it.
func waitDelivery(t *testing.T, rcv *receiver.Receiver, timeout time.Duration, match func(receiver.Request) bool) receiver.Request {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		reqs := rcv.Requests()
		for _, r := range reqs {
			if match(r) {
				return r
			}
		}
		left := time.Until(deadline)
		if left <= 0 || rcv.WaitFor(len(reqs)+1, left) != nil {
			t.Fatalf("the receiver did not get the expected request in %s; it got %d", timeout, len(rcv.Requests()))
		}
	}
}

// withID matches a delivery of the event id, by webhook-id and envelope.
func withID(id string) func(receiver.Request) bool {
	return func(r receiver.Request) bool {
		var d delivered
		return r.Header.Get("Webhook-Id") == id && json.Unmarshal(r.Body, &d) == nil && d.ID == id
	}
}

// httpClient is the tests' client: its own transport, explicit timeout.
func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
}

// do sends one request and returns the status, headers and body.
func do(c *http.Client, method, url string, body io.Reader, header ...string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, nil, nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, resp.Header, b, err
}

// helpEntry is one row of --help's variable table.
type helpEntry struct{ env, flag, def string }

// helpEntries are every variable memhook reads, with its flag and default,
// as the README documents them.
var helpEntries = []helpEntry{
	{"MEM0_WEBHOOK_URL", "", "(unset: webhooks off)"},
	{"MEM0_WEBHOOK_TOKEN", "", "(unset)"},
	{"MEM0_WEBHOOK_SECRET", "", "(unset)"},
	{"MEM0_WEBHOOK_TIMEOUT", "", "30"},
	{"MEM0_WEBHOOK_RETRY_COUNT", "", "3"},
	{"MEM0_WEBHOOK_RETRY_DELAY", "", "1.0"},
	{"MEMHOOK_RETRY_SCHEDULE", "retry-schedule", "(unset: the seed's)"},
	{"MEM0_WEBHOOK_EVENTS", "", "all"},
	{"BOT_VERSION", "", "1.0.0"},
	{"MEMHOOK_TRANSPORT", "transport", "memory"},
	{"MEMHOOK_REDIS_URL", "", "redis://127.0.0.1:6379/0"},
	{"MEMHOOK_REDIS_GROUP", "redis-group", "memhook"},
	{"MEMHOOK_REDIS_CONSUMER", "redis-consumer", "hostname-pid"},
	{"MEMHOOK_REDIS_MAXLEN", "redis-maxlen", "1000000"},
	{"MEMHOOK_ADDR", "addr", "127.0.0.1:8000"},
	{"MEMHOOK_ROUTER_URL", "router-url", "http://127.0.0.1:8000"},
	{"MEMHOOK_QUEUE_CAPACITY", "queue-capacity", "10000"},
	{"MEMHOOK_CONCURRENCY", "concurrency", "16"},
	{"MEMHOOK_MAX_RETRY_AFTER", "max-retry-after", "60"},
	{"MEMHOOK_SOURCE", "source", "markdown-brain-bot"},
	{"MEMHOOK_LEGACY_SECRET_HEADER", "legacy-secret-header", "true"},
	{"MEMHOOK_SHUTDOWN_TIMEOUT", "shutdown-timeout", "30"},
	{"MEMHOOK_LOG_FORMAT", "log-format", "text"},
	{"MEMHOOK_LOG_LEVEL", "log-level", "info"},
	{"MEMHOOK_CPU_PROFILE", "cpu-profile", "(unset: none)"},
	{"MEMHOOK_TLS_CERT", "tls-cert", "(unset: plain http)"},
	{"MEMHOOK_TLS_KEY", "tls-key", "(unset: plain http)"},
	{"MEMHOOK_ADMIN_TOKEN", "", "(unset)"},
	{"MEMHOOK_INCOMING_TOKEN", "", "(unset)"},
	{"MEMHOOK_INGEST_TOKEN", "", "(unset)"},
	{"MEMHOOK_INCOMING_SECRET", "", "(unset)"},
	{"MEMHOOK_INGEST_SECRET", "", "(unset)"},
}

// checkVariableTable checks that out has a table row for every variable:
// its name, its flag (or -) and its default.
func checkVariableTable(t *testing.T, out string) {
	t.Helper()
	for _, e := range helpEntries {
		f := "-"
		if e.flag != "" {
			f = "--" + e.flag
		}
		row := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(e.env) + `\s+` + regexp.QuoteMeta(f) + `\s+` + regexp.QuoteMeta(e.def) + `\s`)
		if !row.MatchString(out) {
			t.Errorf("no row %q %q %q in the variable table:\n%s", e.env, f, e.def, out)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, env{}, 30*time.Second, args...)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			for _, cmd := range []string{"serve", "emit", "demo", "bench", "dlq", "retries", "version"} {
				if !regexp.MustCompile(`(?m)^\s+memhook ` + cmd + `\b`).MatchString(stdout) {
					t.Errorf("usage does not list the command %q:\n%s", cmd, stdout)
				}
			}
			checkVariableTable(t, stdout)
		})
	}
}

func TestServeHelp(t *testing.T) {
	code, stdout, stderr := run(t, env{}, 30*time.Second, "serve", "--help")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if stdout != "" {
		t.Errorf("serve --help wrote to stdout: %q", stdout)
	}
	// Every flag, with the variable it stands for and its default.
	for _, e := range helpEntries {
		if e.flag == "" {
			continue
		}
		flagLine := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(e.flag) + ` string\n\s+.*\(env ` +
			regexp.QuoteMeta(e.env) + `, default ` + regexp.QuoteMeta(e.def) + `\)$`)
		if !flagLine.MatchString(stderr) {
			t.Errorf("serve --help does not show the flag -%s with (env %s, default %s)", e.flag, e.env, e.def)
		}
	}
	checkVariableTable(t, stderr)
	if t.Failed() {
		t.Logf("serve --help:\n%s", stderr)
	}
}

func TestEmitHelp(t *testing.T) {
	code, _, stderr := run(t, env{}, 30*time.Second, "emit", "--help")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	for _, f := range []string{"-event string", "-user string", "-data string", "-request-id string", "-wait duration"} {
		if !strings.Contains(stderr, f) {
			t.Errorf("emit --help does not show %q:\n%s", f, stderr)
		}
	}
	if !strings.Contains(stderr, "(default 2m0s)") {
		t.Errorf("emit --help does not show --wait's default:\n%s", stderr)
	}
	checkVariableTable(t, stderr)
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		t.Run(arg, func(t *testing.T) {
			code, stdout, _ := run(t, env{}, 30*time.Second, arg)
			if code != 0 {
				t.Fatalf("exit %d, want 0", code)
			}
			if !strings.HasPrefix(stdout, "memhook "+bus.Version+" ") || strings.Count(stdout, "\n") != 1 {
				t.Errorf("version printed %q, want one line starting %q", stdout, "memhook "+bus.Version)
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {}} {
		t.Run(fmt.Sprintf("%q", args), func(t *testing.T) {
			code, stdout, stderr := run(t, env{}, 30*time.Second, args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("wrote to stdout: %q", stdout)
			}
			if len(args) > 0 && !strings.Contains(stderr, `unknown command "frobnicate"`) {
				t.Errorf("stderr does not name the unknown command:\n%s", stderr)
			}
			if !strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr has no usage:\n%s", stderr)
			}
		})
	}
}

// TestBadConfig: a bad variable or flag stops start-up with exit 2 and
// one line naming it and the bad value, never a secret.
func TestBadConfig(t *testing.T) {
	addr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	base := env{
		"MEMHOOK_ADDR":        addr,
		"MEM0_WEBHOOK_URL":    "http://127.0.0.1:9/hook",
		"MEM0_WEBHOOK_TOKEN":  webhookToken,
		"MEM0_WEBHOOK_SECRET": webhookSecret,
	}
	tests := []struct {
		name    string
		env     env
		args    []string
		want    []string // each must be in the line
		notWant []string
	}{
		{name: "timeout not a number", env: base.with("MEM0_WEBHOOK_TIMEOUT", "abc"),
			want: []string{"MEM0_WEBHOOK_TIMEOUT", `"abc"`}},
		{name: "unknown event", env: base.with("MEM0_WEBHOOK_EVENTS", "bogus"),
			want: []string{"MEM0_WEBHOOK_EVENTS", `"bogus"`}},
		{name: "url not http", env: base.with("MEM0_WEBHOOK_URL", "ftp://x"),
			want: []string{"MEM0_WEBHOOK_URL", "ftp://x", "http"}},
		{name: "negative concurrency flag", env: base, args: []string{"--concurrency=-1"},
			want: []string{"--concurrency", "-1"}, notWant: []string{"MEMHOOK_CONCURRENCY"}},
		{name: "negative concurrency variable", env: base.with("MEMHOOK_CONCURRENCY", "-1"),
			want: []string{"MEMHOOK_CONCURRENCY", "-1"}},
		{name: "not loopback without admin token", env: base.with("MEMHOOK_ADDR", "0.0.0.0:"+port),
			want: []string{"MEMHOOK_ADDR", "0.0.0.0:" + port, "loopback", "MEMHOOK_ADMIN_TOKEN"}},
		{name: "not loopback by flag", env: base, args: []string{"--addr=0.0.0.0:" + port},
			want: []string{"--addr", "0.0.0.0:" + port, "MEMHOOK_ADMIN_TOKEN"}, notWant: []string{"MEMHOOK_ADDR"}},
		{name: "retry schedule entry not a duration", env: base.with("MEMHOOK_RETRY_SCHEDULE", "5s,5"),
			want: []string{"MEMHOOK_RETRY_SCHEDULE", `"5s,5"`, "entry 2"}},
		{name: "retry schedule entry zero by flag", env: base, args: []string{"--retry-schedule=0s,1m"},
			want: []string{"--retry-schedule", "entry 1", "more than 0"}, notWant: []string{"MEMHOOK_RETRY_SCHEDULE"}},
		{name: "shutdown timeout zero", env: base.with("MEMHOOK_SHUTDOWN_TIMEOUT", "0"),
			want: []string{"MEMHOOK_SHUTDOWN_TIMEOUT", `"0"`}},
		{name: "bad secret is named, not shown", env: base.with("MEM0_WEBHOOK_SECRET", "whsec_%%not-base64%%"),
			want: []string{"MEM0_WEBHOOK_SECRET"}, notWant: []string{"%%not-base64%%"}},
		// Without "//" go-redis dialled 127.0.0.1:6379 and the log showed
		// url=redis:pw-7c1e9d@…; the webhook URL's error showed its password.
		{name: "opaque Redis URL", env: base.with("MEMHOOK_TRANSPORT", "redis", "MEMHOOK_REDIS_URL", "redis:pw-7c1e9d@cache:6380"),
			want: []string{"MEMHOOK_REDIS_URL", "redis:REDACTED", "redis://"}, notWant: []string{"pw-7c1e9d"}},
		{name: "opaque webhook URL", env: base.with("MEM0_WEBHOOK_URL", "http:user:pw-7c1e9d@hooks.example/x"),
			want: []string{"MEM0_WEBHOOK_URL", "http:REDACTED", "http://"}, notWant: []string{"pw-7c1e9d"}},
		{name: "opaque router URL by flag", env: base, args: []string{"--router-url=http:pw-7c1e9d@router:8000"},
			want: []string{"--router-url", "http:REDACTED"}, notWant: []string{"pw-7c1e9d", "MEMHOOK_ROUTER_URL"}},
		{name: "webhook URL without host", env: base.with("MEM0_WEBHOOK_URL", "https://pw-7c1e9d@:8443/x"),
			want: []string{"MEM0_WEBHOOK_URL", "host is missing"}, notWant: []string{"pw-7c1e9d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.env, 30*time.Second, append([]string{"serve"}, tt.args...)...)
			line := refusedInOneLine(t, code, stdout, stderr, tt.want, tt.notWant)
			for _, s := range []string{webhookToken, webhookSecret} {
				if strings.Contains(line, s) {
					t.Errorf("the line shows a secret: %s", line)
				}
			}
		})
	}
}

// linesAt returns the lines of a text log at the level.
func linesAt(lines []string, level string) []string {
	var out []string
	for _, l := range lines {
		if v, _ := logAttr(l, "level"); v == level {
			out = append(out, l)
		}
	}
	return out
}

// refusedInOneLine checks a start-up refused with exit 2, nothing on
// stdout and one line on stderr that names every want and shows no
// notWant; it returns the line.
func refusedInOneLine(t *testing.T, code int, stdout, stderr string, want, notWant []string) string {
	t.Helper()
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if stdout != "" {
		t.Errorf("wrote to stdout: %q", stdout)
	}
	line := strings.TrimSuffix(stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Fatalf("want exactly one line on stderr, got:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("the line does not name %q: %s", w, line)
		}
	}
	for _, nw := range notWant {
		if strings.Contains(line, nw) {
			t.Errorf("the line shows %q: %s", nw, line)
		}
	}
	return line
}

// deadAddr returns a loopback address that refuses connections for the
// whole test: its port is held (bound, not listening), so no server
// started meanwhile can take it.
func deadAddr(t *testing.T) string {
	t.Helper()
	return deadport.Held(t).Addr()
}
