package admin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// The uiSecrets of the uiFixture: none may appear on any page.
const (
	uiAdminToken    = "adm1n-t0ken-Xq7PzL2"
	uiWebhookToken  = "hook-bearer-Kd82mQw"
	uiWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	uiCRMToken      = "crm-bearer-Zp4nV6s"
	uiCRMSecret     = "whsec_bmV3IHNlY3JldCBvZiB0aGUgY3Jt"
	uiURLKey        = "url-query-key-77Hq"
)

var uiSecrets = []string{uiAdminToken, uiWebhookToken, uiWebhookSecret, strings.TrimPrefix(uiWebhookSecret, "whsec_"), uiCRMToken, uiCRMSecret, uiURLKey}

// uiFixture is a real bus on memory delivering to a receiver on loopback
// that fails (503, echoing the request's headers in its body, as a
// careless receiver does) until up is set, with the dashboard in front.
type uiFixture struct {
	b    *bus.Bus
	rcv  *receiver.Receiver
	up   *atomic.Bool
	srv  *httptest.Server
	logs *uiLogs
}

func newUIFixture(t *testing.T) *uiFixture {
	t.Helper()
	up := &atomic.Bool{}
	rcv, err := receiver.Start(func(w http.ResponseWriter, r *http.Request, _ int) int {
		if up.Load() {
			return http.StatusOK
		}
		w.WriteHeader(http.StatusServiceUnavailable) // before the body; the receiver's own WriteHeader is then a no-op
		fmt.Fprintf(w, "down for maintenance; you sent %v", r.Header)
		return http.StatusServiceUnavailable
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	cfg := bus.Config{
		WebhookURL: rcv.URL + "/hook?key=" + uiURLKey,
		Token:      uiWebhookToken,
		Secret:     uiWebhookSecret,
		RetryCount: bus.Disabled,
		PauseAfter: bus.Disabled,
		Endpoints:  []bus.Endpoint{{Name: "crm", URL: rcv.URL + "/crm", Token: uiCRMToken, Secret: uiCRMSecret, LegacySecretHeader: true}},
	}
	b, err := bus.New(cfg, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	logs := &uiLogs{}
	h, err := admin.NewUI(b, uiAdminToken, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &uiFixture{b: b, rcv: rcv, up: up, srv: srv, logs: logs}
}

// uiLogs is a log written by the dashboard's goroutines.
type uiLogs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *uiLogs) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *uiLogs) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// uiClient never follows redirects: the tests look at them.
var uiClient = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type uiAnswer struct {
	status int
	header http.Header
	body   string
}

func (f *uiFixture) do(t *testing.T, method, path string, form url.Values, session string, hdr map[string]string) uiAnswer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if session != "" {
		req.AddCookie(&http.Cookie{Name: admin.SessionCookie, Value: session})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := uiClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return uiAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// login posts the admin token through the form, as a browser does, and
// returns the session cookie's value.
func (f *uiFixture) login(t *testing.T) string {
	t.Helper()
	a := f.do(t, "POST", "/ui/login", url.Values{"token": {uiAdminToken}, "next": {"/ui/"}}, "", map[string]string{"Origin": f.srv.URL})
	if a.status != http.StatusSeeOther {
		t.Fatalf("login: %d, want 303: %s", a.status, a.body)
	}
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == admin.SessionCookie {
			return c.Value
		}
	}
	t.Fatal("login set no session cookie")
	return ""
}

var uiCSRFField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (f *uiFixture) csrf(t *testing.T, session string) string {
	t.Helper()
	a := f.do(t, "GET", "/ui/", nil, session, nil)
	m := uiCSRFField.FindStringSubmatch(a.body)
	if a.status != http.StatusOK || m == nil {
		t.Fatalf("endpoints page: %d, no CSRF field: %s", a.status, a.body)
	}
	return m[1]
}

func TestUILoginRequired(t *testing.T) {
	f := newUIFixture(t)
	other := newUIFixture(t) // same admin token, another process key
	forged := other.login(t)
	for _, path := range []string{"/ui/", "/ui/attempts", "/ui/attempts?status=all", "/ui/dlq", "/ui/events/some-id", "/ui/nothing"} {
		for name, session := range map[string]string{"no cookie": "", "garbage": "abc.def", "another process's": forged, "the token itself": uiAdminToken} {
			t.Run(path+" "+name, func(t *testing.T) {
				a := f.do(t, "GET", path, nil, session, nil)
				if a.status != http.StatusSeeOther {
					t.Fatalf("status %d, want 303", a.status)
				}
				want := "/ui/login?next=" + url.QueryEscape(path)
				if got := a.header.Get("Location"); got != want {
					t.Fatalf("Location %q, want %q", got, want)
				}
			})
		}
	}
	t.Run("login form open", func(t *testing.T) {
		a := f.do(t, "GET", "/ui/login", nil, "", nil)
		if a.status != http.StatusOK || !strings.Contains(a.body, `name="token"`) {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
	})
	t.Run("next kept on the dashboard", func(t *testing.T) {
		for next, want := range map[string]string{"/ui/dlq": "/ui/dlq", "https://evil.example/": "/ui/", "//evil.example/ui/": "/ui/", "/api/endpoints": "/ui/", "/ui/../api/endpoints": "/ui/"} {
			a := f.do(t, "POST", "/ui/login", url.Values{"token": {uiAdminToken}, "next": {next}}, "", nil)
			if got := a.header.Get("Location"); a.status != http.StatusSeeOther || got != want {
				t.Errorf("next %q: %d to %q, want 303 to %q", next, a.status, got, want)
			}
		}
	})
}

func TestUILogin(t *testing.T) {
	f := newUIFixture(t)
	for name, token := range map[string]string{"wrong": "wrong-token", "empty": "", "prefix": uiAdminToken[:5], "longer": uiAdminToken + "x"} {
		t.Run(name+" token refused", func(t *testing.T) {
			a := f.do(t, "POST", "/ui/login", url.Values{"token": {token}}, "", nil)
			if a.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", a.status)
			}
			if len(a.header.Values("Set-Cookie")) != 0 {
				t.Fatalf("cookie set on a refused login: %v", a.header.Values("Set-Cookie"))
			}
			if !strings.Contains(a.body, "Wrong token") {
				t.Fatalf("no reason on the page: %s", a.body)
			}
		})
	}
	t.Run("from another site refused", func(t *testing.T) {
		a := f.do(t, "POST", "/ui/login", url.Values{"token": {uiAdminToken}}, "", map[string]string{"Origin": "https://evil.example"})
		if a.status != http.StatusForbidden || len(a.header.Values("Set-Cookie")) != 0 {
			t.Fatalf("status %d, cookies %v; want 403 and none", a.status, a.header.Values("Set-Cookie"))
		}
	})
	t.Run("right token", func(t *testing.T) {
		a := f.do(t, "POST", "/ui/login", url.Values{"token": {uiAdminToken}}, "", map[string]string{"Origin": f.srv.URL})
		cs := (&http.Response{Header: a.header}).Cookies()
		if a.status != http.StatusSeeOther || len(cs) != 1 {
			t.Fatalf("status %d, cookies %v", a.status, a.header.Values("Set-Cookie"))
		}
		c := cs[0]
		if c.Name != admin.SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != admin.UIPath {
			t.Fatalf("cookie %+v: want %s, HttpOnly, SameSite=Strict, Path %s", c, admin.SessionCookie, admin.UIPath)
		}
		if strings.Contains(c.Value, uiAdminToken) {
			t.Fatal("the cookie holds the token")
		}
		if p := f.do(t, "GET", "/ui/", nil, c.Value, nil); p.status != http.StatusOK {
			t.Fatalf("endpoints page with the session: %d", p.status)
		}
		// Two logins, two sessions, each with its own CSRF token.
		other := f.login(t)
		if other == c.Value || f.csrf(t, other) == f.csrf(t, c.Value) {
			t.Fatal("two logins share a session or a CSRF token")
		}
	})
	t.Run("logout", func(t *testing.T) {
		s := f.login(t)
		a := f.do(t, "POST", "/ui/logout", url.Values{"csrf": {f.csrf(t, s)}}, s, nil)
		if a.status != http.StatusSeeOther || !strings.Contains(strings.Join(a.header.Values("Set-Cookie"), ";"), admin.SessionCookie+"=;") {
			t.Fatalf("logout: %d, %v", a.status, a.header.Values("Set-Cookie"))
		}
	})
	if strings.Contains(f.logs.String(), uiAdminToken) || !strings.Contains(f.logs.String(), "login refused") {
		t.Fatalf("logs: want the refusals, never the token:\n%s", f.logs.String())
	}
}

func uiStateOf(b *bus.Bus, name string) string {
	for _, e := range b.EndpointStats() {
		if e.Name == name {
			return e.State
		}
	}
	return ""
}

func TestUICSRF(t *testing.T) {
	f := newUIFixture(t)
	s := f.login(t)
	csrf := f.csrf(t, s)
	otherCSRF := f.csrf(t, f.login(t))
	same := map[string]string{"Origin": f.srv.URL}
	for _, tc := range []struct {
		name    string
		form    url.Values
		session string
		hdr     map[string]string
	}{
		{"no CSRF token", url.Values{}, s, same},
		{"wrong CSRF token", url.Values{"csrf": {"AAAA"}}, s, same},
		{"another session's CSRF token", url.Values{"csrf": {otherCSRF}}, s, same},
		{"CSRF token without a session", url.Values{"csrf": {csrf}}, "", same},
		{"CSRF token in the query only", nil, s, same},
		{"cross-site Origin", url.Values{"csrf": {csrf}}, s, map[string]string{"Origin": "https://evil.example"}},
		{"cross-site Referer", url.Values{"csrf": {csrf}}, s, map[string]string{"Referer": "https://evil.example/page"}},
		{"cross-site fetch", url.Values{"csrf": {csrf}}, s, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": f.srv.URL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/ui/endpoints/crm/pause"
			form := tc.form
			if form == nil {
				path += "?csrf=" + url.QueryEscape(csrf)
				form = url.Values{}
			}
			a := f.do(t, "POST", path, form, tc.session, tc.hdr)
			if a.status != http.StatusForbidden {
				t.Fatalf("status %d, want 403: %s", a.status, a.body)
			}
			if st := uiStateOf(f.b, "crm"); st != "active" {
				t.Fatalf("refused form acted: crm is %s", st)
			}
		})
	}
	t.Run("GET does not act", func(t *testing.T) {
		f.do(t, "GET", "/ui/endpoints/crm/pause?csrf="+url.QueryEscape(csrf), nil, s, nil)
		if st := uiStateOf(f.b, "crm"); st != "active" {
			t.Fatalf("a GET paused crm: %s", st)
		}
	})
	for name, hdr := range map[string]map[string]string{
		"same Origin":  same,
		"same Referer": {"Referer": f.srv.URL + "/ui/"},
		"no header":    nil,
	} {
		t.Run("valid form, "+name, func(t *testing.T) {
			a := f.do(t, "POST", "/ui/endpoints/crm/pause", url.Values{"csrf": {csrf}}, s, hdr)
			if a.status != http.StatusSeeOther || uiStateOf(f.b, "crm") != "paused" {
				t.Fatalf("pause: %d, crm %s", a.status, uiStateOf(f.b, "crm"))
			}
			// The result shows on the next page, once.
			p := f.do(t, "GET", "/ui/", nil, s, map[string]string{"Cookie": uiCookieHeader(s, a)})
			if !strings.Contains(p.body, "Endpoint crm paused.") {
				t.Fatalf("no flash on the page after pausing:\n%s", p.body)
			}
			a = f.do(t, "POST", "/ui/endpoints/crm/resume", url.Values{"csrf": {csrf}}, s, hdr)
			if a.status != http.StatusSeeOther || uiStateOf(f.b, "crm") != "active" {
				t.Fatalf("resume: %d, crm %s", a.status, uiStateOf(f.b, "crm"))
			}
		})
	}
	t.Run("unknown endpoint", func(t *testing.T) {
		a := f.do(t, "POST", "/ui/endpoints/nope/pause", url.Values{"csrf": {csrf}}, s, same)
		if a.status != http.StatusNotFound {
			t.Fatalf("status %d, want 404", a.status)
		}
	})
}

// uiCookieHeader is the Cookie header of a browser holding session and the
// cookies a set.
func uiCookieHeader(session string, a uiAnswer) string {
	parts := []string{admin.SessionCookie + "=" + session}
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name != admin.SessionCookie && c.MaxAge >= 0 {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; ")
}

// uiWaitFor polls cond every 10 ms for up to 5 s.
func uiWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUIPagesShowNoSecret(t *testing.T) {
	f := newUIFixture(t)
	ctx := context.Background()
	if err := f.b.Emit(ctx, event.Event{Type: event.MemoryAdded, UserID: "u1", Data: map[string]any{"content": "hello"}}); err != nil {
		t.Fatal(err)
	}
	var letters []bus.DeadLetter
	uiWaitFor(t, "both endpoints' dead letters", func() bool {
		var err error
		letters, err = f.b.DeadLetters(ctx, bus.DeadLetterFilter{})
		return err == nil && len(letters) == 2
	})
	s := f.login(t)
	pages := map[string]string{
		"login":      "/ui/login",
		"endpoints":  "/ui/",
		"failed":     "/ui/attempts",
		"all":        "/ui/attempts?status=all",
		"crm failed": "/ui/attempts?endpoint=crm",
		"event":      "/ui/events/" + url.PathEscape(letters[0].EventID),
		"dlq":        "/ui/dlq",
		"crm dlq":    "/ui/dlq?endpoint=crm",
	}
	for name, path := range pages {
		t.Run(name, func(t *testing.T) {
			a := f.do(t, "GET", path, nil, s, nil)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			for _, sec := range uiSecrets {
				if strings.Contains(a.body, sec) {
					t.Errorf("page shows secret %q", sec)
				}
			}
			if strings.Contains(a.body, "<script") {
				t.Error("page has a script")
			}
			if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
		})
	}
	// The pages do show what happened: the receiver's 503 and its uiAnswer
	// (scrubbed), the dead letters, the event.
	failed := f.do(t, "GET", "/ui/attempts", nil, s, nil).body
	for _, want := range []string{"503", "down for maintenance", "REDACTED", letters[0].EventID, "crm", "default"} {
		if !strings.Contains(failed, want) {
			t.Errorf("failed attempts page lacks %q", want)
		}
	}
	dlq := f.do(t, "GET", "/ui/dlq", nil, s, nil).body
	for _, l := range letters {
		if !strings.Contains(dlq, `value="`+l.ID+`"`) {
			t.Errorf("dead-letter page lacks entry %s", l.ID)
		}
	}
}

func TestUIReplay(t *testing.T) {
	f := newUIFixture(t)
	ctx := context.Background()
	if err := f.b.Emit(ctx, event.Event{Type: event.MemoryAdded, UserID: "u1", Data: map[string]any{"content": "hello"}}); err != nil {
		t.Fatal(err)
	}
	var letters []bus.DeadLetter
	uiWaitFor(t, "crm's dead letter", func() bool {
		var err error
		letters, err = f.b.DeadLetters(ctx, bus.DeadLetterFilter{Endpoint: "crm"})
		return err == nil && len(letters) == 1
	})
	s := f.login(t)
	csrf := f.csrf(t, s)
	f.up.Store(true)
	before := f.rcv.Count()
	a := f.do(t, "POST", "/ui/dlq/replay", url.Values{"csrf": {csrf}, "endpoint": {"crm"}, "one": {letters[0].ID}}, s, map[string]string{"Origin": f.srv.URL})
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/dlq?endpoint=crm" {
		t.Fatalf("replay: %d to %q: %s", a.status, a.header.Get("Location"), a.body)
	}
	if err := f.rcv.WaitFor(before+1, 5*time.Second); err != nil {
		t.Fatal("the replayed event did not reach the receiver")
	}
	reqs := f.rcv.Requests()
	if last := reqs[len(reqs)-1]; last.Path != "/crm" || last.Status != http.StatusOK {
		t.Fatalf("last request %s answered %d, want /crm 200", last.Path, last.Status)
	}
	uiWaitFor(t, "the event page to show the delivery", func() bool {
		p := f.do(t, "GET", "/ui/events/"+url.PathEscape(letters[0].EventID), nil, s, nil)
		return p.status == http.StatusOK && regexp.MustCompile(`id="delivered">[^<]*crm`).MatchString(p.body)
	})
	p := f.do(t, "GET", "/ui/dlq?endpoint=crm", nil, s, map[string]string{"Cookie": uiCookieHeader(s, a)})
	if !strings.Contains(p.body, "Replayed 1 of 1 dead letters.") {
		t.Fatalf("no result on the dead-letter page:\n%s", p.body)
	}
	t.Run("nothing selected", func(t *testing.T) {
		a := f.do(t, "POST", "/ui/dlq/replay", url.Values{"csrf": {csrf}}, s, nil)
		p := f.do(t, "GET", "/ui/dlq", nil, s, map[string]string{"Cookie": uiCookieHeader(s, a)})
		if a.status != http.StatusSeeOther || !strings.Contains(p.body, "Nothing selected") {
			t.Fatalf("%d: %s", a.status, p.body)
		}
	})
	t.Run("recover with a bad time", func(t *testing.T) {
		a := f.do(t, "POST", "/ui/dlq/recover", url.Values{"csrf": {csrf}, "endpoint": {"crm"}, "since": {"yesterday"}}, s, nil)
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, "yesterday") {
			t.Fatalf("%d: %s", a.status, a.body)
		}
	})
}

