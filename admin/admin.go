// Package admin is the admin API of `memhook serve` (issue #13): JSON
// under /api/, behind the admin bearer token, for what an operator asks —
// the endpoints and their state, the attempt log, one event's story, the
// dead-letter queue — and does: pause, resume, recover, replay, purge.
// GET /api/openapi.json describes every route (openapi.json, embedded).
//
// The API asks the bus through the Bus interface, which *bus.Bus
// implements; it never answers a secret: endpoint URLs come redacted,
// attempts never hold a request header, and bus errors are redacted by
// the bus.
package admin

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/memhook/memhook/bus"
)

// Paths of the admin API.
const (
	// PathPrefix is the prefix of every admin route: the process mounts
	// the handler there.
	PathPrefix = "/api/"
	// PathEndpoints lists the endpoints; PathEndpoints + "/{name}/pause",
	// "/resume" and "/recover" act on one.
	PathEndpoints = "/api/endpoints"
	// PathEvents + "/{id}" is one event with its attempts.
	PathEvents = "/api/events"
	// PathAttempts lists the attempt log, newest first.
	PathAttempts = "/api/attempts"
	// PathDLQ lists (GET) and purges (DELETE) the dead-letter queue.
	PathDLQ = "/api/dlq"
	// PathDLQReplay replays dead letters (POST).
	PathDLQReplay = "/api/dlq/replay"
	// PathOpenAPI is the OpenAPI 3 document of these routes; it answers
	// anyone (it holds no data).
	PathOpenAPI = "/api/openapi.json"
)

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default: a replay of
// 10 000 ids fits.
const DefaultMaxBodyBytes = 1 << 20

// MaxLimit is the largest limit= the list routes take.
const MaxLimit = 1000

// Bus is what the admin API asks of the bus; *bus.Bus implements it.
type Bus interface {
	// EndpointStats lists every endpoint with its state and counters,
	// URLs redacted.
	EndpointStats() []bus.EndpointStats
	// PauseEndpoint and ResumeEndpoint change an endpoint's state; they
	// return an error wrapping bus.ErrUnknownEndpoint for a name the bus
	// does not know.
	PauseEndpoint(ctx context.Context, name string) error
	ResumeEndpoint(ctx context.Context, name string) error
	// RecoverEndpoint sends again, to endpoint only, every event that
	// ended poisoned for it since then, and returns how many.
	RecoverEndpoint(ctx context.Context, endpoint string, since time.Time) (int, error)
	// Attempts returns one page of the attempt log, newest first.
	Attempts(ctx context.Context, f bus.AttemptFilter) (bus.AttemptPage, error)
	// EventAttempts returns the attempts of one event on every endpoint,
	// newest first.
	EventAttempts(ctx context.Context, id string) ([]bus.Attempt, error)
	// Event returns what is known of one event, its envelope while a
	// store holds it; an error wrapping bus.ErrUnknownEvent when none
	// does. The API takes the attempts from EventAttempts.
	Event(ctx context.Context, id string) (bus.EventRecord, error)
	// DeadLetters lists dead letters, oldest first.
	DeadLetters(ctx context.Context, f bus.DeadLetterFilter) ([]bus.DeadLetter, error)
	// Replay sends the dead letters with these ids again, each to the
	// endpoint it failed for, and returns how many.
	Replay(ctx context.Context, ids []string) (int, error)
	// PurgeDeadLetters deletes endpoint's dead letters ("" every
	// endpoint's) and returns how many.
	PurgeDeadLetters(ctx context.Context, endpoint string) (int, error)
}

// Config configures the admin API.
type Config struct {
	// Bus answers every route; required.
	Bus Bus
	// Token, when set, is required as a bearer token by every route but
	// GET /api/openapi.json. Empty lets anyone in (serve allows that on
	// loopback only).
	Token string
	// MaxBodyBytes caps a request body; beyond it the API answers 413. 0
	// means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Bus == nil {
		errs = append(errs, errors.New("admin: Config.Bus is required"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("admin: Config.MaxBodyBytes %d: must not be negative", c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3 document served at PathOpenAPI.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// NewHandler returns the handler of every route under PathPrefix: mount
// it there. A path under /api/ it does not know answers 404, a known path
// with another method 405 with Allow; both in JSON, as every answer.
func NewHandler(cfg Config) (http.Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &api{Config: cfg}
	mux := http.NewServeMux()
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET " + PathEndpoints, a.endpoints},
		{"POST " + PathEndpoints + "/{name}/pause", a.setState(true)},
		{"POST " + PathEndpoints + "/{name}/resume", a.setState(false)},
		{"POST " + PathEndpoints + "/{name}/recover", a.recoverEndpoint},
		{"GET " + PathEvents + "/{id}", a.event},
		{"GET " + PathAttempts, a.attempts},
		{"GET " + PathDLQ, a.deadLetters},
		{"DELETE " + PathDLQ, a.purge},
		{"POST " + PathDLQReplay, a.replay},
	}
	for _, r := range routes {
		mux.Handle(r.pattern, a.auth(r.h))
	}
	mux.HandleFunc("GET "+PathOpenAPI, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	mux.Handle(PathPrefix, a.auth(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, p := mux.Handler(probe); p != PathPrefix {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
			return
		}
		writeError(w, http.StatusNotFound, "no route at "+r.URL.Path)
	}))
	return mux, nil
}

type api struct {
	Config
}

// auth admits a request with the bearer token (compared in constant
// time), as handlers' admin check does; a refusal is logged at WARN
// without the presented credential and answered 401.
func (a *api) auth(next http.HandlerFunc) http.Handler {
	if a.Token == "" {
		return next
	}
	want := []byte("Bearer " + a.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1 {
			next(w, r)
			return
		}
		reason := "missing or wrong bearer token"
		a.Logger.Warn("memhook: request refused", "path", r.URL.Path, "realm", "admin", "remote", r.RemoteAddr, "reason", reason)
		w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
		writeError(w, http.StatusUnauthorized, reason)
	})
}

func (a *api) endpoints(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"endpoints": a.Bus.EndpointStats()})
}

