package browser_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var screenshot = flag.String("screenshot", "", "write a screenshot of the endpoints page to this PNG file (docs/dashboard.png: -screenshot ../../docs/dashboard.png)")

const adminToken = "browser-admin-T0ken-8fQz"

// chromium finds the browser; without one the test skips, except in CI
// (CI=true), where a missing install step must show.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH (CI=true): install the Debian package chromium (.ci/run does)")
	}
	t.Skip("no chromium on PATH: install the Debian package chromium to run the browser test")
	return ""
}

// receiver is a webhook receiver on loopback: 503 while down, 200 when
// up; it keeps the bodies it accepted.
type receiver struct {
	*httptest.Server
	up       atomic.Bool
	mu       sync.Mutex
	accepted []string
	changed  chan struct{}
}

func newReceiver(t *testing.T, up bool) *receiver {
	r := &receiver{changed: make(chan struct{}, 1)}
	r.up.Store(up)
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if !r.up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "receiver down for maintenance")
			return
		}
		r.mu.Lock()
		r.accepted = append(r.accepted, string(body))
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// waitAccepted waits up to timeout for a body holding s.
func (r *receiver) waitAccepted(s string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for _, b := range r.accepted {
			if strings.Contains(b, s) {
				r.mu.Unlock()
				return true
			}
		}
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-deadline:
			return false
		}
	}
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// syncBuffer holds serve's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe builds memhook and runs `memhook serve` on a free loopback
// port with env; it returns the base URL once /healthz answers.
func startServe(t *testing.T, env ...string) (string, *syncBuffer) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "memhook")
	build := exec.Command("go", "build", "-o", bin, "./cmd/memhook")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "MEMHOOK_ADDR=" + addr}, env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("memhook serve's log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, logs
			}
		}
		select {
		case <-done:
			t.Fatalf("memhook serve exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("memhook serve not up in 15 s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ingest(t *testing.T, base, id string) {
	t.Helper()
	body := fmt.Sprintf(`{"event":"memory_added","user_id":"u-browser","data":{"memory_id":"m-%s","content":"seen in a browser"},"timestamp":"2026-12-01T10:30:00Z","id":%q}`, id, id)
	resp, err := http.Post(base+"/ingest", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("ingest: %d %s", resp.StatusCode, b)
	}
}

// deadLetters counts the event ids of the dead-letter queue, through the
// admin API.
func deadLetters(t *testing.T, base string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/dlq?endpoint=default", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Count(string(b), `"event_id"`)
}

// TestDashboard logs in through the form, sees the failing endpoint, its
// failed attempts and its dead letters, brings the receiver back, presses
// replay and sees the event delivered: at the receiver and on the page.
func TestDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("builds memhook and starts chromium: not in -short")
	}
	exe := chromium(t)
	down := newReceiver(t, false)
	crm := newReceiver(t, true)
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	if err := os.WriteFile(file, []byte("endpoints:\n  - name: crm\n    url: "+crm.URL+"/hooks/memory\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := startServe(t,
		"MEM0_WEBHOOK_URL="+down.URL+"/webhook",
		"MEM0_WEBHOOK_SECRET=whsec_bmV3IHNlY3JldCBvZiB0aGUgZGVmYXVsdA==",
		"MEM0_WEBHOOK_RETRY_COUNT=0", // straight to the dead-letter queue
		"MEMHOOK_PAUSE_AFTER=0",      // never paused: every event is attempted
		"MEMHOOK_ADMIN_TOKEN="+adminToken,
		"MEMHOOK_ENDPOINTS_FILE="+file,
	)
	ids := []string{uuid(), uuid(), uuid()}
	for _, id := range ids {
		ingest(t, base, id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for deadLetters(t, base) < len(ids) {
		if time.Now().After(deadline) {
			t.Fatalf("the dead-letter queue did not get the %d events in 10 s", len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range ids {
		if !crm.waitAccepted(id, 10*time.Second) {
			t.Fatalf("crm did not get %s", id)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1400, 600),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx); err != nil { // starts the browser: not under a timeout (see chromedp.Run)
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(bctx, 60*time.Second)
	defer cancelT()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	location := func() string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Any page asks for the login first, and comes back to it.
	do("open the dashboard", chromedp.Navigate(base+"/ui/dlq"), chromedp.WaitVisible(chromedp.ID("token")))
	if loc := location(); !strings.HasPrefix(loc, base+"/ui/login") {
		t.Fatalf("not sent to the login form: %s", loc)
	}
	do("a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(".error")))
	if got := text(".error"); !strings.Contains(got, "Wrong token") {
		t.Fatalf("wrong token: %q", got)
	}
	do("log in",
		chromedp.SendKeys(chromedp.ID("token"), adminToken),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("dlq")))
	if loc := location(); loc != base+"/ui/dlq" {
		t.Fatalf("after login at %s, want the page asked for", loc)
	}

	// The endpoints page: default failing, crm healthy.
	do("endpoints page", chromedp.Click(chromedp.CSS(`nav a[href="/ui/"]`)), chromedp.WaitVisible(chromedp.ID("endpoints")))
	if row := text(`tr[data-endpoint="default"]`); !strings.Contains(row, "0.0 %") || !strings.Contains(row, "active") {
		t.Errorf("default's row does not show it failing: %q", row)
	}
	if row := text(`tr[data-endpoint="crm"]`); !strings.Contains(row, "100.0 %") {
		t.Errorf("crm's row does not show it healthy: %q", row)
	}
	if *screenshot != "" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The failed attempts: the receiver's 503 and what it said.
	do("failed attempts", chromedp.Click(chromedp.CSS(`nav a[href="/ui/attempts"]`)), chromedp.WaitVisible(chromedp.ID("attempts")))
	got := text("#attempts")
	for _, want := range []string{"503", "receiver down for maintenance", ids[0]} {
		if !strings.Contains(got, want) {
			t.Errorf("failed attempts page lacks %q:\n%s", want, got)
		}
	}

	// The dead letters; the receiver back; replay one.
	do("dead letters", chromedp.Click(chromedp.CSS(`nav a[href="/ui/dlq"]`)), chromedp.WaitVisible(chromedp.ID("dlq")))
	rows, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#dlq tr[data-event]")))
	if err != nil || len(rows) != len(ids) {
		t.Fatalf("dead-letter page shows %d entries (%v), want %d:\n%s", len(rows), err, len(ids), text("#dlq"))
	}
	target := ids[1]
	down.up.Store(true)
	do("replay",
		chromedp.Click(chromedp.CSS(`tr[data-event="`+target+`"] button.replay`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(".flash"); !strings.Contains(got, "Replayed 1 of 1") {
		t.Fatalf("after replay: %q", got)
	}
	if !down.waitAccepted(target, 10*time.Second) {
		t.Fatalf("the receiver did not get the replayed event %s", target)
	}
	for _, other := range []string{ids[0], ids[2]} {
		if down.waitAccepted(other, 0) {
			t.Errorf("%s was delivered without being replayed", other)
		}
	}

	// The event's page shows it delivered (the attempt log is written off
	// the delivery path: reload until it shows, bounded).
	deadline = time.Now().Add(10 * time.Second)
	for {
		do("event page", chromedp.Navigate(base+"/ui/events/"+target), chromedp.WaitVisible(chromedp.ID("delivered")))
		if got := text("#delivered"); strings.Contains(got, "default") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("event page: delivered to %q, want default", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := text("#attempts"); !strings.Contains(got, "503") || !strings.Contains(got, "200") {
		t.Errorf("event page lacks the failed and the delivered attempt:\n%s", got)
	}
	if strings.Contains(logs.String(), adminToken) {
		t.Error("serve logged the admin token")
	}
}
