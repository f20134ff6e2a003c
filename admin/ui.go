package admin

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/redact"
)

// UIPath is where `memhook serve` mounts the dashboard: every path
// NewUI's handler answers starts with it.
const UIPath = "/ui/"

// The success rate on the endpoints page counts the attempts started in
// the last RateWindow, at most RateScan of them per endpoint (the newest):
// a bounded scan of the attempt log, as the page says.
const (
	RateWindow = time.Hour
	RateScan   = 1000
)

// Page sizes of the dashboard's lists.
const (
	attemptsPerPage    = 50
	deadLettersPerPage = 100
	maxFormBytes       = 64 << 10
	maxPayloadShown    = 4 << 10
)

// ErrNoAdminToken is returned by NewUI for an empty admin token: the
// dashboard is never open to anyone.
var ErrNoAdminToken = errors.New("admin: the dashboard needs an admin token (MEMHOOK_ADMIN_TOKEN)")

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/*.css
var staticFS embed.FS

// source is what the dashboard reads and does: the API's Bus, and the
// configuration whose secrets it keeps off its pages. *bus.Bus is one.
type source interface {
	Bus
	Config() bus.Config
}

var _ source = (*bus.Bus)(nil)

type ui struct {
	b      source
	s      *sessions
	log    *slog.Logger
	pages  map[string]*template.Template
	cop    *http.CrossOriginProtection
	scrub  *strings.Replacer
	now    func() time.Time
	static http.Handler

	failMu   sync.Mutex
	failures []time.Time // refused logins within loginWindow, oldest first
}

// At most loginFailures logins are refused within loginWindow: past them
// the login form answers 429, without looking at the token, until the
// oldest leaves the window — a guessing attack gets ten tries a minute.
// The API's bearer token (and the CLI) are not affected.
const (
	loginFailures = 10
	loginWindow   = time.Minute
)

// loginLockedFor returns how long logins stay refused: 0 when they are
// not.
func (u *ui) loginLockedFor() time.Duration {
	u.failMu.Lock()
	defer u.failMu.Unlock()
	now := u.now()
	for len(u.failures) > 0 && now.Sub(u.failures[0]) >= loginWindow {
		u.failures = u.failures[1:]
	}
	if len(u.failures) < loginFailures {
		return 0
	}
	return loginWindow - now.Sub(u.failures[0])
}

func (u *ui) loginFailed() {
	u.failMu.Lock()
	u.failures = append(u.failures, u.now())
	u.failMu.Unlock()
}

// NewUI returns the dashboard of b: server-rendered HTML pages under
// UIPath (endpoints with their state, success rate and backlog, with
// pause and resume; recent failed attempts; one event's attempts; the
// dead-letter queue with replay and recover), usable without JavaScript.
//
// Every page but the login form asks for a session: POST UIPath+"login"
// with the admin token sets an HttpOnly, SameSite=Strict cookie holding a
// value derived from it (see SessionLifetime), never the token. Every
// action is a POST that must come from the dashboard's own pages: same
// origin (Sec-Fetch-Site, Origin, Referer) and the session's CSRF token
// in the form. No page shows a secret or a token: URLs are the bus's
// redacted ones, and the configured tokens and secrets are scrubbed from
// receivers' answers. It returns ErrNoAdminToken for an empty adminToken.
// log nil means slog.Default().
func NewUI(b *bus.Bus, adminToken string, log *slog.Logger) (http.Handler, error) {
	if b == nil {
		return nil, errors.New("admin: NewUI needs a bus")
	}
	return newUI(b, adminToken, log)
}

func newUI(b source, adminToken string, log *slog.Logger) (http.Handler, error) {
	if adminToken == "" {
		return nil, ErrNoAdminToken
	}
	if log == nil {
		log = slog.Default()
	}
	s, err := newSessions(adminToken, time.Now)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u := &ui{
		b: b, s: s, log: log, pages: pages, cop: http.NewCrossOriginProtection(),
		scrub: scrubber(b.Config(), adminToken), now: time.Now,
		static: http.StripPrefix(UIPath+"static/", http.FileServerFS(sub)),
	}
	return u.routes(), nil
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"ms":   func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" },
		"path": url.PathEscape,
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/attempt_table.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "endpoints", "attempts", "event", "dlq", "message"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// scrubber replaces every token and secret of cfg, and the admin token,
// with REDACTED.
func scrubber(cfg bus.Config, adminToken string) *strings.Replacer {
	tokens := []string{adminToken, cfg.Token, cfg.IngestToken}
	secrets := []string{cfg.Secret, cfg.IngestSecret}
	for _, e := range cfg.Endpoints {
		tokens, secrets = append(tokens, e.Token), append(secrets, e.Secret)
	}
	return redact.Credentials(tokens, secrets)
}

func (u *ui) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+UIPath+"static/", u.static)
	mux.HandleFunc("GET "+UIPath+"login", u.loginForm)
	mux.HandleFunc("POST "+UIPath+"login", u.login)
	mux.Handle("POST "+UIPath+"logout", u.post(u.logout))
	mux.Handle("GET "+UIPath+"{$}", u.get(u.endpoints))
	mux.Handle("POST "+UIPath+"endpoints/{name}/pause", u.post(u.setState(true)))
	mux.Handle("POST "+UIPath+"endpoints/{name}/resume", u.post(u.setState(false)))
	mux.Handle("GET "+UIPath+"attempts", u.get(u.attempts))
	mux.Handle("GET "+UIPath+"events", u.get(u.eventLookup))
	mux.Handle("GET "+UIPath+"events/{id}", u.get(u.event))
	mux.Handle("GET "+UIPath+"dlq", u.get(u.dlq))
	mux.Handle("POST "+UIPath+"dlq/replay", u.post(u.replay))
	mux.Handle("POST "+UIPath+"dlq/recover", u.post(u.recover))
	mux.Handle(UIPath, u.get(func(w http.ResponseWriter, r *http.Request, p *page) {
		p.Title, p.Error = "Not found", "Nothing at "+r.URL.Path+"."
		u.render(w, http.StatusNotFound, "message", p)
	}))
	return headers(mux)
}

// headers sets what every answer of the dashboard carries: no caching, no
// framing, no script, no resource from elsewhere.
func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, UIPath+"static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	CSRF    string // empty on the login form: no session yet
	Flash   string
	Error   string
	Content any

	session string
}

type pageFunc func(w http.ResponseWriter, r *http.Request, p *page)

// get serves h to a request with a session; one without is sent to the
// login form, which brings it back.
func (u *ui) get(h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := u.s.check(r)
		if err != nil {
			http.Redirect(w, r, UIPath+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		p := &page{CSRF: u.s.csrf(sess), session: sess}
		if c, err := r.Cookie(flashCookie); err == nil {
			if msg, err := b64.DecodeString(c.Value); err == nil {
				p.Flash = string(msg)
			}
			http.SetCookie(w, cookie(r, flashCookie, "", -1))
		}
		h(w, r, p)
	})
}

// post serves h to a form posted from the dashboard: a session, the same
// origin and the session's CSRF token; anything else is refused with 403.
func (u *ui) post(h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := u.s.check(r)
		if err != nil {
			u.refuse(w, r, "You are not logged in (or your session expired).")
			return
		}
		p := &page{CSRF: u.s.csrf(sess), session: sess}
		if !sameOrigin(u.cop, r) {
			u.refuse(w, r, "This form was posted from another site.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			p.Title, p.Error = "Bad request", "The form could not be read."
			u.render(w, http.StatusBadRequest, "message", p)
			return
		}
		if !u.s.csrfOK(sess, r.PostFormValue("csrf")) {
			u.refuse(w, r, "The form's CSRF token is missing or wrong: reload the page and try again.")
			return
		}
		h(w, r, p)
	})
}

func (u *ui) refuse(w http.ResponseWriter, r *http.Request, why string) {
	u.log.Warn("memhook: dashboard: request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", why)
	u.render(w, http.StatusForbidden, "message", &page{Title: "Refused", Error: why})
}

// done ends an action: the message shows on the next page, where the
// browser is sent (POST, redirect, GET).
func (u *ui) done(w http.ResponseWriter, r *http.Request, to, msg string) {
	http.SetCookie(w, cookie(r, flashCookie, b64.EncodeToString([]byte(msg)), time.Minute))
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (u *ui) render(w http.ResponseWriter, status int, name string, p *page) {
	var buf bytes.Buffer
	if err := u.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		u.log.Error("memhook: dashboard: rendering", "page", name, "error", err.Error())
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// failed shows an error of the bus on the page's place.
func (u *ui) failed(w http.ResponseWriter, p *page, what string, err error) {
	u.log.Error("memhook: dashboard: "+what, "error", err.Error())
	p.Title, p.Error = "Error", what+": "+u.scrub.Replace(err.Error())
	u.render(w, http.StatusInternalServerError, "message", p)
}

// safeNext keeps a redirect after login on the dashboard.
func safeNext(next string) string {
	if !strings.HasPrefix(next, UIPath) || strings.Contains(next, "..") || strings.ContainsAny(next, "\\\r\n") {
		return UIPath
	}
	return next
}

type loginData struct {
	Next string
}

func (u *ui) loginForm(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Log in", Content: loginData{Next: safeNext(r.URL.Query().Get("next"))}}
	u.render(w, http.StatusOK, "login", p)
}

func (u *ui) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(u.cop, r) {
		u.refuse(w, r, "This form was posted from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		u.render(w, http.StatusBadRequest, "message", &page{Title: "Bad request", Error: "The form could not be read."})
		return
	}
	next := safeNext(r.PostFormValue("next"))
	if wait := u.loginLockedFor(); wait > 0 {
		secs := int(wait.Round(time.Second) / time.Second)
		u.log.Warn("memhook: dashboard: login refused: too many wrong tokens", "remote", r.RemoteAddr, "retry_in", wait.Round(time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		p := &page{Title: "Log in", Error: fmt.Sprintf("Too many wrong tokens: logins are refused for %d s.", max(secs, 1)), Content: loginData{Next: next}}
		u.render(w, http.StatusTooManyRequests, "login", p)
		return
	}
	if !u.s.tokenOK(r.PostFormValue("token")) {
		u.loginFailed()
		u.log.Warn("memhook: dashboard: login refused: wrong admin token", "remote", r.RemoteAddr)
		p := &page{Title: "Log in", Error: "Wrong token.", Content: loginData{Next: next}}
		u.render(w, http.StatusUnauthorized, "login", p)
		return
	}
	sess, err := u.s.issue()
	if err != nil {
		u.failed(w, &page{}, "starting a session", err)
		return
	}
	u.log.Info("memhook: dashboard: logged in", "remote", r.RemoteAddr)
	http.SetCookie(w, cookie(r, SessionCookie, sess, SessionLifetime))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *ui) logout(w http.ResponseWriter, r *http.Request, _ *page) {
	http.SetCookie(w, cookie(r, SessionCookie, "", -1))
	http.Redirect(w, r, UIPath+"login", http.StatusSeeOther)
}

// endpointRow is one line of the endpoints page.
type endpointRow struct {
	bus.EndpointStats
	Rate string // "97.5 %", "—" without attempts, "?" when unknown
	Of   string // "39 of 40", "≥ … of the newest 1 000"
}

type endpointsData struct {
	Endpoints []endpointRow
	Window    string
	Scan      int
}

func (u *ui) endpoints(w http.ResponseWriter, r *http.Request, p *page) {
	d := endpointsData{Window: "hour", Scan: RateScan}
	since := u.now().Add(-RateWindow)
	for _, e := range u.b.EndpointStats() {
		e.LastError = u.scrub.Replace(e.LastError)
		row := endpointRow{EndpointStats: e, Rate: "—"}
		pg, err := u.b.Attempts(r.Context(), bus.AttemptFilter{Endpoint: e.Name, Since: since, Limit: RateScan})
		switch {
		case err != nil:
			u.log.Warn("memhook: dashboard: reading the attempt log", "endpoint", e.Name, "error", err.Error())
			row.Rate = "?"
		case len(pg.Attempts) > 0:
			ok := 0
			for _, a := range pg.Attempts {
				if a.Succeeded {
					ok++
				}
			}
			row.Rate = strconv.FormatFloat(100*float64(ok)/float64(len(pg.Attempts)), 'f', 1, 64) + " %"
			row.Of = fmt.Sprintf("%d of %d", ok, len(pg.Attempts))
			if pg.Next != "" {
				row.Of += " (the newest)"
			}
		}
		d.Endpoints = append(d.Endpoints, row)
	}
	p.Title, p.Nav, p.Content = "Endpoints", "endpoints", d
	u.render(w, http.StatusOK, "endpoints", p)
}

func (u *ui) setState(pause bool) pageFunc {
	return func(w http.ResponseWriter, r *http.Request, p *page) {
		name := r.PathValue("name")
		var err error
		verb := "resumed"
		if pause {
			verb = "paused"
			err = u.b.PauseEndpoint(r.Context(), name)
		} else {
			err = u.b.ResumeEndpoint(r.Context(), name)
		}
		if errors.Is(err, bus.ErrUnknownEndpoint) {
			p.Title, p.Error = "Not found", fmt.Sprintf("No endpoint named %q.", name)
			u.render(w, http.StatusNotFound, "message", p)
			return
		}
		if err != nil {
			u.failed(w, p, "endpoint "+name, err)
			return
		}
		u.log.Info("memhook: dashboard: endpoint "+verb, "endpoint", name)
		u.done(w, r, UIPath, fmt.Sprintf("Endpoint %s %s.", name, verb))
	}
}

// attemptRow is an attempt as a page shows it.
type attemptRow struct {
	bus.Attempt
	Outcome string // "200", "503", "timeout" …
}

func (u *ui) rows(as []bus.Attempt) []attemptRow {
	out := make([]attemptRow, len(as))
	for i, a := range as {
		a.Error = u.scrub.Replace(a.Error)
		a.Response = u.scrub.Replace(a.Response)
		row := attemptRow{Attempt: a, Outcome: a.ErrorClass}
		if a.Status != 0 {
			row.Outcome = strconv.Itoa(a.Status)
		}
		if row.Outcome == "" {
			row.Outcome = "ok"
		}
		out[i] = row
	}
	return out
}

type attemptsData struct {
	Endpoint  string
	Status    string
	Endpoints []string
	Attempts  []attemptRow
	Next      string // query of the next page, "" on the last
}

func (u *ui) endpointNames() []string {
	var names []string
	for _, e := range u.b.EndpointStats() {
		names = append(names, e.Name)
	}
	return names
}

func (u *ui) attempts(w http.ResponseWriter, r *http.Request, p *page) {
	q := r.URL.Query()
	d := attemptsData{Endpoint: q.Get("endpoint"), Status: q.Get("status"), Endpoints: u.endpointNames()}
	switch d.Status {
	case "":
		d.Status = "failed"
	case "failed", "succeeded", "all":
	default:
		p.Title, p.Error = "Bad request", "status must be failed, succeeded or all."
		u.render(w, http.StatusBadRequest, "message", p)
		return
	}
	f := bus.AttemptFilter{Endpoint: d.Endpoint, Status: d.Status, Limit: attemptsPerPage, Cursor: q.Get("cursor")}
	if f.Status == "all" {
		f.Status = ""
	}
	pg, err := u.b.Attempts(r.Context(), f)
	if err != nil {
		u.failed(w, p, "reading the attempt log", err)
		return
	}
	d.Attempts = u.rows(pg.Attempts)
	if pg.Next != "" {
		d.Next = url.Values{"endpoint": {d.Endpoint}, "status": {d.Status}, "cursor": {pg.Next}}.Encode()
	}
	p.Title, p.Nav, p.Content = "Attempts", "attempts", d
	u.render(w, http.StatusOK, "attempts", p)
}

func (u *ui) eventLookup(w http.ResponseWriter, r *http.Request, p *page) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	if id == "" {
		http.Redirect(w, r, UIPath+"attempts", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, UIPath+"events/"+url.PathEscape(id), http.StatusSeeOther)
}

type eventData struct {
	ID          string
	Type        string
	User        string
	DeliveredTo []string
	Attempts    []attemptRow
	Envelope    string // while a store holds it
}

func (u *ui) event(w http.ResponseWriter, r *http.Request, p *page) {
	id := r.PathValue("id")
	as, err := u.b.EventAttempts(r.Context(), id)
	if err != nil && !errors.Is(err, bus.ErrUnknownEvent) {
		u.failed(w, p, "reading the attempt log", err)
		return
	}
	d := eventData{ID: id, Attempts: u.rows(as)}
	if rec, err := u.b.Event(r.Context(), id); err == nil && len(rec.Envelope) > 0 {
		d.Envelope = u.scrub.Replace(string(rec.Envelope))
	}
	if len(as) == 0 && d.Envelope == "" {
		p.Title, p.Error = "Not found", fmt.Sprintf("Nothing is known of event %q (the attempt log keeps the newest attempts only).", id)
		u.render(w, http.StatusNotFound, "message", p)
		return
	}
	if len(as) > 0 {
		d.Type, d.User = as[0].EventType, as[0].UserID
	}
	seen := map[string]bool{}
	for _, a := range as {
		if a.Succeeded && !seen[a.Endpoint] {
			seen[a.Endpoint] = true
			d.DeliveredTo = append(d.DeliveredTo, a.Endpoint)
		}
	}
	sort.Strings(d.DeliveredTo)
	p.Title, p.Content = "Event "+id, d
	u.render(w, http.StatusOK, "event", p)
}

type deadLetterRow struct {
	bus.DeadLetter
	Payload   string
	Truncated bool
}

type dlqData struct {
	Endpoint  string
	Endpoints []string
	Letters   []deadLetterRow
	Since     string // the recover form's default: an hour ago
	Full      bool   // a page's worth: there may be more
}

func (u *ui) dlq(w http.ResponseWriter, r *http.Request, p *page) {
	d := dlqData{Endpoint: r.URL.Query().Get("endpoint"), Endpoints: u.endpointNames(),
		Since: u.now().Add(-time.Hour).UTC().Format(time.RFC3339)}
	ls, err := u.b.DeadLetters(r.Context(), bus.DeadLetterFilter{Endpoint: d.Endpoint, Limit: deadLettersPerPage})
	if err != nil {
		u.failed(w, p, "reading the dead-letter queue", err)
		return
	}
	d.Full = len(ls) >= deadLettersPerPage
	for _, l := range ls {
		row := deadLetterRow{DeadLetter: l, Payload: string(l.Payload)}
		if len(row.Payload) > maxPayloadShown {
			row.Payload, row.Truncated = row.Payload[:maxPayloadShown], true
		}
		row.Payload = u.scrub.Replace(row.Payload)
		row.Reason = u.scrub.Replace(row.Reason)
		d.Letters = append(d.Letters, row)
	}
	p.Title, p.Nav, p.Content = "Dead letters", "dlq", d
	u.render(w, http.StatusOK, "dlq", p)
}

func dlqPage(endpoint string) string {
	if endpoint == "" {
		return UIPath + "dlq"
	}
	return UIPath + "dlq?" + url.Values{"endpoint": {endpoint}}.Encode()
}

func (u *ui) replay(w http.ResponseWriter, r *http.Request, p *page) {
	back := dlqPage(r.PostFormValue("endpoint"))
	ids := r.PostForm["id"]
	if one := r.PostFormValue("one"); one != "" {
		ids = []string{one}
	}
	if len(ids) == 0 {
		u.done(w, r, back, "Nothing selected: tick the dead letters to replay.")
		return
	}
	n, err := u.b.Replay(r.Context(), ids)
	msg := fmt.Sprintf("Replayed %d of %d dead letters.", n, len(ids))
	if unknown := onlyUnknown(err); unknown != nil {
		msg += fmt.Sprintf(" Not in the queue (replayed or purged already): %s.", strings.Join(unknown.IDs, ", "))
	} else if err != nil {
		u.failed(w, p, "replaying", err)
		return
	}
	u.log.Info("memhook: dashboard: dead letters replayed", "asked", len(ids), "replayed", n)
	u.done(w, r, back, msg)
}

// parseSince reads the recover form's time: RFC 3339, a UTC time without
// zone ("2026-12-01 14:00"), or a duration ago ("30m", "2h").
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since %q: not an RFC 3339 time, a UTC time (2006-01-02 15:04) or a duration ago (30m)", v)
}

func (u *ui) recover(w http.ResponseWriter, r *http.Request, p *page) {
	name := r.PostFormValue("endpoint")
	since, err := parseSince(r.PostFormValue("since"), u.now())
	if err != nil {
		p.Title, p.Error = "Bad request", err.Error()
		u.render(w, http.StatusBadRequest, "message", p)
		return
	}
	n, err := u.b.RecoverEndpoint(r.Context(), name, since)
	if errors.Is(err, bus.ErrUnknownEndpoint) {
		p.Title, p.Error = "Not found", fmt.Sprintf("No endpoint named %q.", name)
		u.render(w, http.StatusNotFound, "message", p)
		return
	}
	if err != nil {
		u.failed(w, p, "recovering "+name, err)
		return
	}
	u.log.Info("memhook: dashboard: endpoint recovered", "endpoint", name, "since", since, "sent", n)
	u.done(w, r, dlqPage(name), fmt.Sprintf("Sent %d events again to %s (poisoned since %s).", n, name, since.UTC().Format(time.RFC3339)))
}