func (a *api) setState(pause bool) http.HandlerFunc {
	verb := "resume"
	if pause {
		verb = "pause"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var err error
		if pause {
			err = a.Bus.PauseEndpoint(r.Context(), name)
		} else {
			err = a.Bus.ResumeEndpoint(r.Context(), name)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": verb + "d", "endpoint": name})
	}
}

// known reports whether the bus has an endpoint named name.
func (a *api) known(name string) bool {
	for _, e := range a.Bus.EndpointStats() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// RecoverRequest is the body of POST /api/endpoints/{name}/recover.
type RecoverRequest struct {
	// Since is required: every event poisoned for the endpoint at or
	// after it is sent again.
	Since string `json:"since"`
}

func (a *api) recoverEndpoint(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req RecoverRequest
	if !a.readBody(w, r, &req) {
		return
	}
	if req.Since == "" {
		writeError(w, http.StatusBadRequest, `since: required (an RFC 3339 time, e.g. "2024-01-15T14:00:00Z")`)
		return
	}
	since, err := parseTime("since", req.Since)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.known(name) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint named %q", name))
		return
	}
	n, err := a.Bus.RecoverEndpoint(r.Context(), name, since)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"recovered": n})
}

func (a *api) event(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	attempts, err := a.Bus.EventAttempts(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.Bus.Event(r.Context(), id)
	switch {
	case errors.Is(err, bus.ErrUnknownEvent):
		rec = bus.EventRecord{}
	case err != nil:
		a.fail(w, r, err)
		return
	}
	rec.ID = id
	if len(attempts) > 0 || rec.Attempts == nil {
		rec.Attempts = attempts
	}
	if rec.Attempts == nil {
		rec.Attempts = []bus.Attempt{}
	}
	if len(rec.Attempts) == 0 && rec.Envelope == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no event with id %q in the attempt log or the dead-letter queue", id))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (a *api) attempts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !onlyParams(w, q, "endpoint", "event", "status", "since", "limit", "cursor") {
		return
	}
	f := bus.AttemptFilter{Endpoint: q.Get("endpoint"), EventID: q.Get("event"), Cursor: q.Get("cursor")}
	switch s := q.Get("status"); s {
	case "", "failed", "succeeded":
		f.Status = s
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status=%q: must be failed or succeeded", s))
		return
	}
	var ok bool
	if f.Since, f.Limit, ok = sinceAndLimit(w, q); !ok {
		return
	}
	page, err := a.Bus.Attempts(r.Context(), f)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if page.Attempts == nil {
		page.Attempts = []bus.Attempt{}
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *api) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !onlyParams(w, q, "endpoint", "since", "limit") {
		return
	}
	f := bus.DeadLetterFilter{Endpoint: q.Get("endpoint")}
	var ok bool
	if f.Since, f.Limit, ok = sinceAndLimit(w, q); !ok {
		return
	}
	dls, err := a.Bus.DeadLetters(r.Context(), f)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if dls == nil {
		dls = []bus.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": dls})
}

// ReplayRequest is the body of POST /api/dlq/replay: either IDs, or
// Endpoint with an optional Since.
type ReplayRequest struct {
	// IDs are dead-letter entry ids (DeadLetter.ID).
	IDs []string `json:"ids,omitempty"`
	// Endpoint replays every dead letter of that endpoint (since Since,
	// an RFC 3339 time, when set), each to that endpoint only.
	Endpoint string `json:"endpoint,omitempty"`
	Since    string `json:"since,omitempty"`
}

func (a *api) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if !a.readBody(w, r, &req) {
		return
	}
	switch {
	case req.IDs != nil && (req.Endpoint != "" || req.Since != ""):
		writeError(w, http.StatusBadRequest, "ids: give ids, or endpoint (with since), not both")
		return
	case req.IDs != nil:
		if len(req.IDs) == 0 || slices.Contains(req.IDs, "") {
			writeError(w, http.StatusBadRequest, "ids: give at least one dead-letter id, none empty")
			return
		}
		n, err := a.Bus.Replay(r.Context(), req.IDs)
		if unknown := onlyUnknown(err); unknown != nil {
			if n == 0 {
				writeError(w, http.StatusNotFound, "ids: no dead letter with id "+strings.Join(unknown.IDs, ", "))
				return
			}
			writeJSON(w, http.StatusOK, ReplayAnswer{Replayed: n, Unknown: unknown.IDs})
			return
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ReplayAnswer{Replayed: n})
	case req.Endpoint != "":
		since, err := parseTime("since", req.Since)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !a.known(req.Endpoint) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint named %q", req.Endpoint))
			return
		}
		n, err := a.Bus.RecoverEndpoint(r.Context(), req.Endpoint, since)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ReplayAnswer{Replayed: n})
	default:
		writeError(w, http.StatusBadRequest, `endpoint: give {"ids": [...]} or {"endpoint": "...", "since": "..."}`)
	}
}