// FuzzUISession: a cookie the dashboard did not issue never opens a page.
func FuzzUISession(f *testing.F) {
	f.Add("abc.def")
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(uiAdminToken)
	f.Fuzz(func(t *testing.T, value string) {
		fx := newUIFixtureOnce(t)
		req := httptest.NewRequest("GET", "/ui/", nil)
		req.AddCookie(&http.Cookie{Name: admin.SessionCookie, Value: value})
		w := httptest.NewRecorder()
		fx.ServeHTTP(w, req)
		if w.Code != http.StatusSeeOther {
			t.Fatalf("cookie %q: status %d, want 303 to the login form", value, w.Code)
		}
	})
}

var (
	onceMu sync.Mutex
	onceUI http.Handler
)

// newUIFixtureOnce is one dashboard for every fuzz input (a bus each
// would be slow); it lives as long as the test binary.
func newUIFixtureOnce(t *testing.T) http.Handler {
	onceMu.Lock()
	defer onceMu.Unlock()
	if onceUI == nil {
		b, err := bus.New(bus.Config{WebhookURL: "http://127.0.0.1:1/hook"}, bus.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		onceUI, err = admin.NewUI(b, uiAdminToken, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
	}
	return onceUI
}

// Past ten refused logins in a minute the login form answers 429 with
// Retry-After, the right token too, without looking at it.
func TestUILoginThrottled(t *testing.T) {
	f := newUIFixture(t)
	for i := range 10 {
		if a := f.do(t, "POST", "/ui/login", url.Values{"token": {"wrong-token"}}, "", nil); a.status != http.StatusUnauthorized {
			t.Fatalf("refused login %d: status %d, want 401", i+1, a.status)
		}
	}
	a := f.do(t, "POST", "/ui/login", url.Values{"token": {uiAdminToken}}, "", map[string]string{"Origin": f.srv.URL})
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" || len(a.header.Values("Set-Cookie")) != 0 {
		t.Fatalf("after 10 refusals: status %d, Retry-After %q, cookies %v; want 429, a Retry-After and no session",
			a.status, a.header.Get("Retry-After"), a.header.Values("Set-Cookie"))
	}
	if !strings.Contains(a.body, "Too many wrong tokens") {
		t.Fatalf("no reason on the page: %s", a.body)
	}
}
