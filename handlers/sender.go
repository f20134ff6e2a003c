package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	whttp "github.com/ThreeDotsLabs/watermill-http/v2/pkg/http"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/verify"
)

// senderCheck admits the requests of the event endpoints (incoming,
// ingest): a request passes with the bearer token, or with a Standard
// Webhooks signature made with one of the secrets. With neither configured
// every request passes (serve allows that on loopback only). It reads the
// body (at most MaxBodyBytes, 413 beyond) to verify it and hands it on
// restored.
type senderCheck struct {
	realm    string
	token    string
	verifier *verify.Verifier // nil: no secret
	log      *slog.Logger
}

func newSenderCheck(realm, token string, secrets []verify.Secret, log *slog.Logger) (*senderCheck, error) {
	c := &senderCheck{realm: realm, token: token, log: log}
	if len(secrets) > 0 {
		v, err := verify.NewFromSecrets(secrets)
		if err != nil {
			return nil, err
		}
		v.MaxBodyBytes = MaxBodyBytes
		c.verifier = v
	}
	return c, nil
}

func (c *senderCheck) open() bool { return c.token == "" && c.verifier == nil }

// allows reports, without answering or logging, whether r passes a
// bearer-only check (c has no secrets): for endpoints that answer anyone
// but tell more to an admitted caller.
func (c *senderCheck) allows(r *http.Request) bool {
	if c.open() {
		return true
	}
	return c.token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+c.token)) == 1
}

func (c *senderCheck) wrap(next http.Handler) http.Handler {
	if c.open() {
		return next
	}
	var signed http.Handler // verify.Verifier's own middleware: 413, 401 with the failed check
	if c.verifier != nil {
		signed = c.verifier.Middleware(next)
	}
	want := []byte("Bearer " + c.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		if signed != nil && r.Header.Get(verify.HeaderSignature) != "" {
			rec := &statusRecorder{ResponseWriter: w}
			signed.ServeHTTP(rec, r)
			if rec.status == http.StatusUnauthorized {
				c.refused(r, "signature check failed")
			}
			return
		}
		reason := "missing or wrong bearer token"
		if c.verifier != nil {
			reason = "missing bearer token or webhook signature"
		}
		c.refused(r, reason)
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+c.realm+`"`)
		writeError(w, http.StatusUnauthorized, reason)
	})
}

// refused logs a refusal at WARN, without the presented credential.
func (c *senderCheck) refused(r *http.Request, reason string) {
	c.log.Warn("memhook: request refused", "path", r.URL.Path, "realm", c.realm, "remote", r.RemoteAddr, "reason", reason)
}

// replayGuard remembers the webhook ids processed in the last window, so
// that a request replayed (or retried after a lost answer) within the
// signature tolerance is answered without being processed twice. An id
// is recorded only once processing succeeded; one being processed makes
// its twin retry later (see retryLater). Every event path (POST
// /webhooks/memory, /ingest, /ingest/batch) goes through begin and end.
// Its store decides how far "twice" reaches: one process (MemorySeen) or
// every router on one Redis (transports.RedisSeen).
type replayGuard struct {
	store  SeenStore
	window time.Duration
	log    *slog.Logger
}

// InProgressTimeout is how long an event id stays in progress (its twins
// answered 503) without an end: a router that died while processing it
// holds it that long. Processing — handing the event to the queue — takes
// far less: on Redis at most the client's dial, write and read timeouts.
const InProgressTimeout = 30 * time.Second

// storeTimeout bounds one call to the guard's store: a Redis that does not
// answer makes the event endpoints answer 503 within it. Recording an
// outcome goes on when the request's context ends (its sender hung up):
// not recording a processed id would let a retry process it again.
const storeTimeout = 5 * time.Second

// replayState is what replayGuard.begin says of an id.
type replayState int

// Outcomes of replayGuard.begin.
const (
	// replayNew: process the event; the caller holds the id until end.
	replayNew replayState = iota
	// replayDone: processed within the window; answer without processing.
	replayDone
	// replayLater: another request is processing it, or the store cannot
	// tell; answer with retryLater and the reason begin returned.
	replayLater
)

// begin reports whether id is new (and now in progress), done already, or
// to be retried later, with the reason to answer then. An empty id is
// always new and never recorded. A store that fails refuses the event
// (fail closed): a sender retrying a 503 is better than a duplicate.
func (g *replayGuard) begin(ctx context.Context, id string) (replayState, string) {
	if id == "" {
		return replayNew, ""
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	claimed, done, err := g.store.Begin(ctx, id, min(InProgressTimeout, g.window))
	switch {
	case err != nil:
		g.log.Warn("memhook: duplicate guard unavailable, event refused for now", "id", id, "error", err.Error())
		return replayLater, "duplicate guard unavailable; retry later"
	case claimed:
		return replayNew, ""
	case done:
		return replayDone, ""
	}
	return replayLater, fmt.Sprintf("event %s is being processed by another request; retry later", id)
}

// end records the outcome of an id begin returned new for: kept as done
// when processed, forgotten when not (so that a retry is processed).
func (g *replayGuard) end(ctx context.Context, id string, ok bool) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := g.store.End(ctx, id, ok, g.window); err != nil {
		g.log.Warn("memhook: duplicate guard did not record an outcome; the id stays in progress until it lapses",
			"id", id, "processed", ok, "lapses_in", min(InProgressTimeout, g.window), "error", err.Error())
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// idHeaders are the request headers an event endpoint may take an event
// id from (see requestID).
var idHeaders = [...]string{verify.HeaderID, whttp.HeaderUUID}

// idHeadersValid checks every id header present with event.ValidID, as
// the envelope's id is: a value that could not be sent on as a webhook-id
// is answered 422 naming the header.
func idHeadersValid(w http.ResponseWriter, r *http.Request) bool {
	for _, name := range idHeaders {
		v := r.Header.Get(name)
		if v == "" {
			continue
		}
		if err := event.ValidID(v); err != nil {
			problem := err.Error()
			var fe *event.FieldError
			if errors.As(err, &fe) {
				problem = fe.Problem
			}
			writeError(w, http.StatusUnprocessableEntity, "header "+name+": "+problem)
			return false
		}
	}
	return true
}

// once wraps next so that a request whose id (from idOf) was processed
// within the window is answered 200 with dupBody, and is not processed
// again.
func (g *replayGuard) once(idOf func(*http.Request) string, dupBody any, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !idHeadersValid(w, r) {
			return
		}
		id := idOf(r)
		switch state, reason := g.begin(r.Context(), id); state {
		case replayDone:
			g.log.Info("memhook: duplicate request answered without processing", "path", r.URL.Path, "id", id)
			writeJSON(w, http.StatusOK, dupBody)
			return
		case replayLater:
			retryLater(w, errorBody{Error: reason})
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		ok := false
		defer func() { g.end(r.Context(), id, ok) }()
		next.ServeHTTP(rec, r)
		ok = rec.status >= 200 && rec.status < 300
	})
}

// retryLater answers a request whose event the replay guard holds back
// now: 503 with Retry-After and body. Every sender retries a 503 — the
// application's forwarder takes a 409 as a permanent refusal and would
// poison an event that is being delivered.
func retryLater(w http.ResponseWriter, body any) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, body)
}