func (a *api) purge(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !onlyParams(w, q, "endpoint") {
		return
	}
	if q.Has("endpoint") && q.Get("endpoint") == "" {
		writeError(w, http.StatusBadRequest, "endpoint: give an endpoint name, or leave endpoint out to purge every endpoint's")
		return
	}
	n, err := a.Bus.PurgeDeadLetters(r.Context(), q.Get("endpoint"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"purged": n})
}

// ReplayAnswer is the body of a 200 of POST /api/dlq/replay.
type ReplayAnswer struct {
	Replayed int `json:"replayed"`
	// Unknown lists the ids given that the queue does not hold (replayed
	// or purged already, or never there); the others were replayed.
	Unknown []string `json:"unknown,omitempty"`
}

// onlyUnknown returns the *bus.UnknownDeadLettersError of Replay's err
// when it is the only error in it (errors.Join'd or not).
func onlyUnknown(err error) *bus.UnknownDeadLettersError {
	var unknown *bus.UnknownDeadLettersError
	if !errors.As(err, &unknown) {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != nil && !errors.As(e, new(*bus.UnknownDeadLettersError)) {
				return nil
			}
		}
	}
	return unknown
}

// fail answers an error of the bus: 400 naming the parameter for a
// *bus.ParamError (a cursor the log did not make), 404 for an unknown
// endpoint or event, 500 (logged) otherwise.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var bad *bus.ParamError
	switch {
	case errors.As(err, &bad):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s=%q: %s", bad.Param, bad.Value, bad.Problem))
	case errors.Is(err, bus.ErrUnknownEndpoint):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, bus.ErrUnknownEvent):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		a.Logger.Error("memhook: admin API", "path", r.URL.Path, "error", err.Error())
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// readBody decodes a JSON object of at most MaxBodyBytes into v; unknown
// fields are refused. On failure it has answered 400 or 413.
func (a *api) readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		var extra json.RawMessage
		if dec.Decode(&extra) != io.EOF {
			err = errors.New("more than one JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "body: empty; give a JSON object")
	case errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: must be %s", typeErr.Field, typeErr.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: unknown field", field))
	default:
		writeError(w, http.StatusBadRequest, "body: not a JSON object: "+err.Error())
	}
	return false
}

// onlyParams answers 400 naming the first query parameter not in names.
func onlyParams(w http.ResponseWriter, q map[string][]string, names ...string) bool {
	for k, v := range q {
		if !slices.Contains(names, k) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: unknown parameter; known: %s", k, strings.Join(names, ", ")))
			return false
		}
		if len(v) > 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: given %d times", k, len(v)))
			return false
		}
	}
	return true
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf(`%s=%q: not an RFC 3339 time (e.g. "2024-01-15T14:00:00Z")`, name, v)
	}
	return t, nil
}

func queryTime(v string) (time.Time, error) { return parseTime("since", v) }

// sinceAndLimit reads the query's since and limit, answering 400 naming
// the bad one (ok false).
func sinceAndLimit(w http.ResponseWriter, q url.Values) (since time.Time, limit int, ok bool) {
	var err error
	if since, err = queryTime(q.Get("since")); err == nil {
		limit, err = queryLimit(q.Get("limit"))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return time.Time{}, 0, false
	}
	return since, limit, true
}

func queryLimit(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, fmt.Errorf("limit=%q: must be a whole number from 1 to %d", v, MaxLimit)
	}
	return n, nil
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: strings.ReplaceAll(msg, "\n", "; ")})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
