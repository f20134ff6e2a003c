package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/internal/redistest"
)

const crmToken = "crm-token-8f3a61d2"

// adminAttempt is one attempt as the admin API and `memhook attempts
// --json` give it.
type adminAttempt struct {
	Endpoint  string `json:"endpoint"`
	EventID   string `json:"event_id"`
	Number    int    `json:"attempt"`
	Succeeded bool   `json:"succeeded"`
	Status    int    `json:"status"`
	Response  string `json:"response"`
}

// adminLog keeps every answer of the admin API and every output of the
// commands that ask it, for the secrets check.
type adminLog struct{ bytes.Buffer }

// api calls the admin API of s with the admin token and returns status
// and body, keeping both.
func (l *adminLog) api(t *testing.T, s *server, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	header := []string{"Authorization", "Bearer " + adminToken}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
		header = append(header, "Content-Type", "application/json")
	}
	code, hd, b, err := do(s.client, method, s.URL+path, rd, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	fmt.Fprintf(&l.Buffer, "%s %s %d %v\n%s\n", method, path, code, hd, b)
	return code, b
}

// cli runs memhook args… against s (MEMHOOK_ROUTER_URL, the admin token),
// expecting exit 0, and returns stdout.
func (l *adminLog) cli(t *testing.T, s *server, args ...string) string {
	t.Helper()
	code, stdout, stderr := run(t, env{"MEMHOOK_ROUTER_URL": s.URL, "MEMHOOK_ADMIN_TOKEN": adminToken}, 30*time.Second, args...)
	fmt.Fprintf(&l.Buffer, "memhook %s: %d\n%s\n%s\n", strings.Join(args, " "), code, stdout, stderr)
	if code != 0 {
		t.Fatalf("memhook %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// The check, on Redis with two routers: a receiver fails for a
// while; `memhook endpoints recover default --since T` (asking one
// router) sends again exactly the events that failed since T — not one
// that failed before, not one delivered — each once, with its webhook-id;
// the attempts of an event (made by either router) are listed with the
// receiver's status and answer; `memhook dlq` works through the API; and
// no answer of the API, nor any output of these commands, holds a
// configured token or secret.
func TestServeRedisAdminRecover(t *testing.T) {
	redis := redistest.Start(t)
	var failing atomic.Bool
	rcv := startReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) int {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable) // before the body (the receiver's own WriteHeader is then ignored)
			_, _ = io.WriteString(w, "maintenance window")
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	crm := startReceiver(t, nil)
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("endpoints:\n  - name: crm\n    url: %s/crm\n    secret: ${CRM_SECRET}\n    token: ${CRM_TOKEN}\n", crm.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := serveEnv(rcv,
		"MEMHOOK_TRANSPORT", "redis", "MEMHOOK_REDIS_URL", redis.URL(),
		"MEMHOOK_RETRY_SCHEDULE", "50ms", "MEMHOOK_PAUSE_AFTER", "0",
		"MEMHOOK_ADMIN_TOKEN", adminToken, "MEMHOOK_INGEST_TOKEN", ingestToken, "MEMHOOK_INCOMING_TOKEN", incomingToken,
		"MEMHOOK_ENDPOINTS_FILE", file, "CRM_SECRET", crmSecret, "CRM_TOKEN", crmToken)
	a := startServe(t, e.with("MEMHOOK_REDIS_CONSUMER", "router-a"))
	b := startServe(t, e.with("MEMHOOK_REDIS_CONSUMER", "router-b"))
	for _, s := range []*server{a, b} {
		s.neverShow(crmSecret, crmToken)
		s.waitReadyz(t, 15*time.Second)
	}
	var log adminLog
	ingest := func(s *server, n int) []string {
		t.Helper()
		var ids []string
		for range n {
			id := uuid.NewString()
			if code, body := s.postJSON(t, "/ingest", envelope(id, "u1"), "Authorization", "Bearer "+ingestToken, "webhook-id", id); code != http.StatusOK && code != http.StatusAccepted {
				t.Fatalf("ingest: %d %s", code, body)
			}
			ids = append(ids, id)
		}
		return ids
	}
	// deadLetters waits until the default endpoint has n dead letters
	// (poisoned since since, when set) and returns their event ids.
	deadLetters := func(s *server, n int, since string) []string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			path := "/api/dlq?endpoint=default"
			if since != "" {
				path += "&since=" + since
			}
			code, body := log.api(t, s, http.MethodGet, path, nil)
			var ans struct {
				DeadLetters []struct {
					EventID string `json:"event_id"`
				} `json:"dead_letters"`
			}
			if err := json.Unmarshal(body, &ans); code != http.StatusOK || err != nil {
				t.Fatalf("GET /api/dlq: %d %v %s", code, err, body)
			}
			if len(ans.DeadLetters) >= n {
				var ids []string
				for _, d := range ans.DeadLetters {
					ids = append(ids, d.EventID)
				}
				return ids
			}
			if time.Now().After(deadline) {
				_, attempts := log.api(t, s, http.MethodGet, "/api/attempts?endpoint=default", nil)
				var got []int
				for _, r := range rcv.Requests() {
					got = append(got, r.Status)
				}
				t.Fatalf("%d dead letters after 20s, want %d: %s\nthe receiver answered %v\nattempts: %s\nrouter a:\n%s\nrouter b:\n%s",
					len(ans.DeadLetters), n, body, got, attempts, a.Stderr(), b.Stderr())
			}
			time.Sleep(20 * time.Millisecond) // polling a process: nothing to wait on
		}
	}

	delivered := ingest(a, 2) // delivered at once: never sent again
	if err := rcv.WaitDistinct(2, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	old := ingest(b, 1) // fails before T: not recovered
	deadLetters(a, 1, "")
	time.Sleep(10 * time.Millisecond) // T is strictly after the old one's poisoning
	since := time.Now().UTC().Format(time.RFC3339Nano)
	failedIDs := append(ingest(a, 2), ingest(b, 2)...)
	got := deadLetters(b, 4, since)
	slices.Sort(got)
	want := slices.Clone(failedIDs)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dead letters since T %v, want the events that failed %v", got, want)
	}

	// waitAttempts waits until GET /api/attempts?query on s lists n
	// attempts: the log is written in batches, off the attempt's path.
	waitAttempts := func(s *server, query string, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := log.api(t, s, http.MethodGet, "/api/attempts?limit=1000&"+query, nil)
			var page struct {
				Attempts []adminAttempt `json:"attempts"`
			}
			if err := json.Unmarshal(body, &page); code != http.StatusOK || err != nil {
				t.Fatalf("GET /api/attempts: %d %v %s", code, err, body)
			}
			if len(page.Attempts) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /api/attempts?%s: %d attempts after 10s, want %d: %s", query, len(page.Attempts), n, body)
			}
			time.Sleep(20 * time.Millisecond) // polling a process: nothing to wait on
		}
	}
	waitAttempts(a, "endpoint=default&status=failed&since="+since, 8) // 4 events, 2 attempts each

	// The attempts of a failed event, made by either router, listed by
	// the other: two, each 503 with the receiver's answer.
	out := log.cli(t, b, "attempts", "--event", failedIDs[0], "--json")
	var page struct {
		Attempts []adminAttempt `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("memhook attempts --json: %v: %s", err, out)
	}
	var defaultAttempts []adminAttempt
	for _, at := range page.Attempts {
		if at.Endpoint == "default" {
			defaultAttempts = append(defaultAttempts, at)
		}
	}
	if len(defaultAttempts) != 2 {
		t.Fatalf("attempts of %s on default: %+v, want 2", failedIDs[0], page.Attempts)
	}
	for i, at := range defaultAttempts {
		if at.EventID != failedIDs[0] || at.Succeeded || at.Status != 503 || at.Response != "maintenance window" || at.Number != 2-i {
			t.Errorf("attempt %+v, want number %d failed with 503 and the receiver's answer, newest first", at, 2-i)
		}
	}
	table := log.cli(t, a, "events", "show", failedIDs[0])
	if !strings.Contains(table, "503") || !strings.Contains(table, "maintenance window") || !strings.Contains(table, failedIDs[0]) {
		t.Errorf("memhook events show:\n%s", table)
	}
	out = log.cli(t, a, "attempts", "--failed", "--endpoint", "default", "--since", since, "--json")
	page.Attempts = nil
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("memhook attempts --json: %v: %s", err, out)
	}
	perEvent := map[string]int{}
	for _, at := range page.Attempts {
		if at.Status == 503 && at.Endpoint == "default" {
			perEvent[at.EventID]++
		}
	}
	for _, id := range failedIDs {
		if perEvent[id] != 2 {
			t.Errorf("memhook attempts --failed --since T: %v, want 2 attempts answered 503 for each of %v", perEvent, failedIDs)
			break
		}
	}
	if len(perEvent) != 4 {
		t.Errorf("memhook attempts --failed --since T lists the attempts of %d events, want the 4 that failed since T", len(perEvent))
	}
	if table := log.cli(t, a, "attempts", "--failed", "--endpoint", "default"); !strings.Contains(table, "maintenance window") || !strings.Contains(table, old[0]) {
		t.Errorf("memhook attempts --failed:\n%s", table)
	}

	// Back up: recover since T through router b.
	failing.Store(false)
	before := rcv.Count()
	out = log.cli(t, b, "endpoints", "recover", "default", "--since", since, "--json")
	if strings.TrimSpace(out) != `{"recovered":4}` {
		t.Fatalf("memhook endpoints recover: %s, want 4 recovered", out)
	}
	for _, id := range failedIDs {
		waitDelivery(t, rcv, 20*time.Second, func(r receiver.Request) bool { return withID(id)(r) && r.Status == http.StatusOK })
	}
	time.Sleep(500 * time.Millisecond) // shows that nothing else is sent
	ok := map[string]int{}
	for _, r := range rcv.Requests()[before:] {
		ok[r.Header.Get("Webhook-Id")]++
		if r.Status != http.StatusOK {
			t.Errorf("after recover the receiver answered %d", r.Status)
		}
	}
	for _, id := range failedIDs {
		if ok[id] != 1 {
			t.Errorf("event %s sent %d times after recover, want once", id, ok[id])
		}
	}
	if len(ok) != len(failedIDs) {
		t.Errorf("after recover the receiver got %v, want exactly the 4 failed events %v (not %v, delivered, nor %v, failed before T)", ok, failedIDs, delivered, old)
	}
	if n := crm.Distinct(); n != 7 {
		t.Errorf("crm got %d distinct events, want the 7 ingested: recover is for default only", n)
	}

	// The event's story now ends with the success.
	waitAttempts(a, "endpoint=default&status=succeeded&since="+since, 4)
	code, body := log.api(t, a, http.MethodGet, "/api/events/"+failedIDs[1], nil)
	var rec struct {
		ID       string         `json:"id"`
		Attempts []adminAttempt `json:"attempts"`
	}
	if err := json.Unmarshal(body, &rec); code != http.StatusOK || err != nil || rec.ID != failedIDs[1] {
		t.Fatalf("GET /api/events: %d %v %s", code, err, body)
	}
	var statuses []int
	for _, at := range rec.Attempts {
		if at.Endpoint == "default" {
			statuses = append(statuses, at.Status)
		}
	}
	if !slices.Equal(statuses, []int{200, 503, 503}) {
		t.Errorf("default's attempts of %s, newest first: statuses %v, want [200 503 503]", failedIDs[1], statuses)
	}

	// memhook dlq through the API: the old one is listed; purge empties.
	var lines []dlqLine
	for _, l := range strings.Split(strings.TrimSpace(log.cli(t, a, "dlq", "list", "--json", "--endpoint", "default")), "\n") {
		var d dlqLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("dlq list --json line %q: %v", l, err)
		}
		lines = append(lines, d)
	}
	if !slices.ContainsFunc(lines, func(d dlqLine) bool { return d.ID == old[0] && d.Endpoint == "default" && d.Attempts == 2 }) {
		t.Errorf("memhook dlq list through the API: %+v, want the event that failed before T", lines)
	}
	if out := log.cli(t, b, "dlq", "purge", "--endpoint", "default"); !strings.HasPrefix(out, "purged ") || out == "purged 0\n" {
		t.Errorf("memhook dlq purge: %q", out)
	}
	if out := log.cli(t, a, "dlq", "list", "--json"); strings.TrimSpace(out) != "" {
		t.Errorf("dead letters left after purge: %s", out)
	}

	// Every other route, for the secrets check.
	for _, s := range []*server{a, b} {
		for _, p := range []string{"/api/endpoints", "/api/attempts?limit=1000", "/api/dlq", "/api/openapi.json"} {
			if code, body := log.api(t, s, http.MethodGet, p, nil); code != http.StatusOK {
				t.Errorf("GET %s: %d %s", p, code, body)
			}
		}
	}
	log.cli(t, a, "endpoints")
	log.cli(t, a, "attempts")
	for _, name := range append(slices.Clone(secretVars), "CRM_SECRET", "CRM_TOKEN") {
		v := e[name]
		if v == "" {
			continue
		}
		for _, part := range append([]string{v}, strings.Fields(strings.ReplaceAll(strings.TrimPrefix(v, "whsec_"), ",", " "))...) {
			if strings.Contains(log.String(), part) {
				t.Errorf("an admin API answer or command output holds %s's value", name)
			}
		}
	}
	if !strings.Contains(log.String(), `"url":"`+rcv.URL) {
		t.Error("the endpoints' URLs are not in the answers: the secrets check saw too little")
	}
}
